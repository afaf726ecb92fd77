//! What a plan changes against what runs, in the words an operator reads
//! before and after a reload: forwards added, changed and removed (and
//! how), listener and allow-list entries, and the live flows that keep the
//! translation they were created with. `forwarder diff` prints it before a
//! file is applied, the daemon records it with each load and `forwarder
//! reload` prints it after; both come from this one function over the same
//! inputs, so they say the same.
//!
//! The one fact a reader gets wrong: a changed forward does not change its
//! live flows. Each flow carries its own translation (and was admitted by
//! the allow-list of its time); it keeps both until it ends, as netfilter
//! conntrack does, unless `forwarder conntrack flush --rule NAME` ends it.
//! So the flows of changed and removed forwards are counted here, not only
//! the map entries.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::plan::{Plan, Record};
use crate::observe::status::RuleStatus;

/// Entries of one map: how many are added, rewritten and removed, and how
/// many it holds before and after.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryCounts {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub before: usize,
    pub after: usize,
}

impl EntryCounts {
    fn is_empty(&self) -> bool {
        self.added + self.changed + self.removed == 0
    }

    fn render(&self) -> String {
        format!(
            "+{} ~{} -{} ({} -> {})",
            self.added, self.changed, self.removed, self.before, self.after
        )
    }
}

/// A forward whose definition or map entries change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardChange {
    pub name: String,
    /// What changes, e.g. `port 80 -> 8080`, `allow-list +1 -2`.
    pub what: Vec<String>,
}

/// The difference between what runs and what a plan installs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<ForwardChange>,
    pub removed: Vec<String>,
    pub listener_entries: EntryCounts,
    pub allow_entries: EntryCounts,
    /// Live flows of changed and removed forwards, by forward: they keep
    /// their translation (and their admission) until they end.
    pub flows_keeping_old_translation: BTreeMap<String, u64>,
}

impl Changes {
    /// Nothing in the kernel or in what `status` shows would change.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.listener_entries.is_empty()
            && self.allow_entries.is_empty()
    }

    /// Names of the forwards whose live flows are counted: changed and
    /// removed ones.
    pub fn old_forwards(&self) -> impl Iterator<Item = &str> {
        self.changed
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.removed.iter().map(String::as_str))
    }

    /// Lines for the terminal, each ending in a newline.
    pub fn render(&self) -> String {
        if self.is_empty() {
            return "no change: the file matches what runs\n".into();
        }
        let mut out = String::new();
        for name in &self.added {
            out += &format!("+ forward {name}\n");
        }
        for c in &self.changed {
            out += &format!("~ forward {}: {}\n", c.name, c.what.join("; "));
        }
        for name in &self.removed {
            out += &format!("- forward {name}\n");
        }
        out += &format!(
            "listener entries {}, allow-list entries {}\n",
            self.listener_entries.render(),
            self.allow_entries.render()
        );
        let total: u64 = self.flows_keeping_old_translation.values().sum();
        if total > 0 {
            let per: Vec<String> = self
                .flows_keeping_old_translation
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            out += &format!(
                "{total} live flow{} keep{} the translation and admission of their time until \
                 they end ({}); `forwarder conntrack flush --rule NAME` ends them\n",
                if total == 1 { "" } else { "s" },
                if total == 1 { "s" } else { "" },
                per.join(", ")
            );
        }
        out
    }
}

/// `a -> b` for each shown field that differs between two versions of a
/// forward.
fn field_changes(old: &RuleStatus, new: &RuleStatus) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |label: &str, a: &str, b: &str| {
        if a != b {
            out.push(format!("{label} {a} -> {b}"));
        }
    };
    field("in", &old.iface, &new.iface);
    field("listen", &old.listen, &new.listen);
    field("proto", &old.proto, &new.proto);
    field("port", &old.ports, &new.ports);
    field("to", &old.target, &new.target);
    field("snat", &old.snat, &new.snat);
    let mss = |m: Option<u16>| m.map_or("off".to_string(), |m| m.to_string());
    field("mss clamp", &mss(old.mss), &mss(new.mss));
    out
}

/// What `plan` changes against `record` (what the maps hold). `running` is
/// how the daemon described the forwards in force (the status file's
/// rules; empty when unknown), `flows` the live flows by rule id.
pub fn between(
    record: &Record,
    running: &[RuleStatus],
    plan: &Plan,
    flows: &BTreeMap<u32, u64>,
) -> Changes {
    let old_names: BTreeSet<&String> = record.ids.keys().collect();
    let new_names: BTreeSet<&String> = plan.ids.keys().collect();
    let listeners = rules::diff(&record.entries.listeners, &plan.entries.listeners);
    let allow = rules::diff(&record.entries.allow, &plan.entries.allow);

    let mut c = Changes {
        added: new_names
            .difference(&old_names)
            .map(|n| n.to_string())
            .collect(),
        removed: old_names
            .difference(&new_names)
            .map(|n| n.to_string())
            .collect(),
        listener_entries: EntryCounts {
            added: listeners.inserts.len(),
            changed: listeners.updates.len(),
            removed: listeners.removes.len(),
            before: record.entries.listeners.len(),
            after: plan.entries.listeners.len(),
        },
        allow_entries: EntryCounts {
            added: allow.inserts.len(),
            changed: 0,
            removed: allow.removes.len(),
            before: record.entries.allow.len(),
            after: plan.entries.allow.len(),
        },
        ..Default::default()
    };
    for name in old_names.intersection(&new_names) {
        let (old_id, new_id) = (record.ids[*name], plan.ids[*name]);
        let mut what = Vec::new();
        let old_status = running.iter().find(|r| &r.name == *name);
        let new_status = plan.rules.iter().find(|r| &r.name == *name);
        if let (Some(o), Some(n)) = (old_status, new_status) {
            what.extend(field_changes(o, n));
        }
        let of_rule = |id: u32,
                       m: &BTreeMap<
            forwarder_common::ListenerKey,
            forwarder_common::ListenerValue,
        >| {
            m.iter()
                .filter(|(_, v)| v.rule_id == id)
                .map(|(k, v)| (*k, *v))
                .collect::<BTreeMap<_, _>>()
        };
        let l = rules::diff(
            &of_rule(old_id, &record.entries.listeners),
            &of_rule(new_id, &plan.entries.listeners),
        );
        if !l.is_empty() && what.is_empty() {
            // Nothing the status line shows changed: a setting it does not
            // show (path, reject, the allow-list flag) or an interface
            // address.
            what.push(format!(
                "listener entries +{} ~{} -{}",
                l.inserts.len(),
                l.updates.len(),
                l.removes.len()
            ));
        }
        let a_of = |id: u32, m: &BTreeMap<rules::AllowLpmKey, ()>| {
            m.keys()
                .filter(|k| u32::from_be(k.data.rule_id_be) == id)
                .map(|k| (*k, ()))
                .collect::<BTreeMap<_, _>>()
        };
        let a = rules::diff(
            &a_of(old_id, &record.entries.allow),
            &a_of(new_id, &plan.entries.allow),
        );
        if !a.is_empty() {
            what.push(format!(
                "allow-list +{} -{}",
                a.inserts.len(),
                a.removes.len()
            ));
        }
        if !what.is_empty() {
            c.changed.push(ForwardChange {
                name: name.to_string(),
                what,
            });
        }
    }
    let names_by_id: BTreeMap<u32, &String> = record.ids.iter().map(|(n, i)| (*i, n)).collect();
    let old: BTreeSet<String> = c.old_forwards().map(str::to_string).collect();
    for (id, n) in flows {
        if let Some(name) = names_by_id.get(id).filter(|n| old.contains(n.as_str())) {
            *c.flows_keeping_old_translation
                .entry(name.to_string())
                .or_default() += n;
        }
    }
    c
}

/// Live flows by rule id, from the flow table's entries (the original
/// direction of each flow counts once).
pub fn flows_per_rule<'a>(
    entries: impl IntoIterator<Item = &'a forwarder_common::FlowEntry>,
) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for e in entries {
        if !e.flags.contains(forwarder_common::FlowFlags::REPLY) {
            *out.entry(e.rule_id).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
#[path = "changes_tests.rs"]
mod tests;
