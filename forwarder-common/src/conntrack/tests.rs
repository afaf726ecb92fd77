//! Unit tests of the connection-tracking rules (host only).
use super::*;
use crate::{FlowTrack, Seen, PROTO_TCP, PROTO_UDP};

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

/// `tcp_step` for a segment from the client (the flow's original
/// direction): `own` is the client's tracking, `peer` the server's.
fn from_client(
    state: CtState,
    s: &Segment,
    own: &FlowTrack,
    seen: Seen,
    peer: &FlowTrack,
) -> Verdict {
    tcp_step(state, true, s, own, seen, Some(peer))
}

/// `tcp_step` for a segment from the server: `own` is the server's
/// tracking, `peer` the client's.
fn from_server(
    state: CtState,
    s: &Segment,
    own: &FlowTrack,
    seen: Seen,
    peer: &FlowTrack,
) -> Verdict {
    tcp_step(state, false, s, own, seen, Some(peer))
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
        from_server(CtState::SynSent, &good, &s0, Seen::empty(), &c),
        Verdict::Transition(CtState::SynRecv)
    );
    let forged = seg(SA, 5000, 1234, 1000, 0);
    assert_eq!(
        from_server(CtState::SynSent, &forged, &s0, Seen::empty(), &c),
        Verdict::Drop
    );
    let mut s = FlowTrack::default();
    start(&mut s, &good);
    // The client's ACK must acknowledge the server's ISN.
    let blind = seg(TCP_ACK, 1001, 9999, 1000, 0);
    assert_eq!(
        from_client(CtState::SynRecv, &blind, &c, Seen::empty(), &s),
        Verdict::Ignore
    );
    let ack = seg(TCP_ACK, 1001, 5001, 1000, 0);
    assert_eq!(
        from_client(CtState::SynRecv, &ack, &c, Seen::empty(), &s),
        Verdict::Transition(CtState::Established)
    );
    // An ACK before the SYN-ACK changes nothing.
    assert_eq!(
        from_client(CtState::SynSent, &ack, &c, Seen::empty(), &s0),
        Verdict::Ignore
    );
}

#[test]
fn rst_only_inside_the_window() {
    let (c, s) = established();
    // From the server: must lie in [client ack 5001, +1000].
    let close = Verdict::Transition(CtState::Close);
    for (seq, want) in [
        (5001, close),
        (5500, close),
        (6001, close),
        (6002, Verdict::Drop),
        (5000, Verdict::Drop),
        (12345, Verdict::Drop),
        (1001, Verdict::Drop),
    ] {
        let rst = seg(TCP_RST, seq, 0, 0, 0);
        let v = from_server(CtState::Established, &rst, &s, Seen::empty(), &c);
        assert_eq!(v, want, "seq {seq}");
    }
}

#[test]
fn rst_answering_a_syn_must_acknowledge_it() {
    let mut c = FlowTrack::default();
    start(&mut c, &seg(TCP_SYN, 1000, 0, 1000, 0));
    let s = FlowTrack::default();
    let refused = seg(RA, 0, 1001, 0, 0);
    assert_eq!(
        from_server(CtState::SynSent, &refused, &s, Seen::empty(), &c),
        Verdict::Transition(CtState::Close)
    );
    let forged = seg(RA, 0, 7777, 0, 0);
    assert_eq!(
        from_server(CtState::SynSent, &forged, &s, Seen::empty(), &c),
        Verdict::Drop
    );
    // The client aborting its own SYN continues its own sequence.
    let abort = seg(TCP_RST, 1001, 0, 0, 0);
    assert_eq!(
        from_client(CtState::SynSent, &abort, &c, Seen::empty(), &s),
        Verdict::Transition(CtState::Close)
    );
}

#[test]
fn fin_only_inside_the_window_and_the_close_sequence() {
    let (c, s) = established();
    // Client FIN at its next byte.
    let fin = seg(FA, 1001, 5001, 1000, 0);
    assert_eq!(
        from_client(CtState::Established, &fin, &c, Seen::ACK, &s),
        Verdict::Transition(CtState::FinWait)
    );
    let forged = seg(FA, 400_000, 5001, 1000, 0);
    assert_eq!(
        from_client(CtState::Established, &forged, &c, Seen::ACK, &s),
        Verdict::Drop
    );
    let mut c2 = c;
    record(&mut c2, &fin);
    // The server acknowledges the FIN (ack 1002): CLOSE_WAIT.
    let ack = seg(TCP_ACK, 5001, 1002, 1000, 0);
    assert_eq!(
        from_server(CtState::FinWait, &ack, &s, Seen::ACK, &c2),
        Verdict::Transition(CtState::CloseWait)
    );
    // The client repeating its FIN changes nothing.
    assert_eq!(
        from_client(CtState::FinWait, &fin, &c2, Seen::FIN, &s),
        Verdict::Forward
    );
    let mut s2 = s;
    record(&mut s2, &ack);
    let sfin = seg(FA, 5001, 1002, 1000, 0);
    assert_eq!(
        from_server(CtState::CloseWait, &sfin, &s2, Seen::ACK, &c2),
        Verdict::Transition(CtState::LastAck)
    );
    record(&mut s2, &sfin);
    let last = seg(TCP_ACK, 1002, 5002, 1000, 0);
    assert_eq!(
        from_client(CtState::LastAck, &last, &c2, Seen::FIN, &s2),
        Verdict::Transition(CtState::TimeWait)
    );
}

#[test]
fn data_after_rst_restores_an_assured_flow() {
    let (mut c, s) = established();
    c.ct_flags |= CT_ASSURED;
    let data = seg(TCP_ACK, 1001, 5001, 1000, 100);
    assert_eq!(
        from_client(CtState::Close, &data, &c, Seen::ACK, &s),
        Verdict::Transition(CtState::Established)
    );
    c.ct_flags &= !CT_ASSURED;
    assert_eq!(
        from_client(CtState::Close, &data, &c, Seen::ACK, &s),
        Verdict::Ignore
    );
    // A SYN on a closed tuple starts over.
    assert_eq!(
        from_client(
            CtState::Close,
            &seg(TCP_SYN, 77, 0, 1000, 0),
            &c,
            Seen::empty(),
            &s
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

#[test]
fn a_syn_ack_may_leave_the_syns_data_unacknowledged() {
    let mut c = FlowTrack::default();
    // A SYN carrying 100 bytes (TCP Fast Open): its end is ISN + 101.
    start(&mut c, &seg(TCP_SYN, 1000, 0, 1000, 100));
    let s0 = FlowTrack::default();
    let syn_recv = Verdict::Transition(CtState::SynRecv);
    for (ack, want) in [
        (1001, syn_recv),
        (1101, syn_recv),
        (1101u32.wrapping_sub(SYN_DATA_MAX + 1), Verdict::Drop),
        (1102, Verdict::Drop),
        (1_000_000, Verdict::Drop),
    ] {
        let sa = seg(SA, 5000, ack, 1000, 0);
        let v = from_server(CtState::SynSent, &sa, &s0, Seen::empty(), &c);
        assert_eq!(v, want, "ack {ack}");
    }
}
