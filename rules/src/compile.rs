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
    net::{IpAddr, Ipv4Addr},
};

use forwarder_common::{
    AllowKey, ListenFlags, ListenerKey, ListenerValue, SnatMode, MAX_RULES, NAT64_POOL_DEFAULT,
};
use ipnet::IpNet;

use crate::{family::abi_addr, model::*};

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
    Fixed(IpAddr),
    /// Every address of this family the interface has when materialized
    /// (IPv6 link-local ones excepted).
    Interface(Af),
}

impl ListenAddr {
    pub fn af(self) -> Af {
        match self {
            ListenAddr::Fixed(a) => Af::of(a),
            ListenAddr::Interface(af) => af,
        }
    }
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
    pub net: IpNet,
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

/// The NAT64 pool source of `f`'s clients of family `af`: the IPv4
/// address its IPv6 clients' flows to a target without a forwarding route
/// of its own (an IPv4 ClusterIP) get, through the stack by the pool's
/// device (`forwarder_common::NAT64_DEV`). `None` unless NAT64: IPv6
/// clients of an IPv4 target, and the forward listens for IPv6 clients at
/// all (an IPv4 forward's target is IPv4 too, but it has no IPv6 clients,
/// and must not make the daemon create the pool's device).
pub fn nat64_pool(f: &Forward, af: Af) -> Option<Ipv4Addr> {
    (af == Af::V6 && f.translates(af) && f.listen_afs().contains(&Af::V6))
        .then_some(Ipv4Addr::from(NAT64_POOL_DEFAULT))
}

/// The `ListenerValue` fields a forward sets, per listened port, for its
/// clients of family `af`, with its target at `target`.
fn listener_value(f: &Forward, af: Af, target: IpAddr, id: u32, port: u16) -> ListenerValue {
    let (snat_mode, mut snat_addr) = match f.snat_for(af) {
        Snat::Off => (SnatMode::OFF, [0; 4]),
        Snat::Fixed(a) => (SnatMode::FIXED, abi_addr(a)),
        Snat::Masquerade => (SnatMode::MASQUERADE, [0; 4]),
        Snat::Auto => (SnatMode::AUTO, [0; 4]),
    };
    if let Some(pool) = nat64_pool(f, af) {
        // Word 1 of an IPv4 snat address (see `ListenerValue::snat_addr`).
        snat_addr[1] = abi_addr(IpAddr::V4(pool))[0];
    }
    let mut flags = ListenFlags::empty();
    if f.translates(af) {
        flags |= ListenFlags::XLAT;
    }
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
            abi_addr(target),
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
    target_of: impl Fn(&Forward) -> Option<IpAddr>,
) -> Result<Compiled, CompileError> {
    let mut out = Compiled::default();
    for f in &rules.forwards {
        let id = *ids
            .get(&f.name)
            .ok_or_else(|| CompileError::MissingId(f.name.clone()))?;
        let target = target_of(f);
        let addrs: Vec<ListenAddr> = match f.listen {
            Listen::Interface => f
                .listen_afs()
                .iter()
                .map(|af| ListenAddr::Interface(*af))
                .collect(),
            Listen::Addr(a) => vec![ListenAddr::Fixed(a)],
        };
        let listeners = target
            .into_iter()
            .flat_map(|t| addrs.iter().map(move |addr| (t, *addr)))
            .flat_map(|(t, addr)| f.proto.l4().iter().map(move |l4| (t, addr, l4)))
            .flat_map(|(t, addr, l4)| f.ports.iter().map(move |port| (t, addr, l4, port)))
            .map(|(t, addr, l4, port)| ListenerSpec {
                iface: f.iface.clone(),
                addr,
                proto: l4.number(),
                port,
                value: listener_value(f, addr.af(), t, id, port),
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
    /// Its addresses now, of both families.
    pub addrs: Vec<IpAddr>,
}

/// An allow-list LPM trie key: `prefix_len` counts the 32 bits of the rule
/// id plus the CIDR's prefix, so one trie serves every rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowLpmKey {
    pub prefix_len: u32,
    pub data: AllowKey,
}

impl AllowLpmKey {
    pub fn new(rule_id: u32, net: impl Into<IpNet>) -> Self {
        let net: IpNet = net.into();
        let addr = abi_addr(net.trunc().addr());
        let data = match net {
            IpNet::V4(_) => AllowKey::new(rule_id, addr),
            IpNet::V6(_) => AllowKey::v6(rule_id, addr),
        };
        AllowLpmKey {
            prefix_len: 32 + u32::from(net.prefix_len()),
            data,
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
    /// this host (`assigned`: every address, of both families, in the
    /// daemon's network namespace) and returns how many were dropped.
    ///
    /// This is what makes one rules file serve a cluster: a fixed listen
    /// address that lives on another node (its own address, or a
    /// keepalived VIP held elsewhere) installs nothing here, and when the
    /// VIP moves in, the netlink event's reconcile installs it. Interface
    /// addresses are assigned by definition; only fixed ones are affected.
    /// Netfilter DNAT would match any destination; a listener for an
    /// address this node does not hold would only answer misdirected or
    /// stale-ARP traffic on behalf of the node that holds it.
    pub fn retain_assigned(&mut self, assigned: &BTreeSet<IpAddr>) -> usize {
        let before = self.listeners.len();
        self.listeners
            .retain(|k, _| assigned.contains(&crate::family::key_addr(k)));
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
            let addrs: Vec<IpAddr> = match spec.addr {
                ListenAddr::Fixed(a) => vec![a],
                ListenAddr::Interface(af) => state
                    .addrs
                    .iter()
                    .copied()
                    .filter(|a| Af::of(*a) == af && !crate::family::is_link_local(*a))
                    .collect(),
            };
            for a in addrs {
                let key =
                    match a {
                        IpAddr::V4(_) => ListenerKey::v4,
                        IpAddr::V6(_) => ListenerKey::v6,
                    }(abi_addr(a), state.ifindex, spec.port.to_be(), spec.proto);
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
#[path = "compile_tests.rs"]
mod tests;
