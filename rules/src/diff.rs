//! The changes that turn one map's contents into another's.
//!
//! # Applying a reload without disturbing live traffic
//!
//! Map updates are not atomic as a set: the dataplane sees every single
//! insert, update and delete as it happens. The daemon therefore applies the
//! diffs of [`MapEntries`](crate::MapEntries) in this order:
//!
//! 1. **allow-list inserts and updates**: a listener that refers to its rule's
//!    allow-list must never be live before the prefixes it needs, or the
//!    sources it should admit would be refused meanwhile.
//! 2. **listener inserts and updates**: a new port starts forwarding; a
//!    changed one switches in one atomic value swap per key (existing flows
//!    keep their own tracked translation and are not affected).
//! 3. **listener removes**: only now does a removed port stop matching. Doing
//!    removes last means a key that moves between rules is never absent, and
//!    a failure midway leaves extra, never missing, forwarding.
//! 4. **allow-list removes**: last, once no listener of the rule can still
//!    look them up; removing earlier would refuse admitted sources while the
//!    old listener is live.
//!
//! During a reload that narrows an allow-list, the old (wider) list applies
//! until step 4; that is the old configuration staying in force a little
//! longer, not a new hole. Rule ids are never reused within one reload (see
//! [`assign_ids`](crate::assign_ids)), so no entry of a removed rule can be
//! looked up by a new one.

use std::collections::BTreeMap;

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
    /// Inserts then updates: the writes of steps 1 and 2 above.
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_changes() {
        let old = BTreeMap::from([(1, 'a'), (2, 'b'), (3, 'c')]);
        let new = BTreeMap::from([(2, 'b'), (3, 'x'), (4, 'd')]);
        let d = diff(&old, &new);
        assert_eq!(d.inserts, vec![(4, 'd')]);
        assert_eq!(d.updates, vec![(3, 'x')]);
        assert_eq!(d.removes, vec![1]);
        assert!(diff(&new, &new).is_empty());
    }

    proptest! {
        #[test]
        fn applying_the_diff_yields_new(old in prop::collection::btree_map(0u8..32, 0u8..4, 0..20),
                                        new in prop::collection::btree_map(0u8..32, 0u8..4, 0..20)) {
            let d = diff(&old, &new);
            let mut m = old.clone();
            for (k, v) in d.writes() { m.insert(*k, *v); }
            for k in &d.removes { m.remove(k); }
            prop_assert_eq!(m, new);
        }
    }
}
