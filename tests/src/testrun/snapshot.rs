//! Every counter and map entry the programs write, read at one moment,
//! and what changed between two such readings: the tests check exact
//! deltas (this counter by one packet of this size, these flow entries
//! added, nothing else), so a stray write anywhere is a failure.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use forwarder::observe::pinned::sum_cpus;
use forwarder_common::{
    iface_counter_index, AutoSnatKey, Counter, FlowEntry, FlowKey, Hook, Reason, RuleCounters,
    MAX_RULES, RULE_DROP_REASONS,
};

use super::host::{Host, SLOTS};

impl Host {
    /// Every counter and map entry the programs write.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let mut iface = BTreeMap::new();
        {
            let m = &self.dp.maps.iface_counters;
            for (name, slot) in SLOTS {
                for hook in Hook::ALL {
                    for reason in Reason::ALL {
                        let v = m.get(&iface_counter_index(slot, hook, reason), 0)?;
                        let c = sum_cpus(v.iter().copied());
                        if c != Counter::default() {
                            iface.insert((name, hook as u32, reason as u32), c);
                        }
                    }
                }
            }
        }
        let mut rules = BTreeMap::new();
        {
            let m = &self.dp.maps.rule_counters;
            // Ids are handed out from 0; a few beyond the rules in use
            // catch a stray id.
            let top = (self.ids.len() as u32 + 4).min(MAX_RULES);
            for id in 0..top {
                let v = m.get(&id, 0)?;
                let c = v.iter().fold(RuleCounters::default(), |a, c| add(&a, c));
                if c != RuleCounters::default() {
                    rules.insert(id, c);
                }
            }
        }
        let flows = self
            .dp
            .maps
            .flows
            .iter()
            .collect::<Result<BTreeMap<FlowKey, FlowEntry>, _>>()?;
        let auto_snat = self
            .dp
            .maps
            .auto_snat
            .iter()
            .collect::<Result<BTreeMap<AutoSnatKey, u64>, _>>()?;
        Ok(Snapshot {
            iface,
            rules,
            flows,
            auto_snat,
        })
    }

    /// Number of entries in the listener map, to check a test's rules
    /// landed as expected.
    pub fn listener_count(&mut self) -> Result<usize> {
        Ok(self.dp.maps.listeners.keys().count())
    }
}

fn add(a: &RuleCounters, b: &RuleCounters) -> RuleCounters {
    let mut drops = [0; RULE_DROP_REASONS as usize];
    for (i, d) in drops.iter_mut().enumerate() {
        *d = a.drops[i] + b.drops[i];
    }
    RuleCounters {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
        new_flows: a.new_flows + b.new_flows,
        snat_flows: a.snat_flows + b.snat_flows,
        stack_flows: a.stack_flows + b.stack_flows,
        mss_clamped: a.mss_clamped + b.mss_clamped,
        drops,
    }
}

fn sub(a: &RuleCounters, b: &RuleCounters) -> RuleCounters {
    let mut drops = [0; RULE_DROP_REASONS as usize];
    for (i, d) in drops.iter_mut().enumerate() {
        *d = a.drops[i].wrapping_sub(b.drops[i]);
    }
    RuleCounters {
        packets: a.packets.wrapping_sub(b.packets),
        bytes: a.bytes.wrapping_sub(b.bytes),
        new_flows: a.new_flows.wrapping_sub(b.new_flows),
        snat_flows: a.snat_flows.wrapping_sub(b.snat_flows),
        stack_flows: a.stack_flows.wrapping_sub(b.stack_flows),
        mss_clamped: a.mss_clamped.wrapping_sub(b.mss_clamped),
        drops,
    }
}

/// Counter identity: (interface name, hook, reason) as numbers.
pub type IfaceCounterKey = (&'static str, u32, u32);

/// Everything the programs write, at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Non-zero interface counters.
    pub iface: BTreeMap<IfaceCounterKey, Counter>,
    /// Non-zero per-rule counters (summed over CPUs).
    pub rules: BTreeMap<u32, RuleCounters>,
    pub flows: BTreeMap<FlowKey, FlowEntry>,
    pub auto_snat: BTreeMap<AutoSnatKey, u64>,
}

/// What changed between two snapshots.
#[derive(Clone, Debug, Default)]
pub struct Delta {
    pub iface: BTreeMap<IfaceCounterKey, Counter>,
    pub rules: BTreeMap<u32, RuleCounters>,
    pub flows_added: BTreeSet<FlowKey>,
    pub flows_removed: BTreeSet<FlowKey>,
    pub flows_changed: BTreeSet<FlowKey>,
    pub auto_snat_changed: BTreeSet<AutoSnatKey>,
}

impl Snapshot {
    pub fn delta(&self, after: &Snapshot) -> Delta {
        let mut d = Delta::default();
        let keys: BTreeSet<_> = self.iface.keys().chain(after.iface.keys()).collect();
        for k in keys {
            let (b, a) = (
                self.iface.get(k).copied().unwrap_or_default(),
                after.iface.get(k).copied().unwrap_or_default(),
            );
            if a != b {
                d.iface.insert(
                    *k,
                    Counter {
                        packets: a.packets.wrapping_sub(b.packets),
                        bytes: a.bytes.wrapping_sub(b.bytes),
                    },
                );
            }
        }
        let ids: BTreeSet<_> = self.rules.keys().chain(after.rules.keys()).collect();
        for id in ids {
            let (b, a) = (
                self.rules.get(id).copied().unwrap_or_default(),
                after.rules.get(id).copied().unwrap_or_default(),
            );
            if a != b {
                d.rules.insert(*id, sub(&a, &b));
            }
        }
        for (k, v) in &after.flows {
            match self.flows.get(k) {
                None => {
                    d.flows_added.insert(*k);
                }
                Some(old) if old != v => {
                    d.flows_changed.insert(*k);
                }
                Some(_) => {}
            }
        }
        for k in self.flows.keys() {
            if !after.flows.contains_key(k) {
                d.flows_removed.insert(*k);
            }
        }
        let keys: BTreeSet<_> = self
            .auto_snat
            .keys()
            .chain(after.auto_snat.keys())
            .collect();
        for k in keys {
            if self.auto_snat.get(k) != after.auto_snat.get(k) {
                d.auto_snat_changed.insert(*k);
            }
        }
        d
    }
}

impl Delta {
    /// The interface counters that moved, for messages.
    pub fn moved(&self) -> Vec<String> {
        shown(&self.iface)
    }
}

/// Interface counters as `vmbr0/tc_ingress/fwd_redirect +1p/+74B`, for
/// messages.
pub fn shown(m: &BTreeMap<IfaceCounterKey, Counter>) -> Vec<String> {
    m.iter()
        .map(|(k, c)| format!("{} +{}p/+{}B", counter_name(k), c.packets, c.bytes))
        .collect()
}

/// The interface counters one frame of `len` bytes moves when counted under
/// `reason` on `iface` at `hook`: that one, by one packet of that size.
/// `reason` `None`: none at all (not one of our interfaces).
pub fn one_counter(
    iface: &'static str,
    hook: Hook,
    reason: Option<Reason>,
    len: usize,
) -> BTreeMap<IfaceCounterKey, Counter> {
    reason
        .map(|r| {
            (
                (iface, hook as u32, r as u32),
                Counter {
                    packets: 1,
                    bytes: len as u64,
                },
            )
        })
        .into_iter()
        .collect()
}

/// Exactly the interface counters `want` moved in `d`, by exactly as much.
pub fn assert_counters(case: &str, d: &Delta, want: &BTreeMap<IfaceCounterKey, Counter>) {
    if d.iface != *want {
        panic!(
            "{case}: interface counters moved {:?}, expected {:?}",
            d.moved(),
            shown(want)
        );
    }
}

/// Hook and reason names for messages.
pub fn counter_name(k: &IfaceCounterKey) -> String {
    format!(
        "{}/{}/{}",
        k.0,
        Hook::ALL[k.1 as usize].name(),
        Reason::ALL[k.2 as usize].name()
    )
}
