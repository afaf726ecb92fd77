//! The changes that turn the maps of one configuration into another's, as
//! an ordered list of operations ([`update`]): the order is this module's
//! code, not a convention the daemon has to remember.
//!
//! # Applying a reload without opening a hole
//!
//! Map updates are not atomic as a set: the dataplane sees every single
//! insert, update and delete as it happens. The rule the order keeps: at
//! every step, a packet that matches a listener is translated and admitted
//! only as the old file or the new file says (the same translation, and a
//! source that file admits), never as neither does. A step may refuse a
//! source for a moment that one of the files admits; it never admits one
//! that both refuse.
//!
//! The allow-list trie is keyed by rule id, so a prefix inserted for rule
//! `r` is seen by every listener of `r` that is in the map at that moment.
//! That decides where each prefix goes:
//!
//! 1. **name new rule ids** (and zero their counters) before any listener
//!    can carry them;
//! 2. **early allow removes**: prefixes the new file drops, for rules whose
//!    new listeners differ from the old ones (a changed listener must not
//!    admit, with its new translation, a source only the old file allowed).
//!    Removing is always safe;
//! 3. **early allow inserts**: prefixes the new file adds, for rules whose
//!    old allow-listed listeners all stay as they are (they admit those
//!    sources in the new file too), so a new listener is never live before
//!    the prefixes it needs;
//! 4. **listener writes**: a new port starts forwarding; a changed one
//!    switches in one atomic value swap per key (existing flows keep their
//!    own tracked translation);
//! 5. **listener removes**: a removed port stops matching;
//! 6. **late allow inserts**: the prefixes step 3 could not add: only now,
//!    with every listener holding its new value, do they admit nothing the
//!    new file refuses;
//! 7. **late allow removes**: the prefixes step 2 left, for rules whose new
//!    listeners are unchanged: the old (wider) list applied a little longer,
//!    to listeners that translate exactly as before;
//! 8. **forget the names of rule ids no longer used**.
//!
//! # Capacity
//!
//! With this order a map holds old + new entries at its fullest. When that
//! does not fit the map ([`Room`]), removes move first (allow removes to
//! step 2, listener removes before step 4): safe by the rule above, at the
//! cost of refusing earlier what the new file refuses anyway; the fullest
//! point is then the larger of old and new. A new set that does not fit on
//! its own is refused before anything is written ([`NoRoom`]).
//!
//! Rule ids are never reused within one reload (see
//! [`assign_ids`](crate::assign_ids)) while a fresh one is left, so no entry
//! of a removed rule is looked up by a new one.

use std::collections::{BTreeMap, BTreeSet};

use forwarder_common::{ListenFlags, ListenerKey, ListenerValue};

use crate::compile::{AllowLpmKey, MapEntries};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff<K, V> {
    /// Keys only in the new map.
    pub inserts: Vec<(K, V)>,
    /// Keys in both whose value changed (new value).
    pub updates: Vec<(K, V)>,
    /// Keys only in the old map.
    pub removes: Vec<K>,
}

impl<K, V> Default for Diff<K, V> {
    fn default() -> Self {
        Diff {
            inserts: Vec::new(),
            updates: Vec::new(),
            removes: Vec::new(),
        }
    }
}

impl<K, V> Diff<K, V> {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.updates.is_empty() && self.removes.is_empty()
    }
    /// Inserts then updates.
    pub fn writes(&self) -> impl Iterator<Item = &(K, V)> {
        self.inserts.iter().chain(&self.updates)
    }
}

/// What changes from `old` to `new`, each list in key order.
pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Diff<K, V> {
    let mut d = Diff::default();
    for (k, v) in new {
        match old.get(k) {
            None => d.inserts.push((k.clone(), v.clone())),
            Some(o) if o != v => d.updates.push((k.clone(), v.clone())),
            Some(_) => {}
        }
    }
    d.removes = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    d
}

/// One change to the kernel maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// Write `name` for rule `id` (`FWD_RULE_NAMES`) and zero its counters:
    /// a rule taking an id starts from nothing.
    NameRule {
        id: u32,
        name: String,
    },
    AllowInsert(AllowLpmKey),
    AllowRemove(AllowLpmKey),
    /// Insert or replace a listener.
    ListenerWrite(ListenerKey, ListenerValue),
    ListenerRemove(ListenerKey),
    /// Clear the name of an id no rule uses any more.
    UnnameRule {
        id: u32,
    },
}

/// What the maps hold (or are to hold): rule ids by name, listeners and
/// allow-list entries.
#[derive(Clone, Copy, Debug)]
pub struct MapState<'a> {
    pub ids: &'a BTreeMap<String, u32>,
    pub entries: &'a MapEntries,
}

/// How many entries each map takes (its `max_entries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    pub listeners: usize,
    pub allow: usize,
}

impl Default for Room {
    /// The sizes compiled into the kernel object.
    fn default() -> Self {
        Room {
            listeners: forwarder_common::MAX_LISTENERS as usize,
            allow: forwarder_common::MAX_ALLOW_PREFIXES as usize,
        }
    }
}

/// The new set does not fit a map on its own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the new rules need {need} {what} entries, the kernel map holds {room}: nothing was \
     changed (a map pinned by an older version keeps its size until `forwarder down`)"
)]
pub struct NoRoom {
    pub what: &'static str,
    pub need: usize,
    pub room: usize,
}

/// The ordered operations from `old` to `new`, and how full each map gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub ops: Vec<MapOp>,
    /// Removes were moved first because old + new would not fit.
    pub removes_first: bool,
    /// The most entries each map holds at any step.
    pub peak_listeners: usize,
    pub peak_allow: usize,
}

/// Listener values by rule id, allow-listed ones only.
fn allow_listed_by_rule(
    l: &BTreeMap<ListenerKey, ListenerValue>,
) -> BTreeMap<u32, Vec<(&ListenerKey, &ListenerValue)>> {
    let mut out: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for (k, v) in l {
        if v.flags.contains(ListenFlags::ALLOWLIST) {
            out.entry(v.rule_id).or_default().push((k, v));
        }
    }
    out
}

/// Whether every listener in `of` is in `other` with the same value.
fn all_unchanged(
    of: Option<&Vec<(&ListenerKey, &ListenerValue)>>,
    other: &BTreeMap<ListenerKey, ListenerValue>,
) -> bool {
    of.is_none_or(|ls| ls.iter().all(|(k, v)| other.get(*k) == Some(*v)))
}

fn rule_of(k: &AllowLpmKey) -> u32 {
    u32::from_be(k.data.rule_id_be)
}

/// The operations that turn the maps of `old` into those of `new`, in the
/// order of this module's documentation, or [`NoRoom`] when `new` does not
/// fit `room` on its own.
pub fn update(old: MapState, new: MapState, room: Room) -> Result<Update, NoRoom> {
    ordered(old, new, room, false)
}

/// The operations back from a half-applied `now` to `old` after a failed
/// write: removes first, so going back never needs more room than the
/// larger of the two (a map that just refused an insert has none to spare).
pub fn rollback(now: MapState, old: MapState, room: Room) -> Result<Update, NoRoom> {
    ordered(now, old, room, true)
}

fn ordered(
    old: MapState,
    new: MapState,
    room: Room,
    force_removes_first: bool,
) -> Result<Update, NoRoom> {
    let (ol, nl) = (&old.entries.listeners, &new.entries.listeners);
    let (oa, na) = (&old.entries.allow, &new.entries.allow);
    if nl.len() > room.listeners {
        return Err(NoRoom {
            what: "listener",
            need: nl.len(),
            room: room.listeners,
        });
    }
    if na.len() > room.allow {
        return Err(NoRoom {
            what: "allow-list",
            need: na.len(),
            room: room.allow,
        });
    }
    let listeners = diff(ol, nl);
    let allow = diff(oa, na);
    let old_listed = allow_listed_by_rule(ol);
    let new_listed = allow_listed_by_rule(nl);
    let early_insert = |k: &AllowLpmKey| all_unchanged(old_listed.get(&rule_of(k)), nl);
    let late_remove = |k: &AllowLpmKey| all_unchanged(new_listed.get(&rule_of(k)), ol);

    let (inserts_early, inserts_late): (Vec<_>, Vec<_>) = allow
        .inserts
        .iter()
        .map(|(k, _)| *k)
        .partition(early_insert);
    let (mut removes_late, mut removes_early): (Vec<_>, Vec<_>) =
        allow.removes.iter().copied().partition(late_remove);
    let both_allow = oa.len() - removes_early.len() + allow.inserts.len();
    let mut removes_first = force_removes_first;
    if both_allow > room.allow || force_removes_first {
        removes_early.append(&mut removes_late);
        removes_first = true;
    }
    let peak_allow = oa
        .len()
        .max(oa.len() - removes_early.len() + allow.inserts.len());
    let listeners_removes_first =
        force_removes_first || ol.len() + listeners.inserts.len() > room.listeners;
    removes_first |= listeners_removes_first;
    let peak_listeners = if listeners_removes_first {
        ol.len().max(nl.len())
    } else {
        ol.len() + listeners.inserts.len()
    };

    let mut ops = Vec::new();
    for (name, &id) in new.ids {
        if old.ids.get(name) != Some(&id) {
            ops.push(MapOp::NameRule {
                id,
                name: name.clone(),
            });
        }
    }
    ops.extend(removes_early.into_iter().map(MapOp::AllowRemove));
    ops.extend(inserts_early.into_iter().map(MapOp::AllowInsert));
    let writes = listeners
        .writes()
        .map(|(k, v)| MapOp::ListenerWrite(*k, *v));
    let removes = listeners.removes.iter().map(|k| MapOp::ListenerRemove(*k));
    if listeners_removes_first {
        ops.extend(removes);
        ops.extend(writes);
    } else {
        ops.extend(writes);
        ops.extend(removes);
    }
    ops.extend(inserts_late.into_iter().map(MapOp::AllowInsert));
    ops.extend(removes_late.into_iter().map(MapOp::AllowRemove));
    let new_ids: BTreeSet<u32> = new.ids.values().copied().collect();
    let gone: BTreeSet<u32> = old
        .ids
        .values()
        .copied()
        .filter(|id| !new_ids.contains(id))
        .collect();
    ops.extend(gone.into_iter().map(|id| MapOp::UnnameRule { id }));
    Ok(Update {
        ops,
        removes_first,
        peak_listeners,
        peak_allow,
    })
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
