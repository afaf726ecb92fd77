//! `snat = "auto"` learning that one client cannot steer: a backend is
//! switched to SNAT only when three distinct clients' flows failed (a TCP
//! client retransmitting its SYN, a UDP client sending again, with nothing
//! ever back from the backend) within a minute, and the backend answered
//! no DNAT-only flow in between. One client the backend itself blocks
//! (the issue's bypass: it would then get in with the host's address)
//! cannot do it alone, however often it retries. UDP learns the same way.
//! Flows are aged by rewriting their creation time, not by sleeping.

use super::ct_support::*;
use forwarder_common::{addr_v4, AutoSnatKey, FlowFlags, FlowKey, PROTO_TCP, PROTO_UDP};
use forwarder_tests::require_root;

const AUTO: &str = r#"
[global]
snat_ports = "41000-48999"

[[forward]]
name = "auto80"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "auto"
mss_clamp = "off"

[[forward]]
name = "dns"
in = "vmbr0"
listen = "192.168.1.55"
proto = "udp"
port = 5353
to = "192.168.100.80:53"
snat = "auto"
"#;

const C3: Ip = [192, 168, 1, 30];
const C4: Ip = [192, 168, 1, 40];

fn listen() -> Ep {
    ep(HOST_LAN, 80)
}

fn vm() -> Ep {
    ep(VM, 80)
}

/// Moves a flow's creation 2 s into the past (past the 200 ms / 1 s
/// probe delays).
fn backdate(h: &mut Host, keys: &[FlowKey]) {
    let snap = h.snapshot().unwrap();
    for k in keys {
        let mut e = snap.flows[k];
        e.created_ns -= 2_000_000_000;
        h.insert_flow(*k, e).unwrap();
    }
}

/// A client's first SYN (kept address) and, after the probe delay, its
/// retransmission: what the forwarder does with the retransmission.
fn failing_client(h: &mut Host, client: Ep, retransmission: Out) -> Ran {
    let syn = seg(client, listen(), "S", CLIENT_ISN, 0, b"");
    ingress(
        h,
        "first SYN keeps the client",
        LAN_IF,
        &syn,
        Out::Fwd(client, vm()),
    );
    backdate(
        h,
        &[
            fkey(client, listen(), PROTO_TCP),
            fkey(vm(), client, PROTO_TCP),
        ],
    );
    ingress(h, "retransmitted SYN", LAN_IF, &syn, retransmission).0
}

fn learned(h: &Host, rule: &str) -> AutoSnatKey {
    AutoSnatKey {
        rule_id: h.id(rule),
        addr: addr_v4(VM),
    }
}

#[test]
fn one_client_alone_never_switches_a_backend() {
    if !require_root("one_client_alone_never_switches_a_backend") {
        return;
    }
    let mut h = Host::with_rules(64, AUTO);
    let client = ep(CLIENT, 40000);
    let ran = failing_client(&mut h, client, Out::Fwd(client, vm()));
    assert!(ran.after.auto_snat.is_empty(), "nothing learned");
    // Retrying as often as it likes, from new ports too.
    let syn = seg(client, listen(), "S", CLIENT_ISN, 0, b"");
    for _ in 0..5 {
        let (ran, _) = ingress(&mut h, "again", LAN_IF, &syn, Out::Fwd(client, vm()));
        assert!(ran.after.auto_snat.is_empty());
    }
    for port in 40001..40004 {
        let ran = failing_client(&mut h, ep(CLIENT, port), Out::Fwd(ep(CLIENT, port), vm()));
        assert!(ran.after.auto_snat.is_empty(), "same address, other port");
    }
}

#[test]
fn three_distinct_clients_switch_it() {
    if !require_root("three_distinct_clients_switch_it") {
        return;
    }
    let mut h = Host::with_rules(64, AUTO);
    let (a, b, c) = (ep(CLIENT, 40000), ep(LAN_PEER, 40000), ep(C3, 40000));
    failing_client(&mut h, a, Out::Fwd(a, vm()));
    let ran = failing_client(&mut h, b, Out::Fwd(b, vm()));
    assert!(ran.after.auto_snat.is_empty(), "two clients: not yet");
    // The third: the backend is learned and this flow is made anew, SNATed.
    let ran = failing_client(&mut h, c, Out::Snat(HOST_VM, vm()));
    let key = learned(&h, "auto80");
    assert!(ran.after.auto_snat.contains_key(&key), "learned");
    let e = entry("third", &ran.after, &fkey(c, listen(), PROTO_TCP));
    assert_eq!(e.flags, FlowFlags::AUTO | FlowFlags::SNAT);
    // The first client's next retransmission is switched too.
    let syn = seg(a, listen(), "S", CLIENT_ISN, 0, b"");
    ingress(
        &mut h,
        "first client again",
        LAN_IF,
        &syn,
        Out::Snat(HOST_VM, vm()),
    );
    // And a new client is SNATed from its first packet.
    let syn = seg(ep(C4, 40000), listen(), "S", CLIENT_ISN, 0, b"");
    ingress(&mut h, "new client", LAN_IF, &syn, Out::Snat(HOST_VM, vm()));
}

#[test]
fn an_answer_from_the_backend_starts_the_count_again() {
    if !require_root("an_answer_from_the_backend_starts_the_count_again") {
        return;
    }
    let mut h = Host::with_rules(64, AUTO);
    let (a, b, c) = (ep(CLIENT, 40000), ep(LAN_PEER, 40000), ep(C3, 40000));
    failing_client(&mut h, a, Out::Fwd(a, vm()));
    failing_client(&mut h, b, Out::Fwd(b, vm()));
    // Another client connects fine: the backend's replies do come back
    // through here, it only refuses some clients.
    let d = ep(C4, 40000);
    let syn = seg(d, listen(), "S", CLIENT_ISN, 0, b"");
    ingress(&mut h, "good client's SYN", LAN_IF, &syn, Out::Fwd(d, vm()));
    let sa = seg(vm(), d, "SA", SERVER_ISN, CLIENT_ISN + 1, b"");
    ingress(
        &mut h,
        "good client's SYN-ACK",
        VM_IF,
        &sa,
        Out::Fwd(listen(), d),
    );
    let ran = failing_client(&mut h, c, Out::Fwd(c, vm()));
    assert!(
        ran.after.auto_snat.is_empty(),
        "the answer reset the evidence"
    );
}

#[test]
fn udp_learns_too() {
    if !require_root("udp_learns_too") {
        return;
    }
    let mut h = Host::with_rules(64, AUTO);
    let dns = ep(HOST_LAN, 5353);
    let vm53 = ep(VM, 53);
    let mut last = None;
    for (i, ip) in [CLIENT, LAN_PEER, C3].into_iter().enumerate() {
        let client = ep(ip, 50000);
        let q = forwarder_tests::testrun::frames::udp(client, dns, b"query");
        ingress(&mut h, "first query", LAN_IF, &q, Out::Fwd(client, vm53));
        backdate(
            &mut h,
            &[fkey(client, dns, PROTO_UDP), fkey(vm53, client, PROTO_UDP)],
        );
        let want = if i < 2 {
            Out::Fwd(client, vm53)
        } else {
            Out::Snat(HOST_VM, vm53)
        };
        last = Some(ingress(&mut h, "query again, no answer", LAN_IF, &q, want).0);
    }
    assert!(last
        .unwrap()
        .after
        .auto_snat
        .contains_key(&learned(&h, "dns")));
}
