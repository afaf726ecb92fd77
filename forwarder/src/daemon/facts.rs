//! The first stage of the daemon: what is true now, read from the kernel.
//! Over rtnetlink: links (index, link type, MTU, kind), routes (which
//! interface reaches each target, so the daemon hooks the side replies
//! arrive on), interface addresses (for listeners that follow "the
//! interface's own addresses"), the neighbour entries of the targets' next
//! hops (a dead one must not be redirected to), and a watch for changes of any
//! of them (the one event source: `watch`).
//! From the dataplane: what is attached and registered, how big the maps
//! are. The rules file is the other input of `plan`. Addresses and routes
//! are read for both families: a forward's clients and target may each be
//! IPv4 or IPv6.
//!
//! The one fact a reader gets wrong: facts are read whole each time, never
//! patched from netlink messages (the messages only say "something
//! changed"), so a missed or reordered message cannot leave a stale fact.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result};
use futures::{channel::mpsc::UnboundedReceiver, TryStreamExt};
use netlink_packet_route::{
    address::AddressAttribute,
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkLayerType},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAttribute, RouteMetric},
    AddressFamily, RouteNetlinkMessage,
};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};

use forwarder_common::{IfaceConfig, NeighFlags};
use rules::Room;

use super::{plan::Record, resolve::NameFact};
use crate::{
    dataplane::{Dataplane, Maps, TcMode},
    ifaces::Iface,
};

/// Everything `plan` needs to know about the machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Every link of this network namespace, by name.
    pub links: BTreeMap<String, Iface>,
    /// Addresses of both families by ifindex.
    pub addrs: BTreeMap<u32, Vec<IpAddr>>,
    /// The route to each target of the rules (`None`: no forwarding route,
    /// e.g. a ClusterIP or a local address).
    pub routes: BTreeMap<IpAddr, Option<Route>>,
    /// The lowest `mtu` of the IPv4 routes through each interface (by
    /// ifindex), for routes that carry one (`ip route ... mtu [lock] N`,
    /// as tailnet and VPN routes do): `mss_clamp = "auto"` takes it.
    pub route_mtus: BTreeMap<u32, u32>,
    /// Interfaces this daemon has attached, as it attached them.
    pub attached: Vec<Attached>,
    /// Interfaces registered in the config map (ifindex -> counter slot),
    /// including ones a previous daemon registered.
    pub registered: BTreeMap<u32, IfaceConfig>,
    /// How many listener and allow-list entries the maps take.
    pub room: Room,
    /// Why every interface gets its TC programs the legacy way (the
    /// kernel has no TCX, or FORWARDER_FORCE_ATTACH); `None`: TCX.
    pub tc_legacy: Option<&'static str>,
    /// What each DNS-name target resolves to (`resolve.rs`), by name.
    pub names: BTreeMap<String, NameFact>,
    /// The kernel's neighbour entries for the targets' next hops (the
    /// target itself on-link, else its gateway), by address; no entry: none.
    pub neighbours: BTreeMap<Ipv4Addr, Neighbour>,
    /// What `FWD_NEIGH` holds now (the last plan's dead neighbours): a
    /// target stays dead while the kernel probes it again (`plan::neighbours`).
    pub neigh_map: BTreeMap<Ipv4Addr, NeighFlags>,
    /// Targets (and next hops) found dead at some time in this daemon's life (the
    /// daemon's memory, not the kernel's): flows to them may have gone
    /// through the stack, so their forwards keep the egress program.
    pub dead_once: BTreeSet<Ipv4Addr>,
}

/// A neighbour table entry, as `ip neigh` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub state: NeighState,
}

/// The neighbour states that matter here (NUD_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighState {
    /// Has a link address (REACHABLE, STALE, DELAY, PROBE, PERMANENT,
    /// NOARP): a redirect reaches it.
    Resolved,
    /// ARP in progress (INCOMPLETE): packets queue behind it.
    Incomplete,
    /// ARP gave up (FAILED): the kernel drops what queued and, for what it
    /// forwards itself, answers host unreachable.
    Failed,
}

impl NeighState {
    fn of(s: NeighbourState) -> Option<NeighState> {
        match s {
            NeighbourState::Incomplete => Some(NeighState::Incomplete),
            NeighbourState::Failed => Some(NeighState::Failed),
            NeighbourState::None | NeighbourState::Other(_) => None,
            _ => Some(NeighState::Resolved),
        }
    }

    /// As `ip neigh` names it.
    pub fn name(self) -> &'static str {
        match self {
            NeighState::Resolved => "resolved",
            NeighState::Incomplete => "INCOMPLETE",
            NeighState::Failed => "FAILED",
        }
    }
}

/// An interface the dataplane has programs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub iface: Iface,
    pub tc: TcMode,
    pub egress: bool,
    pub xdp: bool,
}

impl Facts {
    /// Reads the facts for `targets` (the rules' backends: written
    /// addresses and what `names` resolve to).
    pub async fn gather(
        handle: &Handle,
        targets: impl IntoIterator<Item = IpAddr>,
        names: BTreeMap<String, NameFact>,
        dp: &Dataplane,
    ) -> Result<Facts> {
        let mut routes = BTreeMap::new();
        for t in targets.into_iter().collect::<BTreeSet<_>>() {
            routes.insert(t, route_get(handle, t).await);
        }
        // Each IPv4 target's next hop (itself on-link, or its gateway):
        // IPv6 neighbour discovery is never touched (issue 13).
        let hops = super::plan::neigh::next_hops(&routes)
            .into_values()
            .collect();
        Ok(Facts {
            route_mtus: route_mtus(handle).await?,
            neighbours: neighbours(handle, &hops).await?,
            neigh_map: dp.maps.neighbours()?,
            dead_once: BTreeSet::new(),
            links: links(handle).await?,
            addrs: addrs(handle).await?,
            routes,
            attached: dp
                .attached()
                .map(|i| Attached {
                    iface: i.clone(),
                    tc: dp.tc_mode(i.ifindex).unwrap_or_default(),
                    egress: dp.has_egress(i.ifindex),
                    xdp: dp.has_xdp(i.ifindex),
                })
                .collect(),
            registered: dp.maps.registered(),
            room: dp.maps.room()?,
            tc_legacy: dp.tc_legacy,
            names,
        })
    }

    /// The link with this ifindex.
    pub fn link(&self, ifindex: u32) -> Option<&Iface> {
        self.links.values().find(|l| l.ifindex == ifindex)
    }

    /// The route to `target` as gathered (`None` when there is none).
    pub fn route(&self, target: IpAddr) -> Option<Route> {
        self.routes.get(&target).copied().flatten()
    }

    /// What leaves by `l` fits in: its MTU, lowered by the narrowest
    /// route MTU through it (`route_mtus`); `None` when neither is known.
    pub fn mtu_through(&self, l: &Iface) -> Option<u32> {
        let route = self.route_mtus.get(&l.ifindex).copied();
        Some(l.mtu)
            .filter(|m| *m > 0)
            .map(|m| route.map_or(m, |r| r.min(m)))
            .or(route)
    }

    /// The link the route to `target` leaves by.
    pub fn route_link(&self, target: IpAddr) -> Option<&Iface> {
        self.route(target).and_then(|r| self.link(r.oif))
    }
}

pub fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Any change of links, addresses or routes of either family (`ip monitor`).
/// The messages themselves are not interpreted: the daemon re-reads the
/// facts it needs and reconciles, which is idempotent.
pub type Events = UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

pub fn watch() -> Result<Events> {
    let (conn, _handle, events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Neigh,
    ])
    .context("subscribing to rtnetlink link/address/route/neighbour events")?;
    tokio::spawn(conn);
    Ok(events)
}

/// What a neighbour message says, when it is about an IPv4 neighbour:
/// its address and state (`None`: deleted, or a state without meaning
/// here). Any other message: `None`.
pub fn neigh_event(msg: &RouteNetlinkMessage) -> Option<(Ipv4Addr, Option<NeighState>)> {
    let (m, deleted) = match msg {
        RouteNetlinkMessage::NewNeighbour(m) => (m, false),
        RouteNetlinkMessage::DelNeighbour(m) => (m, true),
        _ => return None,
    };
    let addr = neigh_addr(m)?;
    Some((
        addr,
        if deleted {
            None
        } else {
            NeighState::of(m.header.state)
        },
    ))
}

/// Whether a netlink event is worth a reconcile: every link, address and
/// route change is; a neighbour change only when it is about a target
/// (`watched`: the targets' next hops) and could change what `FWD_NEIGH`
/// says: it failed, is being probed, went away, or is one the map holds.
/// Neighbours go REACHABLE -> STALE -> DELAY -> REACHABLE all day long
/// without that.
pub fn event_matters(
    msg: &RouteNetlinkMessage,
    watched: &BTreeSet<Ipv4Addr>,
    dead: &BTreeMap<Ipv4Addr, NeighFlags>,
) -> bool {
    match msg {
        RouteNetlinkMessage::NewNeighbour(_) | RouteNetlinkMessage::DelNeighbour(_) => {}
        _ => return true,
    }
    match neigh_event(msg) {
        Some((addr, state)) => {
            watched.contains(&addr)
                && (dead.contains_key(&addr) || state != Some(NeighState::Resolved))
        }
        None => false,
    }
}

fn neigh_addr(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// The IPv4 neighbour entries of the addresses in `wanted` (`ip -4 neigh`).
pub async fn neighbours(
    handle: &Handle,
    wanted: &BTreeSet<Ipv4Addr>,
) -> Result<BTreeMap<Ipv4Addr, Neighbour>> {
    let mut out = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut s = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    while let Some(m) = s.try_next().await.context("listing neighbours")? {
        let Some(addr) = neigh_addr(&m).filter(|a| wanted.contains(a)) else {
            continue;
        };
        if let Some(state) = NeighState::of(m.header.state) {
            // One address on two links: the worst state says it (a
            // target is reached through the link its route names; the
            // other entry is rare and stale).
            let n = Neighbour {
                ifindex: m.header.ifindex,
                state,
            };
            out.entry(addr)
                .and_modify(|o: &mut Neighbour| {
                    if o.state == NeighState::Resolved {
                        *o = n
                    }
                })
                .or_insert(n);
        }
    }
    Ok(out)
}

/// The kernel's route to a destination, as `ip route get` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub oif: u32,
    /// `None`: on-link (a connected route).
    pub gateway: Option<IpAddr>,
    pub prefsrc: Option<IpAddr>,
}

/// `ip route get DST`; `None` when there is no usable route (unreachable,
/// or the address is local: then the route is in the local table and has
/// no forwarding meaning, which callers treat alike).
pub async fn route_get(handle: &Handle, dst: IpAddr) -> Option<Route> {
    let msg = match dst {
        IpAddr::V4(d) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(d, 32)
            .build(),
        IpAddr::V6(d) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(d, 128)
            .build(),
    };
    let mut routes = handle.route().get(msg).execute();
    let r = routes.try_next().await.ok().flatten()?;
    if r.header.kind != netlink_packet_route::route::RouteType::Unicast {
        return None;
    }
    let mut out = Route {
        oif: 0,
        gateway: None,
        prefsrc: None,
    };
    use netlink_packet_route::route::RouteAddress;
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => out.oif = *i,
            RouteAttribute::Gateway(g) => out.gateway = ip(g),
            RouteAttribute::PrefSource(s) => out.prefsrc = ip(s),
            _ => {}
        }
    }
    (out.oif != 0).then_some(out)
}

/// The lowest route MTU (RTAX_MTU, locked or not) per outgoing interface
/// over every IPv4 route of every table that has one. netfilter's
/// `TCPMSS --clamp-mss-to-pmtu` takes the route's MTU this way (`dst_mtu`);
/// the daemon cannot know each client's route, so an interface counts
/// with its narrowest route: a smaller MSS costs a little throughput, a
/// larger one a black hole.
pub async fn route_mtus(handle: &Handle) -> Result<BTreeMap<u32, u32>> {
    let mut out: BTreeMap<u32, u32> = BTreeMap::new();
    let dump = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut s = handle.route().get(dump).execute();
    while let Some(r) = s.try_next().await.context("listing routes")? {
        let mut oif = None;
        let mut mtu = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Metrics(ms) => {
                    mtu = ms.iter().find_map(|m| match m {
                        RouteMetric::Mtu(v) if *v > 0 => Some(*v),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        if let (Some(i), Some(m)) = (oif, mtu) {
            out.entry(i).and_modify(|o| *o = (*o).min(m)).or_insert(m);
        }
    }
    Ok(out)
}

/// Every link in this network namespace, by name.
pub async fn links(handle: &Handle) -> Result<BTreeMap<String, Iface>> {
    let mut out = BTreeMap::new();
    let mut s = handle.link().get().execute();
    while let Some(m) = s.try_next().await.context("listing links")? {
        let mut name = None;
        let mut mtu = 0;
        let mut kind = None;
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Mtu(v) => mtu = *v,
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        out.insert(
            name.clone(),
            Iface {
                name,
                ifindex: m.header.index,
                l3: m.header.link_layer_type != LinkLayerType::Ether,
                mtu,
                kind,
                up: m.header.flags.contains(LinkFlags::Up),
            },
        );
    }
    Ok(out)
}

/// Addresses of both families currently on each interface (by ifindex).
pub async fn addrs(handle: &Handle) -> Result<BTreeMap<u32, Vec<IpAddr>>> {
    let mut out: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    let mut s = handle.address().get().execute();
    while let Some(m) = s.try_next().await.context("listing addresses")? {
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
        // peer on point-to-point links and the same as local elsewhere.
        // IPv6 addresses have IFA_ADDRESS only.
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        if let Some(ip) = addr {
            let list = out.entry(m.header.index).or_default();
            if !list.contains(&ip) {
                list.push(ip);
            }
        }
    }
    Ok(out)
}

/// What the kernel maps hold, read back: the daemon's record at start
/// (adopting a previous daemon's maps) and after a failed write.
pub fn read_record(maps: &Maps) -> Result<Record> {
    Ok(Record {
        ids: maps.rule_ids()?,
        entries: maps.entries()?,
    })
}
