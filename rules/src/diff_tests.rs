//! Tests of `diff`: the ordered operations reach the new maps, never admit
//! what both files refuse at any step, and respect the maps' room.
use std::{collections::BTreeMap, net::Ipv4Addr};

use forwarder_common::{addr_v4, addr_v4_octets, ListenFlags, ListenerKey, PROTO_TCP};
use ipnet::Ipv4Net;
use proptest::prelude::*;

use super::*;

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

// ---- A small model of the maps: what a state admits. ----

const SOURCES: u8 = 4;
const ROOMY: Room = Room {
    listeners: 1000,
    allow: 1000,
};

fn key(port: u16) -> ListenerKey {
    ListenerKey::v4(addr_v4([192, 168, 1, 55]), 3, port.to_be(), PROTO_TCP)
}

fn value(rule: u32, target: u8, listed: bool) -> ListenerValue {
    let mut v = ListenerValue::new(addr_v4([10, 0, 0, target]), 80u16.to_be(), rule);
    v.flags.set(ListenFlags::ALLOWLIST, listed);
    v
}

fn net(src: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(192, 168, 0, src), len)
        .unwrap()
        .trunc()
}

fn prefix(rule: u32, src: u8, len: u8) -> AllowLpmKey {
    AllowLpmKey::new(rule, net(src, len))
}

fn admits(k: &AllowLpmKey, rule: u32, src: u8) -> bool {
    let n = Ipv4Net::new(
        Ipv4Addr::from(addr_v4_octets(&k.data.addr)),
        (k.prefix_len - 32) as u8,
    )
    .unwrap();
    rule_of(k) == rule && n.contains(&Ipv4Addr::new(192, 168, 0, src))
}

/// The maps as the kernel holds them at one step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Kernel {
    names: BTreeMap<u32, String>,
    listeners: BTreeMap<ListenerKey, ListenerValue>,
    allow: BTreeSet<AllowLpmKey>,
}

impl Kernel {
    fn of(s: MapState) -> Kernel {
        Kernel {
            names: s.ids.iter().map(|(n, i)| (*i, n.clone())).collect(),
            listeners: s.entries.listeners.clone(),
            allow: s.entries.allow.keys().copied().collect(),
        }
    }

    fn apply(&mut self, op: &MapOp) {
        match op {
            MapOp::NameRule { id, name } => {
                self.names.insert(*id, name.clone());
            }
            MapOp::UnnameRule { id } => {
                self.names.remove(id);
            }
            MapOp::AllowInsert(k) => {
                self.allow.insert(*k);
            }
            MapOp::AllowRemove(k) => {
                self.allow.remove(k);
            }
            MapOp::ListenerWrite(k, v) => {
                self.listeners.insert(*k, *v);
            }
            MapOp::ListenerRemove(k) => {
                self.listeners.remove(k);
            }
        }
    }

    /// Every (listener, source, translation) the dataplane would admit.
    fn admitted(&self) -> BTreeSet<(ListenerKey, u8, [u32; 4])> {
        let mut out = BTreeSet::new();
        for (k, v) in &self.listeners {
            for src in 0..SOURCES {
                let ok = !v.flags.contains(ListenFlags::ALLOWLIST)
                    || self.allow.iter().any(|p| admits(p, v.rule_id, src));
                if ok {
                    out.insert((*k, src, v.target_addr));
                }
            }
        }
        out
    }
}

/// `update` from one (ids, entries) pair to another, with room to spare.
fn update_of(
    old: (&BTreeMap<String, u32>, &MapEntries),
    new: (&BTreeMap<String, u32>, &MapEntries),
) -> Update {
    let state = |(ids, entries)| MapState { ids, entries };
    update(state(old), state(new), ROOMY).unwrap()
}

/// A configuration from generated parts: listeners (port -> rule, target,
/// allow-listed) and prefixes (rule, source, length).
fn config(
    listeners: &BTreeMap<u16, (u32, u8, bool)>,
    prefixes: &BTreeSet<(u32, u8, u8)>,
) -> (BTreeMap<String, u32>, MapEntries) {
    let mut e = MapEntries::default();
    for (port, (rule, target, listed)) in listeners {
        e.listeners
            .insert(key(*port), value(*rule, *target, *listed));
    }
    for (rule, src, len) in prefixes {
        e.allow.insert(prefix(*rule, *src, *len), ());
    }
    let ids = e
        .listeners
        .values()
        .map(|v| (format!("r{}", v.rule_id), v.rule_id))
        .collect();
    (ids, e)
}

/// Runs `u` on `old`, checking every step; the final kernel state.
fn run_checked(old: MapState, new: MapState, u: &Update, room: Room) -> Result<Kernel, String> {
    let mut k = Kernel::of(old);
    let allowed: BTreeSet<_> = k
        .admitted()
        .union(&Kernel::of(new).admitted())
        .copied()
        .collect();
    let (mut peak_l, mut peak_a) = (k.listeners.len(), k.allow.len());
    for (i, op) in u.ops.iter().enumerate() {
        k.apply(op);
        peak_l = peak_l.max(k.listeners.len());
        peak_a = peak_a.max(k.allow.len());
        if k.listeners.len() > room.listeners || k.allow.len() > room.allow {
            return Err(format!("step {i} ({op:?}) overfills a map"));
        }
        if let Some(extra) = k.admitted().difference(&allowed).next() {
            return Err(format!(
                "step {i} ({op:?}) admits {extra:?}, which neither file admits"
            ));
        }
    }
    if (peak_l, peak_a) != (u.peak_listeners, u.peak_allow) {
        return Err(format!(
            "peaks {:?} reported, {:?} reached",
            (u.peak_listeners, u.peak_allow),
            (peak_l, peak_a)
        ));
    }
    Ok(k)
}

fn listeners_strategy() -> impl Strategy<Value = BTreeMap<u16, (u32, u8, bool)>> {
    prop::collection::btree_map(1u16..6, (0u32..3, 0u8..2, any::<bool>()), 0..5)
}

fn prefixes_strategy() -> impl Strategy<Value = BTreeSet<(u32, u8, u8)>> {
    prop::collection::btree_set((0u32..3, 0u8..SOURCES, 31u8..=32), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every step admits only what the old or the new file admits, with
    /// that file's translation, and the last step leaves exactly the new
    /// maps; in the usual order and in the removes-first order of a
    /// rollback.
    #[test]
    fn no_step_admits_what_both_files_refuse(
        ol in listeners_strategy(), op in prefixes_strategy(),
        nl in listeners_strategy(), np in prefixes_strategy(),
        tight in any::<bool>(),
        back in any::<bool>(),
    ) {
        let (oi, oe) = config(&ol, &op);
        let (ni, ne) = config(&nl, &np);
        let (old, new) = (MapState { ids: &oi, entries: &oe }, MapState { ids: &ni, entries: &ne });
        // Tight: room for the larger of the two sets only.
        let room = if tight {
            Room {
                listeners: oe.listeners.len().max(ne.listeners.len()),
                allow: oe.allow.len().max(ne.allow.len()),
            }
        } else {
            ROOMY
        };
        let u = if back { rollback(old, new, room) } else { update(old, new, room) }.unwrap();
        prop_assert!(u.removes_first || !back);
        let k = run_checked(old, new, &u, room).map_err(TestCaseError::fail)?;
        prop_assert_eq!(k, Kernel::of(new));
    }
}

#[test]
fn a_changed_allow_list_on_unchanged_listeners_is_the_union_for_a_moment() {
    // Rule 1 on port 22: allow .0 -> allow .1. Inserts first, removes last:
    // nobody either file admits is refused at any step.
    let listeners = BTreeMap::from([(22, (1, 0, true))]);
    let (oi, oe) = config(&listeners, &BTreeSet::from([(1, 0, 32)]));
    let (ni, ne) = config(&listeners, &BTreeSet::from([(1, 1, 32)]));
    let u = update_of((&oi, &oe), (&ni, &ne));
    assert_eq!(
        u.ops,
        vec![
            MapOp::AllowInsert(prefix(1, 1, 32)),
            MapOp::AllowRemove(prefix(1, 0, 32)),
        ]
    );
    assert!(!u.removes_first);
}

#[test]
fn a_listener_that_changes_target_never_admits_the_new_list_to_the_old_target() {
    // Port 22 of rule 1 moves from target .0 to .1 and its list from .0 to
    // .1: the .1 source must not reach the old target, so the new prefix
    // comes after the listener swap and the old one goes before it.
    let (oi, oe) = config(
        &BTreeMap::from([(22, (1, 0, true))]),
        &BTreeSet::from([(1, 0, 32)]),
    );
    let (ni, ne) = config(
        &BTreeMap::from([(22, (1, 1, true))]),
        &BTreeSet::from([(1, 1, 32)]),
    );
    let u = update_of((&oi, &oe), (&ni, &ne));
    assert_eq!(
        u.ops,
        vec![
            MapOp::AllowRemove(prefix(1, 0, 32)),
            MapOp::ListenerWrite(key(22), value(1, 1, true)),
            MapOp::AllowInsert(prefix(1, 1, 32)),
        ]
    );
}

#[test]
fn a_new_rule_is_named_and_listed_before_its_listener_and_a_gone_one_unnamed_last() {
    let (oi, oe) = config(&BTreeMap::from([(22, (1, 0, false))]), &BTreeSet::new());
    let (ni, ne) = config(
        &BTreeMap::from([(80, (2, 0, true))]),
        &BTreeSet::from([(2, 3, 32)]),
    );
    let u = update_of((&oi, &oe), (&ni, &ne));
    assert_eq!(
        u.ops,
        vec![
            MapOp::NameRule {
                id: 2,
                name: "r2".into()
            },
            MapOp::AllowInsert(prefix(2, 3, 32)),
            MapOp::ListenerWrite(key(80), value(2, 0, true)),
            MapOp::ListenerRemove(key(22)),
            MapOp::UnnameRule { id: 1 },
        ]
    );
}

/// The reload of issue 11: 10,000 old prefixes, 10,000 other new ones, a
/// map of 16,384. Old + new does not fit: removes go first and the map
/// never holds more than 10,000.
#[test]
fn old_plus_new_over_the_room_moves_removes_first() {
    let listeners = BTreeMap::from([(22, (1, 0, true))]);
    let mk = |base: u32| -> BTreeSet<AllowLpmKey> {
        (0..10_000u32)
            .map(|i| {
                let a = Ipv4Addr::from(base + i);
                AllowLpmKey::new(1, Ipv4Net::new(a, 32).unwrap())
            })
            .collect()
    };
    let (oi, mut oe) = config(&listeners, &BTreeSet::new());
    let (ni, mut ne) = config(&listeners, &BTreeSet::new());
    oe.allow = mk(0x0a00_0000).into_iter().map(|k| (k, ())).collect();
    ne.allow = mk(0x0b00_0000).into_iter().map(|k| (k, ())).collect();
    let room = Room {
        listeners: 16,
        allow: 16_384,
    };
    let (old, new) = (
        MapState {
            ids: &oi,
            entries: &oe,
        },
        MapState {
            ids: &ni,
            entries: &ne,
        },
    );
    let u = update(old, new, room).unwrap();
    assert!(u.removes_first);
    assert_eq!(u.peak_allow, 10_000);
    assert!(matches!(u.ops[0], MapOp::AllowRemove(_)));
    assert!(matches!(u.ops.last(), Some(MapOp::AllowInsert(_))));
    // And a new set that alone exceeds the map is refused up front.
    let small = Room {
        listeners: 16,
        allow: 9_999,
    };
    assert_eq!(
        update(old, new, small),
        Err(NoRoom {
            what: "allow-list",
            need: 10_000,
            room: 9_999
        })
    );
}

#[test]
fn listeners_over_the_room_are_removed_before_the_new_ones_are_written() {
    let (oi, oe) = config(
        &BTreeMap::from([(1, (1, 0, false)), (2, (1, 0, false))]),
        &BTreeSet::new(),
    );
    let (ni, ne) = config(
        &BTreeMap::from([(3, (1, 0, false)), (4, (1, 0, false))]),
        &BTreeSet::new(),
    );
    let room = Room {
        listeners: 3,
        allow: 10,
    };
    let (old, new) = (
        MapState {
            ids: &oi,
            entries: &oe,
        },
        MapState {
            ids: &ni,
            entries: &ne,
        },
    );
    let u = update(old, new, room).unwrap();
    assert!(u.removes_first);
    assert_eq!(u.peak_listeners, 2);
    run_checked(old, new, &u, room).unwrap();
}
