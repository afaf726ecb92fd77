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

use crate::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

mod tcp;
pub use tcp::*;
#[cfg(test)]
mod tests;

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
