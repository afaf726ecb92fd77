//! The answers the router builds in BPF for IPv6 packets of its forwards
//! (forwarder-ebpf/src/ipv6/reply.rs): ICMPv6 time exceeded (hop limit 1),
//! packet too big (the route's MTU, GSO segments included), port
//! unreachable and TCP resets for refused packets (`reject = "rst"`), and
//! what is never answered (`reject = "drop"`, neighbour discovery, router
//! advertisements). Each answer is compared byte for byte with one built
//! here by etherparse from the input (link addresses swapped, the quote,
//! every checksum), and etherparse verifies its checksum again.
//!
//! Topology and rules: test_run/nat66.rs.
use etherparse::{
    icmpv6::{DestUnreachableCode, TimeExceededCode},
    Icmpv6Slice, Icmpv6Type, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader,
};
use forwarder_common::{FlowKey, Reason, PROTO_TCP, RULE_DROP_DENIED};
use forwarder_tests::testrun::{
    frames::HOST_MAC,
    ipv6::{
        ep6, icmp6_answer, key6, mac6, udp6, Ep6, Ip6, CLIENT6, HOST_LAN6, HOST_VM6, OTHER6, VM6,
    },
    tc::*,
    Host, LAN_IF, TCX_NEXT, TC_ACT_REDIRECT, TC_ACT_SHOT, VM_IF,
};

use super::nat66::{exchange, host, tcp6, Exchange};

/// Checks an answer: the exact bytes `want`, and an ICMPv6 checksum
/// etherparse finds valid (or, for a RST, the TCP checksum).
fn check_answer(case: &str, out: &[u8], want: &[u8]) {
    let h = PacketHeaders::from_ethernet_slice(out)
        .unwrap_or_else(|e| panic!("{case}: answer does not parse: {e}"));
    let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
        panic!("{case}: answer is not IPv6: {:?}", h.net);
    };
    match &h.transport {
        Some(TransportHeader::Icmpv6(_)) => {
            let icmp = Icmpv6Slice::from_slice(&out[14 + 40..]).unwrap();
            assert!(
                icmp.is_checksum_valid(ip.source, ip.destination),
                "{case}: ICMPv6 checksum"
            );
        }
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv6(ip, &[]).unwrap(),
                "{case}: TCP checksum"
            );
        }
        other => panic!("{case}: unexpected answer {other:?}"),
    }
    assert_eq!(out, want, "{case}: answer bytes");
}

/// Runs `s` (an ingress step expecting an answer; `Out::Answer` is set
/// here), checks the flow table changed only at `changed`, and the answer.
fn answered(h: &mut Host, s: Step, changed: &[FlowKey], want: Vec<u8>) {
    let s = s.out(Out::Answer);
    let o = step(h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], changed);
    check_answer(&s.description, &o.run.out, &want);
}

/// A TCP flow through `web6` (fixed SNAT): the client's end, the VM's,
/// and the address the VM sees.
fn web6_flow(h: &mut Host, port: u16) -> (Ep6, Ep6, Ep6) {
    let client = ep6(CLIENT6, port);
    let listen = ep6(HOST_LAN6, 80);
    let vm = ep6(VM6, 8080);
    exchange(
        h,
        &Exchange {
            what: "flow for the answers",
            rule: "web6",
            proto: PROTO_TCP,
            client,
            listen,
            vm,
            want_src: HOST_VM6,
            snat: true,
            mss: Some(1440),
        },
    );
    let seen = key6(client, listen, PROTO_TCP);
    let snap = h.snapshot().expect("snapshot");
    let e = entry("flow for the answers", &snap, &seen);
    let mut w = [0u8; 16];
    for (i, word) in e.new_src.iter().enumerate() {
        w[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
    }
    (client, vm, ep6(w, u16::from_be(e.new_sport)))
}

#[test]
fn hop_limit_1_gets_time_exceeded_from_the_router_both_ways_without_a_flow() {
    let Some(mut h) = host() else { return };
    // A SYN that expires here: answered from vmbr0's address, no flow.
    let syn = tcp6(ep6(CLIENT6, 41000), ep6(HOST_LAN6, 80), "S", 1, b"");
    let want = icmp6_answer(
        &syn,
        HOST_LAN6,
        CLIENT6,
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded),
    );
    answered(
        &mut h,
        ingress("SYN with hop limit 1", LAN_IF, syn)
            .expect(TC_ACT_REDIRECT, Reason::ReplyTimeExceeded),
        &[],
        want,
    );
    // The VM's packet of a flow, hop limit 1: answered untranslated, from
    // vmbr1's address, quoting what the VM sent.
    let (_, vm, seen) = web6_flow(&mut h, 41001);
    let data = tcp6(vm, seen, "A", 1, b"reply data");
    let want = icmp6_answer(
        &data,
        HOST_VM6,
        VM6,
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded),
    );
    answered(
        &mut h,
        ingress("VM's segment with hop limit 1", VM_IF, data)
            .expect(TC_ACT_REDIRECT, Reason::ReplyTimeExceeded)
            .rule("web6", translated()),
        &[key6(vm, seen, PROTO_TCP)],
        want,
    );
}

#[test]
fn too_big_for_the_route_gets_packet_too_big_with_the_route_mtu() {
    let Some(mut h) = host() else { return };
    let (_, vm, seen) = web6_flow(&mut h, 41010);
    h.ns.ip(&["link", "set", LAN_IF, "mtu", "1280"]).unwrap();
    // 40 + 20 + 1300 bytes toward the 1280-byte LAN.
    let big = tcp6(vm, seen, "A", 64, &[7u8; 1300]);
    let want = icmp6_answer(&big, HOST_VM6, VM6, Icmpv6Type::PacketTooBig { mtu: 1280 });
    answered(
        &mut h,
        ingress("1360-byte segment toward a 1280 MTU", VM_IF, big)
            .expect(TC_ACT_REDIRECT, Reason::ReplyFragNeeded)
            .rule("web6", translated()),
        &[key6(vm, seen, PROTO_TCP)],
        want,
    );
    // What fits goes: 40 + 20 + 1220 = 1280.
    let fits = tcp6(vm, seen, "A", 64, &[7u8; 1220]);
    let s = ingress("1280-byte segment", VM_IF, fits)
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web6", translated())
        .out(Out::Checked);
    step(&mut h, &s);
    // A GSO packet is judged by its segments: 40 + 20 + 1400 is too big,
    // 40 + 20 + 1200 fits, whatever the whole packet's length.
    let gso = tcp6(vm, seen, "A", 64, &[7u8; 2800]);
    let want = icmp6_answer(&gso, HOST_VM6, VM6, Icmpv6Type::PacketTooBig { mtu: 1280 });
    let s = ingress("GSO packet of 1400-byte segments", VM_IF, gso.clone())
        .expect(TC_ACT_REDIRECT, Reason::ReplyFragNeeded)
        .rule("web6", translated())
        .out(Out::Answer)
        .gso(1400, 2);
    let o = step(&mut h, &s);
    check_answer(&s.description, &o.run.out, &want);
    let s = ingress(
        "GSO packet of 1200-byte segments",
        VM_IF,
        tcp6(vm, seen, "A", 64, &[7u8; 2400]),
    )
    .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
    .rule("web6", translated())
    .out(Out::Checked)
    .gso(1200, 2);
    step(&mut h, &s);
}

#[test]
fn refused_packets_get_a_reset_or_port_unreachable_or_silence_as_reject_says() {
    let Some(mut h) = host() else { return };
    // A SYN outside the allow-list: RST+ACK acknowledging it, from the
    // listener.
    let syn = tcp6(ep6(OTHER6, 42000), ep6(HOST_LAN6, 82), "S", 64, b"");
    let mut want = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, mac6(OTHER6))
        .ipv6(HOST_LAN6, OTHER6, 64)
        .tcp(82, 42000, 0, 0)
        .rst()
        .ack(1001)
        .write(&mut want, b"")
        .unwrap();
    answered(
        &mut h,
        ingress("SYN outside the allow-list", LAN_IF, syn)
            .expect(TC_ACT_REDIRECT, Reason::ReplyReset)
            .rule("allow6", dropped(RULE_DROP_DENIED)),
        &[],
        want,
    );
    // A mid-stream segment without a flow: a RST with its ACK as sequence.
    let ack = tcp6(ep6(CLIENT6, 42001), ep6(HOST_LAN6, 80), "A", 64, b"x");
    let mut want = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, mac6(CLIENT6))
        .ipv6(HOST_LAN6, CLIENT6, 64)
        .tcp(80, 42001, 1, 0)
        .rst()
        .write(&mut want, b"")
        .unwrap();
    answered(
        &mut h,
        ingress("ACK without a flow", LAN_IF, ack).expect(TC_ACT_REDIRECT, Reason::ReplyReset),
        &[],
        want,
    );
    // A datagram outside a UDP allow-list: port unreachable.
    let dgram = udp6(ep6(OTHER6, 42002), ep6(HOST_LAN6, 83), b"\x12\x34 query");
    let want = icmp6_answer(
        &dgram,
        HOST_LAN6,
        OTHER6,
        Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port),
    );
    answered(
        &mut h,
        ingress("datagram outside the allow-list", LAN_IF, dgram)
            .expect(TC_ACT_REDIRECT, Reason::ReplyPortUnreach)
            .rule("allowudp6", dropped(RULE_DROP_DENIED)),
        &[],
        want,
    );
    // reject = "drop": nothing.
    let syn = tcp6(ep6(OTHER6, 42003), ep6(HOST_LAN6, 84), "S", 64, b"");
    let s = ingress("SYN outside a reject = \"drop\" allow-list", LAN_IF, syn)
        .expect(TC_ACT_SHOT, Reason::DropDenied)
        .rule("silent6", dropped(RULE_DROP_DENIED));
    step(&mut h, &s);
}

/// Neighbour discovery and router advertisements go to the stack as they
/// came, whatever their hop limit, even to a listener's address.
#[test]
fn neighbour_discovery_and_router_advertisements_are_never_touched() {
    let Some(mut h) = host() else { return };
    let icmp = |ty: u8, hop: u8, dst: Ip6| {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(mac6(CLIENT6), HOST_MAC)
            .ipv6(CLIENT6, dst, hop)
            .icmpv6(Icmpv6Type::Unknown {
                type_u8: ty,
                code_u8: 0,
                bytes5to8: [0; 4],
            })
            .write(&mut v, &HOST_LAN6)
            .unwrap();
        v
    };
    let all_nodes: Ip6 = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let steps: Vec<Step> = [
        ("router solicitation", 133, 255, HOST_LAN6),
        ("router advertisement", 134, 255, all_nodes),
        ("neighbour solicitation", 135, 255, HOST_LAN6),
        ("neighbour advertisement", 136, 255, HOST_LAN6),
        ("redirect", 137, 255, HOST_LAN6),
        ("echo request with hop limit 1", 128, 1, HOST_LAN6),
    ]
    .into_iter()
    .map(|(what, ty, hop, dst)| {
        ingress(what, LAN_IF, icmp(ty, hop, dst))
            .expect(TCX_NEXT, Reason::PassNoMatch)
            .out(Out::Untouched)
    })
    .collect();
    steps_leave_flows_alone(&mut h, &steps);
}
