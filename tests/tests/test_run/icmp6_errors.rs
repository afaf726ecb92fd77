//! ICMPv6 errors about NAT66 flows (forwarder-ebpf/src/ipv6/icmp6.rs), as
//! test_run/icmp_errors.rs is for IPv4: the error quotes the packet as we
//! translated it, and must reach the flow's peer with the quote as the
//! peer sent it (addresses, ports, the quoted TCP/UDP checksum, which
//! covers the quoted addresses) and the ICMPv6 checksum right over its
//! pseudo-header. Every expected error is built here by etherparse from
//! the packet the peer itself sent (checksums computed, not patched), and
//! compared byte for byte from the IPv6 header on. Neighbour discovery,
//! router advertisements and echo are never touched; errors on the wrong
//! interface or about no flow are left to the stack, untouched.
//!
//! ```text
//!  client 2001:db8:1::10 ── vmbr0 [2001:db8:1::55 | fd00:100::1] vmbr1 ─┬─ vm fd00:100::80
//!                                                                        └─ router fd00:100::fe
//! ```
//! Rules: test_run/nat66.rs.
use etherparse::{
    icmpv6::{DestUnreachableCode, ParameterProblemCode, ParameterProblemHeader, TimeExceededCode},
    Icmpv6Type, PacketBuilder,
};
use forwarder_common::{Reason, PROTO_TCP, PROTO_UDP};
use forwarder_tests::testrun::{
    frames::HOST_MAC, tc::*, Host, LAN_IF, TCX_NEXT, TC_ACT_REDIRECT, TC_ACT_SHOT, VM_IF,
};

use super::nat66::{
    ep6, exchange, host, key6, mac6, words, Ep6, Exchange, Ip6, CLIENT6, HOST_LAN6, HOST_VM6,
    OTHER6, VM6, VM6NET,
};

/// A router on the VM side.
const VM_ROUTER6: Ip6 = super::nat66::ip6(VM6NET, 0xfe);
const MTU: u32 = 1280;

/// An IPv6 TCP segment (ACK with data, as `nat66::tcp6` builds them) with
/// hop limit `hop`, from the IPv6 header on.
fn tcp_ip(src: Ep6, dst: Ep6, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(src.ip, dst.ip, hop)
        .tcp(src.port, dst.port, 1000, 64000)
        .ack(1)
        .psh()
        .write(&mut v, payload)
        .unwrap();
    v
}

fn udp_ip(src: Ep6, dst: Ep6, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(src.ip, dst.ip, hop)
        .udp(src.port, dst.port)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// An ICMPv6 error `ty` from `from` to `to` quoting `quote`, in a frame
/// from `from`'s link address to the host.
fn error_frame(from: Ip6, to: Ip6, hop: u8, ty: Icmpv6Type, quote: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac6(from), HOST_MAC)
        .ipv6(from, to, hop)
        .icmpv6(ty)
        .write(&mut v, quote)
        .unwrap();
    v
}

/// The same error as an IPv6 packet (no link header): what must leave.
fn error_ip(from: Ip6, to: Ip6, hop: u8, ty: Icmpv6Type, quote: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(from, to, hop)
        .icmpv6(ty)
        .write(&mut v, quote)
        .unwrap();
    v
}

/// Runs an error that must be translated and redirected as exactly
/// `want` (from the IPv6 header on), touching no flow entry.
fn translated_error(h: &mut Host, name: &str, iface: &'static str, err: Vec<u8>, want: Vec<u8>) {
    let s = ingress(name, iface, err)
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .out(Out::Checked);
    let o = step(h, &s);
    assert_flows(name, &o.delta, &[], &[], &[]);
    assert_eq!(&o.run.out[12..14], &[0x86, 0xdd], "{name}: EtherType");
    assert_eq!(
        &o.run.out[14..],
        &want[..],
        "{name}: the error as the peer must see it"
    );
}

/// A flow through `rule`, opened by `exchange`: the client's end, the
/// listener, the VM's end, and the address and port the VM sees.
fn open(h: &mut Host, rule: &'static str, proto: u8, port: u16) -> (Ep6, Ep6, Ep6, Ep6) {
    let (client, listen, vm, mss) = if proto == PROTO_TCP {
        (
            ep6(CLIENT6, port),
            ep6(HOST_LAN6, 80),
            ep6(VM6, 8080),
            Some(1440),
        )
    } else {
        (ep6(CLIENT6, port), ep6(HOST_LAN6, 5353), ep6(VM6, 53), None)
    };
    exchange(
        h,
        &Exchange {
            what: "flow for the errors",
            rule,
            proto,
            client,
            listen,
            vm,
            want_src: HOST_VM6,
            snat: true,
            mss,
        },
    );
    let snap = h.snapshot().expect("snapshot");
    let e = entry("flow for the errors", &snap, &key6(client, listen, proto));
    assert_eq!(e.new_src, words(HOST_VM6));
    (client, listen, vm, ep6(HOST_VM6, u16::from_be(e.new_sport)))
}

#[test]
fn errors_from_the_backend_side_reach_the_client_with_its_own_segment_quoted() {
    let Some(mut h) = host() else { return };
    let (client, listen, vm, seen) = open(&mut h, "web6", PROTO_TCP, 42000);
    let data = vec![b'd'; 200];
    // What the VM received (one hop down), and what the client sent of it
    // as it would have looked one hop down: the quote each side knows.
    let at_vm = tcp_ip(seen, vm, 63, &data);
    let at_client = tcp_ip(client, listen, 63, &data);
    let ptb = Icmpv6Type::PacketTooBig { mtu: MTU };

    // Packet too big from the VM itself, quoting all of it: the outer
    // source becomes the listener, as every packet of the flow from the VM.
    translated_error(
        &mut h,
        "packet too big from the backend, whole segment quoted",
        VM_IF,
        error_frame(VM6, HOST_VM6, 64, ptb, &at_vm),
        error_ip(HOST_LAN6, CLIENT6, 63, ptb, &at_client),
    );

    // Time exceeded from a router on the VM side, quoting the IPv6 header
    // and 8 bytes of TCP (no checksum quoted): its address stays.
    let te = Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded);
    translated_error(
        &mut h,
        "time exceeded from a router, 8 bytes of TCP quoted",
        VM_IF,
        error_frame(VM_ROUTER6, HOST_VM6, 64, te, &at_vm[..48]),
        error_ip(VM_ROUTER6, CLIENT6, 63, te, &at_client[..48]),
    );

    // Destination unreachable quoting part of the segment: the quoted TCP
    // checksum is the one the client's whole segment had.
    let du = Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Prohibited);
    translated_error(
        &mut h,
        "administratively prohibited, 100 bytes quoted",
        VM_IF,
        error_frame(VM_ROUTER6, HOST_VM6, 64, du, &at_vm[..100]),
        error_ip(VM_ROUTER6, CLIENT6, 63, du, &at_client[..100]),
    );

    // Parameter problem from the VM (the pointer is not translated: it
    // points into the header, whose layout did not change).
    let pp = Icmpv6Type::ParameterProblem(ParameterProblemHeader {
        code: ParameterProblemCode::UnrecognizedNextHeader,
        pointer: 6,
    });
    translated_error(
        &mut h,
        "parameter problem from the backend",
        VM_IF,
        error_frame(VM6, HOST_VM6, 64, pp, &at_vm),
        error_ip(HOST_LAN6, CLIENT6, 63, pp, &at_client),
    );
}

#[test]
fn a_port_unreachable_about_a_udp_flow_reaches_the_client() {
    let Some(mut h) = host() else { return };
    let (client, listen, vm, seen) = open(&mut h, "dns6", PROTO_UDP, 52000);
    let data = b"\x12\x34 query again";
    let pu = Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port);
    translated_error(
        &mut h,
        "port unreachable from the backend",
        VM_IF,
        error_frame(VM6, HOST_VM6, 64, pu, &udp_ip(seen, vm, 63, data)),
        error_ip(
            HOST_LAN6,
            CLIENT6,
            63,
            pu,
            &udp_ip(client, listen, 63, data),
        ),
    );
}

#[test]
fn an_error_from_the_client_side_about_an_answer_reaches_the_backend() {
    let Some(mut h) = host() else { return };
    let (client, listen, vm, seen) = open(&mut h, "web6", PROTO_TCP, 42001);
    let data = vec![b'a'; 300];
    // The answer as the client got it, and as the VM sent it.
    let at_client = tcp_ip(listen, client, 63, &data);
    let at_vm = tcp_ip(vm, seen, 63, &data);
    let ptb = Icmpv6Type::PacketTooBig { mtu: MTU };
    translated_error(
        &mut h,
        "packet too big from the client about an answer",
        LAN_IF,
        error_frame(CLIENT6, HOST_LAN6, 64, ptb, &at_client),
        error_ip(HOST_VM6, VM6, 63, ptb, &at_vm),
    );
}

#[test]
fn errors_on_the_wrong_interface_about_no_flow_or_at_hop_limit_1_are_not_translated() {
    let Some(mut h) = host() else { return };
    let (_client, _listen, vm, seen) = open(&mut h, "web6", PROTO_TCP, 42002);
    let at_vm = tcp_ip(seen, vm, 63, b"x");
    let ptb = Icmpv6Type::PacketTooBig { mtu: MTU };
    // A forged error on the client's side quoting a packet toward the VM:
    // the flow's packets of that direction arrive on vmbr1 only.
    let wrong = error_frame(OTHER6, HOST_VM6, 64, ptb, &at_vm);
    // About a flow that does not exist (another port).
    let stranger = tcp_ip(ep6(HOST_VM6, 1), vm, 63, b"x");
    let none = error_frame(VM6, HOST_VM6, 64, ptb, &stranger);
    steps_leave_flows_alone(
        &mut h,
        &[
            ingress("error on the wrong interface", LAN_IF, wrong)
                .expect(TCX_NEXT, Reason::PassWrongIface),
            ingress("error about no flow", VM_IF, none).expect(TCX_NEXT, Reason::PassNoMatch),
            // One that would expire on the way: no error about an error.
            ingress(
                "error at hop limit 1",
                VM_IF,
                error_frame(VM6, HOST_VM6, 1, ptb, &at_vm),
            )
            .expect(TC_ACT_SHOT, Reason::DropError),
        ],
    );
}

#[test]
fn neighbour_discovery_router_advertisements_and_echo_are_never_touched() {
    let Some(mut h) = host() else { return };
    open(&mut h, "web6", PROTO_TCP, 42003);
    let icmp = |from: Ip6, to: Ip6, type_u8: u8, body: &[u8]| {
        error_frame(
            from,
            to,
            255,
            Icmpv6Type::Unknown {
                type_u8,
                code_u8: 0,
                bytes5to8: [0; 4],
            },
            body,
        )
    };
    let all_routers = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let all_nodes = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut echo = Vec::new();
    PacketBuilder::ethernet2(mac6(CLIENT6), HOST_MAC)
        .ipv6(CLIENT6, HOST_LAN6, 64)
        .icmpv6_echo_request(7, 1)
        .write(&mut echo, b"ping")
        .unwrap();
    let mut echo_reply = Vec::new();
    PacketBuilder::ethernet2(mac6(VM6), HOST_MAC)
        .ipv6(VM6, HOST_VM6, 64)
        .icmpv6_echo_reply(7, 1)
        .write(&mut echo_reply, b"pong")
        .unwrap();
    let pass = |what: &str, iface: &'static str, frame: Vec<u8>| {
        ingress(what, iface, frame).expect(TCX_NEXT, Reason::PassNoMatch)
    };
    steps_leave_flows_alone(
        &mut h,
        &[
            pass(
                "neighbour solicitation for the listener",
                LAN_IF,
                icmp(CLIENT6, HOST_LAN6, 135, &HOST_LAN6),
            ),
            pass(
                "neighbour advertisement from the VM",
                VM_IF,
                icmp(VM6, HOST_VM6, 136, &VM6),
            ),
            pass(
                "router solicitation",
                LAN_IF,
                icmp(CLIENT6, all_routers, 133, &[]),
            ),
            pass(
                "router advertisement",
                VM_IF,
                icmp(VM_ROUTER6, all_nodes, 134, &[0; 8]),
            ),
            pass("echo request to the listener's address", LAN_IF, echo),
            pass("echo reply from the VM", VM_IF, echo_reply),
        ],
    );
}
