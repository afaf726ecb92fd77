//! Where each forward's flows go now: its written address, or what its
//! DNS name resolves to (a fact from `resolve.rs`). Part of the pure plan.
//!
//! The one fact a reader gets wrong: a forward without a usable address
//! is not dropped from the plan; it is paused: it keeps its rule id,
//! counters and allow-list, only its listeners are left out, so its port
//! answers like a closed one and established flows keep their
//! translation. An answer that resolves fine can still pause it, when it
//! is an address no written target may be (loopback, the listen address).
use std::{collections::BTreeMap, net::Ipv4Addr};

use rules::{Forward, Host, RuleSet};

use super::{facts::Facts, plan::Record, resolve::NameFact};
use crate::observe::status::{DaemonState, NameStatus};

/// Where each forward's flows go now, by forward name: the written
/// address, or what its name resolves to; `Err(why)` while it is paused.
pub type Targets = BTreeMap<String, Result<Ipv4Addr, String>>;

/// The address of `f`'s target, unless it is paused.
pub fn target_of(targets: &Targets, f: &Forward) -> Option<Ipv4Addr> {
    targets.get(&f.name).and_then(|t| t.as_ref().ok().copied())
}

/// Each forward's target address now, or why it has none.
pub fn target_addrs(rules: &RuleSet, facts: &Facts) -> Targets {
    rules
        .forwards
        .iter()
        .map(|f| (f.name.clone(), target_addr(f, &facts.names)))
        .collect()
}

/// `f`'s target address, given what the names resolve to now.
pub fn target_addr(f: &Forward, names: &BTreeMap<String, NameFact>) -> Result<Ipv4Addr, String> {
    let name = match &f.target.host {
        Host::Addr(a) => return Ok(*a),
        Host::Name(n) => n,
    };
    let fact = names.get(name);
    match fact.and_then(|n| n.addr) {
        // The checks validation makes on a written address, on the answer.
        Some(a) => match rules::target::unusable_target(f, a) {
            Some(why) => Err(format!(
                "{name} resolves to {why}, which cannot be a target"
            )),
            None => Ok(a),
        },
        None => Err(match fact.and_then(|n| n.error.as_ref()) {
            Some(e) => format!("{name} does not resolve ({e})"),
            None => format!("{name} has not resolved yet"),
        }),
    }
}

/// What `status` shows about a name target.
pub fn name_status(
    f: &Forward,
    names: &BTreeMap<String, NameFact>,
    target: &Result<Ipv4Addr, String>,
) -> Option<NameStatus> {
    let name = f.target.name()?;
    let fact = names.get(name).cloned().unwrap_or_default();
    Some(NameStatus {
        name: name.to_string(),
        state: fact.state().to_string(),
        addr: fact.addr.map(|a| a.to_string()),
        answers: fact.answers.iter().map(Ipv4Addr::to_string).collect(),
        resolved_unix: fact.resolved_unix,
        ttl: fact.ttl,
        next_unix: fact.next_unix,
        error: fact.error.as_ref().map(ToString::to_string),
        paused: target.as_ref().err().cloned(),
        failures: fact.failures,
        changes: fact.changes,
    })
}

/// Where the maps a previous daemon left (`record`, read at start) forward
/// each name target of `rules`: the target address of the listeners of the
/// forward with that name. A restarted daemon forwards there until the
/// name answers (`resolve::NameState::adopt`) instead of pausing what was
/// running, which a DNS server down during an upgrade would otherwise do.
pub fn adopted_addrs(rules: &RuleSet, record: &Record) -> BTreeMap<String, Ipv4Addr> {
    let mut adopted = BTreeMap::new();
    for f in &rules.forwards {
        let (Some(name), Some(id)) = (f.target.name(), record.ids.get(&f.name)) else {
            continue;
        };
        let listening = record.entries.listeners.values().find(|v| v.rule_id == *id);
        if let Some(v) = listening {
            let addr = Ipv4Addr::from(forwarder_common::addr_v4_octets(&v.target_addr));
            adopted.entry(name.to_string()).or_insert(addr);
        }
    }
    adopted
}

/// What the running daemon's status file says each name resolves to now,
/// as facts (for `forwarder diff`, which asks no DNS server): a name is
/// compared at the address in force, or paused where it is paused.
pub fn names_in_force(st: &DaemonState) -> BTreeMap<String, NameFact> {
    st.rules
        .iter()
        .filter_map(|r| r.resolution.as_ref())
        .map(|n| {
            let addr = n.addr.as_deref().and_then(|a| a.parse().ok());
            let fact = NameFact {
                addr,
                last_addr: addr,
                answers: n.answers.iter().filter_map(|a| a.parse().ok()).collect(),
                resolved_unix: n.resolved_unix,
                ttl: n.ttl,
                next_unix: n.next_unix,
                ..Default::default()
            };
            (n.name.clone(), fact)
        })
        .collect()
}
