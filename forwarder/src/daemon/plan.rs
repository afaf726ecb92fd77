//! The second stage of the daemon, pure: from the rules file, the facts and
//! the record of what the maps hold, everything the kernel should have and
//! why. Which interfaces get which programs (and which are let go), where
//! the egress program is needed, the MSS clamp of `mss_clamp = "auto"`,
//! whether to try XDP, the exact map entries with the ordered operations
//! that install them, and the sentences `status` and the log show.
//!
//! A forward whose target is a DNS name gets the address its name
//! resolves to, or is paused (`targets.rs`).
//!
//! No IO here: `plan` is a function of its arguments, unit-tested without
//! root (plan_tests.rs, plan_names_tests.rs). The one fact a reader gets
//! wrong: the SNAT and path explanations are a forecast from the routing
//! table, not a second implementation of the kernel's per-flow decision;
//! the egress set, though, must cover every interface whose flows *may*
//! take the stack path, or replies would leave untranslated.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Context, Result};
use forwarder_common::{
    conntrack::CtConfig, GlobalConfig, ListenFlags, NeighFlags, MAX_IFACES, NAT64_DEV,
};
use rules::{
    Af, AttachMode, Compiled, Forward, IfaceState, MapEntries, MapState, MssClamp, PathMode,
    RuleSet, Snat, Update,
};

use super::{
    facts::{Facts, NeighState, Route},
    targets::{name_status, target_addrs, target_of, Targets},
};
use crate::{dataplane::TcMode, ifaces::Iface, observe::status::RuleStatus};

/// IP + TCP headers without options: MSS = MTU - 40 over IPv4, MTU - 60
/// over IPv6.
fn tcpip_hlen(af: Af) -> u32 {
    if af == Af::V4 {
        40
    } else {
        60
    }
}
/// RFC 879's default MSS, and the largest an IPv4 packet can carry.
const MSS_MIN: u32 = 536;
const MSS_MAX: u32 = 65_495;

/// What the kernel maps hold, as far as the daemon knows: rule ids by name
/// and the listener and allow-list entries. After a failed write the daemon
/// re-reads it from the maps, so it never describes a state the kernel is
/// not in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub ids: BTreeMap<String, u32>,
    pub entries: MapEntries,
}

impl Record {
    pub fn state(&self) -> MapState<'_> {
        MapState {
            ids: &self.ids,
            entries: &self.entries,
        }
    }

    /// The same listeners, allow-list entries and ids (`missing_ifaces` is
    /// not a kernel fact).
    pub fn same_maps(&self, other: &Record) -> bool {
        self.ids == other.ids
            && self.entries.listeners == other.entries.listeners
            && self.entries.allow == other.entries.allow
    }
}

/// Whether an interface gets the XDP accelerator besides TC: `Ok(why)` to
/// try native XDP, `Err(why)` for TC only.
pub type XdpChoice = Result<&'static str, &'static str>;

/// A counter slot for an interface to be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub slot: u32,
    /// Not registered before: zero its counters first.
    pub fresh: bool,
}

/// One interface the rules use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfacePlan {
    pub name: String,
    /// Why the daemon uses it ("listens for web", "route to 10.0.0.5 (web)").
    pub why: String,
    /// `None` while the interface does not exist.
    pub link: Option<Iface>,
    /// `Some` when the programs are to be attached (not attached yet, or
    /// attached in the other TC mode).
    pub attach: Option<Slot>,
    /// How the TC programs go on, and why.
    pub tc: (TcMode, &'static str),
    /// Whether the egress program runs here.
    pub egress: bool,
    pub xdp: XdpChoice,
    pub addrs: Vec<IpAddr>,
}

/// An attached interface to let go of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detach {
    pub iface: Iface,
    pub why: &'static str,
}

/// Everything the kernel should have, and why.
#[derive(Clone, Debug)]
pub struct Plan {
    pub config: GlobalConfig,
    /// Conntrack timeouts and the per-source limit.
    pub ct_config: CtConfig,
    /// Rule ids by forward name.
    pub ids: BTreeMap<String, u32>,
    pub compiled: Compiled,
    pub detach: Vec<Detach>,
    /// The interfaces the rules use, by name.
    pub ifaces: Vec<IfacePlan>,
    /// The exact listener and allow-list entries (MSS clamps included).
    pub entries: MapEntries,
    /// The ordered map operations from the record to `entries`.
    pub update: Update,
    /// Per forward: how its flows will be treated.
    pub rules: Vec<RuleStatus>,
    /// What `FWD_NEIGH` should hold: on-link targets whose neighbour is
    /// dead (`plan_neigh.rs`).
    pub neigh: BTreeMap<Ipv4Addr, NeighFlags>,
    /// What `FWD_ROUTE_HINTS` should hold (`plan_hints.rs`).
    pub route_hints: BTreeMap<Ipv4Addr, forwarder_common::RouteHint>,
}

impl Plan {
    /// The record the maps hold once this plan is applied.
    pub fn record(&self) -> Record {
        Record {
            ids: self.ids.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// The plan for `rules` on the machine `facts` describes, starting from
/// what `record` says the maps hold.
pub fn plan(rules: &RuleSet, facts: &Facts, record: &Record) -> Result<Plan> {
    let mut config = GlobalConfig::new(
        rules.global.snat_ports.start(),
        rules.global.snat_ports.end(),
    );
    config.nat64_ifindex = nat64_dev(rules, facts).map_or(0, |l| l.ifindex);
    let ids = rules::assign_ids(&record.ids, rules.forwards.iter().map(|f| f.name.as_str()));
    let targets = target_addrs(rules, facts);
    let compiled =
        rules::compile_with(rules, &ids, |f| target_of(&targets, f)).context("compiling rules")?;
    let wanted = wanted_ifaces(rules, facts, &targets);
    let detach = to_detach(facts, &wanted);
    let egress = egress_ifaces(rules, facts, &targets);
    let ifaces = iface_plans(rules, facts, &wanted, &detach, &egress)?;

    let mut entries = rules::materialize(&compiled, |n| {
        facts.links.get(n).map(|l| IfaceState {
            ifindex: l.ifindex,
            addrs: facts.addrs.get(&l.ifindex).cloned().unwrap_or_default(),
        })
    });
    // A fixed listen address held by another node (a VIP) listens nowhere
    // here; the netlink event of its arrival brings it back.
    entries.retain_assigned(&facts.addrs.values().flatten().copied().collect());
    // Per rule and client family: a dual-stack forward's IPv6 clients have
    // 20 bytes less room in each packet than its IPv4 ones.
    let mss: BTreeMap<(u32, Af), u16> = compiled
        .rules
        .iter()
        .flat_map(|r| r.forward.listen_afs().iter().map(move |af| (r, *af)))
        .filter_map(|(r, af)| {
            mss_clamp(&r.forward, af, facts, target_of(&targets, &r.forward))
                .map(|m| ((r.id, af), m))
        })
        .collect();
    for (k, v) in entries.listeners.iter_mut() {
        let af = rules::family_of_key(k);
        if let Some(m) = mss.get(&(v.rule_id, af)) {
            v.flags |= ListenFlags::MSS_CLAMP;
            v.mss = *m;
        }
    }
    let update = rules::diff::update(
        record.state(),
        MapState {
            ids: &ids,
            entries: &entries,
        },
        facts.room,
    )?;
    let dead = neigh::plan(facts);
    let statuses = compiled
        .rules
        .iter()
        .map(|r| {
            let mut s = RuleStatus::of(r.id, &r.forward);
            s.mss = mss
                .iter()
                .filter(|((id, _), _)| *id == r.id)
                .map(|(_, m)| *m)
                .min();
            s.listeners = entries
                .listeners
                .values()
                .filter(|v| v.rule_id == r.id)
                .count();
            let target = &targets[&r.forward.name];
            s.decision = match target {
                Ok(a) => decision(&r.forward, facts, &dead, *a),
                Err(why) => format!(
                    "paused: {why}; no listener, so new connections are refused like on a \
                     closed port (flows already established keep their translation)"
                ),
            };
            s.resolution = name_status(&r.forward, &facts.names, target);
            s
        })
        .collect();
    Ok(Plan {
        config,
        ct_config: rules.global.ct_config(),
        ids,
        compiled,
        detach,
        ifaces,
        entries,
        update,
        rules: statuses,
        neigh: dead,
        route_hints: hints::plan(facts),
    })
}

/// The NAT64 pool's device (`nat64dev`), when a forward uses the pool.
pub fn nat64_dev<'a>(rules: &RuleSet, facts: &'a Facts) -> Option<&'a Iface> {
    rules
        .forwards
        .iter()
        .any(|f| rules::nat64_pool(f, Af::V6).is_some())
        .then(|| facts.links.get(NAT64_DEV))
        .flatten()
}

/// Interfaces the rules use and why: where packets arrive (`in`), where
/// replies come back (the route to each target), and the NAT64 pool's
/// device. The first reason wins.
pub fn wanted_ifaces(
    rules: &RuleSet,
    facts: &Facts,
    targets: &Targets,
) -> BTreeMap<String, String> {
    let mut wanted = BTreeMap::new();
    for f in &rules.forwards {
        wanted
            .entry(f.iface.clone())
            .or_insert_with(|| format!("listens for {}", f.name));
    }
    for f in &rules.forwards {
        let Some(t) = target_of(targets, f) else {
            continue;
        };
        if let Some(l) = facts.route_link(t) {
            wanted
                .entry(l.name.clone())
                .or_insert_with(|| format!("route to {t} ({})", f.name));
        }
    }
    if let Some(l) = nat64_dev(rules, facts) {
        wanted.entry(l.name.clone()).or_insert_with(|| {
            "NAT64 pool device: replies of NAT64 flows through the stack".into()
        });
    }
    wanted
}

/// Attached interfaces no longer wanted, gone, or re-created (a new ifindex
/// under the old name: the old links died with the device).
fn to_detach(facts: &Facts, wanted: &BTreeMap<String, String>) -> Vec<Detach> {
    facts
        .attached
        .iter()
        .filter_map(|a| {
            let why = match facts.links.get(&a.iface.name) {
                _ if !wanted.contains_key(&a.iface.name) => "no longer used",
                None => "gone",
                Some(l) if l.ifindex != a.iface.ifindex => "re-created",
                Some(_) => return None,
            };
            Some(Detach {
                iface: a.iface.clone(),
                why,
            })
        })
        .collect()
}

/// Whether a forward's flows may go through the stack (no SNAT of ours,
/// and a target that is not on-link, or `path = "stack"`): then replies
/// leave by its listening interface and need the egress program there.
pub fn may_take_stack_path(f: &Forward, route: Option<Route>) -> bool {
    let on_link = route.is_some_and(|r| r.gateway.is_none());
    match (f.snat, f.path) {
        (Snat::Fixed(_) | Snat::Masquerade, _) => false,
        (_, PathMode::Stack) => true,
        (_, PathMode::Redirect) => route.is_none(),
        (_, PathMode::Auto) => !on_link,
    }
}

/// The listening interfaces that need the egress program. A paused
/// forward needs it as long as the flows established to its last address
/// may have taken the stack path (their replies still need translating
/// back); one that never had an address has no flows.
pub fn egress_ifaces(rules: &RuleSet, facts: &Facts, targets: &Targets) -> BTreeSet<String> {
    let dead = neigh::plan(facts);
    rules
        .forwards
        .iter()
        .filter(|f| {
            let last = || facts.names.get(f.target.name()?)?.last_addr.map(IpAddr::V4);
            match target_of(targets, f).or_else(last) {
                Some(t) => {
                    may_take_stack_path(f, facts.route(t))
                        || neigh::needs_egress(f, facts, &dead, t)
                }
                None => false,
            }
        })
        .map(|f| f.iface.clone())
        .chain(nat64_dev(rules, facts).map(|l| l.name.clone()))
        .collect()
}

fn iface_plans(
    rules: &RuleSet,
    facts: &Facts,
    wanted: &BTreeMap<String, String>,
    detach: &[Detach],
    egress: &BTreeSet<String>,
) -> Result<Vec<IfacePlan>> {
    let detached: BTreeSet<u32> = detach.iter().map(|d| d.iface.ifindex).collect();
    let attached: BTreeMap<u32, TcMode> = facts
        .attached
        .iter()
        .map(|a| (a.iface.ifindex, a.tc))
        .filter(|(i, _)| !detached.contains(i))
        .collect();
    // Slots in use: registered interfaces other than those let go of now.
    let mut used: BTreeSet<u32> = facts
        .registered
        .iter()
        .filter(|(i, _)| !detached.contains(i))
        .map(|(_, c)| c.slot)
        .collect();
    let mut out = Vec::new();
    for (name, why) in wanted {
        let link = facts.links.get(name).cloned();
        let setting = rules
            .interfaces
            .get(name)
            .map(|s| s.attach)
            .unwrap_or_default();
        let tc = tc_choice(setting, facts);
        let attach = match &link {
            Some(l) if attached.get(&l.ifindex) != Some(&tc.0) => {
                Some(match facts.registered.get(&l.ifindex) {
                    Some(cfg) if !detached.contains(&l.ifindex) => Slot {
                        slot: cfg.slot,
                        fresh: false,
                    },
                    _ => {
                        let slot = (0..MAX_IFACES)
                            .find(|s| !used.contains(s))
                            .context("no free interface counter slot")?;
                        used.insert(slot);
                        Slot { slot, fresh: true }
                    }
                })
            }
            _ => None,
        };
        out.push(IfacePlan {
            name: name.clone(),
            why: why.clone(),
            addrs: link
                .as_ref()
                .and_then(|l| facts.addrs.get(&l.ifindex).cloned())
                .unwrap_or_default(),
            xdp: match &link {
                Some(l) => xdp_choice(setting, l),
                None => Err("missing"),
            },
            egress: egress.contains(name),
            link,
            attach,
            tc,
        });
    }
    Ok(out)
}

/// `mss_clamp = "auto"` for clients of family `af`: what fits both the
/// listening interface (with `af`'s headers) and the interface toward the
/// target (with the target's: a NAT64 flow's segments carry 40 bytes of
/// headers there, 60 on the client's side), each lowered by the narrowest
/// route MTU through it (`ip route ... mtu 1280`). The path MTU as far as
/// this host can see it. `None`: no clamp. `target`: where the forward's
/// flows go now (`None` while paused).
pub fn mss_clamp(f: &Forward, af: Af, facts: &Facts, target: Option<IpAddr>) -> Option<u16> {
    match f.mss_clamp {
        MssClamp::Fixed(m) => Some(m),
        MssClamp::Off => None,
        MssClamp::Auto => {
            let room = |mtu: u32, af: Af| (mtu > 0).then(|| mtu.saturating_sub(tcpip_hlen(af)));
            let in_side = facts
                .links
                .get(&f.iface)
                .and_then(|l| room(facts.mtu_through(l)?, af));
            let out_side =
                target.and_then(|t| room(facts.mtu_through(facts.route_link(t)?)?, Af::of(t)));
            let mss = match (in_side, out_side) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            mss.map(|m| m.clamp(MSS_MIN, MSS_MAX) as u16)
        }
    }
}

/// How an interface's TC programs are attached, and why: the legacy way
/// where the rules ask for it or the kernel (or the operator) says so.
pub fn tc_choice(setting: AttachMode, facts: &Facts) -> (TcMode, &'static str) {
    match (setting, facts.tc_legacy) {
        (AttachMode::TcLegacy, _) => (TcMode::Legacy, "configured attach = \"tc-legacy\""),
        (_, Some(why)) => (TcMode::Legacy, why),
        (_, None) => (TcMode::Tcx, "TCX links"),
    }
}

/// Whether an interface gets the XDP accelerator besides TC.
pub fn xdp_choice(setting: AttachMode, iface: &Iface) -> XdpChoice {
    match setting {
        AttachMode::Tc => return Err("configured attach = \"tc\""),
        AttachMode::TcLegacy => return Err("configured attach = \"tc-legacy\""),
        _ => {}
    }
    if iface.l3 {
        return Err("an L3 device (no link header) has no XDP");
    }
    if setting == AttachMode::Xdp {
        return Ok("configured attach = \"xdp\"");
    }
    match iface.kind.as_deref() {
        None => Ok("auto: a NIC, where native XDP handles established flows before the stack"),
        Some("bridge") => Err("auto: a bridge runs XDP in generic mode only, slower than TC"),
        Some("veth") => Err(
            "auto: XDP on a veth takes GSO away from its peer, which slows bulk TCP through it several times",
        ),
        Some(_) => Err("auto: a virtual device (XDP on stacked or virtual devices is generic-mode or unreliable)"),
    }
}

#[path = "plan_decision.rs"]
mod decision;
pub use decision::{decision, explain_decision};

#[path = "plan_hints.rs"]
pub mod hints;
#[path = "plan_neigh.rs"]
pub mod neigh;

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_tc_tests.rs"]
mod tc_tests;

#[cfg(test)]
#[path = "plan_ipv6_tests.rs"]
mod ipv6_tests;

#[cfg(test)]
#[path = "plan_names_tests.rs"]
mod names_tests;
