//! Connection tracking in the kernel: one entry per direction, inserted
//! together (see `newflow`), kept and expired here without any help from
//! userspace. What a segment may change is decided by
//! `forwarder_common::conntrack` (shared with the sweeper and the tests);
//! this module reads the packet, applies the verdict to both entries, and
//! keeps the table from filling up with flows that cannot be told apart
//! from a flood.
//!
//! The one fact a reader gets wrong: correctness never depends on the
//! daemon. An entry past its timeout is treated as absent and removed by
//! the first packet that finds it; a full table makes room by evicting
//! flows that are not assured (no completed handshake, no UDP stream),
//! closing or expired (`evict`). Established flows are never evicted. The
//! userspace sweeper only reclaims memory earlier.
// Keys and values are passed to map helpers as `&*x` on purpose: the
// value itself (what clippy suggests) would be copied to the stack first,
// and the whole call chain has 512 bytes.
#![allow(clippy::needless_borrows_for_generic_args)]
use aya_ebpf::{macros::map, maps::Array, programs::TcContext};
use forwarder_common::{
    conntrack::{
        self as ct, CtConfig, CtState, Segment, Verdict, CT_ASSURED, CT_WSCALE, MIN_TIMEOUT_NS,
        UDP_STREAM_AFTER_NS,
    },
    FlowEntry, FlowFlags, FlowKey, Seen, PROTO_TCP, PROTO_UDP,
};

use crate::{
    evict::queue,
    hdr::{TCPOPT_EOL, TCPOPT_NOP, TCP_ACK, TCP_FIN, TCP_HLEN, TCP_RST, TCP_SYN},
    helpers::{frame::Frame, ktime_coarse_ns, map_value, tcp_opts},
    maps::FLOWS,
    parse::{Frag, Packet},
    path,
};

/// Timeouts and the per-source limit: the defaults at load, then the
/// daemon's values from the rules file.
#[map(name = "FWD_CT_CONFIG")]
pub static CT_CONFIG: Array<CtConfig> = Array::with_max_entries(1, 0);

/// What happened to a packet of an existing flow.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// Translate it.
    Forward,
    /// The flow is gone (expired, orphaned, or forgotten by `snat =
    /// "auto"` learning): treat the packet as the first of a new one.
    Gone,
    /// Not the interface this direction arrives on: leave it alone.
    WrongIface,
    /// An RST/FIN/SYN-ACK outside the window: drop it, change nothing.
    OutOfWindow,
}

/// Where a packet was seen (one struct: BPF-to-BPF calls take at most
/// five arguments).
pub struct Arrival {
    pub ifindex: u32,
    pub len: u32,
}

#[inline(always)]
pub fn key_of(p: &Packet) -> FlowKey {
    FlowKey::v4(p.src, p.dst, p.sport, p.dport, p.proto)
}

#[inline(always)]
pub fn now_ns() -> u64 {
    ktime_coarse_ns()
}

/// Whether a flow in `state` (as stored), last seen at `last` in either
/// direction, is over at `now` (the timeouts read in place: a copy would
/// cost 80 bytes of stack).
#[inline(always)]
pub fn over(proto: u8, state: u8, last: u64, now: u64) -> bool {
    CT_CONFIG
        .get(0)
        .is_some_and(|c| ct::expired_raw(&c.timeouts, proto, state, last, now))
}

#[inline(always)]
pub fn peer_key(e: &FlowEntry, key: &FlowKey) -> FlowKey {
    FlowKey::peer_of(e, key.proto, key.family)
}

/// Whether a packet of flow entry `e` arriving on `ifindex` belongs to it.
#[inline(always)]
pub fn arrived_right(e: &FlowEntry, ifindex: u32) -> bool {
    e.ct.iface == 0 || e.ct.iface == ifindex
}

#[inline(always)]
pub fn seen_bits(tcp_flags: u8) -> Seen {
    let mut s = Seen::empty();
    if tcp_flags & TCP_SYN != 0 {
        s |= Seen::SYN;
    }
    if tcp_flags & TCP_ACK != 0 {
        s |= Seen::ACK;
    }
    if tcp_flags & TCP_FIN != 0 {
        s |= Seen::FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        s |= Seen::RST;
    }
    s
}

/// The TCP fields the state machine reads, from the header the parser
/// made linear. Without options: the window scale of a SYN is read where a
/// SYN starts a direction's tracking (`with_wscale`), not for every
/// segment (each place the walk appears costs verifier budget).
#[inline(always)]
pub fn segment(ctx: &TcContext, p: &Packet) -> Segment {
    let mut s = Segment {
        flags: p.tcp_flags,
        // The IP header's own length: packets with IPv4 options are
        // translated too (issue 12).
        len: (p.tot_len as u32).saturating_sub((p.l4 - p.l3) as u32 + p.tcp_hlen as u32),
        ..Default::default()
    };
    if let Some(t) = ctx.header::<[u8; TCP_HLEN]>(p.l4) {
        s.seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        s.ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
        s.win = u16::from_be_bytes([t[14], t[15]]);
    }
    s
}

/// `seg` with the window scale option of its SYN.
#[inline(always)]
fn with_wscale(ctx: &TcContext, p: &Packet, seg: &Segment) -> Segment {
    Segment {
        wscale: wscale_option(ctx, p),
        ..*seg
    }
}

/// The window scale option of a SYN. The options are copied out in one
/// load and scanned by position, the offset of the next option
/// carried along, over the first `WSCALE_SCAN` bytes only: the verifier's
/// work grows with the square of the positions scanned (each carries a
/// different range of next offsets), and about 110k instructions for 40
/// positions at this one call site made the whole program twice as slow to
/// load. Every common stack puts the option within them (Linux after MSS,
/// SACK-permitted and timestamps, at 17; Windows, BSD and macOS at 5);
/// when the options go on past the scan unread, the scale is taken as
/// `UNKNOWN_WSCALE`, which only makes the window checks looser.
#[inline(always)]
fn wscale_option(ctx: &TcContext, p: &Packet) -> Option<u8> {
    const TCPOPT_WINDOW: u8 = 3;
    const MAX_OPTS: usize = 40;
    let olen = (p.tcp_hlen as usize).saturating_sub(TCP_HLEN);
    if !(3..=MAX_OPTS).contains(&olen) {
        return None;
    }
    // In the per-CPU option buffer, not on the stack: a 40-byte buffer
    // (and the memset call zeroing it) made the chains through `existing`
    // and `start_orig` too deep for 6.1, whose verifier rounds every frame
    // of a call chain up to 32 bytes.
    let buf = tcp_opts::load(ctx, p.l4 + TCP_HLEN, olen)?;
    let mut next = 0usize;
    let mut i = 0usize;
    while i < WSCALE_SCAN {
        if i >= olen {
            return None;
        }
        if i == next {
            // (`get`, not indexing: a panic path would leave a subprogram
            // that does not end in an exit, which the verifier refuses.)
            let (kind, len, shift) = (*buf.get(i)?, *buf.get(i + 1)? as usize, *buf.get(i + 2)?);
            if kind == TCPOPT_EOL {
                return None;
            }
            if kind == TCPOPT_NOP {
                next = i + 1;
            } else {
                if kind == TCPOPT_WINDOW && len == 3 {
                    return if i + 3 <= olen { Some(shift) } else { None };
                }
                if len < 2 {
                    return None;
                }
                next = i + len;
            }
        }
        i += 1;
    }
    if next >= olen {
        None
    } else {
        Some(UNKNOWN_WSCALE)
    }
}

/// Option bytes `wscale_option` scans.
const WSCALE_SCAN: usize = 20;
/// The window scale assumed when the option may lie past the scan: the
/// largest there is (RFC 7323), so windows are never underestimated.
const UNKNOWN_WSCALE: u8 = 14;

/// Forgets a flow: both of its entries.
#[inline(always)]
pub fn forget(e: &FlowEntry, key: &FlowKey) {
    let _ = FLOWS.remove(peer_key(e, key));
    let _ = FLOWS.remove(key);
}

/// Whether flow entry `e` (key `key`) is past its timeout, counting the
/// last packet of either direction.
#[inline(always)]
fn expired(e: &FlowEntry, key: &FlowKey, now: u64) -> bool {
    let state = e.ct.state;
    if !over(key.proto, state, e.last_seen_ns, now) {
        return false;
    }
    let peer_seen = map_value::get(&FLOWS, &peer_key(e, key)).map_or(0, |p| p.last_seen_ns);
    over(key.proto, state, peer_seen, now)
}

/// A packet of an existing flow: checks its interface and the flow's
/// expiry, runs the TCP/UDP state machine and accounts it.
// Not inlined: own stack frame (512-byte stack for the whole call chain).
#[inline(never)]
pub fn existing(
    ctx: &TcContext,
    p: &Packet,
    entry: &mut FlowEntry,
    key: &FlowKey,
    a: &Arrival,
) -> Hit {
    if !arrived_right(entry, a.ifindex) {
        return Hit::WrongIface;
    }
    let now = now_ns();
    if now.saturating_sub(entry.last_seen_ns) >= MIN_TIMEOUT_NS && expired(entry, key, now) {
        forget(entry, key);
        return Hit::Gone;
    }
    let track = match p.proto {
        // A later fragment (its flow found through its first fragment's
        // ports, see `frag`) has no TCP header: what sits at `p.l4` is
        // payload, which the state machine would read as sequence numbers
        // and window. Its first fragment went through the state machine.
        PROTO_TCP if p.frag == Frag::Later => Track::Record,
        PROTO_TCP => tcp(ctx, p, entry, key, now),
        PROTO_UDP => udp(entry, key, now),
        _ => Track::Record,
    };
    match track {
        Track::Gone => return Hit::Gone,
        Track::Drop => return Hit::OutOfWindow,
        Track::Record => entry.last_seen_ns = now,
        // Forwarded, but no evidence the flow is alive.
        Track::Quiet => {}
    }
    // Plain adds: the bpfel target has no atomic read-modify-write in
    // `core`. Exact while one CPU handles a flow direction at a time
    // (RSS/RPS keep a flow on one queue), approximate otherwise.
    entry.packets += 1;
    entry.bytes += a.len as u64;
    Hit::Forward
}

enum Track {
    /// Forward and refresh the flow.
    Record,
    /// Forward, leave the flow's timer alone.
    Quiet,
    Drop,
    Gone,
}

/// The TCP state machine for one segment. The fast path (data and ACKs of
/// an established flow) touches only this direction's entry; anything that
/// can change the state reads and writes both.
#[inline(always)]
fn tcp(ctx: &TcContext, p: &Packet, entry: &mut FlowEntry, key: &FlowKey, now: u64) -> Track {
    let seg = segment(ctx, p);
    let state = CtState::from_raw(entry.ct.state);
    if !ct::needs_peer(state, seg.flags) {
        ct::record(&mut entry.ct, &seg);
        entry.tcp_seen |= seen_bits(seg.flags);
        return Track::Record;
    }
    let Some(peer) = map_value::get_mut(&FLOWS, &peer_key(entry, key)) else {
        // An orphan (its partner replaced by a racing insert): gone.
        let _ = FLOWS.remove(key);
        return Track::Gone;
    };
    let orig = !entry.flags.contains(FlowFlags::REPLY);
    let verdict = ct::tcp_step(state, orig, &seg, &entry.ct, entry.tcp_seen, Some(&peer.ct));
    match verdict {
        Verdict::Drop => return Track::Drop,
        Verdict::Ignore => return Track::Quiet,
        Verdict::Forward => {}
        Verdict::Reopen => {
            // The client reuses a closed tuple: a new connection. Like
            // netfilter (which kills the old conntrack and looks the packet
            // up again), the old flow is forgotten and the SYN creates a
            // new one from the forwards as they are now: a forward changed,
            // removed or allow-listed since the old connection must not be
            // reached through its leftover translation. Its SNAT port is
            // tried first (see `newflow::reopened`).
            if orig && entry.flags.contains(FlowFlags::SNAT) {
                crate::newflow::reopened(entry, key);
            }
            forget(entry, key);
            return Track::Gone;
        }
        Verdict::Transition(next) => {
            match next {
                CtState::SynRecv => {
                    ct::start(&mut entry.ct, &with_wscale(ctx, p, &seg));
                    // RFC 7323: windows scale only when both SYNs said so.
                    if entry.ct.ct_flags & CT_WSCALE == 0 || peer.ct.ct_flags & CT_WSCALE == 0 {
                        entry.ct.ct_flags &= !CT_WSCALE;
                        peer.ct.ct_flags &= !CT_WSCALE;
                    }
                    path::backend_answered(entry, key, now);
                }
                CtState::Established => {
                    entry.ct.ct_flags |= CT_ASSURED;
                    peer.ct.ct_flags |= CT_ASSURED;
                }
                s if s.is_closing() && !state.is_closing() => queue(entry, key, orig),
                _ => {}
            }
            entry.ct.state = next as u8;
            peer.ct.state = next as u8;
        }
    }
    ct::record(&mut entry.ct, &seg);
    entry.tcp_seen |= seen_bits(seg.flags);
    Track::Record
}

/// UDP: unreplied until the first packet back, a stream (longer timeout,
/// assured) once still active `UDP_STREAM_AFTER_NS` after the first packet.
#[inline(always)]
fn udp(entry: &mut FlowEntry, key: &FlowKey, now: u64) -> Track {
    let state = CtState::from_raw(entry.ct.state);
    let reply = entry.flags.contains(FlowFlags::REPLY);
    let next = match state {
        CtState::UdpUnreplied if reply => CtState::UdpReplied,
        CtState::UdpReplied if now.saturating_sub(entry.created_ns) >= UDP_STREAM_AFTER_NS => {
            CtState::UdpStream
        }
        _ => return Track::Record,
    };
    let Some(peer) = map_value::get_mut(&FLOWS, &peer_key(entry, key)) else {
        let _ = FLOWS.remove(key);
        return Track::Gone;
    };
    if next == CtState::UdpReplied {
        path::backend_answered(entry, key, now);
    } else {
        entry.ct.ct_flags |= CT_ASSURED;
        peer.ct.ct_flags |= CT_ASSURED;
    }
    entry.ct.state = next as u8;
    peer.ct.state = next as u8;
    Track::Record
}

/// Starts the original direction's tracking from the client's SYN (the
/// flow being created, in `orig`). A call of its own: the option buffer
/// must not add to the creating function's frame.
#[inline(never)]
pub fn start_orig(ctx: &TcContext, p: &Packet, orig: &mut FlowEntry) {
    let seg = with_wscale(ctx, p, &segment(ctx, p));
    ct::start(&mut orig.ct, &seg);
    orig.tcp_seen = seen_bits(p.tcp_flags);
}

/// Whether the XDP accelerator may forward a packet of flow entry `e`
/// (key `key`) arriving on `ifindex` at `now` by itself: on the flow's own
/// interface, not idle past its timeout, and a packet whose
/// effect on the state it can apply too: an established TCP connection (its
/// control packets go to TC before this is asked), any UDP packet but a
/// client's while `snat = "auto"` learning watches the flow. UDP state
/// changes are made here as in TC (`udp`). Anything else is TC's.
#[inline(always)]
pub fn xdp_admit(e: &mut FlowEntry, key: &FlowKey, ifindex: u32, now: u64) -> bool {
    if !arrived_right(e, ifindex) {
        return false;
    }
    // Past its timeout in this direction: TC decides (it also reads the
    // other direction's last packet, and forgets the flow if both are old).
    if now.saturating_sub(e.last_seen_ns) >= MIN_TIMEOUT_NS
        && over(key.proto, e.ct.state, e.last_seen_ns, now)
    {
        return false;
    }
    match CtState::from_raw(e.ct.state) {
        CtState::Untracked | CtState::Established | CtState::UdpStream => true,
        CtState::UdpUnreplied
            if !e.flags.contains(FlowFlags::REPLY) && path::learning_watches(e) =>
        {
            false
        }
        CtState::UdpUnreplied | CtState::UdpReplied => !matches!(udp(e, key, now), Track::Gone),
        _ => false,
    }
}

/// Accounts a packet the XDP accelerator forwarded: what the TC fast path
/// records (`existing`), from the TCP header `tcp` (the fixed 20 bytes)
/// of a segment of `l4_len` bytes.
#[inline(always)]
pub fn xdp_account(e: &mut FlowEntry, tcp: Option<&[u8; 20]>, l4_len: u16, len: u32, now: u64) {
    if let Some(t) = tcp {
        let hlen = (t[12] >> 4) as u32 * 4;
        let seg = Segment {
            flags: t[13],
            seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            win: u16::from_be_bytes([t[14], t[15]]),
            len: (l4_len as u32).saturating_sub(hlen),
            wscale: None,
        };
        // The acknowledgement and window only: the sequence end matters
        // for the handshake alone, which is TC's.
        ct::record_ack(&mut e.ct, &seg);
    }
    e.last_seen_ns = now;
    e.packets += 1;
    e.bytes += len as u64;
}
