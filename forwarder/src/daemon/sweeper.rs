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
use std::{
    collections::{HashMap as StdHashMap, HashSet},
    os::fd::{AsFd, AsRawFd},
};

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

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub flows: usize,
    pub expired: usize,
    pub orphans: usize,
    /// Flows found over that had seen a packet by the time they were
    /// about to be deleted: left alone.
    pub refreshed: usize,
}

/// The flow table as the sweeper uses it (a trait so the unit tests can
/// stand in a table that changes between the read and the delete).
pub trait FlowTable {
    fn dump(&self) -> Result<Vec<(FlowKey, FlowEntry)>>;
    fn get(&self, key: &FlowKey) -> Result<Option<FlowEntry>>;
    fn delete(&self, keys: &[FlowKey]) -> Result<usize>;
}

impl FlowTable for MapData {
    fn dump(&self) -> Result<Vec<(FlowKey, FlowEntry)>> {
        crate::dataplane::batch::dump(self)
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

/// Removes expired flows (both directions) and orphaned entries (one
/// direction whose partner is gone, e.g. after a racing insert). Reads in
/// batches, then re-reads each doomed entry right before deleting it.
pub fn sweep(flows: &impl FlowTable, t: &Timeouts, now_ns: u64) -> Result<SweepStats> {
    let t = &t.to_ct();
    let all: StdHashMap<FlowKey, FlowEntry> = flows.dump()?.into_iter().collect();
    let mut stats = SweepStats::default();
    // Groups of keys that go together (a flow's two entries), with what
    // they held when read.
    let mut doomed: Vec<Vec<(FlowKey, FlowEntry)>> = Vec::new();
    for (k, e) in &all {
        if e.flags.contains(FlowFlags::REPLY) {
            continue;
        }
        stats.flows += 1;
        let peer = FlowKey::peer_of(e, k.proto, k.family);
        let reply = all.get(&peer);
        if expired(t, k.proto, e, reply, now_ns) {
            let mut group = vec![(*k, *e)];
            group.extend(reply.map(|r| (peer, *r)));
            doomed.push(group);
        }
    }
    // A reply entry nobody points at: its original was replaced by a
    // racing insert. Reclaim it once idle past the shortest timeout.
    let peers: HashSet<FlowKey> = all
        .iter()
        .filter(|(_, e)| !e.flags.contains(FlowFlags::REPLY))
        .map(|(k, e)| FlowKey::peer_of(e, k.proto, k.family))
        .collect();
    let orphan_idle = u64::from(t.secs(PROTO_TCP, CtState::Close)) * 1_000_000_000;
    for (k, e) in &all {
        if e.flags.contains(FlowFlags::REPLY)
            && !peers.contains(k)
            && now_ns.saturating_sub(e.last_seen_ns) > orphan_idle
        {
            doomed.push(vec![(*k, *e)]);
        }
    }
    for group in doomed {
        let mut fresh = false;
        for (k, then) in &group {
            if let Some(now) = flows.get(k)? {
                fresh |= !unchanged(then, &now);
            }
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
    use std::cell::RefCell;

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
        fn dump(&self) -> Result<Vec<(FlowKey, FlowEntry)>> {
            Ok(self.table.borrow().iter().map(|(k, v)| (*k, *v)).collect())
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
}
