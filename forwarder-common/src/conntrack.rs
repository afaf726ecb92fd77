//! Connection tracking: the states a flow goes through, the TCP window
//! checks that decide whether a segment may change them, the timeouts, and
//! which flows a full table may evict. Pure functions of the two entries of
//! a flow and the segment: the kernel applies them, the sweeper, `status`
//! and the tests read the same definitions.
//!
//! The fact a reader gets wrong: each direction of a flow is its own map
//! entry, found by its own tuple, so a packet sees only its direction's
//! entry for free. Everything the fast path needs (accounting, its own
//! acknowledgement and window) is kept per direction in that entry; the
//! connection state is copied into both entries and rewritten only at a
//! transition, when the kernel also looks up the other direction. A data
//! segment of an established connection therefore costs one lookup.
//!
//! What a TCP segment is checked against (a subset of netfilter's
//! `tcp_in_window`, which keeps both directions in one struct):
//!
//! * The SYN-ACK must acknowledge the client's SYN (`ack == client ISN + 1`),
//!   the client's handshake ACK the server's (`ack == server ISN + 1`). Only
//!   then is the flow ESTABLISHED and *assured*: a spoofed SYN can never be
//!   made to look like a connection, so it can always be evicted.
//! * An RST or FIN is believed only inside the window its receiver
//!   advertised: `rcv.ack <= seq <= rcv.ack + rcv.window` for an RST (RFC 793
//!   acceptability; the endpoint itself, under RFC 5961, is stricter still),
//!   `end >= rcv.ack && seq <= rcv.ack + rcv.window` for a FIN (a
//!   retransmitted FIN ends at the receiver's ack). Before the receiver has
//!   acknowledged anything the segment must carry an exact number instead
//!   (an RST answering a SYN acknowledges it; anything else continues its
//!   sender's own sequence). Anything else is dropped and counted.
//! * A direction's acknowledgement and window are only recorded from
//!   segments whose ack lies within one window of the last one recorded
//!   (the peer cannot have sent more than that direction's window allowed),
//!   so a blind attacker must guess inside the window to move them.
//!
//! Not checked: the sequence numbers of data segments (they are forwarded
//! whatever they carry; the endpoints discard what is outside their
//! windows), SACK blocks, retransmission counting (netfilter's shorter
//! timeouts for unacknowledged data).

use crate::{FlowTrack, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SEEN_FIN};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// `FlowTrack::state`: where the connection is. Both entries of a flow
/// carry the same value.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    /// Inserted by userspace (a benchmark, a test) without tracking data:
    /// treated as an established, assured flow without window checks.
    Untracked = 0,
    /// TCP: the client's SYN seen.
    SynSent = 1,
    /// TCP: the server's SYN-ACK seen, acknowledging the SYN.
    SynRecv = 2,
    /// TCP: the client's ACK of the SYN-ACK seen (assured from here on).
    Established = 3,
    /// TCP: one side sent FIN.
    FinWait = 4,
    /// TCP: the other side acknowledged that FIN.
    CloseWait = 5,
    /// TCP: both sides sent FIN, the second not yet acknowledged.
    LastAck = 6,
    /// TCP: both FINs acknowledged.
    TimeWait = 7,
    /// TCP: an RST inside the window seen.
    Close = 8,
    /// UDP: nothing came back yet.
    UdpUnreplied = 9,
    /// UDP: a reply seen, but the flow is younger than `UDP_STREAM_AFTER_NS`.
    UdpReplied = 10,
    /// UDP: replied and still active after `UDP_STREAM_AFTER_NS` (netfilter's
    /// "assured" UDP stream).
    UdpStream = 11,
    /// ICMP echo, tracked by identifier.
    Icmp = 12,
}

impl CtState {
    pub const ALL: [CtState; 13] = [
        CtState::Untracked,
        CtState::SynSent,
        CtState::SynRecv,
        CtState::Established,
        CtState::FinWait,
        CtState::CloseWait,
        CtState::LastAck,
        CtState::TimeWait,
        CtState::Close,
        CtState::UdpUnreplied,
        CtState::UdpReplied,
        CtState::UdpStream,
        CtState::Icmp,
    ];

    #[inline(always)]
    pub const fn from_raw(v: u8) -> CtState {
        match v {
            1 => CtState::SynSent,
            2 => CtState::SynRecv,
            3 => CtState::Established,
            4 => CtState::FinWait,
            5 => CtState::CloseWait,
            6 => CtState::LastAck,
            7 => CtState::TimeWait,
            8 => CtState::Close,
            9 => CtState::UdpUnreplied,
            10 => CtState::UdpReplied,
            11 => CtState::UdpStream,
            12 => CtState::Icmp,
            _ => CtState::Untracked,
        }
    }

    /// The name `conntrack list`, `status` and the docs use (netfilter's
    /// where there is one).
    pub const fn name(self) -> &'static str {
        match self {
            CtState::Untracked => "UNTRACKED",
            CtState::SynSent => "SYN_SENT",
            CtState::SynRecv => "SYN_RECV",
            CtState::Established => "ESTABLISHED",
            CtState::FinWait => "FIN_WAIT",
            CtState::CloseWait => "CLOSE_WAIT",
            CtState::LastAck => "LAST_ACK",
            CtState::TimeWait => "TIME_WAIT",
            CtState::Close => "CLOSE",
            CtState::UdpUnreplied => "UDP_UNREPLIED",
            CtState::UdpReplied => "UDP_REPLIED",
            CtState::UdpStream => "UDP_STREAM",
            CtState::Icmp => "ICMP",
        }
    }

    /// A TCP state after the first FIN or an RST: netfilter lets a full
    /// table drop these even when assured (`tcp_can_early_drop`).
    #[inline(always)]
    pub const fn is_closing(self) -> bool {
        matches!(
            self,
            CtState::FinWait
                | CtState::CloseWait
                | CtState::LastAck
                | CtState::TimeWait
                | CtState::Close
        )
    }
}

/// `FlowTrack::ct_flags`, per direction unless said otherwise.
/// The flow completed its handshake (TCP) or became a stream (UDP); kept
/// in both entries. Assured flows are never evicted for a new one unless
/// they are closing or expired.
pub const CT_ASSURED: u8 = 1;
/// `max_ack` holds an acknowledgement this direction sent.
pub const CT_ACK_SEEN: u8 = 2;
/// This direction announced window scaling in its SYN and the other
/// direction did too (RFC 7323: otherwise neither scales).
pub const CT_WSCALE: u8 = 4;

/// A UDP flow with replies becomes a stream (longer timeout, assured) once
/// a packet arrives this long after its first (netfilter: 2 s).
pub const UDP_STREAM_AFTER_NS: u64 = 2_000_000_000;

/// Slack on top of the largest window a direction advertised when checking
/// how far its acknowledgement may advance, and the least window assumed
/// (netfilter's MAXACKWINCONST is 66000).
pub const ACK_SLACK: u32 = 65_535;

/// The TCP header fields the state machine reads, in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// The raw 16-bit window field.
    pub win: u16,
    /// TCP payload bytes.
    pub len: u32,
    /// Window scale option of a SYN or SYN-ACK (shift), if present.
    pub wscale: Option<u8>,
}

impl Segment {
    #[inline(always)]
    pub const fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The sequence number after this segment (SYN and FIN count one).
    #[inline(always)]
    pub const fn end(&self) -> u32 {
        let mut end = self.seq.wrapping_add(self.len);
        if self.has(TCP_SYN) {
            end = end.wrapping_add(1);
        }
        if self.has(TCP_FIN) {
            end = end.wrapping_add(1);
        }
        end
    }
}

/// `a` is before `b` in sequence space (RFC 1982 serial arithmetic).
#[inline(always)]
pub const fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` lies in `[lo, lo + span]` in sequence space.
#[inline(always)]
pub const fn seq_within(a: u32, lo: u32, span: u32) -> bool {
    a.wrapping_sub(lo) <= span
}

/// What a segment does to its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; record it in its own direction's tracking.
    Forward,
    /// Forward it, record it, and move the flow to this state (the kernel
    /// rewrites both entries).
    Transition(CtState),
    /// Forward it but record nothing: a segment this state does not expect
    /// (a SYN mid-connection, an ACK before the SYN-ACK). The receiver
    /// answers it, and that answer is judged on its own.
    Ignore,
    /// A SYN on a closed tuple (TIME_WAIT or CLOSE): the port is reused,
    /// the connection starts over in SYN_SENT.
    Reopen,
    /// Drop it and count it: an RST or FIN outside the window, a SYN-ACK
    /// that does not acknowledge the SYN.
    Drop,
}

/// Whether deciding about `flags` in `state` needs the other direction's
/// entry. False for the common case (data and ACKs of an established
/// flow), which is decided from the segment's own entry alone.
#[inline(always)]
pub const fn needs_peer(state: CtState, flags: u8) -> bool {
    if flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        return true;
    }
    !matches!(
        state,
        CtState::Untracked | CtState::Established | CtState::CloseWait | CtState::TimeWait
    )
}

/// An RST from the direction tracked by `own` is believable: it lies in
/// the window of the receiver (`peer`), or, before the receiver has
/// acknowledged anything, it carries a number only a party to the
/// handshake knows.
#[inline(always)]
pub fn rst_acceptable(seg: &Segment, own: &FlowTrack, peer: &FlowTrack) -> bool {
    if peer.ct_flags & CT_ACK_SEEN != 0 {
        return seq_within(seg.seq, peer.max_ack, window_of(peer));
    }
    // The receiver sent no ACK yet: it is the client in SYN_SENT (an RST
    // answering its SYN acknowledges that SYN), or it sent nothing at all
    // (the client aborting its own SYN continues its own sequence).
    // (A direction that never sent anything has no sequence to continue.)
    (seg.has(TCP_ACK) && peer.seq_end != 0 && seg.ack == peer.seq_end)
        || (own.seq_end != 0 && seg.seq == own.seq_end)
}

/// A FIN from `own`'s direction is believable: it ends at or after what the
/// receiver acknowledged (a retransmitted FIN ends exactly there; the FIN
/// itself takes one sequence number) and starts inside the receiver's
/// window.
#[inline(always)]
pub fn fin_acceptable(seg: &Segment, own: &FlowTrack, peer: &FlowTrack) -> bool {
    if peer.ct_flags & CT_ACK_SEEN != 0 {
        let behind = seg.len.wrapping_add(1);
        return seq_within(
            seg.seq,
            peer.max_ack.wrapping_sub(behind),
            window_of(peer).wrapping_add(behind),
        );
    }
    own.seq_end != 0 && seg.seq == own.seq_end
}

/// The largest window a direction advertised (scaled), at least 1.
#[inline(always)]
pub const fn window_of(t: &FlowTrack) -> u32 {
    if t.max_win == 0 {
        1
    } else {
        t.max_win
    }
}

/// The next step of a TCP flow in `state` for a segment from the direction
/// `own` tracks (`orig`: the client's), `peer` being the other direction's
/// tracking when `needs_peer` asked for it. `own_tcp_seen` is that
/// direction's `FlowEntry::tcp_seen` (who sent a FIN).
pub fn tcp_step(
    state: CtState,
    orig: bool,
    seg: &Segment,
    own: &FlowTrack,
    own_tcp_seen: u8,
    peer: Option<&FlowTrack>,
) -> Verdict {
    let Some(peer) = peer.filter(|_| needs_peer(state, seg.flags)) else {
        return Verdict::Forward;
    };
    if state == CtState::Untracked {
        // No numbers to check against: believe everything, like a flow
        // picked up mid-stream, and follow its flags.
        return if seg.has(TCP_RST) {
            Verdict::Transition(CtState::Close)
        } else if seg.has(TCP_FIN) {
            Verdict::Transition(CtState::FinWait)
        } else {
            Verdict::Forward
        };
    }
    if seg.has(TCP_RST) {
        return if !rst_acceptable(seg, own, peer) {
            Verdict::Drop
        } else if state == CtState::Close {
            Verdict::Forward
        } else {
            Verdict::Transition(CtState::Close)
        };
    }
    if seg.has(TCP_SYN) {
        return syn_step(state, orig, seg, peer);
    }
    if seg.has(TCP_FIN) {
        return fin_step(state, seg, own, own_tcp_seen, peer);
    }
    if !seg.has(TCP_ACK) {
        // No flags at all: nothing a TCP in any state sends.
        return Verdict::Ignore;
    }
    ack_step(state, orig, seg, own, own_tcp_seen, peer)
}

fn syn_step(state: CtState, orig: bool, seg: &Segment, peer: &FlowTrack) -> Verdict {
    match (orig, seg.has(TCP_ACK), state) {
        // A retransmitted SYN, or one starting over on the tuple.
        (true, false, CtState::SynSent) => Verdict::Forward,
        (true, false, CtState::TimeWait | CtState::Close) => Verdict::Reopen,
        // The server's answer must acknowledge the client's SYN.
        (false, true, CtState::SynSent) => {
            if seg.ack == peer.seq_end {
                Verdict::Transition(CtState::SynRecv)
            } else {
                Verdict::Drop
            }
        }
        // Retransmitted SYN-ACKs, SYNs mid-connection, simultaneous open:
        // the endpoints sort them out (netfilter ignores them too).
        _ => Verdict::Ignore,
    }
}

fn fin_step(
    state: CtState,
    seg: &Segment,
    own: &FlowTrack,
    own_tcp_seen: u8,
    peer: &FlowTrack,
) -> Verdict {
    if state == CtState::SynSent {
        // A FIN before the server answered: netfilter calls it invalid.
        return Verdict::Ignore;
    }
    if !fin_acceptable(seg, own, peer) {
        return Verdict::Drop;
    }
    let again = own_tcp_seen & SEEN_FIN != 0;
    let next = match state {
        CtState::SynRecv | CtState::Established => CtState::FinWait,
        // The side that sent the first FIN repeats it: nothing changes.
        CtState::FinWait | CtState::CloseWait if again => state,
        CtState::FinWait | CtState::CloseWait => CtState::LastAck,
        _ => state,
    };
    if next == state {
        Verdict::Forward
    } else {
        Verdict::Transition(next)
    }
}

fn ack_step(
    state: CtState,
    orig: bool,
    seg: &Segment,
    own: &FlowTrack,
    own_tcp_seen: u8,
    peer: &FlowTrack,
) -> Verdict {
    match state {
        // An ACK before any SYN-ACK: a half-open connection's leftover or
        // a guess; the server answers it with an RST.
        CtState::SynSent => Verdict::Ignore,
        CtState::SynRecv if orig => {
            // The handshake completes only with the server's ISN + 1: a
            // spoofed client cannot know it.
            if seg.ack == peer.seq_end {
                Verdict::Transition(CtState::Established)
            } else {
                Verdict::Ignore
            }
        }
        // The other side acknowledging after a FIN (like netfilter, without
        // checking that it covers the FIN: these states only shorten or
        // lengthen a timer, and a FIN itself is checked).
        CtState::FinWait if own_tcp_seen & SEEN_FIN == 0 => Verdict::Transition(CtState::CloseWait),
        CtState::LastAck => Verdict::Transition(CtState::TimeWait),
        // RFC 7857 2.1: a segment after an RST restores the flow (the RST
        // may have been lost on its way, or been a forgery that happened to
        // fit the window); believed when it acknowledges inside the window.
        CtState::Close if own.ct_flags & CT_ASSURED != 0 && ack_acceptable(seg, own) => {
            Verdict::Transition(CtState::Established)
        }
        CtState::Close => Verdict::Ignore,
        _ => Verdict::Forward,
    }
}

/// Whether `seg`'s acknowledgement may be recorded for its direction: no
/// further than one advertised window (plus slack) beyond the last one
/// recorded, and not far behind it (reordered segments).
#[inline(always)]
pub fn ack_acceptable(seg: &Segment, own: &FlowTrack) -> bool {
    if own.ct_flags & CT_ACK_SEEN == 0 {
        return true;
    }
    let win = if own.max_win > ACK_SLACK {
        own.max_win
    } else {
        ACK_SLACK
    };
    seq_within(
        seg.ack,
        own.max_ack.wrapping_sub(win),
        win.saturating_mul(2).saturating_add(ACK_SLACK),
    )
}

/// Records a forwarded segment in its own direction's tracking: the highest
/// sequence end, and, when the acknowledgement is plausible, the highest
/// acknowledgement and the largest window.
#[inline(always)]
pub fn record(t: &mut FlowTrack, seg: &Segment) {
    let end = seg.end();
    if t.seq_end == 0 || seq_before(t.seq_end, end) {
        t.seq_end = end;
    }
    if !seg.has(TCP_ACK) {
        if seg.has(TCP_SYN) && t.max_win < seg.win as u32 {
            t.max_win = seg.win as u32;
        }
        return;
    }
    record_ack(t, seg);
}

/// The acknowledgement and window part of `record` (what an established
/// flow needs: the sequence end is only checked during the handshake).
#[inline(always)]
pub fn record_ack(t: &mut FlowTrack, seg: &Segment) {
    if !seg.has(TCP_ACK) || !ack_acceptable(seg, t) {
        return;
    }
    if t.ct_flags & CT_ACK_SEEN == 0 || seq_before(t.max_ack, seg.ack) {
        t.max_ack = seg.ack;
    }
    t.ct_flags |= CT_ACK_SEEN;
    // Windows of SYN segments are never scaled (RFC 7323 2.2).
    let shift = if t.ct_flags & CT_WSCALE != 0 && !seg.has(TCP_SYN) {
        t.wscale as u32
    } else {
        0
    };
    let win = (seg.win as u32) << shift;
    if t.max_win < win {
        t.max_win = win;
    }
}

/// Fresh tracking for a direction whose SYN (or SYN-ACK) is `seg`.
#[inline(always)]
pub fn start(t: &mut FlowTrack, seg: &Segment) {
    t.seq_end = seg.end();
    t.max_win = seg.win as u32;
    t.max_ack = 0;
    t.ct_flags &= !(CT_ACK_SEEN | CT_WSCALE);
    match seg.wscale {
        Some(s) => {
            // RFC 7323 2.3: a shift above 14 is used as 14.
            t.wscale = if s > 14 { 14 } else { s };
            t.ct_flags |= CT_WSCALE;
        }
        None => t.wscale = 0,
    }
    if seg.has(TCP_ACK) {
        t.max_ack = seg.ack;
        t.ct_flags |= CT_ACK_SEEN;
    }
}

/// Idle timeouts in seconds, indexed by `CtState as usize`
/// (`FWD_CT_CONFIG`). An array rather than named fields: the kernel reads
/// the one for a flow's state by index, one path for the verifier instead
/// of one per state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTimeouts {
    pub secs: [u32; 16],
}

/// The timeout of a state nobody set (a table loaded but never
/// configured): a dataplane without its daemon's values still expires
/// flows.
pub const UNSET_TIMEOUT_SECS: u32 = 120;

impl Default for CtTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl CtTimeouts {
    /// The defaults: netfilter's (Linux 6.x `nf_conntrack_*_timeout_*`).
    pub const DEFAULT: CtTimeouts = CtTimeouts::empty()
        .with(CtState::SynSent, 120)
        .with(CtState::SynRecv, 60)
        .with(CtState::Established, 5 * 24 * 3600)
        .with(CtState::FinWait, 120)
        .with(CtState::CloseWait, 60)
        .with(CtState::LastAck, 30)
        .with(CtState::TimeWait, 120)
        .with(CtState::Close, 10)
        .with(CtState::UdpUnreplied, 30)
        .with(CtState::UdpReplied, 30)
        .with(CtState::UdpStream, 120)
        .with(CtState::Icmp, 30);

    /// All unset.
    pub const fn empty() -> CtTimeouts {
        CtTimeouts { secs: [0; 16] }
    }

    pub const fn with(mut self, state: CtState, secs: u32) -> CtTimeouts {
        self.secs[state as usize] = secs;
        self
    }

    /// Seconds a flow in `state` may stay idle. Entries inserted by
    /// userspace (`Untracked`) go by protocol, as established flows.
    #[inline(always)]
    pub const fn secs(&self, proto: u8, state: CtState) -> u32 {
        self.secs_raw(proto, state as u8)
    }

    /// `secs` for a state as stored (`FlowTrack::state`). The index is
    /// masked from the raw byte: from a `CtState`, the compiler knows the
    /// bound and drops the mask, which the verifier then misses.
    #[inline(always)]
    pub const fn secs_raw(&self, proto: u8, state: u8) -> u32 {
        let i = if state == CtState::Untracked as u8 {
            (match proto {
                PROTO_TCP => CtState::Established,
                PROTO_UDP => CtState::UdpStream,
                PROTO_ICMP => CtState::Icmp,
                _ => CtState::UdpUnreplied,
            }) as usize
        } else {
            (state & 15) as usize
        };
        let v = self.secs[i];
        if v == 0 {
            UNSET_TIMEOUT_SECS
        } else {
            v
        }
    }
}

/// Kernel-side conntrack settings, index 0 of `FWD_CT_CONFIG`, written at
/// load (the defaults) and by the daemon from the rules file.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CtConfig {
    pub timeouts: CtTimeouts,
    /// Per-source new-flow limit as a GCRA: a source may create one flow
    /// every `new_flow_interval_ns`, with bursts of up to
    /// `new_flow_burst_ns / new_flow_interval_ns + 1` flows. 0: no limit.
    pub new_flow_interval_ns: u64,
    pub new_flow_burst_ns: u64,
}

/// A flow whose last packet (either direction) was at `last_seen_ns` is
/// over at `now_ns` in `state`.
#[inline(always)]
pub const fn expired(
    t: &CtTimeouts,
    proto: u8,
    state: CtState,
    last_seen_ns: u64,
    now_ns: u64,
) -> bool {
    expired_raw(t, proto, state as u8, last_seen_ns, now_ns)
}

/// `expired` for a state as stored (see `CtTimeouts::secs_raw`).
#[inline(always)]
pub const fn expired_raw(
    t: &CtTimeouts,
    proto: u8,
    state: u8,
    last_seen_ns: u64,
    now_ns: u64,
) -> bool {
    let idle = now_ns.saturating_sub(last_seen_ns);
    idle > t.secs_raw(proto, state) as u64 * 1_000_000_000
}

/// No timeout is shorter than this: a flow idle for less is alive whatever
/// its state, so the per-packet path reads the timeouts only after a pause.
pub const MIN_TIMEOUT_NS: u64 = 1_000_000_000;

/// Whether a full table may evict a flow in `state`, last seen at
/// `last_seen_ns` in either direction, to make room for a new one: it is
/// not assured (no completed handshake, no UDP stream), or it is closing
/// (netfilter lets a full table drop those too), or it is over anyway.
/// Established flows are never evicted. (Decided by state alone: the
/// assured states are exactly ESTABLISHED and UDP_STREAM, which keeps this
/// cheap for the verifier.)
#[inline(always)]
pub const fn evictable(
    t: &CtTimeouts,
    proto: u8,
    state: CtState,
    last_seen_ns: u64,
    now_ns: u64,
) -> bool {
    match state {
        CtState::Established | CtState::UdpStream | CtState::Untracked => {
            expired(t, proto, state, last_seen_ns, now_ns)
        }
        _ => true,
    }
}

/// GCRA step for a per-source new-flow limit: `tat` is the source's
/// theoretical arrival time (0: new source). Returns the new value when a
/// flow may be created now, `None` when the source is over its limit.
#[inline(always)]
pub const fn rate_admit(tat: u64, now_ns: u64, interval_ns: u64, burst_ns: u64) -> Option<u64> {
    let start = if tat > now_ns { tat } else { now_ns };
    if start - now_ns > burst_ns {
        None
    } else {
        Some(start + interval_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SEEN_ACK;

    fn seg(flags: u8, seq: u32, ack: u32, win: u16, len: u32) -> Segment {
        Segment {
            flags,
            seq,
            ack,
            win,
            len,
            wscale: None,
        }
    }

    const SA: u8 = TCP_SYN | TCP_ACK;
    const FA: u8 = TCP_FIN | TCP_ACK;
    const RA: u8 = TCP_RST | TCP_ACK;

    /// Client ISN 1000, server ISN 5000, windows 1000 both ways, after a
    /// full handshake: (client, server) tracking.
    fn established() -> (FlowTrack, FlowTrack) {
        let mut c = FlowTrack::default();
        let mut s = FlowTrack::default();
        start(&mut c, &seg(TCP_SYN, 1000, 0, 1000, 0));
        start(&mut s, &seg(SA, 5000, 1001, 1000, 0));
        record(&mut c, &seg(TCP_ACK, 1001, 5001, 1000, 0));
        (c, s)
    }

    #[test]
    fn handshake_needs_the_right_numbers() {
        let mut c = FlowTrack::default();
        start(&mut c, &seg(TCP_SYN, 1000, 0, 1000, 0));
        let s0 = FlowTrack::default();
        let good = seg(SA, 5000, 1001, 1000, 0);
        assert_eq!(
            tcp_step(CtState::SynSent, false, &good, &s0, 0, Some(&c)),
            Verdict::Transition(CtState::SynRecv)
        );
        let forged = seg(SA, 5000, 1234, 1000, 0);
        assert_eq!(
            tcp_step(CtState::SynSent, false, &forged, &s0, 0, Some(&c)),
            Verdict::Drop
        );
        let mut s = FlowTrack::default();
        start(&mut s, &good);
        // The client's ACK must acknowledge the server's ISN.
        let blind = seg(TCP_ACK, 1001, 9999, 1000, 0);
        assert_eq!(
            tcp_step(CtState::SynRecv, true, &blind, &c, 0, Some(&s)),
            Verdict::Ignore
        );
        let ack = seg(TCP_ACK, 1001, 5001, 1000, 0);
        assert_eq!(
            tcp_step(CtState::SynRecv, true, &ack, &c, 0, Some(&s)),
            Verdict::Transition(CtState::Established)
        );
        // An ACK before the SYN-ACK changes nothing.
        assert_eq!(
            tcp_step(CtState::SynSent, true, &ack, &c, 0, Some(&s0)),
            Verdict::Ignore
        );
    }

    #[test]
    fn rst_only_inside_the_window() {
        let (c, s) = established();
        // From the server: must lie in [client ack 5001, +1000].
        for (seq, ok) in [(5001, true), (5500, true), (6001, true), (6002, false)] {
            let v = tcp_step(
                CtState::Established,
                false,
                &seg(TCP_RST, seq, 0, 0, 0),
                &s,
                0,
                Some(&c),
            );
            let want = if ok {
                Verdict::Transition(CtState::Close)
            } else {
                Verdict::Drop
            };
            assert_eq!(v, want, "seq {seq}");
        }
        for seq in [5000, 12345, 1001] {
            assert_eq!(
                tcp_step(
                    CtState::Established,
                    false,
                    &seg(TCP_RST, seq, 0, 0, 0),
                    &s,
                    0,
                    Some(&c)
                ),
                Verdict::Drop,
                "seq {seq}"
            );
        }
    }

    #[test]
    fn rst_answering_a_syn_must_acknowledge_it() {
        let mut c = FlowTrack::default();
        start(&mut c, &seg(TCP_SYN, 1000, 0, 1000, 0));
        let s = FlowTrack::default();
        let refused = seg(RA, 0, 1001, 0, 0);
        assert_eq!(
            tcp_step(CtState::SynSent, false, &refused, &s, 0, Some(&c)),
            Verdict::Transition(CtState::Close)
        );
        let forged = seg(RA, 0, 7777, 0, 0);
        assert_eq!(
            tcp_step(CtState::SynSent, false, &forged, &s, 0, Some(&c)),
            Verdict::Drop
        );
        // The client aborting its own SYN continues its own sequence.
        let abort = seg(TCP_RST, 1001, 0, 0, 0);
        assert_eq!(
            tcp_step(CtState::SynSent, true, &abort, &c, 0, Some(&s)),
            Verdict::Transition(CtState::Close)
        );
    }

    #[test]
    fn fin_only_inside_the_window_and_the_close_sequence() {
        let (c, s) = established();
        // Client FIN at its next byte.
        let fin = seg(FA, 1001, 5001, 1000, 0);
        assert_eq!(
            tcp_step(CtState::Established, true, &fin, &c, SEEN_ACK, Some(&s)),
            Verdict::Transition(CtState::FinWait)
        );
        let forged = seg(FA, 400_000, 5001, 1000, 0);
        assert_eq!(
            tcp_step(CtState::Established, true, &forged, &c, SEEN_ACK, Some(&s)),
            Verdict::Drop
        );
        let mut c2 = c;
        record(&mut c2, &fin);
        // The server acknowledges the FIN (ack 1002): CLOSE_WAIT.
        let ack = seg(TCP_ACK, 5001, 1002, 1000, 0);
        assert_eq!(
            tcp_step(CtState::FinWait, false, &ack, &s, SEEN_ACK, Some(&c2)),
            Verdict::Transition(CtState::CloseWait)
        );
        // The client repeating its FIN changes nothing.
        assert_eq!(
            tcp_step(CtState::FinWait, true, &fin, &c2, SEEN_FIN, Some(&s)),
            Verdict::Forward
        );
        let mut s2 = s;
        record(&mut s2, &ack);
        let sfin = seg(FA, 5001, 1002, 1000, 0);
        assert_eq!(
            tcp_step(CtState::CloseWait, false, &sfin, &s2, SEEN_ACK, Some(&c2)),
            Verdict::Transition(CtState::LastAck)
        );
        record(&mut s2, &sfin);
        let last = seg(TCP_ACK, 1002, 5002, 1000, 0);
        assert_eq!(
            tcp_step(CtState::LastAck, true, &last, &c2, SEEN_FIN, Some(&s2)),
            Verdict::Transition(CtState::TimeWait)
        );
    }

    #[test]
    fn data_after_rst_restores_an_assured_flow() {
        let (mut c, s) = established();
        c.ct_flags |= CT_ASSURED;
        let data = seg(TCP_ACK, 1001, 5001, 1000, 100);
        assert_eq!(
            tcp_step(CtState::Close, true, &data, &c, SEEN_ACK, Some(&s)),
            Verdict::Transition(CtState::Established)
        );
        c.ct_flags &= !CT_ASSURED;
        assert_eq!(
            tcp_step(CtState::Close, true, &data, &c, SEEN_ACK, Some(&s)),
            Verdict::Ignore
        );
        // A SYN on a closed tuple starts over.
        assert_eq!(
            tcp_step(
                CtState::Close,
                true,
                &seg(TCP_SYN, 77, 0, 1000, 0),
                &c,
                0,
                Some(&s)
            ),
            Verdict::Reopen
        );
    }

    #[test]
    fn acknowledgements_move_only_within_the_window() {
        let (mut c, _) = established();
        assert_eq!(c.max_ack, 5001);
        record(&mut c, &seg(TCP_ACK, 1001, 5801, 1000, 0));
        assert_eq!(c.max_ack, 5801);
        // Far beyond one window (1000 + slack): not recorded.
        record(&mut c, &seg(TCP_ACK, 1001, 5801 + 300_000, 1000, 0));
        assert_eq!(c.max_ack, 5801);
        // An older ack (reordering) leaves the maximum alone.
        record(&mut c, &seg(TCP_ACK, 1001, 5500, 1000, 0));
        assert_eq!(c.max_ack, 5801);
    }

    #[test]
    fn window_scale_applies_after_the_syn_only_when_both_sides_sent_it() {
        let mut c = FlowTrack::default();
        start(
            &mut c,
            &Segment {
                wscale: Some(7),
                ..seg(TCP_SYN, 1000, 0, 64240, 0)
            },
        );
        assert_eq!(c.max_win, 64240);
        record(&mut c, &seg(TCP_ACK, 1001, 5001, 1000, 0));
        assert_eq!(c.max_win, 1000 << 7);
        assert_eq!(
            Segment {
                wscale: Some(30),
                ..Default::default()
            }
            .wscale
            .map(|s| s.min(14)),
            Some(14)
        );
    }

    #[test]
    fn sequence_arithmetic_wraps() {
        assert!(seq_before(u32::MAX - 5, 3));
        assert!(!seq_before(3, u32::MAX - 5));
        assert!(seq_within(2, u32::MAX - 1, 10));
        assert!(!seq_within(20, u32::MAX - 1, 10));
    }

    #[test]
    fn timeouts_default_to_netfilters() {
        let t = CtTimeouts::default();
        assert_eq!(
            CtTimeouts::empty().secs(PROTO_TCP, CtState::Close),
            UNSET_TIMEOUT_SECS
        );
        assert_eq!(t.secs(PROTO_UDP, CtState::Untracked), 120);
        assert_eq!(t.secs(PROTO_TCP, CtState::SynSent), 120);
        assert_eq!(t.secs(PROTO_TCP, CtState::Established), 432_000);
        assert_eq!(t.secs(PROTO_UDP, CtState::UdpUnreplied), 30);
        assert_eq!(t.secs(PROTO_UDP, CtState::UdpStream), 120);
        let set = CtTimeouts::DEFAULT.with(CtState::UdpReplied, 5);
        assert_eq!(set.secs(PROTO_UDP, CtState::UdpReplied), 5);
        assert!(!expired(
            &set,
            PROTO_UDP,
            CtState::UdpReplied,
            0,
            5_000_000_000
        ));
        assert!(expired(
            &set,
            PROTO_UDP,
            CtState::UdpReplied,
            0,
            5_000_000_001
        ));
    }

    #[test]
    fn only_unassured_closing_or_expired_flows_are_evictable() {
        let t = CtTimeouts::default();
        let now = 10_000_000_000;
        for (state, want) in [
            (CtState::SynSent, true),
            (CtState::SynRecv, true),
            (CtState::Established, false),
            (CtState::FinWait, true),
            (CtState::CloseWait, true),
            (CtState::LastAck, true),
            (CtState::TimeWait, true),
            (CtState::Close, true),
            (CtState::UdpUnreplied, true),
            (CtState::UdpReplied, true),
            (CtState::UdpStream, false),
            (CtState::Icmp, true),
            (CtState::Untracked, false),
        ] {
            assert_eq!(evictable(&t, PROTO_TCP, state, now, now), want, "{state:?}");
        }
        let late = now + 432_001_000_000_000;
        assert!(evictable(&t, PROTO_TCP, CtState::Established, now, late));
    }

    #[test]
    fn gcra_admits_bursts_then_the_rate() {
        // 10 flows/s, bursts of 3.
        let (iv, burst) = (100_000_000, 200_000_000);
        let mut tat = 0;
        let now = 1_000_000_000_000;
        for _ in 0..3 {
            tat = rate_admit(tat, now, iv, burst).expect("burst");
        }
        assert_eq!(rate_admit(tat, now, iv, burst), None);
        assert!(rate_admit(tat, now + iv, iv, burst).is_some());
    }

    #[test]
    fn state_names_roundtrip() {
        for s in CtState::ALL {
            assert_eq!(CtState::from_raw(s as u8), s);
        }
        assert_eq!(CtState::from_raw(200), CtState::Untracked);
    }
}
