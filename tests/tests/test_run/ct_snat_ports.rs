//! SNAT source ports: the client's own when it lies in the range of its
//! class and is free (RFC 4787 4.1 port preservation, as netfilter does);
//! a client port below 1024 gets one below 1024 (netfilter's 1-511 and
//! 600-1023); otherwise random within `snat_ports`, so a nearly full range
//! still yields a port; never a port a local socket on the SNAT address
//! would receive the replies of (bpf_sk_lookup_tcp/udp); and a port held
//! only by a flow that never completed its handshake is taken from it.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

use super::ct_support::*;
use forwarder_common::{Reason, RULE_DROP_EVICTED};
use forwarder_tests::require_root;

/// "web" with SNAT ports 41000-41015.
fn host() -> Host {
    Host::with_rules(64, WEB_AND_DNS)
}

fn syn_from(h: &mut Host, case: &str, client: Ep) -> u16 {
    let syn = seg(client, ep(HOST_LAN, 80), "S", CLIENT_ISN, 0, b"");
    let (_, port) = ingress(h, case, LAN_IF, &syn, Out::Snat(HOST_VM, ep(VM, 80)));
    port
}

#[test]
fn the_clients_port_is_kept_when_it_is_in_range_and_free() {
    if !require_root("the_clients_port_is_kept_when_it_is_in_range_and_free") {
        return;
    }
    let mut h = host();
    assert_eq!(syn_from(&mut h, "port in range", ep(CLIENT, 41007)), 41007);
    // Another client with the same port: taken, so another one.
    let other = syn_from(&mut h, "same port, other client", ep(LAN_PEER, 41007));
    assert_ne!(other, 41007);
    assert!(SNAT_PORTS.contains(&other));
    // Outside the range: a port of the range.
    let p = syn_from(&mut h, "port out of range", ep(CLIENT, 50000));
    assert!(SNAT_PORTS.contains(&p), "{p}");
}

#[test]
fn privileged_client_ports_stay_below_1024() {
    if !require_root("privileged_client_ports_stay_below_1024") {
        return;
    }
    let mut h = host();
    // Kept when free (both sub-ranges), like netfilter.
    assert_eq!(syn_from(&mut h, "port 700", ep(CLIENT, 700)), 700);
    assert_eq!(syn_from(&mut h, "port 300", ep(CLIENT, 300)), 300);
    // Taken: another port of the same sub-range.
    let p = syn_from(&mut h, "port 700 taken", ep(LAN_PEER, 700));
    assert!((600..=1023).contains(&p), "700 -> {p}");
    let p = syn_from(&mut h, "port 300 taken", ep(LAN_PEER, 300));
    assert!((1..=511).contains(&p), "300 -> {p}");
}

#[test]
fn ports_are_random_so_a_nearly_full_range_still_yields_one() {
    if !require_root("ports_are_random_so_a_nearly_full_range_still_yields_one") {
        return;
    }
    let mut h = host();
    // 15 of the 16 ports held by established flows (not to be taken), each
    // from a client port of the range, which it keeps: drawn at random, the
    // last flows would miss the few free ports now and then, and an
    // established flow gives none up.
    let mut taken = Vec::new();
    for port in SNAT_PORTS.take(15) {
        let c = Conn::established(&mut h, ep(CLIENT, port), ep(HOST_LAN, 80), ep(VM, 80));
        assert_eq!(
            c.seen_as.port, port,
            "a free client port in the range is kept"
        );
        taken.push(port);
    }
    // The 16th flow, from a port outside the range, draws at random and
    // finds the one free port (32 random tries over 16 ports miss it with
    // probability (15/16)^32 = 13%: try a few clients).
    let free = SNAT_PORTS.clone().find(|p| !taken.contains(p)).unwrap();
    let mut got = None;
    for i in 0..6u16 {
        let client = ep(LAN_PEER, 50000 + i);
        let syn = seg(client, ep(HOST_LAN, 80), "S", CLIENT_ISN, 0, b"");
        let r = run(&mut h, forwarder_common::Hook::TcIngress, LAN_IF, &syn);
        if r.verdict == TC_ACT_REDIRECT {
            got = Some((client, verify("16th flow", &r.out, false).src.port));
            break;
        }
    }
    let (client, port) = got.expect("the last free port was found");
    assert_eq!(port, free, "the last free port was found");
    // Its handshake completes: an established flow, which no SYN may take
    // the port of.
    let mut c = Conn {
        client,
        listen: ep(HOST_LAN, 80),
        target: ep(VM, 80),
        seen_as: ep(HOST_VM, port),
        cseq: CLIENT_ISN.wrapping_add(1),
        sseq: SERVER_ISN,
    };
    let sa = c.server_sends("SA", b"");
    ingress(&mut h, "SYN-ACK", VM_IF, &sa, Out::Fwd(c.listen, client));
    let a = c.client_sends("A", b"");
    ingress(&mut h, "ACK", LAN_IF, &a, Out::Fwd(c.seen_as, c.target));
    // Now every port is held by an established flow: refused.
    let syn = seg(
        ep(LAN_PEER, 51000),
        ep(HOST_LAN, 80),
        "S",
        CLIENT_ISN,
        0,
        b"",
    );
    ingress(
        &mut h,
        "range exhausted",
        LAN_IF,
        &syn,
        Out::Drop(Reason::DropNoPort),
    );
}

#[test]
fn a_port_held_by_an_unanswered_syn_is_taken_from_it() {
    if !require_root("a_port_held_by_an_unanswered_syn_is_taken_from_it") {
        return;
    }
    let mut h = host();
    // 16 SYNs nobody answers hold every port (the exhaustion, at
    // 28k SYNs for the default range). Each from a port of the range, which
    // it keeps: drawn at random, the last free port is missed by all 32
    // tries one time in eight, and that SYN takes a held port instead (an
    // eviction before the one this test is about).
    for i in 0..16u8 {
        let port = *SNAT_PORTS.start() + u16::from(i);
        let got = syn_from(&mut h, "spoofed SYN", ep([192, 168, 1, 100 + i], port));
        assert_eq!(got, port, "a free client port in the range is kept");
    }
    let snap = h.snapshot().unwrap();
    assert_eq!(snap.rules[&h.id("web")].drops[RULE_DROP_EVICTED], 0);
    let c = Conn::established(&mut h, ep(CLIENT, 50000), ep(HOST_LAN, 80), ep(VM, 80));
    assert!(SNAT_PORTS.contains(&c.seen_as.port));
    let snap = h.snapshot().unwrap();
    assert_eq!(snap.rules[&h.id("web")].drops[RULE_DROP_EVICTED], 1);
    assert_eq!(snap.flows.len(), 32, "one unanswered flow gave its port up");
}

#[test]
fn a_port_a_local_socket_uses_is_never_taken() {
    if !require_root("a_port_a_local_socket_uses_is_never_taken") {
        return;
    }
    let mut h = host();
    // The host itself listens on 192.168.100.1:41007 (the test thread is
    // in the host namespace): replies from the backend to that port are
    // its, not a forwarded flow's.
    let _listener =
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::from(HOST_VM), 41007)).expect("bind");
    // A client port in range that would be kept: another port instead.
    let p = syn_from(&mut h, "client port = local listener", ep(CLIENT, 41007));
    assert_ne!(p, 41007, "the listener's port");
    // Random ports never land on it either, even with the range nearly
    // full (15 of its 16 ports end up held).
    for i in 0..24u16 {
        let p = syn_from(&mut h, "random port", ep(CLIENT, 50000 + i));
        assert_ne!(p, 41007, "the listener's port");
    }
}
