//! `[global.timeouts]`: idle timeouts of tracked flows by connection state,
//! netfilter's by default, and their kernel form (`CtTimeouts`).
use std::time::Duration;

use forwarder_common::{
    conntrack::{CtState, CtTimeouts},
    PROTO_TCP,
};

/// Idle timeouts of tracked flows by connection state. The defaults are
/// netfilter's (`forwarder_common::conntrack::CtTimeouts::DEFAULT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The client's SYN seen, nothing back yet.
    pub tcp_syn_sent: Duration,
    /// The server's SYN-ACK seen, the client's ACK not yet.
    pub tcp_syn_recv: Duration,
    pub tcp_established: Duration,
    /// One side sent FIN.
    pub tcp_fin_wait: Duration,
    /// The other side acknowledged that FIN.
    pub tcp_close_wait: Duration,
    /// Both sides sent FIN, the last not yet acknowledged.
    pub tcp_last_ack: Duration,
    pub tcp_time_wait: Duration,
    /// After an RST.
    pub tcp_close: Duration,
    /// UDP flow without a reply, or replied but younger than 2 s.
    pub udp: Duration,
    /// UDP flow with replies, still active 2 s after its first packet.
    pub udp_stream: Duration,
    /// ICMP echo flows.
    pub icmp: Duration,
}

impl Timeouts {
    /// Key names in the file, in the order they are documented and printed.
    pub const KEYS: [&'static str; 11] = [
        "tcp_syn_sent",
        "tcp_syn_recv",
        "tcp_established",
        "tcp_fin_wait",
        "tcp_close_wait",
        "tcp_last_ack",
        "tcp_time_wait",
        "tcp_close",
        "udp",
        "udp_stream",
        "icmp",
    ];

    fn slot(&mut self, key: &str) -> Option<&mut Duration> {
        Some(match key {
            "tcp_syn_sent" => &mut self.tcp_syn_sent,
            "tcp_syn_recv" => &mut self.tcp_syn_recv,
            "tcp_established" => &mut self.tcp_established,
            "tcp_fin_wait" => &mut self.tcp_fin_wait,
            "tcp_close_wait" => &mut self.tcp_close_wait,
            "tcp_last_ack" => &mut self.tcp_last_ack,
            "tcp_time_wait" => &mut self.tcp_time_wait,
            "tcp_close" => &mut self.tcp_close,
            "udp" => &mut self.udp,
            "udp_stream" => &mut self.udp_stream,
            "icmp" => &mut self.icmp,
            _ => return None,
        })
    }

    pub fn get(&self, key: &str) -> Option<Duration> {
        let mut t = *self;
        t.slot(key).map(|d| *d)
    }

    pub fn set(&mut self, key: &str, value: Duration) -> bool {
        match self.slot(key) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    /// The kernel's form: whole seconds (at least 1; what does not fit 32
    /// bits is capped at 136 years), by connection state.
    pub fn to_ct(&self) -> CtTimeouts {
        let s = |d: Duration| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        CtTimeouts::empty()
            .with(CtState::SynSent, s(self.tcp_syn_sent))
            .with(CtState::SynRecv, s(self.tcp_syn_recv))
            .with(CtState::Established, s(self.tcp_established))
            .with(CtState::FinWait, s(self.tcp_fin_wait))
            .with(CtState::CloseWait, s(self.tcp_close_wait))
            .with(CtState::LastAck, s(self.tcp_last_ack))
            .with(CtState::TimeWait, s(self.tcp_time_wait))
            .with(CtState::Close, s(self.tcp_close))
            .with(CtState::UdpUnreplied, s(self.udp))
            .with(CtState::UdpReplied, s(self.udp))
            .with(CtState::UdpStream, s(self.udp_stream))
            .with(CtState::Icmp, s(self.icmp))
    }
}

impl Default for Timeouts {
    /// netfilter's defaults (see `CtTimeouts::DEFAULT`).
    fn default() -> Self {
        let d = CtTimeouts::DEFAULT;
        let s = |state: CtState| Duration::from_secs(u64::from(d.secs(PROTO_TCP, state)));
        Timeouts {
            tcp_syn_sent: s(CtState::SynSent),
            tcp_syn_recv: s(CtState::SynRecv),
            tcp_established: s(CtState::Established),
            tcp_fin_wait: s(CtState::FinWait),
            tcp_close_wait: s(CtState::CloseWait),
            tcp_last_ack: s(CtState::LastAck),
            tcp_time_wait: s(CtState::TimeWait),
            tcp_close: s(CtState::Close),
            udp: s(CtState::UdpUnreplied),
            udp_stream: s(CtState::UdpStream),
            icmp: s(CtState::Icmp),
        }
    }
}
