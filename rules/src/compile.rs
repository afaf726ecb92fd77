//! A rule set to kernel map entries.
//!
//! Two steps, so the daemon can redo the second alone when interfaces come,
//! go or change addresses:
//!
//! 1. [`compile`]: everything that depends only on the file (rule ids,
//!    per-port listener values, allow-list prefixes).
//! 2. [`materialize`]: bind interface names to ifindexes and, for
//!    `listen = "interface"`, to the interface's current addresses.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use forwarder_common::{
    addr_v4, AllowKey, ListenFlags, ListenerKey, ListenerValue, SnatMode, MAX_RULES,
};
use ipnet::Ipv4Net;

use crate::model::*;

/// Rule ids for `names`, stable across reloads.
///
/// Names in `prev` keep their id. A new name gets the lowest id that `prev`
/// does not use at all, so that an id freed by this very reload is not handed
/// to another rule while the old rule's entries and counters are still being
/// torn down; only when no such id is left are freed ids reused. Ids are
/// below `MAX_RULES` (the per-rule counter array size); a name that finds no
/// id is left out, which [`compile`] reports. Validation caps the number of
/// forwards at `MAX_RULES`, so that does not happen for a loaded file.
pub fn assign_ids<'a>(
    prev: &BTreeMap<String, u32>,
    names: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, u32> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut ids = BTreeMap::new();
    let mut used = BTreeSet::new();
    for name in &names {
        if let Some(&id) = prev.get(*name) {
            if id < MAX_RULES && used.insert(id) {
                ids.insert((*name).to_owned(), id);
            }
        }
    }
    let prev_ids: BTreeSet<u32> = prev.values().copied().collect();
    let mut never_used = (0..MAX_RULES).filter(|id| !prev_ids.contains(id) && !used.contains(id));
    let mut freed = prev_ids
        .iter()
        .copied()
        .filter(|id| *id < MAX_RULES && !used.contains(id));
    for name in names {
        if ids.contains_key(name) {
            continue;
        }
        if let Some(id) = never_used.next().or_else(|| freed.next()) {
            ids.insert(name.to_owned(), id);
        }
    }
    ids
}

/// The listen side of a listener before interfaces are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListenAddr {
    Fixed(Ipv4Addr),
    /// Every IPv4 address the interface has when materialized.
    Interface,
}

/// One listened port of one protocol, and what it translates to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub iface: String,
    pub addr: ListenAddr,
    /// `forwarder_common::PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Host byte order.
    pub port: u16,
    /// Complete except that `snat_addr` is zero for masquerade/auto until
    /// the daemon resolves the egress address.
    pub value: ListenerValue,
}

/// An allow-list prefix of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowSpec {
    pub rule_id: u32,
    pub net: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRule {
    pub id: u32,
    pub name: String,
    pub listeners: Vec<ListenerSpec>,
    pub allow: Vec<AllowSpec>,
    /// The forward as written, for `status` and `explain`.
    pub forward: Forward,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub rules: Vec<CompiledRule>,
}

impl Compiled {
    pub fn rule(&self, id: u32) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("forward \"{0}\" has no rule id (more than {MAX_RULES} forwards?)")]
    MissingId(String),
}

/// The `ListenerValue` fields a forward sets, per listened port, with its
/// target at `target`.
fn listener_value(f: &Forward, target: Ipv4Addr, id: u32, port: u16) -> ListenerValue {
    let (snat_mode, snat_addr) = match f.snat {
        Snat::Off => (SnatMode::OFF, [0; 4]),
        Snat::Fixed(a) => (SnatMode::FIXED, addr_v4(a.octets())),
        Snat::Masquerade => (SnatMode::MASQUERADE, [0; 4]),
        Snat::Auto => (SnatMode::AUTO, [0; 4]),
    };
    let mut flags = ListenFlags::empty();
    if !f.allow.is_empty() {
        flags |= ListenFlags::ALLOWLIST;
    }
    if f.reject == Reject::Rst {
        flags |= ListenFlags::REJECT;
    }
    match f.path {
        PathMode::Auto => {}
        PathMode::Redirect => flags |= ListenFlags::VIA_REDIRECT,
        PathMode::Stack => flags |= ListenFlags::VIA_STACK,
    }
    // "auto" needs the path MTU, which only the daemon knows: it sets the
    // flag and value when it resolves them. A fixed clamp is complete here.
    let mss = match f.mss_clamp {
        MssClamp::Fixed(m) => {
            flags |= ListenFlags::MSS_CLAMP;
            m
        }
        MssClamp::Auto | MssClamp::Off => 0,
    };
    ListenerValue {
        snat_addr,
        snat_mode,
        flags,
        mss,
        ..ListenerValue::new(
            addr_v4(target.octets()),
            f.target.port_for(f.ports, port).to_be(),
            id,
        )
    }
}

/// Everything about `rules` that does not depend on live interfaces. A
/// forward whose target is a DNS name gets no listeners (see
/// [`compile_with`]).
pub fn compile(rules: &RuleSet, ids: &BTreeMap<String, u32>) -> Result<Compiled, CompileError> {
    compile_with(rules, ids, |f| f.target.fixed_addr())
}

/// [`compile`] with the target address of each forward from `target_of`:
/// the written address, or what the daemon resolved a name to. A forward
/// for which it gives `None` (a name that does not resolve) keeps its rule
/// id, allow-list and counters but gets no listeners: paused, its port
/// answers like a closed one until the name resolves again.
pub fn compile_with(
    rules: &RuleSet,
    ids: &BTreeMap<String, u32>,
    target_of: impl Fn(&Forward) -> Option<Ipv4Addr>,
) -> Result<Compiled, CompileError> {
    let mut out = Compiled::default();
    for f in &rules.forwards {
        let id = *ids
            .get(&f.name)
            .ok_or_else(|| CompileError::MissingId(f.name.clone()))?;
        let target = target_of(f);
        let addr = match f.listen {
            Listen::Interface => ListenAddr::Interface,
            Listen::Addr(a) => ListenAddr::Fixed(a),
        };
        let listeners = target
            .into_iter()
            .flat_map(|t| {
                f.proto.l4().iter().flat_map(move |l4| {
                    f.ports.iter().map(move |port| ListenerSpec {
                        iface: f.iface.clone(),
                        addr,
                        proto: l4.number(),
                        port,
                        value: listener_value(f, t, id, port),
                    })
                })
            })
            .collect();
        let allow = f
            .allow
            .iter()
            .map(|net| AllowSpec {
                rule_id: id,
                net: net.trunc(),
            })
            .collect();
        out.rules.push(CompiledRule {
            id,
            name: f.name.clone(),
            listeners,
            allow,
            forward: f.clone(),
        });
    }
    Ok(out)
}

/// A live interface as the daemon sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfaceState {
    pub ifindex: u32,
    /// Its IPv4 addresses now.
    pub addrs: Vec<Ipv4Addr>,
}

/// An allow-list LPM trie key: `prefix_len` counts the 32 bits of the rule
/// id plus the CIDR's prefix, so one trie serves every rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowLpmKey {
    pub prefix_len: u32,
    pub data: AllowKey,
}

impl AllowLpmKey {
    pub fn new(rule_id: u32, net: Ipv4Net) -> Self {
        AllowLpmKey {
            prefix_len: 32 + u32::from(net.prefix_len()),
            data: AllowKey::new(rule_id, addr_v4(net.trunc().addr().octets())),
        }
    }
}

/// The exact contents the kernel maps should have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    pub listeners: BTreeMap<ListenerKey, ListenerValue>,
    pub allow: BTreeMap<AllowLpmKey, ()>,
    /// Interfaces named by forwards that do not exist now (sorted, once
    /// each): their forwards wait until the interface appears.
    pub missing_ifaces: Vec<String>,
}

impl MapEntries {
    /// Keeps only listeners whose address is assigned to an interface of
    /// this host (`assigned`: every IPv4 address in the daemon's network
    /// namespace) and returns how many were dropped.
    ///
    /// This is what makes one rules file serve a cluster: a fixed listen
    /// address that lives on another node (its own address, or a
    /// keepalived VIP held elsewhere) installs nothing here, and when the
    /// VIP moves in, the netlink event's reconcile installs it. Interface
    /// addresses are assigned by definition; only fixed ones are affected.
    /// Netfilter DNAT would match any destination; a listener for an
    /// address this node does not hold would only answer misdirected or
    /// stale-ARP traffic on behalf of the node that holds it.
    pub fn retain_assigned(&mut self, assigned: &BTreeSet<Ipv4Addr>) -> usize {
        let before = self.listeners.len();
        self.listeners.retain(|k, _| {
            assigned.contains(&Ipv4Addr::from(forwarder_common::addr_v4_octets(&k.addr)))
        });
        before - self.listeners.len()
    }
}

/// Binds compiled rules to the interfaces as they are now.
///
/// Validation guarantees no two forwards produce the same listener key; if a
/// hand-built rule set does, the earlier forward keeps the key.
pub fn materialize(compiled: &Compiled, iface: impl Fn(&str) -> Option<IfaceState>) -> MapEntries {
    let mut out = MapEntries::default();
    let mut cache: BTreeMap<&str, Option<IfaceState>> = BTreeMap::new();
    let mut missing = BTreeSet::new();
    for rule in &compiled.rules {
        for spec in &rule.listeners {
            let state = cache
                .entry(spec.iface.as_str())
                .or_insert_with(|| iface(&spec.iface));
            let Some(state) = state else {
                missing.insert(spec.iface.clone());
                continue;
            };
            let addrs: &[Ipv4Addr] = match &spec.addr {
                ListenAddr::Fixed(a) => std::slice::from_ref(a),
                ListenAddr::Interface => &state.addrs,
            };
            for a in addrs {
                let key = ListenerKey::v4(
                    addr_v4(a.octets()),
                    state.ifindex,
                    spec.port.to_be(),
                    spec.proto,
                );
                out.listeners.entry(key).or_insert(spec.value);
            }
        }
        for a in &rule.allow {
            out.allow.insert(AllowLpmKey::new(a.rule_id, a.net), ());
        }
    }
    out.missing_ifaces = missing.into_iter().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use forwarder_common::{addr_v4_octets, PROTO_TCP, PROTO_UDP};

    fn ids(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    #[test]
    fn ids_are_stable_and_fresh_ids_avoid_just_freed_ones() {
        let first = assign_ids(&BTreeMap::new(), ["a", "b", "c"]);
        assert_eq!(first, ids(&[("a", 0), ("b", 1), ("c", 2)]));
        // "b" removed, "d" added: "d" must not take b's id 1 in the same reload.
        let second = assign_ids(&first, ["c", "a", "d"]);
        assert_eq!(second, ids(&[("a", 0), ("c", 2), ("d", 3)]));
        // Next reload: 1 is free and lowest.
        let third = assign_ids(&second, ["a", "c", "d", "e"]);
        assert_eq!(third["e"], 1);
    }

    #[test]
    fn ids_reuse_freed_ones_when_nothing_else_is_left() {
        let prev: BTreeMap<String, u32> = (0..MAX_RULES).map(|i| (format!("r{i}"), i)).collect();
        let mut names: Vec<String> = (1..MAX_RULES).map(|i| format!("r{i}")).collect();
        names.push("new".into());
        let out = assign_ids(&prev, names.iter().map(String::as_str));
        assert_eq!(out["new"], 0);
        assert_eq!(out.len(), MAX_RULES as usize);
    }

    #[test]
    fn ids_out_of_range_are_replaced() {
        let out = assign_ids(&ids(&[("a", MAX_RULES + 5)]), ["a"]);
        assert_eq!(out["a"], 0);
    }

    fn fwd(name: &str, ports: (u16, u16), target: &str) -> Forward {
        let (addr, tp) = match target.split_once(':') {
            Some((a, p)) => {
                let (s, e) = p.split_once('-').map_or((p, p), |x| x);
                (
                    a.parse().unwrap(),
                    Some(PortRange::new(s.parse().unwrap(), e.parse().unwrap()).unwrap()),
                )
            }
            None => (target.parse().unwrap(), None),
        };
        Forward::new(
            name,
            "eth0",
            PortRange::new(ports.0, ports.1).unwrap(),
            Target::ip(addr, tp),
        )
    }

    #[test]
    fn compile_fills_listener_values() {
        let mut f = fwd("web", (80, 80), "192.168.100.80");
        f.snat = Snat::Fixed("192.168.100.1".parse().unwrap());
        f.allow = vec!["100.101.92.95/32".parse().unwrap()];
        f.mss_clamp = MssClamp::Fixed(1240);
        f.proto = Proto::Both;
        let rs = RuleSet {
            forwards: vec![f],
            ..Default::default()
        };
        let c = compile(&rs, &ids(&[("web", 7)])).unwrap();
        let r = &c.rules[0];
        assert_eq!(r.id, 7);
        assert_eq!(r.listeners.len(), 2);
        assert_eq!(r.listeners[0].proto, PROTO_TCP);
        assert_eq!(r.listeners[1].proto, PROTO_UDP);
        let v = r.listeners[0].value;
        assert_eq!(addr_v4_octets(&v.target_addr), [192, 168, 100, 80]);
        assert_eq!(addr_v4_octets(&v.snat_addr), [192, 168, 100, 1]);
        assert_eq!(u16::from_be(v.target_port), 80);
        assert_eq!(v.snat_mode, SnatMode::FIXED);
        assert_eq!(
            v.flags,
            ListenFlags::ALLOWLIST | ListenFlags::REJECT | ListenFlags::MSS_CLAMP
        );
        assert_eq!(v.mss, 1240);
        assert_eq!(v.rule_id, 7);
        assert_eq!(
            r.allow,
            vec![AllowSpec {
                rule_id: 7,
                net: "100.101.92.95/32".parse().unwrap()
            }]
        );
    }

    #[test]
    fn compile_maps_ranges() {
        let rs = RuleSet {
            forwards: vec![
                fwd("same", (30000, 30002), "10.0.0.5"),
                fwd("shift", (8000, 8002), "10.0.0.6:9000-9002"),
                fwd("many", (7000, 7002), "10.0.0.7:80"),
            ],
            ..Default::default()
        };
        let c = compile(
            &rs,
            &assign_ids(&BTreeMap::new(), ["same", "shift", "many"]),
        )
        .unwrap();
        let ports = |i: usize| {
            c.rules[i]
                .listeners
                .iter()
                .map(|l| (l.port, u16::from_be(l.value.target_port)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ports(0),
            vec![(30000, 30000), (30001, 30001), (30002, 30002)]
        );
        assert_eq!(ports(1), vec![(8000, 9000), (8001, 9001), (8002, 9002)]);
        assert_eq!(ports(2), vec![(7000, 80), (7001, 80), (7002, 80)]);
        assert_eq!(c.rules[0].listeners[0].value.snat_mode, SnatMode::AUTO);
        assert_eq!(c.rules[0].listeners[0].value.flags, ListenFlags::REJECT);
    }

    #[test]
    fn compile_reports_missing_ids() {
        let rs = RuleSet {
            forwards: vec![fwd("a", (1, 1), "10.0.0.1")],
            ..Default::default()
        };
        assert_eq!(
            compile(&rs, &BTreeMap::new()),
            Err(CompileError::MissingId("a".into()))
        );
    }

    #[test]
    fn materialize_expands_interfaces_and_reports_missing() {
        let mut fixed = fwd("fixed", (80, 81), "10.0.0.1");
        fixed.listen = Listen::Addr("192.168.1.55".parse().unwrap());
        let mut other = fwd("other", (22, 22), "10.0.0.2");
        other.iface = "wg0".into();
        other.allow = vec!["10.1.2.0/24".parse().unwrap()];
        let iface = fwd("iface", (53, 53), "10.0.0.3");
        let rs = RuleSet {
            forwards: vec![fixed, other, iface],
            ..Default::default()
        };
        let c = compile(
            &rs,
            &assign_ids(&BTreeMap::new(), ["fixed", "other", "iface"]),
        )
        .unwrap();
        let m = materialize(&c, |name| {
            (name == "eth0").then(|| IfaceState {
                ifindex: 4,
                addrs: vec![
                    "192.168.1.55".parse().unwrap(),
                    "192.168.1.56".parse().unwrap(),
                ],
            })
        });
        assert_eq!(m.missing_ifaces, vec!["wg0".to_string()]);
        // fixed: 2 ports x 1 addr; iface: 1 port x 2 addrs.
        assert_eq!(m.listeners.len(), 4);
        let k = ListenerKey::v4(addr_v4([192, 168, 1, 56]), 4, 53u16.to_be(), PROTO_TCP);
        assert_eq!(m.listeners[&k].rule_id, 2);
        // Allow entries do not depend on the interface being there.
        let key = AllowLpmKey::new(1, "10.1.2.0/24".parse().unwrap());
        assert_eq!(key.prefix_len, 56);
        assert_eq!(key.data.rule_id_be, 1u32.to_be());
        assert!(m.allow.contains_key(&key));
    }

    #[test]
    fn listeners_need_their_address_assigned_on_this_host() {
        let mut vip = fwd("vip", (80, 80), "10.0.0.1");
        vip.listen = Listen::Addr("192.168.1.100".parse().unwrap());
        let rs = RuleSet {
            forwards: vec![vip, fwd("iface", (53, 53), "10.0.0.3")],
            ..Default::default()
        };
        let c = compile(&rs, &assign_ids(&BTreeMap::new(), ["vip", "iface"])).unwrap();
        let own: Ipv4Addr = "192.168.1.55".parse().unwrap();
        let vip_addr: Ipv4Addr = "192.168.1.100".parse().unwrap();
        let eth0 = |addrs: Vec<Ipv4Addr>| {
            move |name: &str| {
                (name == "eth0").then(|| IfaceState {
                    ifindex: 4,
                    addrs: addrs.clone(),
                })
            }
        };
        // The VIP is held by another node: only the interface listener.
        let mut m = materialize(&c, eth0(vec![own]));
        assert_eq!(m.retain_assigned(&BTreeSet::from([own])), 1);
        assert_eq!(m.listeners.len(), 1);
        assert!(m.listeners.values().all(|v| v.rule_id == 1));
        // The VIP moved in (on eth0, or on any other interface: lo, a dummy).
        for assigned in [vec![own, vip_addr], vec![own]] {
            let mut m = materialize(&c, eth0(assigned));
            assert_eq!(m.retain_assigned(&BTreeSet::from([own, vip_addr])), 0);
            assert!(m.listeners.values().any(|v| v.rule_id == 0));
        }
    }
}
