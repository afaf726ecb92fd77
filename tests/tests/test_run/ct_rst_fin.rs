//! Forged RSTs and FINs cannot tear down someone else's flow: an RST is
//! believed only inside the window its receiver advertised
//! (`rcv.ack <= seq <= rcv.ack + window`), a FIN only where it continues
//! the sender's stream; anything else is dropped, counted
//! (`drop_out_of_window`, per rule `out_of_window`) and changes nothing.
//! An RST that was believed is not the end either: a later segment of the
//! flow restores it (RFC 7857 2.1). Both directions, through
//! BPF_PROG_TEST_RUN.

use super::ct_support::*;
use forwarder_common::{conntrack::CtState, Reason, RULE_DROP_OUT_OF_WINDOW};
use forwarder_tests::require_root;

fn established(h: &mut Host, port: u16) -> Conn {
    Conn::established(h, ep(CLIENT, port), ep(HOST_LAN, 80), ep(VM, 80))
}

#[test]
fn rst_outside_the_window_is_dropped_and_counted() {
    if !require_root("rst_outside_the_window_is_dropped_and_counted") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let c = established(&mut h, 40000);
    let (o, r) = (c.orig(), c.reply());
    let id = h.id("web");
    // From the LAN side, spoofing the client: the server's receive window
    // starts at what it acknowledged (c.cseq) and is WIN wide.
    let lan_cases = [
        ("seq 12345 (the issue's)", 12345u32),
        ("one below the window", c.cseq.wrapping_sub(1)),
        (
            "one beyond the window",
            c.cseq.wrapping_add(u32::from(WIN) + 1),
        ),
        ("half the sequence space away", c.cseq.wrapping_add(1 << 31)),
    ];
    for (name, seq) in lan_cases {
        let rst = seg(c.client, c.listen, "R", seq, 0, b"");
        let (ran, _) = ingress(
            &mut h,
            name,
            LAN_IF,
            &rst,
            Out::Drop(Reason::DropOutOfWindow),
        );
        assert!(ran.delta.flows_changed.is_empty(), "{name}: a flow changed");
        assert_eq!(
            ran.delta.rules[&id].drops[RULE_DROP_OUT_OF_WINDOW], 1,
            "{name}"
        );
        assert_eq!(state(name, &ran.after, &o, &r), CtState::Established);
    }
    // From the backend side, spoofing the server (RST with ACK too).
    for seq in [c.sseq.wrapping_sub(1), c.sseq.wrapping_add(100_000), 1] {
        let rst = seg(c.target, c.seen_as, "RA", seq, c.cseq, b"");
        let (ran, _) = ingress(
            &mut h,
            "server-side RST",
            VM_IF,
            &rst,
            Out::Drop(Reason::DropOutOfWindow),
        );
        assert_eq!(
            state("server RST", &ran.after, &o, &r),
            CtState::Established
        );
    }
    // The connection goes on.
    let mut c = c;
    let data = c.client_sends("PA", b"still here");
    ingress(
        &mut h,
        "data after the forged RSTs",
        LAN_IF,
        &data,
        Out::Fwd(c.seen_as, c.target),
    );
}

#[test]
fn rst_inside_the_window_closes_and_data_after_it_restores() {
    if !require_root("rst_inside_the_window_closes_and_data_after_it_restores") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let mut c = established(&mut h, 40001);
    let (o, r) = (c.orig(), c.reply());
    // An RST at the edge of the window the server advertised.
    let rst = seg(
        c.client,
        c.listen,
        "R",
        c.cseq.wrapping_add(u32::from(WIN)),
        0,
        b"",
    );
    let (ran, _) = ingress(
        &mut h,
        "RST at the window's edge",
        LAN_IF,
        &rst,
        Out::Fwd(c.seen_as, c.target),
    );
    assert_eq!(state("RST", &ran.after, &o, &r), CtState::Close);
    // RFC 7857 2.1: a later segment restores the flow (the RST may have
    // been lost on its way, or forged and lucky).
    let data = c.server_sends("PA", b"the server did not get it");
    let (ran, _) = ingress(
        &mut h,
        "data after the RST",
        VM_IF,
        &data,
        Out::Fwd(c.listen, c.client),
    );
    assert_eq!(state("restored", &ran.after, &o, &r), CtState::Established);
    // An exact RST (seq = what the receiver acknowledged) from the server.
    let rst = seg(c.target, c.seen_as, "R", c.sseq, 0, b"");
    let (ran, _) = ingress(
        &mut h,
        "exact RST from the server",
        VM_IF,
        &rst,
        Out::Fwd(c.listen, c.client),
    );
    assert_eq!(state("RST 2", &ran.after, &o, &r), CtState::Close);
}

#[test]
fn fin_outside_the_window_is_dropped() {
    if !require_root("fin_outside_the_window_is_dropped") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let mut c = established(&mut h, 40002);
    let (o, r) = (c.orig(), c.reply());
    let id = h.id("web");
    for (name, seq) in [
        ("FIN far ahead", c.cseq.wrapping_add(1_000_000)),
        ("FIN below what was acknowledged", c.cseq.wrapping_sub(10)),
    ] {
        let fin = seg(c.client, c.listen, "FA", seq, c.sseq, b"");
        let (ran, _) = ingress(
            &mut h,
            name,
            LAN_IF,
            &fin,
            Out::Drop(Reason::DropOutOfWindow),
        );
        assert_eq!(
            ran.delta.rules[&id].drops[RULE_DROP_OUT_OF_WINDOW], 1,
            "{name}"
        );
        assert_eq!(state(name, &ran.after, &o, &r), CtState::Established);
    }
    // A forged FIN with data that ends inside the window but starts below
    // what the server acknowledged: still outside (it would rewrite acked
    // bytes).
    let fin = seg(
        c.client,
        c.listen,
        "FA",
        c.cseq.wrapping_sub(50),
        c.sseq,
        &[0u8; 20],
    );
    ingress(
        &mut h,
        "FIN with old data",
        LAN_IF,
        &fin,
        Out::Drop(Reason::DropOutOfWindow),
    );
    // The real one.
    let fin = c.client_sends("FA", b"");
    let (ran, _) = ingress(
        &mut h,
        "the client's FIN",
        LAN_IF,
        &fin,
        Out::Fwd(c.seen_as, c.target),
    );
    assert_eq!(state("FIN", &ran.after, &o, &r), CtState::FinWait);
}

#[test]
fn rst_answering_a_syn_must_acknowledge_it() {
    if !require_root("rst_answering_a_syn_must_acknowledge_it") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let c = Conn::open(&mut h, ep(CLIENT, 40003), ep(HOST_LAN, 80), ep(VM, 80));
    let (o, r) = (c.orig(), c.reply());
    let forged = seg(c.target, c.seen_as, "RA", 0, CLIENT_ISN + 2, b"");
    ingress(
        &mut h,
        "RST acknowledging something else",
        VM_IF,
        &forged,
        Out::Drop(Reason::DropOutOfWindow),
    );
    assert_eq!(
        state("forged", &h.snapshot().unwrap(), &o, &r),
        CtState::SynSent
    );
    // Connection refused: RST+ACK acknowledging the SYN.
    let refused = seg(c.target, c.seen_as, "RA", 0, CLIENT_ISN + 1, b"");
    let (ran, _) = ingress(
        &mut h,
        "connection refused",
        VM_IF,
        &refused,
        Out::Fwd(c.listen, c.client),
    );
    assert_eq!(state("refused", &ran.after, &o, &r), CtState::Close);
}
