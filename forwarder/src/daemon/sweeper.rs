//! The conntrack sweeper: the kernel only records per-direction flags and
//! last-seen times; deciding when a flow is over happens here, against the
//! per-state timeouts of the rules file, and both directions go together.
use std::{
    collections::{HashMap as StdHashMap, HashSet},
    time::Duration,
};

use anyhow::Result;
use aya::maps::{HashMap, MapData};
use forwarder_common::{
    AutoSnatKey, FlowEntry, FlowFlags, FlowKey, Seen, TcpState, AUTO_SNAT_TTL_NS, PROTO_ICMP,
    PROTO_TCP,
};

pub use rules::Timeouts;

/// The state a flow is in, for display and expiry.
pub fn state_name(proto: u8, orig: &FlowEntry, reply: Option<&FlowEntry>) -> &'static str {
    match proto {
        PROTO_TCP => {
            TcpState::derive(orig.tcp_seen, reply.map_or(Seen::empty(), |r| r.tcp_seen)).name()
        }
        PROTO_ICMP => "ICMP",
        _ if reply.is_some_and(|r| r.packets > 0) => "UDP_STREAM",
        _ => "UDP",
    }
}

/// How long a flow may stay idle in its current state.
pub fn timeout_for(
    t: &Timeouts,
    proto: u8,
    orig: &FlowEntry,
    reply: Option<&FlowEntry>,
) -> Duration {
    match proto {
        PROTO_TCP => {
            match TcpState::derive(orig.tcp_seen, reply.map_or(Seen::empty(), |r| r.tcp_seen)) {
                TcpState::SynSent => t.tcp_syn_sent,
                TcpState::Established => t.tcp_established,
                TcpState::FinWait => t.tcp_fin_wait,
                TcpState::TimeWait => t.tcp_time_wait,
                TcpState::Close => t.tcp_close,
            }
        }
        PROTO_ICMP => t.icmp,
        _ if reply.is_some_and(|r| r.packets > 0) => t.udp_stream,
        _ => t.udp,
    }
}

/// Whether a flow is over at `now_ns` (CLOCK_MONOTONIC, the clock of
/// bpf_ktime_get_ns). The idle time counts from the last packet in either
/// direction.
pub fn expired(
    t: &Timeouts,
    proto: u8,
    orig: &FlowEntry,
    reply: Option<&FlowEntry>,
    now_ns: u64,
) -> bool {
    let last = orig.last_seen_ns.max(reply.map_or(0, |r| r.last_seen_ns));
    let idle = Duration::from_nanos(now_ns.saturating_sub(last));
    idle > timeout_for(t, proto, orig, reply)
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
}

/// Removes expired flows (both directions) and orphaned entries (one
/// direction whose partner is gone, e.g. after a racing insert). Reads and
/// deletes in batches, so a million flows cost a fraction of a second.
pub fn sweep(flows: &MapData, t: &Timeouts, now_ns: u64) -> Result<SweepStats> {
    let all: StdHashMap<FlowKey, FlowEntry> =
        crate::dataplane::batch::dump::<FlowKey, FlowEntry>(flows)?
            .into_iter()
            .collect();
    let mut stats = SweepStats::default();
    let mut doomed = Vec::new();
    for (k, e) in &all {
        if e.flags.contains(FlowFlags::REPLY) {
            continue;
        }
        stats.flows += 1;
        let peer = FlowKey::peer_of(e, k.proto, k.family);
        let reply = all.get(&peer);
        if expired(t, k.proto, e, reply, now_ns) {
            stats.expired += 1;
            doomed.push(*k);
            doomed.push(peer);
        }
    }
    // A reply entry nobody points at: its original was replaced by a
    // racing insert. Reclaim it once idle past the shortest timeout.
    let peers: HashSet<FlowKey> = all
        .iter()
        .filter(|(_, e)| !e.flags.contains(FlowFlags::REPLY))
        .map(|(k, e)| FlowKey::peer_of(e, k.proto, k.family))
        .collect();
    for (k, e) in &all {
        if e.flags.contains(FlowFlags::REPLY) && !peers.contains(k) {
            let idle = Duration::from_nanos(now_ns.saturating_sub(e.last_seen_ns));
            if idle > t.tcp_close {
                stats.orphans += 1;
                doomed.push(*k);
            }
        }
    }
    crate::dataplane::batch::delete(flows, &doomed)?;
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
    use forwarder_common::PROTO_UDP;

    use super::*;

    fn entry(seen: Seen, last_s: u64, packets: u64) -> FlowEntry {
        FlowEntry {
            tcp_seen: seen,
            last_seen_ns: last_s * 1_000_000_000,
            packets,
            ..Default::default()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn tcp_states_pick_their_timeouts() {
        let t = Timeouts::default();
        let syn = entry(Seen::SYN, 0, 1);
        assert_eq!(timeout_for(&t, PROTO_TCP, &syn, None), t.tcp_syn_sent);
        let synack = entry(Seen::SYN | Seen::ACK, 0, 1);
        assert_eq!(
            timeout_for(&t, PROTO_TCP, &syn, Some(&synack)),
            t.tcp_established
        );
        let fin = entry(Seen::SYN | Seen::ACK | Seen::FIN, 0, 1);
        assert_eq!(
            timeout_for(&t, PROTO_TCP, &fin, Some(&synack)),
            t.tcp_fin_wait
        );
        assert_eq!(
            timeout_for(&t, PROTO_TCP, &fin, Some(&fin)),
            t.tcp_time_wait
        );
        let rst = entry(Seen::RST, 0, 1);
        assert_eq!(timeout_for(&t, PROTO_TCP, &syn, Some(&rst)), t.tcp_close);
    }

    #[test]
    fn udp_becomes_a_stream_once_replied() {
        let t = Timeouts::default();
        let o = entry(Seen::empty(), 0, 3);
        assert_eq!(
            timeout_for(&t, PROTO_UDP, &o, Some(&entry(Seen::empty(), 0, 0))),
            t.udp
        );
        assert_eq!(
            timeout_for(&t, PROTO_UDP, &o, Some(&entry(Seen::empty(), 0, 1))),
            t.udp_stream
        );
    }

    #[test]
    fn idle_counts_from_the_latest_direction() {
        let t = Timeouts {
            udp_stream: Duration::from_secs(10),
            ..Default::default()
        };
        let o = entry(Seen::empty(), 100, 1);
        let r = entry(Seen::empty(), 105, 1);
        assert!(!expired(&t, PROTO_UDP, &o, Some(&r), 114 * S));
        assert!(expired(&t, PROTO_UDP, &o, Some(&r), 116 * S));
    }
}
