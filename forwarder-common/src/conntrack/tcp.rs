//! The TCP part of connection tracking: the fields of a segment, sequence
//! arithmetic, the window checks and the state machine (see the parent
//! module for what is checked and why).
use super::{CtState, CT_ACK_SEEN, CT_ASSURED, CT_WSCALE, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::{FlowTrack, Seen};

/// Slack on top of the largest window a direction advertised when checking
/// how far its acknowledgement may advance, and the least window assumed
/// (netfilter's MAXACKWINCONST is 66000).
pub const ACK_SLACK: u32 = 65_535;

/// The most data a SYN carries that a SYN-ACK may leave unacknowledged:
/// one segment at a 9000-byte (jumbo) MTU.
pub const SYN_DATA_MAX: u32 = 9_000;

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
    /// A SYN on a closed tuple (TIME_WAIT or CLOSE): the port is reused
    /// by a new connection. The old flow is forgotten and the SYN creates
    /// a new one from the current forwards (netfilter kills the old
    /// conntrack and looks the packet up again).
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
    own_tcp_seen: Seen,
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
        // The server's answer must acknowledge the client's SYN: its ISN + 1,
        // or up to the end of data the SYN carried (a SYN with data, as TCP
        // Fast Open sends, is usually acknowledged without its data by a
        // server that does not take it; netfilter accepts both). The data
        // is at most one segment, so the window left to a guess stays small.
        (false, true, CtState::SynSent) => {
            let behind = peer.seq_end.wrapping_sub(seg.ack);
            if behind <= SYN_DATA_MAX {
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
    own_tcp_seen: Seen,
    peer: &FlowTrack,
) -> Verdict {
    if state == CtState::SynSent {
        // A FIN before the server answered: netfilter calls it invalid.
        return Verdict::Ignore;
    }
    if !fin_acceptable(seg, own, peer) {
        return Verdict::Drop;
    }
    let again = own_tcp_seen.contains(Seen::FIN);
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
    own_tcp_seen: Seen,
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
        CtState::FinWait if !own_tcp_seen.contains(Seen::FIN) => {
            Verdict::Transition(CtState::CloseWait)
        }
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
