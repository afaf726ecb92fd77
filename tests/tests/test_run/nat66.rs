//! NAT66 at TC ingress (issue 13, phase B): IPv6 clients of IPv6 targets,
//! TCP and UDP, through the IPv4 path's maps (AF_INET6 listener, allow and
//! flow keys), loaded through the daemon's plan and apply steps. The
//! answers the IPv6 path builds are test_run/ipv6_answers.rs's.
//!
//! ```text
//!  lan ── veth ── vmbr0  192.168.1.55/24, 2001:db8:1::55/64
//!  vm  ── veth ── vmbr1  192.168.100.1/24, fd00:100::1/64  (fd00:100::80 on-link)
//! ```
//!
//! Every output is read by etherparse with its TCP/UDP checksum recomputed
//! over the IPv6 pseudo-header, and every run is CHECKSUM_COMPLETE, so the
//! kernel also checks that skb->csum was kept right.
use etherparse::{
    NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, TcpOptionElement, TransportHeader,
};
use forwarder_common::{
    conntrack::CtState, FlowFlags, FlowKey, Reason, AF_INET6, PROTO_TCP, PROTO_UDP,
    RULE_DROP_DENIED,
};
use forwarder_tests::{
    dual_stack,
    testrun::{
        frames::{mac_of, HOST_MAC},
        tc::*,
        Host, LAN_IF, SNAT_PORTS, TCX_NEXT, TC_ACT_REDIRECT, VM_IF,
    },
};

pub(super) const RULES: &str = r#"
[global]
snat_ports = "41000-41015"

[[forward]]
name = "web6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 80
to = "[fd00:100::80]:8080"
snat = "fd00:100::1"

[[forward]]
name = "dns6"
in = "vmbr0"
listen = "2001:db8:1::55"
proto = "udp"
port = 5353
to = "[fd00:100::80]:53"
snat = "masquerade"

[[forward]]
name = "keep6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 81
to = "[fd00:100::80]:80"

[[forward]]
name = "allow6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 82
to = "[fd00:100::80]:80"
allow = ["2001:db8:1::10"]

[[forward]]
name = "allowudp6"
in = "vmbr0"
listen = "2001:db8:1::55"
proto = "udp"
port = 83
to = "[fd00:100::80]:53"
allow = ["2001:db8:1::10"]

[[forward]]
name = "silent6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 84
to = "[fd00:100::80]:80"
allow = ["2001:db8:1::10"]
reject = "drop"
"#;

pub(super) type Ip6 = [u8; 16];

pub(super) const fn ip6(prefix: [u8; 8], host: u16) -> Ip6 {
    let h = host.to_be_bytes();
    [
        prefix[0], prefix[1], prefix[2], prefix[3], prefix[4], prefix[5], prefix[6], prefix[7], 0,
        0, 0, 0, 0, 0, h[0], h[1],
    ]
}
pub(super) const LAN6: [u8; 8] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0];
pub(super) const VM6NET: [u8; 8] = [0xfd, 0, 0x01, 0, 0, 0, 0, 0];
pub(super) const CLIENT6: Ip6 = ip6(LAN6, 0x10);
pub(super) const OTHER6: Ip6 = ip6(LAN6, 0x11);
pub(super) const HOST_LAN6: Ip6 = ip6(LAN6, 0x55);
pub(super) const HOST_VM6: Ip6 = ip6(VM6NET, 1);
pub(super) const VM6: Ip6 = ip6(VM6NET, 0x80);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ep6 {
    pub ip: Ip6,
    pub port: u16,
}

pub(super) const fn ep6(ip: Ip6, port: u16) -> Ep6 {
    Ep6 { ip, port }
}

/// The fixture with IPv6 addresses on both bridges (no DAD: usable at
/// once), IPv6 forwarding on, and the rules loaded.
pub(super) fn host() -> Option<Host> {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("nat66");
    if !forwarder_tests::require_root(test) {
        return None;
    }
    let mut h = Host::new(64).expect("test namespace and dataplane");
    dual_stack::enable_router(&h.ns).expect("IPv6 forwarding");
    for (dev, addr) in [(LAN_IF, "2001:db8:1::55/64"), (VM_IF, "fd00:100::1/64")] {
        dual_stack::addr6(&h.ns, dev, addr).expect("IPv6 address");
    }
    h.rules(RULES).expect("rules");
    Some(h)
}

pub(super) fn mac6(ip: Ip6) -> [u8; 6] {
    mac_of([ip[12], ip[13], ip[14], ip[15]])
}

/// A TCP segment `src` -> `dst` (flags "S", "SA", "A"), with an MSS option
/// on SYNs, hop limit `hop`.
pub(super) fn tcp6(src: Ep6, dst: Ep6, flags: &str, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(mac6(src.ip), HOST_MAC)
        .ipv6(src.ip, dst.ip, hop)
        .tcp(src.port, dst.port, 1000, 64000);
    if flags.contains('S') {
        b = b.syn();
        b = b
            .options(&[TcpOptionElement::MaximumSegmentSize(1460)])
            .unwrap();
    }
    if flags.contains('A') {
        b = b.ack(1);
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub(super) fn udp6(src: Ep6, dst: Ep6, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac6(src.ip), HOST_MAC)
        .ipv6(src.ip, dst.ip, 64)
        .udp(src.port, dst.port)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// What etherparse reads in an output frame whose TCP/UDP checksum it
/// recomputed and found right.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Seen6 {
    pub src: Ep6,
    pub dst: Ep6,
    pub hop: u8,
    pub mss: Option<u16>,
    pub payload: Vec<u8>,
}

pub(super) fn read6(case: &str, out: &[u8]) -> Seen6 {
    let h = PacketHeaders::from_ethernet_slice(out)
        .unwrap_or_else(|e| panic!("{case}: output does not parse: {e}"));
    let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
        panic!("{case}: output is not IPv6: {:?}", h.net);
    };
    let mut s = Seen6 {
        src: ep6(ip.source, 0),
        dst: ep6(ip.destination, 0),
        hop: ip.hop_limit,
        mss: None,
        payload: Vec::new(),
    };
    match (&h.transport, &h.payload) {
        (Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(payload)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv6(ip, payload).unwrap(),
                "{case}: TCP checksum"
            );
            s.src.port = t.source_port;
            s.dst.port = t.destination_port;
            s.mss = t.options_iterator().find_map(|o| match o {
                Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
                _ => None,
            });
            s.payload = payload.to_vec();
        }
        (Some(TransportHeader::Udp(u)), PayloadSlice::Udp(payload)) => {
            assert_eq!(
                u.checksum,
                u.calc_checksum_ipv6(ip, payload).unwrap(),
                "{case}: UDP checksum"
            );
            s.src.port = u.source_port;
            s.dst.port = u.destination_port;
            s.payload = payload.to_vec();
        }
        other => panic!("{case}: unexpected transport {other:?}"),
    }
    s
}

pub(super) fn words(ip: Ip6) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, c) in ip.chunks(4).enumerate() {
        w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

pub(super) fn key6(src: Ep6, dst: Ep6, proto: u8) -> FlowKey {
    FlowKey {
        src: words(src.ip),
        dst: words(dst.ip),
        sport: src.port.to_be(),
        dport: dst.port.to_be(),
        proto,
        family: AF_INET6,
        _pad: [0; 2],
    }
}

/// One exchange through a forward: the client's first packet creates the
/// flow and leaves for the VM as `want_src` (a port from the SNAT range
/// when `snat`, else the client's own), the VM's answer comes back to the
/// client from the listener. Checks verdicts, counters, both entries.
pub(super) struct Exchange {
    pub what: &'static str,
    pub rule: &'static str,
    pub proto: u8,
    pub client: Ep6,
    pub listen: Ep6,
    pub vm: Ep6,
    pub want_src: Ip6,
    pub snat: bool,
    /// The MSS the SYN leaves with (the daemon's auto clamp for IPv6
    /// between 1500-byte links: 1500 - 60).
    pub mss: Option<u16>,
}

pub(super) fn exchange(h: &mut Host, x: &Exchange) {
    let first = if x.proto == PROTO_TCP {
        tcp6(x.client, x.listen, "S", 64, b"")
    } else {
        udp6(x.client, x.listen, b"\x12\x34 query")
    };
    let mut delta = created(x.snat, false);
    if x.mss.is_some() {
        delta = delta.mss();
    }
    let s = ingress(format!("{}: first packet", x.what), LAN_IF, first.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule(x.rule, delta)
        .out(Out::Checked);
    let o = step(h, &s);
    let got = read6(&s.description, &o.run.out);
    assert_eq!(got.src.ip, x.want_src, "{}: source address", s.description);
    if x.snat {
        assert!(
            SNAT_PORTS.contains(&got.src.port),
            "{}: SNAT port {}",
            s.description,
            got.src.port
        );
    } else {
        assert_eq!(
            got.src.port, x.client.port,
            "{}: source port",
            s.description
        );
    }
    assert_eq!(got.dst, x.vm, "{}: destination", s.description);
    assert_eq!(got.hop, 63, "{}: hop limit decremented", s.description);
    assert_eq!(got.mss, x.mss, "{}: MSS option", s.description);
    let seen = ep6(got.src.ip, got.src.port);
    let orig = key6(x.client, x.listen, x.proto);
    let reply = key6(x.vm, seen, x.proto);
    assert_flows(&s.description, &o.delta, &[orig, reply], &[], &[]);
    let e = entry(&s.description, &o.after, &orig);
    assert_eq!((e.new_src, e.new_dst), (words(seen.ip), words(x.vm.ip)));
    assert_eq!(e.flags.contains(FlowFlags::SNAT), x.snat);
    assert_eq!(e.packets, 1);

    // The answer (a SYN-ACK with MSS 1460 for TCP, clamped too).
    let back = if x.proto == PROTO_TCP {
        tcp6(x.vm, seen, "SA", 64, b"")
    } else {
        udp6(x.vm, seen, b"\x12\x34 answer, longer")
    };
    let s = ingress(format!("{}: answer", x.what), VM_IF, back)
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule(
            x.rule,
            if x.mss.is_some() {
                translated().mss()
            } else {
                translated()
            },
        )
        .out(Out::Checked);
    let o = step(h, &s);
    let got = read6(&s.description, &o.run.out);
    assert_eq!(
        (got.src, got.dst),
        (x.listen, x.client),
        "{}",
        s.description
    );
    assert_eq!(got.mss, x.mss, "{}: MSS option", s.description);
    assert_eq!(got.hop, 63, "{}: hop limit decremented", s.description);
    // The state machine moved both entries (IPv4's, `conntrack`): a
    // SYN-ACK that acknowledges the SYN to SYN_RECV, a first UDP answer to
    // replied.
    assert_flows(&s.description, &o.delta, &[], &[], &[orig, reply]);
    let r = entry(&s.description, &o.after, &reply);
    assert!(r.flags.contains(FlowFlags::REPLY), "{}", s.description);
    let want = if x.proto == PROTO_TCP {
        CtState::SynRecv
    } else {
        CtState::UdpReplied
    };
    for k in [orig, reply] {
        let state = CtState::from_raw(entry(&s.description, &o.after, &k).ct.state);
        assert_eq!(state, want, "{}: state", s.description);
    }
}

#[test]
fn nat66_tcp_and_udp_flows_are_translated_both_ways_with_every_snat_mode() {
    let Some(mut h) = host() else { return };
    let listen = |port| ep6(HOST_LAN6, port);
    for x in [
        Exchange {
            what: "TCP, fixed SNAT, port mapped",
            rule: "web6",
            proto: PROTO_TCP,
            client: ep6(CLIENT6, 40000),
            listen: listen(80),
            vm: ep6(VM6, 8080),
            want_src: HOST_VM6,
            snat: true,
            mss: Some(1440),
        },
        Exchange {
            what: "UDP, masquerade (vmbr1's address)",
            rule: "dns6",
            proto: PROTO_UDP,
            client: ep6(CLIENT6, 50000),
            listen: listen(5353),
            vm: ep6(VM6, 53),
            want_src: HOST_VM6,
            snat: true,
            mss: None,
        },
        Exchange {
            what: "TCP, auto keeps the client (replies route back through vmbr0)",
            rule: "keep6",
            proto: PROTO_TCP,
            client: ep6(CLIENT6, 40001),
            listen: listen(81),
            vm: ep6(VM6, 80),
            want_src: CLIENT6,
            snat: false,
            mss: Some(1440),
        },
    ] {
        exchange(&mut h, &x);
    }
}

#[test]
fn an_ipv6_allow_list_refuses_other_sources_and_admits_its_own() {
    let Some(mut h) = host() else { return };
    let syn = tcp6(ep6(OTHER6, 40000), ep6(HOST_LAN6, 82), "S", 64, b"");
    // Refused: answered with a RST (reject = "rst", the default; its bytes
    // are test_run/ipv6_answers.rs's), never handed to the host's stack,
    // which may run a service on the port; no flow.
    let s = ingress("SYN from a source outside the allow-list", LAN_IF, syn)
        .expect(TC_ACT_REDIRECT, Reason::ReplyReset)
        .rule("allow6", dropped(RULE_DROP_DENIED))
        .out(Out::Answer);
    let o = step(&mut h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], &[]);
    exchange(
        &mut h,
        &Exchange {
            what: "SYN from the allowed source",
            rule: "allow6",
            proto: PROTO_TCP,
            client: ep6(CLIENT6, 40002),
            listen: ep6(HOST_LAN6, 82),
            vm: ep6(VM6, 80),
            want_src: CLIENT6,
            snat: false,
            mss: Some(1440),
        },
    );
}

/// What NAT66 leaves alone: no listener, mid-stream without a flow,
/// ICMPv6 (neighbour discovery included), extension headers, fragments.
#[test]
fn ipv6_packets_without_a_listener_or_with_extension_headers_are_left_alone() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 40003);
    let mut hop_by_hop = Vec::new();
    PacketBuilder::ethernet2(mac6(CLIENT6), HOST_MAC)
        .ipv6(CLIENT6, HOST_LAN6, 64)
        .tcp(40003, 80, 1, 1000)
        .syn()
        .write(&mut hop_by_hop, b"")
        .unwrap();
    // Next header 0 (hop-by-hop) with an 8-byte PadN extension in front
    // of the TCP header.
    let tcp_start = 14 + 40;
    let ext = [6u8, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.splice(tcp_start..tcp_start, ext);
    hop_by_hop[14 + 6] = 0;
    let plen = u16::from_be_bytes([hop_by_hop[18], hop_by_hop[19]]) + 8;
    hop_by_hop[18..20].copy_from_slice(&plen.to_be_bytes());
    let mut fragment = hop_by_hop.clone();
    fragment[14 + 6] = 44;
    fragment[tcp_start..tcp_start + 8].copy_from_slice(&[6, 0, 0, 1, 0, 0, 0, 7]);
    let mut ns = Vec::new();
    PacketBuilder::ethernet2(mac6(CLIENT6), HOST_MAC)
        .ipv6(CLIENT6, HOST_LAN6, 255)
        .icmpv6(etherparse::Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        })
        .write(&mut ns, &HOST_LAN6)
        .unwrap();
    let pass = |what: &str, frame: Vec<u8>, reason: Reason| {
        ingress(what, LAN_IF, frame).expect(TCX_NEXT, reason)
    };
    steps_leave_flows_alone(
        &mut h,
        &[
            pass(
                "SYN to a port without a listener",
                tcp6(client, ep6(HOST_LAN6, 8443), "S", 64, b""),
                Reason::PassNoMatch,
            ),
            ingress(
                "ACK to a listener, no flow: reset, never to the stack",
                LAN_IF,
                tcp6(client, ep6(HOST_LAN6, 80), "A", 64, b"x"),
            )
            .expect(TC_ACT_REDIRECT, Reason::ReplyReset)
            .out(Out::Answer),
            pass("neighbour solicitation", ns, Reason::PassNoMatch),
            pass(
                "SYN behind a hop-by-hop header",
                hop_by_hop,
                Reason::PassIpOptions,
            ),
            pass("SYN in a fragment", fragment, Reason::PassFragment),
        ],
    );
}
