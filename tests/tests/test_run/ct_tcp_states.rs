//! TCP connection states as netfilter keeps them, through BPF_PROG_TEST_RUN:
//! a flow is ESTABLISHED (and assured) only once the server's SYN-ACK
//! acknowledged the client's SYN and the client's ACK acknowledged the
//! server's; a forged SYN-ACK is dropped, a blind ACK changes nothing; the
//! close sequence FIN_WAIT -> CLOSE_WAIT -> LAST_ACK -> TIME_WAIT; a SYN on
//! a closed tuple starts over. Each step checks the verdict, the one counter
//! it moved, the packet, and the state both entries carry.

use super::ct_support::*;
use forwarder_common::{
    conntrack::{CtState, CT_ASSURED},
    Reason, RULE_DROP_OUT_OF_WINDOW,
};
use forwarder_tests::require_root;

/// Client port 40000 on the LAN, "web" of `WEB_AND_DNS` (SNAT to HOST_VM).
fn web(h: &mut Host) -> Conn {
    Conn::open(h, ep(CLIENT, 40000), ep(HOST_LAN, 80), ep(VM, 80))
}

#[test]
fn handshake_completes_only_with_the_right_numbers() {
    if !require_root("handshake_completes_only_with_the_right_numbers") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let mut c = web(&mut h);
    let (o, r) = (c.orig(), c.reply());
    let snap = h.snapshot().unwrap();
    assert_eq!(state("SYN", &snap, &o, &r), CtState::SynSent);
    assert_eq!(entry("SYN", &snap, &o).ct.ct_flags & CT_ASSURED, 0);

    // A SYN-ACK that does not acknowledge the client's ISN: a spoofed
    // server or a stale one. Dropped and counted, nothing changes.
    let forged = seg(c.target, c.seen_as, "SA", SERVER_ISN, CLIENT_ISN + 7, b"");
    let (ran, _) = ingress(
        &mut h,
        "forged SYN-ACK",
        VM_IF,
        &forged,
        Out::Drop(Reason::DropOutOfWindow),
    );
    assert!(
        ran.delta.flows_changed.is_empty(),
        "forged SYN-ACK changed a flow"
    );
    let drops = ran.delta.rules[&h.id("web")].drops;
    assert_eq!(drops[RULE_DROP_OUT_OF_WINDOW], 1, "counted per rule");

    // An ACK before any SYN-ACK: forwarded (the server answers it with an
    // RST), the state stays.
    let early = seg(c.client, c.listen, "A", CLIENT_ISN + 1, 12345, b"");
    let (ran, _) = ingress(
        &mut h,
        "ACK before the SYN-ACK",
        LAN_IF,
        &early,
        Out::Fwd(c.seen_as, c.target),
    );
    assert_eq!(state("early ACK", &ran.after, &o, &r), CtState::SynSent);

    let sa = c.server_sends("SA", b"");
    let (ran, _) = ingress(&mut h, "SYN-ACK", VM_IF, &sa, Out::Fwd(c.listen, c.client));
    assert_eq!(state("SYN-ACK", &ran.after, &o, &r), CtState::SynRecv);
    assert_eq!(
        ran.delta.flows_changed.len(),
        2,
        "a transition is written to both entries"
    );

    // The client's ACK must acknowledge the server's ISN: a spoofed client
    // (which never saw the SYN-ACK) cannot complete the handshake.
    let blind = seg(c.client, c.listen, "A", c.cseq, SERVER_ISN + 99, b"");
    let (ran, _) = ingress(
        &mut h,
        "blind ACK",
        LAN_IF,
        &blind,
        Out::Fwd(c.seen_as, c.target),
    );
    assert_eq!(state("blind ACK", &ran.after, &o, &r), CtState::SynRecv);
    assert_eq!(
        entry("blind ACK", &ran.after, &o).ct.ct_flags & CT_ASSURED,
        0
    );

    let ack = c.client_sends("A", b"");
    let (ran, _) = ingress(&mut h, "ACK", LAN_IF, &ack, Out::Fwd(c.seen_as, c.target));
    assert_eq!(state("ACK", &ran.after, &o, &r), CtState::Established);
    for k in [o, r] {
        assert_ne!(
            entry("ACK", &ran.after, &k).ct.ct_flags & CT_ASSURED,
            0,
            "{}: assured",
            show(&k)
        );
    }
}

#[test]
fn close_sequence_and_reopen() {
    if !require_root("close_sequence_and_reopen") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let mut c = Conn::established(&mut h, ep(CLIENT, 40000), ep(HOST_LAN, 80), ep(VM, 80));
    let (o, r) = (c.orig(), c.reply());
    let req = c.client_sends("PA", b"GET / HTTP/1.0\r\n\r\n");
    ingress(
        &mut h,
        "request",
        LAN_IF,
        &req,
        Out::Fwd(c.seen_as, c.target),
    );
    let resp = c.server_sends("PA", &[b'x'; 500]);
    ingress(
        &mut h,
        "response",
        VM_IF,
        &resp,
        Out::Fwd(c.listen, c.client),
    );

    let steps: [(&str, bool, &str, CtState); 4] = [
        ("server FIN", false, "FA", CtState::FinWait),
        ("client ACK of the FIN", true, "A", CtState::CloseWait),
        ("client FIN", true, "FA", CtState::LastAck),
        ("server's last ACK", false, "A", CtState::TimeWait),
    ];
    for (name, from_client, flags, want) in steps {
        let (frame, iface, out) = if from_client {
            (
                c.client_sends(flags, b""),
                LAN_IF,
                Out::Fwd(c.seen_as, c.target),
            )
        } else {
            (
                c.server_sends(flags, b""),
                VM_IF,
                Out::Fwd(c.listen, c.client),
            )
        };
        let (ran, _) = ingress(&mut h, name, iface, &frame, out);
        assert_eq!(state(name, &ran.after, &o, &r), want, "{name}");
    }
    // The FIN's sender repeating its FIN changes nothing.
    let again = seg(c.client, c.listen, "FA", c.cseq - 1, c.sseq, b"");
    let (ran, _) = ingress(
        &mut h,
        "FIN retransmitted",
        LAN_IF,
        &again,
        Out::Fwd(c.seen_as, c.target),
    );
    assert_eq!(state("FIN again", &ran.after, &o, &r), CtState::TimeWait);

    // The client reuses the port: a SYN on the TIME_WAIT tuple is a new
    // connection. The old flow is forgotten and the SYN creates a new one
    // (translated anew: a new SNAT port), as netfilter does.
    let mut c2 = Conn {
        cseq: 0x2222_0000,
        sseq: 0x5555_0000,
        ..c
    };
    let syn = c2.client_sends("S", b"");
    let (ran, port) = ingress(
        &mut h,
        "SYN on the TIME_WAIT tuple",
        LAN_IF,
        &syn,
        Out::Snat(HOST_VM, c2.target),
    );
    c2.seen_as = ep(HOST_VM, port);
    let r2 = c2.reply();
    assert_eq!(
        entry("reopen", &ran.after, &o).packets,
        1,
        "the SYN created the flow anew (the old one counted every packet)"
    );
    assert_eq!(entry("reopen", &ran.after, &r2).packets, 0);
    if r2 != r {
        assert!(
            !ran.after.flows.contains_key(&r),
            "the old reply entry is gone"
        );
    }
    let r = r2;
    assert_eq!(state("reopen", &ran.after, &o, &r), CtState::SynSent);
    assert_eq!(entry("reopen", &ran.after, &o).ct.ct_flags & CT_ASSURED, 0);
    let sa = c2.server_sends("SA", b"");
    let (ran, _) = ingress(
        &mut h,
        "SYN-ACK of the new connection",
        VM_IF,
        &sa,
        Out::Fwd(c2.listen, c2.client),
    );
    assert_eq!(state("new SYN-ACK", &ran.after, &o, &r), CtState::SynRecv);
    let a = c2.client_sends("A", b"");
    let (ran, _) = ingress(
        &mut h,
        "ACK of the new connection",
        LAN_IF,
        &a,
        Out::Fwd(c2.seen_as, c2.target),
    );
    assert_eq!(state("new ACK", &ran.after, &o, &r), CtState::Established);
}

#[test]
fn the_fin_senders_own_ack_does_not_close_the_other_half() {
    if !require_root("the_fin_senders_own_ack_does_not_close_the_other_half") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let mut c = Conn::established(&mut h, ep(CLIENT, 40001), ep(HOST_LAN, 80), ep(VM, 80));
    let (o, r) = (c.orig(), c.reply());
    let fin = c.client_sends("FA", b"");
    let (ran, _) = ingress(
        &mut h,
        "client FIN",
        LAN_IF,
        &fin,
        Out::Fwd(c.seen_as, c.target),
    );
    assert_eq!(state("FIN", &ran.after, &o, &r), CtState::FinWait);
    // The client repeating its ACK (its own, after its FIN): still
    // FIN_WAIT; only the other side's ACK moves on.
    let own = seg(c.client, c.listen, "A", c.cseq, c.sseq, b"");
    let (ran, _) = ingress(
        &mut h,
        "client's own ACK",
        LAN_IF,
        &own,
        Out::Fwd(c.seen_as, c.target),
    );
    assert_eq!(state("client ACK", &ran.after, &o, &r), CtState::FinWait);
    let sack = c.server_sends("A", b"");
    let (ran, _) = ingress(
        &mut h,
        "server ACK",
        VM_IF,
        &sack,
        Out::Fwd(c.listen, c.client),
    );
    assert_eq!(state("server ACK", &ran.after, &o, &r), CtState::CloseWait);
    // The server goes on sending (half close): data in CLOSE_WAIT.
    let data = c.server_sends("PA", b"more");
    let (ran, _) = ingress(
        &mut h,
        "server data",
        VM_IF,
        &data,
        Out::Fwd(c.listen, c.client),
    );
    assert_eq!(state("server data", &ran.after, &o, &r), CtState::CloseWait);
}
