//! The conntrack sweeper: reclaims the memory of flows that are over.
//!
//! The fact a reader gets wrong: the sweeper decides nothing the dataplane
//! depends on. The kernel keeps each flow's state and treats an entry past
//! its timeout as absent (and replaces or evicts it) by itself, with the
//! same definitions (`forwarder_common::conntrack`), so a dead daemon costs
//! only memory held a little longer. The sweeper removes such entries before
//! a packet or a full table gets to them, and removes an entry only if it
//! is unchanged since the table was read: a flow refreshed between the read
//! and the delete (a dump of a million flows takes a while) stays.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::Result;
use aya::maps::{HashMap, MapData};
use forwarder_common::{
    conntrack::{self as ct, CtState, CtTimeouts},
    AutoSnatKey, FlowEntry, FlowFlags, FlowKey, AUTO_SNAT_TTL_NS, PROTO_ICMP, PROTO_TCP,
};

pub use rules::Timeouts;

/// The state a flow is in, for display (`conntrack list`).
pub fn state_name(proto: u8, orig: &FlowEntry) -> &'static str {
    match (CtState::from_raw(orig.ct.state), proto) {
        // Inserted from userspace (benchmarks, tests): by protocol.
        (CtState::Untracked, PROTO_TCP) => "UNTRACKED_TCP",
        (CtState::Untracked, PROTO_ICMP) => "ICMP",
        (CtState::Untracked, _) => "UNTRACKED_UDP",
        (s, _) => s.name(),
    }
}

/// Whether a flow is over at `now_ns` (CLOCK_MONOTONIC, the clock of
/// bpf_ktime_get_coarse_ns): the kernel's own test, idle time counted from
/// the last packet in either direction.
pub fn expired(
    t: &CtTimeouts,
    proto: u8,
    orig: &FlowEntry,
    reply: Option<&FlowEntry>,
    now_ns: u64,
) -> bool {
    let last = orig.last_seen_ns.max(reply.map_or(0, |r| r.last_seen_ns));
    ct::expired(t, proto, CtState::from_raw(orig.ct.state), last, now_ns)
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a sweep (one step, or a whole pass) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Original-direction entries read (one per flow).
    pub flows: usize,
    pub expired: usize,
    pub orphans: usize,
    /// Flows found over that had seen a packet by the time they were
    /// about to be deleted: left alone.
    pub refreshed: usize,
}

impl SweepStats {
    fn add(&mut self, o: SweepStats) {
        self.flows += o.flows;
        self.expired += o.expired;
        self.orphans += o.orphans;
        self.refreshed += o.refreshed;
    }
}

/// Entries one step reads (a flow has two). The daemon takes one step per
/// `TICK`, so the sweeper's CPU is bounded by the step, whatever the
/// table's size: a table of up to this many entries is walked whole at
/// every tick, a million flows in about two minutes. That pace is enough
/// because the kernel itself treats an expired flow as absent and evicts
/// it when the table is full (issue 11): the sweeper only hands memory
/// back earlier.
pub const STEP_ENTRIES: usize = forwarder_common::SWEEP_STEP_ENTRIES;
/// How often the daemon takes a step.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the walk of the table stands between steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sweeper {
    /// The kernel's opaque batch cursor (a bucket index); `None`: the next
    /// step starts a pass from the beginning.
    cursor: Option<u64>,
    /// What the pass under way did so far.
    pass: SweepStats,
}

impl Sweeper {
    /// One bounded step of the walk. Returns the totals of the pass when
    /// this step finished one.
    pub fn step(
        &mut self,
        flows: &impl FlowTable,
        t: &Timeouts,
        now_ns: u64,
    ) -> Result<Option<SweepStats>> {
        let (chunk, next) = flows.read(self.cursor, STEP_ENTRIES)?;
        let stats = sweep_entries(flows, &t.to_ct(), &chunk, now_ns)?;
        self.pass.add(stats);
        self.cursor = next;
        if next.is_some() {
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.pass)))
    }
}

/// Entries read in one step, and where the next step continues (`None`:
/// the table ended).
pub type Chunk = (Vec<(FlowKey, FlowEntry)>, Option<u64>);

/// The flow table as the sweeper uses it (a trait so the unit tests can
/// stand in a table that changes between the read and the delete).
pub trait FlowTable {
    /// Up to `max` entries from `cursor` on (`None`: the start), and the
    /// cursor to continue from (`None`: the table ended).
    fn read(&self, cursor: Option<u64>, max: usize) -> Result<Chunk>;
    fn get(&self, key: &FlowKey) -> Result<Option<FlowEntry>>;
    fn delete(&self, keys: &[FlowKey]) -> Result<usize>;
}

impl FlowTable for MapData {
    fn read(&self, cursor: Option<u64>, max: usize) -> Result<Chunk> {
        crate::dataplane::batch::read_from(self, cursor, max)
    }

    fn get(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
        lookup(self, key)
    }

    fn delete(&self, keys: &[FlowKey]) -> Result<usize> {
        crate::dataplane::batch::delete(self, keys)
    }
}

/// BPF_MAP_LOOKUP_ELEM on a map aya only lends us as `&MapData` (its
/// `HashMap` wants to own or mutably borrow it).
fn lookup(map: &MapData, key: &FlowKey) -> Result<Option<FlowEntry>> {
    /// The `map elem` member of `union bpf_attr`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let mut value = FlowEntry::default();
    let mut attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: key as *const FlowKey as u64,
        value: &mut value as *mut FlowEntry as u64,
        flags: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix; key and value point at
    // buffers of the map's key and value size that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &mut attr as *mut ElemAttr,
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if rc == 0 {
        return Ok(Some(value));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(anyhow::Error::new(e).context("BPF_MAP_LOOKUP_ELEM on the flow table"))
    }
}

/// The entry has not seen a packet since `then` was read.
fn unchanged(then: &FlowEntry, now: &FlowEntry) -> bool {
    then.last_seen_ns == now.last_seen_ns && then.packets == now.packets && then.ct == now.ct
}

/// A whole pass over the table at once (tests, benchmarks; the daemon
/// walks it in `Sweeper` steps).
pub fn sweep(flows: &impl FlowTable, t: &Timeouts, now_ns: u64) -> Result<SweepStats> {
    let mut s = Sweeper::default();
    loop {
        if let Some(pass) = s.step(flows, t, now_ns)? {
            return Ok(pass);
        }
    }
}

/// Removes expired flows (both directions) and orphaned entries (one
/// direction whose partner is gone, e.g. after a racing insert) among
/// `chunk`, a part of the table read in one batch. The other direction of
/// a flow is looked up only when its own direction already shows it over,
/// so a step over live flows costs the batch read alone. Each doomed entry
/// is read again right before it is deleted.
fn sweep_entries(
    flows: &impl FlowTable,
    t: &CtTimeouts,
    chunk: &[(FlowKey, FlowEntry)],
    now_ns: u64,
) -> Result<SweepStats> {
    let mut stats = SweepStats::default();
    // Groups of keys that go together (a flow's two entries), with what
    // they held when read.
    let mut doomed: Vec<Vec<(FlowKey, FlowEntry)>> = Vec::new();
    // A reply entry nobody points at: its original was replaced by a
    // racing insert. Reclaimed once idle past the shortest timeout.
    let orphan_idle = u64::from(t.secs(PROTO_TCP, CtState::Close)) * 1_000_000_000;
    for (k, e) in chunk {
        let peer = FlowKey::peer_of(e, k.proto, k.family);
        if e.flags.contains(FlowFlags::REPLY) {
            if now_ns.saturating_sub(e.last_seen_ns) <= orphan_idle {
                continue;
            }
            let owned = flows.get(&peer)?.is_some_and(|o| {
                !o.flags.contains(FlowFlags::REPLY)
                    && FlowKey::peer_of(&o, peer.proto, peer.family) == *k
            });
            if !owned {
                doomed.push(vec![(*k, *e)]);
            }
            continue;
        }
        stats.flows += 1;
        // Not over by its own direction's last packet: not over at all.
        if !expired(t, k.proto, e, None, now_ns) {
            continue;
        }
        let reply = flows.get(&peer)?;
        if expired(t, k.proto, e, reply.as_ref(), now_ns) {
            let mut group = vec![(*k, *e)];
            group.extend(reply.map(|r| (peer, r)));
            doomed.push(group);
        }
    }
    for group in doomed {
        let mut fresh = false;
        let mut present = false;
        for (k, then) in &group {
            if let Some(now) = flows.get(k)? {
                present = true;
                fresh |= !unchanged(then, &now);
            }
        }
        if !present {
            // Gone already (with its partner, earlier in this step).
            continue;
        }
        if fresh {
            stats.refreshed += 1;
            continue;
        }
        let keys: Vec<FlowKey> = group.iter().map(|(k, _)| *k).collect();
        flows.delete(&keys)?;
        if group.len() == 1 && group[0].1.flags.contains(FlowFlags::REPLY) {
            stats.orphans += 1;
        } else {
            stats.expired += 1;
        }
    }
    Ok(stats)
}

/// Forgets `snat = "auto"` learnings past their TTL (the kernel already
/// ignores them; this only frees the entries).
pub fn sweep_auto_snat<T: std::borrow::BorrowMut<MapData>>(
    learned: &mut HashMap<T, AutoSnatKey, u64>,
    now_ns: u64,
) {
    let old: Vec<AutoSnatKey> = learned
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(_, at)| now_ns.saturating_sub(*at) >= AUTO_SNAT_TTL_NS)
        .map(|(k, _)| k)
        .collect();
    for k in old {
        let _ = learned.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::HashMap as StdHashMap};

    use forwarder_common::{addr_v4, AF_INET, PROTO_UDP};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn entry(state: CtState, last_s: u64, packets: u64) -> FlowEntry {
        FlowEntry {
            last_seen_ns: last_s * S,
            packets,
            ct: forwarder_common::FlowTrack {
                state: state as u8,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn states_pick_their_timeouts() {
        let t = CtTimeouts::default();
        for (state, secs) in [
            (CtState::SynSent, 120),
            (CtState::SynRecv, 60),
            (CtState::FinWait, 120),
            (CtState::CloseWait, 60),
            (CtState::LastAck, 30),
            (CtState::TimeWait, 120),
            (CtState::Close, 10),
        ] {
            let e = entry(state, 0, 1);
            assert!(!expired(&t, PROTO_TCP, &e, None, secs * S), "{state:?}");
            assert!(expired(&t, PROTO_TCP, &e, None, secs * S + 1), "{state:?}");
        }
        let udp = entry(CtState::UdpUnreplied, 0, 1);
        assert!(expired(&t, PROTO_UDP, &udp, None, 31 * S));
        let stream = entry(CtState::UdpStream, 0, 1);
        assert!(!expired(&t, PROTO_UDP, &stream, None, 31 * S));
    }

    #[test]
    fn idle_counts_from_the_latest_direction() {
        let t = CtTimeouts::DEFAULT.with(CtState::UdpStream, 10);
        let o = entry(CtState::UdpStream, 100, 1);
        let r = entry(CtState::UdpStream, 105, 1);
        assert!(!expired(&t, PROTO_UDP, &o, Some(&r), 114 * S));
        assert!(expired(&t, PROTO_UDP, &o, Some(&r), 116 * S));
    }

    /// A table whose `get` can show an entry refreshed after the dump.
    struct Fake {
        table: RefCell<StdHashMap<FlowKey, FlowEntry>>,
        refresh_on_get: Option<FlowKey>,
    }

    impl FlowTable for Fake {
        /// Sorted by key, the cursor an index into that order.
        fn read(&self, cursor: Option<u64>, max: usize) -> Result<Chunk> {
            let mut all: Vec<(FlowKey, FlowEntry)> =
                self.table.borrow().iter().map(|(k, v)| (*k, *v)).collect();
            all.sort_by_key(|(k, _)| (k.src, k.dst, k.sport, k.dport));
            let from = cursor.unwrap_or(0) as usize;
            let to = (from + max).min(all.len());
            let next = (to < all.len()).then_some(to as u64);
            Ok((all[from..to].to_vec(), next))
        }
        fn get(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
            let mut t = self.table.borrow_mut();
            if self.refresh_on_get == Some(*key) {
                if let Some(e) = t.get_mut(key) {
                    e.packets += 1;
                    e.last_seen_ns += S;
                }
            }
            Ok(t.get(key).copied())
        }
        fn delete(&self, keys: &[FlowKey]) -> Result<usize> {
            let mut t = self.table.borrow_mut();
            Ok(keys.iter().filter(|k| t.remove(k).is_some()).count())
        }
    }

    /// Flow `n`: client 10.0.0.n:1000 -> 10.0.0.254:80, translated to the
    /// backend 10.1.0.1:80 from 10.1.0.254:(2000 + n).
    fn flow(n: u8, last_s: u64) -> [(FlowKey, FlowEntry); 2] {
        let key = |s: [u8; 4], d: [u8; 4], sp: u16, dp: u16| FlowKey {
            src: addr_v4(s),
            dst: addr_v4(d),
            sport: sp.to_be(),
            dport: dp.to_be(),
            proto: PROTO_UDP,
            family: AF_INET,
            _pad: [0; 2],
        };
        let mut orig = entry(CtState::UdpUnreplied, last_s, 1);
        orig.new_src = addr_v4([10, 1, 0, 254]);
        orig.new_dst = addr_v4([10, 1, 0, 1]);
        orig.new_sport = (2000 + u16::from(n)).to_be();
        orig.new_dport = 80u16.to_be();
        let mut reply = entry(CtState::UdpUnreplied, last_s, 0);
        reply.flags = FlowFlags::REPLY;
        // Translated back to the client, as the kernel builds it: its
        // peer is the original's key.
        reply.new_src = addr_v4([10, 0, 0, 254]);
        reply.new_dst = addr_v4([10, 0, 0, n]);
        reply.new_sport = 80u16.to_be();
        reply.new_dport = 1000u16.to_be();
        let ok = key([10, 0, 0, n], [10, 0, 0, 254], 1000, 80);
        let rk = FlowKey::peer_of(&orig, PROTO_UDP, AF_INET);
        assert_eq!(
            rk,
            key([10, 1, 0, 1], [10, 1, 0, 254], 80, 2000 + u16::from(n))
        );
        [(ok, orig), (rk, reply)]
    }

    #[test]
    fn sweeps_expired_flows_whole_and_keeps_live_ones() {
        let t = Timeouts::default();
        let mut table = StdHashMap::new();
        table.extend(flow(1, 0));
        table.extend(flow(2, 90));
        let fake = Fake {
            table: RefCell::new(table),
            refresh_on_get: None,
        };
        let s = sweep(&fake, &t, 100 * S).unwrap();
        assert_eq!((s.flows, s.expired, s.refreshed), (2, 1, 0));
        let left: Vec<FlowKey> = fake.table.borrow().keys().copied().collect();
        let live: Vec<FlowKey> = flow(2, 90).iter().map(|(k, _)| *k).collect();
        assert_eq!(left.len(), 2);
        assert!(live.iter().all(|k| left.contains(k)));
    }

    #[test]
    fn a_flow_refreshed_after_the_read_is_not_deleted() {
        let t = Timeouts::default();
        let f = flow(1, 0);
        // Its reply direction sees a packet between the dump and the delete.
        let fake = Fake {
            table: RefCell::new(f.into_iter().collect()),
            refresh_on_get: Some(f[1].0),
        };
        let s = sweep(&fake, &t, 100 * S).unwrap();
        assert_eq!((s.expired, s.refreshed), (0, 1));
        assert_eq!(fake.table.borrow().len(), 2);
    }

    /// A table larger than a step is walked in bounded steps that together
    /// see every flow once; an orphaned reply entry (its original gone) is
    /// found from its own side.
    #[test]
    fn a_pass_takes_bounded_steps_and_finds_orphans() {
        let t = Timeouts::default();
        let mut table = StdHashMap::new();
        // 3 * STEP_ENTRIES / 2 live flows: 3 * STEP_ENTRIES entries.
        let n = 3 * STEP_ENTRIES / 2;
        for i in 0..n {
            let [o, r] = flow((i % 250) as u8, 90);
            let mut o = o;
            let mut r = r;
            // Distinct tuples: the client's port carries the index.
            o.0.sport = (i as u16).to_be();
            r.1.new_dport = o.0.sport;
            o.1.new_sport = (i as u16).to_be();
            r.0.dport = o.1.new_sport;
            table.insert(o.0, o.1);
            table.insert(r.0, r.1);
        }
        // An orphan: a reply entry whose original is gone, idle long.
        let [_, mut orphan] = flow(251, 0);
        orphan.0.dport = 60_000u16.to_be();
        table.insert(orphan.0, orphan.1);
        assert_eq!(table.len(), 2 * n + 1);
        let fake = Fake {
            table: RefCell::new(table),
            refresh_on_get: None,
        };
        let mut sweeper = Sweeper::default();
        let mut steps = 0;
        let pass = loop {
            steps += 1;
            if let Some(p) = sweeper.step(&fake, &t, 100 * S).unwrap() {
                break p;
            }
        };
        // 3 * STEP_ENTRIES + 1 entries, one of them deleted on the way.
        assert_eq!(steps, 3, "STEP_ENTRIES per step");
        assert_eq!((pass.flows, pass.expired, pass.orphans), (n, 0, 1));
        assert_eq!(fake.table.borrow().len(), 2 * n);
        assert!(!fake.table.borrow().contains_key(&orphan.0));
    }
}
