//! The first stage of the daemon: what is true now, read from the kernel.
//! Over rtnetlink: links (index, link type, MTU, kind), routes (which
//! interface reaches each target, so the daemon hooks the side replies
//! arrive on), interface addresses (for listeners that follow "the
//! interface's own addresses"), and a watch for changes of any of them.
//! From the dataplane: what is attached and registered, how big the maps
//! are. The rules file is the other input of `plan`.
//!
//! The one fact a reader gets wrong: facts are read whole each time, never
//! patched from netlink messages (the messages only say "something
//! changed"), so a missed or reordered message cannot leave a stale fact.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Context, Result};
use futures::{channel::mpsc::UnboundedReceiver, TryStreamExt};
use netlink_packet_route::{
    address::AddressAttribute,
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkLayerType},
    route::RouteAttribute,
};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};

use forwarder_common::IfaceConfig;
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
    /// IPv4 addresses by ifindex.
    pub addrs: BTreeMap<u32, Vec<Ipv4Addr>>,
    /// The route to each target of the rules (`None`: no forwarding route,
    /// e.g. a ClusterIP or a local address).
    pub routes: BTreeMap<Ipv4Addr, Option<Route>>,
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
        targets: impl IntoIterator<Item = Ipv4Addr>,
        names: BTreeMap<String, NameFact>,
        dp: &Dataplane,
    ) -> Result<Facts> {
        let mut routes = BTreeMap::new();
        for t in targets.into_iter().collect::<BTreeSet<_>>() {
            routes.insert(t, route_get(handle, t).await);
        }
        Ok(Facts {
            links: links(handle).await?,
            addrs: v4_addrs(handle).await?,
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
    pub fn route(&self, target: Ipv4Addr) -> Option<Route> {
        self.routes.get(&target).copied().flatten()
    }

    /// The link the route to `target` leaves by.
    pub fn route_link(&self, target: Ipv4Addr) -> Option<&Iface> {
        self.route(target).and_then(|r| self.link(r.oif))
    }
}

pub fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Any change of links, IPv4 addresses or IPv4 routes (`ip monitor`).
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
    ])
    .context("subscribing to rtnetlink link/address/route events")?;
    tokio::spawn(conn);
    Ok(events)
}

/// The kernel's route to a destination, as `ip route get` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub oif: u32,
    /// `None`: on-link (a connected route).
    pub gateway: Option<Ipv4Addr>,
    pub prefsrc: Option<Ipv4Addr>,
}

/// `ip route get DST`; `None` when there is no usable route (unreachable,
/// or the address is local: then the route is in the local table and has
/// no forwarding meaning, which callers treat alike).
pub async fn route_get(handle: &Handle, dst: Ipv4Addr) -> Option<Route> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .build();
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
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => out.oif = *i,
            RouteAttribute::Gateway(netlink_packet_route::route::RouteAddress::Inet(g)) => {
                out.gateway = Some(*g)
            }
            RouteAttribute::PrefSource(netlink_packet_route::route::RouteAddress::Inet(s)) => {
                out.prefsrc = Some(*s)
            }
            _ => {}
        }
    }
    (out.oif != 0).then_some(out)
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

/// IPv4 addresses currently on each interface (by ifindex).
pub async fn v4_addrs(handle: &Handle) -> Result<BTreeMap<u32, Vec<Ipv4Addr>>> {
    let mut out: BTreeMap<u32, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut s = handle.address().get().execute();
    while let Some(m) = s.try_next().await.context("listing addresses")? {
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
        // peer on point-to-point links and the same as local elsewhere.
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
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
