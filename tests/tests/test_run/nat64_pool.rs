//! NAT64 to an IPv4 target without a forwarding route (issue 13: an IPv6
//! listener forwarding to an IPv4 ClusterIP that only kube-proxy's DNAT in
//! the stack reaches). The client's packets become IPv4 packets from the
//! NAT64 pool (192.0.0.2, not an address of the host) and go to the stack
//! on the client's interface (`FwdStack`, TTL the hop limit: the stack
//! forwards and decrements); the target's replies, routed to the pool,
//! leave by the pool's device (fwd64), whose egress hands them to
//! fwd_ingress64, which makes them IPv6 to the client and redirects them
//! (hop limit the TTL: the stack decremented it already).
//!
//! ```text
//!  lan ── veth ── vmbr0  2001:db8:1::55/64      (client 2001:db8:1::10)
//!                 fwd64  dummy, 192.0.0.2/32 dev fwd64
//!                 10.96.0.10: no route (a ClusterIP; kube-proxy DNATs it)
//! ```
//!
//! Every output is read by etherparse, checksums recomputed
//! (`nat64::through4`, `nat64::through6`).
use forwarder_common::{FlowFlags, Reason, PROTO_TCP, PROTO_UDP};
use forwarder_tests::testrun::{
    frames::{ep, udp, Ep},
    ipv6::{ep6, ipv6_host, udp6, Ep6, CLIENT6, HOST_LAN6, HOST_LAN6_CIDR},
    tc::*,
    Host, LAN_IF, NAT64_IF, POOL, SNAT_PORTS, TCX_NEXT, TC_ACT_OK, TC_ACT_REDIRECT, VM_IF,
};

use super::nat64::{keys, tcp4, tcp6, through4, through6};

const RULES: &str = r#"
[global]
snat_ports = "41000-41015"

[[forward]]
name = "svc64"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 80
to = "10.96.0.10:80"

[[forward]]
name = "dns64"
in = "vmbr0"
listen = "2001:db8:1::55"
proto = "udp"
port = 53
to = "10.96.0.10:53"
"#;

const CLUSTER_IP: [u8; 4] = [10, 96, 0, 10];

fn host() -> Option<Host> {
    let mut h = ipv6_host("nat64_pool", &[(LAN_IF, HOST_LAN6_CIDR)])?;
    h.rules(RULES).expect("rules");
    // The daemon sets it where the plan says: the pool's device.
    h.egress_nat(NAT64_IF, true).expect("egress flag");
    Some(h)
}

/// Opens a TCP flow (SYN through the stack, SYN-ACK back by fwd64's
/// egress) and returns the pool address and port the target saw.
fn open(h: &mut Host, client: Ep6, listen: Ep6, target: Ep) -> Ep {
    let what = "SYN to the ClusterIP forward";
    let s = ingress(what, LAN_IF, tcp6(client, listen, "S", 64, b""))
        .expect(TC_ACT_OK, Reason::FwdStack)
        .rule("svc64", created(true, true).mss());
    let (o, (src, dst, ttl, mss, _)) = through4(h, &s);
    assert_eq!(mss, Some(1440), "{what}: MSS clamped for IPv6 clients");
    assert_eq!(src.ip, POOL, "{what}: the pool address, not the host's");
    assert!(SNAT_PORTS.contains(&src.port), "{what}: port {}", src.port);
    assert_eq!(dst, target, "{what}: the ClusterIP");
    assert_eq!(ttl, 64, "{what}: TTL the hop limit (the stack decrements)");
    let [orig, reply] = keys(client, listen, target, src, PROTO_TCP);
    assert_flows(what, &o.delta, &[orig, reply], &[], &[]);
    let stack = FlowFlags::SNAT | FlowFlags::XLAT | FlowFlags::VIA_STACK;
    assert_eq!(entry(what, &o.after, &orig).flags, stack);
    let r = entry(what, &o.after, &reply);
    assert_eq!(r.flags, stack | FlowFlags::REPLY);
    assert_eq!(r.ct.iface, h.nat64, "{what}: replies expected on fwd64");

    let what = "SYN-ACK leaving by fwd64";
    let s = egress(what, NAT64_IF, tcp4(target, src, "SA", b""))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("svc64", translated().mss());
    let (o, got) = through6(h, &s);
    assert_eq!(
        (got.src, got.dst),
        (listen, client),
        "{what}: to the client"
    );
    assert_eq!(got.hop, 64, "{what}: hop limit the TTL (forwarded already)");
    assert_eq!(got.mss, Some(1440), "{what}: MSS clamped");
    assert_flows(what, &o.delta, &[], &[], &[orig, reply]);
    src
}

#[test]
fn a_clusterip_flow_goes_through_the_stack_from_the_pool_and_back_by_fwd64() {
    let Some(mut h) = host() else { return };
    let (client, listen, target) = (ep6(CLIENT6, 40000), ep6(HOST_LAN6, 80), ep(CLUSTER_IP, 80));
    let seen = open(&mut h, client, listen, target);
    let request = b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n".to_vec();
    let s = ingress(
        "the request",
        LAN_IF,
        tcp6(client, listen, "A", 64, &request),
    )
    .expect(TC_ACT_OK, Reason::FwdStack)
    .rule("svc64", translated());
    let (_, (src, dst, _, _, payload)) = through4(&mut h, &s);
    assert_eq!((src, dst, payload), (seen, target, request));
    let body: Vec<u8> = (0..1200u32).map(|i| (i * 13 % 251) as u8).collect();
    let s = egress("the answer", NAT64_IF, tcp4(target, seen, "A", &body))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("svc64", translated());
    let (_, got) = through6(&mut h, &s);
    assert_eq!((got.src, got.dst, got.payload), (listen, client, body));
}

#[test]
fn a_udp_exchange_with_the_clusterip_is_translated_both_ways() {
    let Some(mut h) = host() else { return };
    let (client, listen, target) = (ep6(CLIENT6, 50000), ep6(HOST_LAN6, 53), ep(CLUSTER_IP, 53));
    let query = b"\x43\x21\x01\x00 svc query".to_vec();
    let s = ingress("DNS query", LAN_IF, udp6(client, listen, &query))
        .expect(TC_ACT_OK, Reason::FwdStack)
        .rule("dns64", created(true, true));
    let (_, (seen, dst, ttl, _, payload)) = through4(&mut h, &s);
    assert_eq!((seen.ip, dst, ttl, payload), (POOL, target, 64, query));
    let answer = b"\x43\x21\x81\x80 svc answer".to_vec();
    let s = egress("DNS answer by fwd64", NAT64_IF, udp(target, seen, &answer))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("dns64", translated());
    let (o, got) = through6(&mut h, &s);
    assert_eq!((got.src, got.dst, got.payload), (listen, client, answer));
    let [orig, reply] = keys(client, listen, target, seen, PROTO_UDP);
    assert_flows(&s.description, &o.delta, &[], &[], &[orig, reply]);
}

/// What the programs must not translate: a packet to the pool without a
/// flow at fwd64's egress, a flow's reply arriving on an interface (at
/// ingress: the stack's, which routes it to fwd64), or leaving by another
/// interface than fwd64.
#[test]
fn packets_to_the_pool_without_a_flow_or_off_fwd64_are_left_alone() {
    let Some(mut h) = host() else { return };
    let (client, listen, target) = (ep6(CLIENT6, 40001), ep6(HOST_LAN6, 80), ep(CLUSTER_IP, 80));
    let seen = open(&mut h, client, listen, target);
    h.egress_nat(LAN_IF, true).expect("egress flag");
    let other_port = ep(CLUSTER_IP, 81);
    let reply = || tcp4(target, seen, "A", b"reply");
    let steps = [
        egress(
            "no flow: another source port to the pool port",
            NAT64_IF,
            tcp4(other_port, seen, "A", b"x"),
        )
        .expect(TCX_NEXT, Reason::PassNoMatch),
        egress(
            "no flow: another pool port",
            NAT64_IF,
            tcp4(target, ep(POOL, seen.port ^ 1), "A", b"x"),
        )
        .expect(TCX_NEXT, Reason::PassNoMatch),
        // The un-DNATed reply as it arrives, before the stack routes it.
        ingress("the reply at ingress on vmbr1", VM_IF, reply()),
        ingress("the reply at ingress on vmbr0", LAN_IF, reply()),
        egress("the reply leaving by vmbr0, not fwd64", LAN_IF, reply()),
    ];
    steps_leave_flows_alone(&mut h, &steps);
}

/// A client packet whose hop limit runs out here is answered (time
/// exceeded) and starts no flow; the one that passes keeps its hop limit
/// as TTL for the stack to decrement.
#[test]
fn hop_limit_one_is_answered_and_starts_no_flow() {
    let Some(mut h) = host() else { return };
    let (client, listen) = (ep6(CLIENT6, 40002), ep6(HOST_LAN6, 80));
    let s = ingress(
        "SYN with hop limit 1",
        LAN_IF,
        tcp6(client, listen, "S", 1, b""),
    )
    .expect(TC_ACT_REDIRECT, Reason::ReplyTimeExceeded)
    .out(Out::Answer);
    let o = step(&mut h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], &[]);
}
