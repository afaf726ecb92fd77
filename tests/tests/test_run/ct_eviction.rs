//! A full flow table makes room by evicting flows nobody can be sure of:
//! unassured ones (no completed handshake) first in the order they were
//! created, closing ones, expired ones; an established flow is never
//! evicted, and a table full of established flows refuses new ones. Each
//! eviction is counted on the evicted flow's rule (`evicted`).

use super::ct_support::*;
use forwarder_common::{conntrack::CtState, Reason, RULE_DROP_EVICTED, RULE_DROP_TABLE_FULL};
use forwarder_tests::require_root;

/// "web" of `WEB_AND_DNS` with SNAT ports to spare: here the table is
/// what runs out, not the ports (see test_run_ct_snat_ports.rs for that).
const RULES: &str = concat!(
    r#"
[global]
snat_ports = "41000-48999"
"#,
    forwarder_tests::web_forward!()
);

fn client(n: u16) -> Ep {
    ep(CLIENT, 40000 + n)
}

fn listen() -> Ep {
    ep(HOST_LAN, 80)
}

fn vm() -> Ep {
    ep(VM, 80)
}

#[test]
fn spoofed_syns_do_not_lock_a_full_table() {
    if !require_root("spoofed_syns_do_not_lock_a_full_table") {
        return;
    }
    // 16 flows, filled by 16 SYNs from addresses that never answer (the
    // issue's lock: every later flow was refused for hours).
    let mut h = Host::with_rules(16, RULES);
    for i in 0..16u8 {
        let spoofed = ep([192, 168, 1, 100 + i], 1024 + u16::from(i));
        let syn = seg(spoofed, listen(), "S", 7 * u32::from(i), 0, b"");
        ingress(
            &mut h,
            "spoofed SYN",
            LAN_IF,
            &syn,
            Out::Snat(HOST_VM, vm()),
        );
    }
    assert_eq!(h.snapshot().unwrap().flows.len(), 32, "table full");
    // A legitimate client still gets in, and completes its handshake.
    let c = Conn::established(&mut h, client(0), listen(), vm());
    let snap = h.snapshot().unwrap();
    assert_eq!(
        state("legit", &snap, &c.orig(), &c.reply()),
        CtState::Established
    );
    assert_eq!(snap.flows.len(), 32, "one spoofed flow made room");
    let evicted = snap.rules[&h.id("web")].drops[RULE_DROP_EVICTED];
    assert_eq!(evicted, 1, "the eviction is counted");
    // The oldest spoofed flow went first.
    let first = fkey(ep([192, 168, 1, 100], 1024), listen(), 6);
    assert!(
        !snap.flows.contains_key(&first),
        "oldest unassured flow evicted"
    );
}

#[test]
fn established_flows_are_never_evicted() {
    if !require_root("established_flows_are_never_evicted") {
        return;
    }
    let mut h = Host::with_rules(2, RULES);
    let a = Conn::established(&mut h, client(1), listen(), vm());
    let b = Conn::established(&mut h, client(2), listen(), vm());
    let syn = seg(client(3), listen(), "S", 1, 0, b"");
    let (ran, _) = ingress(
        &mut h,
        "SYN into a table of established flows",
        LAN_IF,
        &syn,
        Out::Drop(Reason::DropTableFull),
    );
    let web = h.id("web");
    assert_eq!(ran.delta.rules[&web].drops[RULE_DROP_TABLE_FULL], 1);
    assert_eq!(ran.delta.rules[&web].drops[RULE_DROP_EVICTED], 0);
    assert!(ran.delta.flows_removed.is_empty(), "nothing evicted");
    for c in [&a, &b] {
        assert_eq!(
            state("kept", &ran.after, &c.orig(), &c.reply()),
            CtState::Established
        );
    }
}

#[test]
fn unassured_and_closing_flows_make_room_established_ones_stay() {
    if !require_root("unassured_and_closing_flows_make_room_established_ones_stay") {
        return;
    }
    let mut h = Host::with_rules(2, RULES);
    let est = Conn::established(&mut h, client(1), listen(), vm());
    // SYN_RECV: answered, but the client never completed the handshake.
    let mut half = Conn::open(&mut h, client(2), listen(), vm());
    let sa = half.server_sends("SA", b"");
    ingress(&mut h, "SYN-ACK", VM_IF, &sa, Out::Fwd(listen(), client(2)));
    // A third flow evicts the half-open one (queued before it was the
    // established flow, which goes to the back of the queue).
    let mut third = Conn::open(&mut h, client(3), listen(), vm());
    let snap = h.snapshot().unwrap();
    assert!(
        !snap.flows.contains_key(&half.orig()),
        "SYN_RECV flow evicted"
    );
    assert!(!snap.flows.contains_key(&half.reply()));
    assert!(
        snap.flows.contains_key(&est.orig()),
        "established flow kept"
    );
    // Complete the third flow, then close it halfway: a closing flow may
    // be evicted even though it was established.
    let sa = third.server_sends("SA", b"");
    ingress(
        &mut h,
        "third SYN-ACK",
        VM_IF,
        &sa,
        Out::Fwd(listen(), client(3)),
    );
    let a = third.client_sends("A", b"");
    ingress(
        &mut h,
        "third ACK",
        LAN_IF,
        &a,
        Out::Fwd(third.seen_as, vm()),
    );
    let fin = third.client_sends("FA", b"");
    ingress(
        &mut h,
        "third FIN",
        LAN_IF,
        &fin,
        Out::Fwd(third.seen_as, vm()),
    );
    assert_eq!(
        state("FIN", &h.snapshot().unwrap(), &third.orig(), &third.reply()),
        CtState::FinWait
    );
    let fourth = Conn::open(&mut h, client(4), listen(), vm());
    let snap = h.snapshot().unwrap();
    assert!(
        !snap.flows.contains_key(&third.orig()),
        "FIN_WAIT flow evicted"
    );
    assert!(snap.flows.contains_key(&fourth.orig()));
    assert!(
        snap.flows.contains_key(&est.orig()),
        "established flow kept"
    );
    assert_eq!(snap.rules[&h.id("web")].drops[RULE_DROP_EVICTED], 2);
}
