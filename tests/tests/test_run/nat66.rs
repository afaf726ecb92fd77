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
use etherparse::{PacketBuilder, TcpOptionElement};
use forwarder_common::{
    conntrack::CtState, FlowFlags, Reason, PROTO_TCP, PROTO_UDP, RULE_DROP_DENIED,
};
use forwarder_tests::testrun::{
    frames::HOST_MAC,
    ipv6::{ipv6_host, udp6, HOST_LAN6_CIDR, HOST_VM6_CIDR},
    tc::*,
    Host, LAN_IF, SNAT_PORTS, TCX_NEXT, TC_ACT_REDIRECT, VM_IF,
};

// The IPv6 fixture's names, for the tables that import them from here
// (icmp6_errors.rs, ct_reopen6.rs).
pub(super) use forwarder_tests::testrun::ipv6::{
    ep6, ip6, key6, mac6, read6, words, Ep6, Ip6, CLIENT6, HOST_LAN6, HOST_VM6, OTHER6, VM6, VM6NET,
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

/// The fixture with IPv6 addresses on both bridges, IPv6 forwarding on,
/// and the rules loaded.
pub(super) fn host() -> Option<Host> {
    let mut h = ipv6_host("nat66", &[(LAN_IF, HOST_LAN6_CIDR), (VM_IF, HOST_VM6_CIDR)])?;
    h.rules(RULES).expect("rules");
    Some(h)
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
/// ICMPv6 (neighbour discovery included). Extension headers and fragments
/// are test_run/nat66_ext_headers.rs's and nat66_fragments.rs's.
#[test]
fn ipv6_packets_without_a_listener_or_a_flow_are_left_alone() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 40003);
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
        ],
    );
}
