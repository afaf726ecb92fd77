//! NAT64 at TC ingress (issue 13): IPv6 clients of an IPv4 target. The
//! client's packets (fwd_ingress6) become IPv4 packets from an IPv4
//! address of the host to the target; the target's replies (fwd_ingress,
//! which hands them to fwd_ingress64) become IPv6 packets back to the
//! client. One flow, two entries of two families (`FlowFlags::XLAT`).
//!
//! ```text
//!  lan ── veth ── vmbr0  192.168.1.55/24, 2001:db8:1::55/64  (client 2001:db8:1::10)
//!  vm  ── veth ── vmbr1  192.168.100.1/24                    (target 192.168.100.80)
//! ```
//!
//! Every output is read by etherparse: the IPv4 header checksum and the
//! TCP/UDP checksum recomputed over the new family's pseudo-header, and
//! every run is CHECKSUM_COMPLETE, so the kernel also checks that
//! skb->csum followed the family change. The answers and ICMP errors are
//! test_run/nat64_errors.rs's.
use etherparse::{
    Ipv6HeaderSlice, NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, TcpOptionElement,
    TransportHeader,
};
use forwarder_common::{
    conntrack::CtState, FlowFlags, FlowKey, Reason, PROTO_TCP, PROTO_UDP, RULE_DROP_DENIED,
};
use forwarder_tests::testrun::{
    frames::{ep, fkey, tcp_seg, udp, verify, Ep, Ip, CLIENT_ISN, ETH, HOST_MAC, SERVER_ISN, VM},
    ipv6::{
        self, ep6, ipv6_host, key6, mac6, udp6, words, Ep6, Seen6, CLIENT6, HOST_LAN6,
        HOST_LAN6_CIDR, OTHER6,
    },
    tc::*,
    Host, LAN_IF, SNAT_PORTS, TC_ACT_REDIRECT, VM_IF,
};

pub(super) const RULES: &str = r#"
[global]
snat_ports = "41000-41015"

[[forward]]
name = "web64"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 80
to = "192.168.100.80:8080"

[[forward]]
name = "dns64"
in = "vmbr0"
listen = "2001:db8:1::55"
proto = "udp"
port = 5353
to = "192.168.100.80:53"

[[forward]]
name = "fixed64"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 81
to = "192.168.100.80:80"
snat = "192.168.100.1"

[[forward]]
name = "allow64"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 82
to = "192.168.100.80:80"
allow = ["2001:db8:1::10"]
"#;

/// The host's address on vmbr1: what the target sees (masquerade).
pub(super) const HOST_VM: Ip = [192, 168, 100, 1];

/// The fixture with an IPv6 address on vmbr0 only, IPv6 forwarding on,
/// and the rules loaded.
pub(super) fn host() -> Option<Host> {
    let mut h = ipv6_host("nat64", &[(LAN_IF, HOST_LAN6_CIDR)])?;
    h.rules(RULES).expect("rules");
    Some(h)
}

/// An IPv6 TCP segment with the sequence numbers of `frames::tcp_seg`'s
/// one connection (the side with the higher port is the client), an MSS
/// option of 1460 on SYNs, hop limit `hop`.
pub(super) fn tcp6(src: Ep6, dst: Ep6, flags: &str, hop: u8, payload: &[u8]) -> Vec<u8> {
    let (mine, theirs) = if src.port > dst.port {
        (CLIENT_ISN, SERVER_ISN)
    } else {
        (SERVER_ISN, CLIENT_ISN)
    };
    let seq = if flags.contains('S') { mine } else { mine + 1 };
    let mut b = PacketBuilder::ethernet2(mac6(src.ip), HOST_MAC)
        .ipv6(src.ip, dst.ip, hop)
        .tcp(src.port, dst.port, seq, 64_240);
    for f in flags.chars() {
        b = match f {
            'S' => b
                .syn()
                .options(&[TcpOptionElement::MaximumSegmentSize(1460)])
                .unwrap(),
            'A' => b.ack(theirs + 1),
            'R' => b.rst(),
            'F' => b.fin(),
            _ => panic!("flag {f}"),
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// The target's TCP segment (an MSS option of 1460 on a SYN-ACK).
pub(super) fn tcp4(src: Ep, dst: Ep, flags: &str, payload: &[u8]) -> Vec<u8> {
    let (mine, theirs) = if src.port > dst.port {
        (CLIENT_ISN, SERVER_ISN)
    } else {
        (SERVER_ISN, CLIENT_ISN)
    };
    let seq = if flags.contains('S') { mine } else { mine + 1 };
    let opts: &[u8] = if flags.contains('S') {
        &[2, 4, 0x05, 0xb4]
    } else {
        &[]
    };
    tcp_seg(src, dst, flags, (seq, theirs + 1), opts, payload)
}

/// An IPv6 output frame: EtherType and payload length, then what
/// `ipv6::read6` reads (the TCP/UDP checksum recomputed over the IPv6
/// pseudo-header).
pub(super) fn read6(case: &str, out: &[u8]) -> Seen6 {
    assert_eq!(&out[12..14], &[0x86, 0xdd], "{case}: EtherType IPv6");
    let ip = Ipv6HeaderSlice::from_slice(&out[ETH..])
        .unwrap_or_else(|e| panic!("{case}: output does not parse: {e}"));
    assert_eq!(
        usize::from(ip.payload_length()) + 40 + ETH,
        out.len(),
        "{case}: IPv6 payload length"
    );
    ipv6::read6(case, out)
}

/// An IPv4 output frame: every checksum (`frames::verify`), then what
/// RFC 7915 5.1 sets: DF, identification 0, the IPv4 total length; and
/// its L4 payload.
pub(super) fn read4(case: &str, out: &[u8]) -> Seen4 {
    assert_eq!(&out[12..14], &[0x08, 0x00], "{case}: EtherType IPv4");
    let p = verify(case, out, false);
    let h = PacketHeaders::from_ethernet_slice(out).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("{case}: not IPv4")
    };
    assert!(ip.dont_fragment, "{case}: DF set");
    assert!(
        !ip.more_fragments && ip.fragment_offset.value() == 0,
        "{case}"
    );
    assert_eq!(ip.identification, 0, "{case}: identification");
    assert_eq!(usize::from(ip.total_len) + ETH, out.len(), "{case}: length");
    let payload = match &h.payload {
        PayloadSlice::Tcp(b) | PayloadSlice::Udp(b) => b.to_vec(),
        other => panic!("{case}: {other:?}"),
    };
    (p.src, p.dst, p.ttl, p.mss, payload)
}

/// What `read4` reads: source, destination, TTL, MSS option, L4 payload.
pub(super) type Seen4 = (Ep, Ep, u8, Option<u16>, Vec<u8>);

/// Runs `s` with its output checked (`Out::Checked`) and reads the IPv4
/// packet it left (`read4`).
pub(super) fn through4(h: &mut Host, s: &Step) -> (Outcome, Seen4) {
    let o = step(h, &s.clone().out(Out::Checked));
    let seen = read4(&s.description, &o.run.out);
    (o, seen)
}

/// Runs `s` with its output checked (`Out::Checked`) and reads the IPv6
/// packet it left (`read6`).
pub(super) fn through6(h: &mut Host, s: &Step) -> (Outcome, Seen6) {
    let o = step(h, &s.clone().out(Out::Checked));
    let seen = read6(&s.description, &o.run.out);
    (o, seen)
}

/// A NAT64 flow's two keys: the client's (IPv6) and the target's reply
/// (IPv4, to the SNAT address and port the target saw).
pub(super) fn keys(client: Ep6, listen: Ep6, target: Ep, seen: Ep, proto: u8) -> [FlowKey; 2] {
    [key6(client, listen, proto), fkey(target, seen, proto)]
}

/// Opens a TCP flow through `rule` (SYN, SYN-ACK) and checks both
/// translations; returns the address and port the target saw.
pub(super) fn open(h: &mut Host, rule: &'static str, client: Ep6, listen: Ep6, target: Ep) -> Ep {
    let what = format!("{rule}: SYN from [{:x?}]:{}", client.ip, client.port);
    let s = ingress(what.clone(), LAN_IF, tcp6(client, listen, "S", 64, b""))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule(rule, created(true, false).mss());
    let (o, (src, dst, ttl, mss, _)) = through4(h, &s);
    assert_eq!(src.ip, HOST_VM, "{what}: the host's IPv4 address");
    assert!(
        SNAT_PORTS.contains(&src.port),
        "{what}: SNAT port {}",
        src.port
    );
    assert_eq!(dst, target, "{what}: the target");
    assert_eq!(ttl, 63, "{what}: hop limit 64 becomes TTL 63");
    assert_eq!(mss, Some(1440), "{what}: MSS clamped for IPv6 clients");
    let [orig, reply] = keys(client, listen, target, src, PROTO_TCP);
    assert_flows(&what, &o.delta, &[orig, reply], &[], &[]);
    let e = entry(&what, &o.after, &orig);
    assert_eq!(e.flags, FlowFlags::SNAT | FlowFlags::XLAT, "{what}: flags");
    assert_eq!(
        (e.new_src[0], e.new_dst[0]),
        (u32::from_ne_bytes(src.ip), u32::from_ne_bytes(target.ip))
    );
    assert_eq!(
        (&e.new_src[1..], &e.new_dst[1..]),
        (&[0; 3][..], &[0; 3][..])
    );
    let r = entry(&what, &o.after, &reply);
    assert_eq!(
        r.flags,
        FlowFlags::SNAT | FlowFlags::XLAT | FlowFlags::REPLY
    );
    assert_eq!((r.new_src, r.new_dst), (words(listen.ip), words(client.ip)));
    assert_eq!(
        (u16::from_be(r.new_sport), u16::from_be(r.new_dport)),
        (listen.port, client.port)
    );

    let what = format!("{rule}: SYN-ACK from the target");
    let s = ingress(what.clone(), VM_IF, tcp4(target, src, "SA", b""))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule(rule, translated().mss());
    let (o, got) = through6(h, &s);
    assert_eq!(
        (got.src, got.dst),
        (listen, client),
        "{what}: back to the client"
    );
    assert_eq!(got.hop, 63, "{what}: TTL 64 becomes hop limit 63");
    assert_eq!(got.mss, Some(1440), "{what}: MSS clamped");
    assert_flows(&what, &o.delta, &[], &[], &[orig, reply]);
    assert_eq!(tcp_state(&what, &o.after, &orig, &reply), CtState::SynRecv);
    src
}

#[test]
fn a_nat64_tcp_flow_is_translated_both_ways_with_its_data_intact() {
    let Some(mut h) = host() else { return };
    let (client, listen, target) = (ep6(CLIENT6, 40000), ep6(HOST_LAN6, 80), ep(VM, 8080));
    let seen = open(&mut h, "web64", client, listen, target);
    let [orig, reply] = keys(client, listen, target, seen, PROTO_TCP);
    let request = b"GET / HTTP/1.1\r\nHost: nat64\r\n\r\n".to_vec();
    let s = ingress(
        "the client's request",
        LAN_IF,
        tcp6(client, listen, "A", 64, &request),
    )
    .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
    .rule("web64", translated());
    let (o, (src, dst, _, _, payload)) = through4(&mut h, &s);
    assert_eq!((src, dst, payload), (seen, target, request));
    assert_eq!(
        tcp_state(&s.description, &o.after, &orig, &reply),
        CtState::Established
    );
    // A full-size answer: 20 + 20 + 1400 bytes as IPv4, 1460 as IPv6.
    let body: Vec<u8> = (0..1400u32).map(|i| (i * 7 % 251) as u8).collect();
    let s = ingress("the target's answer", VM_IF, tcp4(target, seen, "A", &body))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web64", translated());
    let (_, got) = through6(&mut h, &s);
    assert_eq!((got.src, got.dst), (listen, client));
    assert_eq!(got.payload, body, "answer bytes");
    // The target's RST ends the flow's state, translated like the rest.
    let s = ingress("the target's RST", VM_IF, tcp4(target, seen, "R", b""))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web64", translated());
    let (o, got) = through6(&mut h, &s);
    assert_eq!((got.src, got.dst), (listen, client));
    assert_eq!(
        tcp_state(&s.description, &o.after, &orig, &reply),
        CtState::Close
    );
}

#[test]
fn a_nat64_udp_flow_is_translated_both_ways() {
    let Some(mut h) = host() else { return };
    let (client, listen, target) = (ep6(CLIENT6, 50000), ep6(HOST_LAN6, 5353), ep(VM, 53));
    let query = b"\x12\x34\x01\x00 query for nat64.example".to_vec();
    let s = ingress("DNS query", LAN_IF, udp6(client, listen, &query))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("dns64", created(true, false));
    let (o, (seen, dst, ttl, _, payload)) = through4(&mut h, &s);
    assert_eq!((seen.ip, dst, ttl, payload), (HOST_VM, target, 63, query));
    let [orig, reply] = keys(client, listen, target, seen, PROTO_UDP);
    assert_flows(&s.description, &o.delta, &[orig, reply], &[], &[]);
    let answer = b"\x12\x34\x81\x80 answer, longer than the query".to_vec();
    let s = ingress("DNS answer", VM_IF, udp(target, seen, &answer))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("dns64", translated());
    let (o, got) = through6(&mut h, &s);
    assert_eq!((got.src, got.dst, got.payload), (listen, client, answer));
    for k in [orig, reply] {
        let state = CtState::from_raw(entry(&s.description, &o.after, &k).ct.state);
        assert_eq!(state, CtState::UdpReplied);
    }
}

#[test]
fn a_fixed_ipv4_snat_address_is_the_source_the_target_sees() {
    let Some(mut h) = host() else { return };
    let seen = open(
        &mut h,
        "fixed64",
        ep6(CLIENT6, 40001),
        ep6(HOST_LAN6, 81),
        ep(VM, 80),
    );
    assert_eq!(seen.ip, HOST_VM);
}

#[test]
fn an_ipv6_allow_list_guards_a_nat64_forward() {
    let Some(mut h) = host() else { return };
    // Refused: a RST (reject = "rst", the default) built as for NAT66, no
    // flow, nothing sent to the target.
    let s = ingress(
        "SYN from outside the allow-list",
        LAN_IF,
        tcp6(ep6(OTHER6, 40000), ep6(HOST_LAN6, 82), "S", 64, b""),
    )
    .expect(TC_ACT_REDIRECT, Reason::ReplyReset)
    .rule("allow64", dropped(RULE_DROP_DENIED))
    .out(Out::Answer);
    let o = step(&mut h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], &[]);
    let h6 = PacketHeaders::from_ethernet_slice(&o.run.out).unwrap();
    let Some(TransportHeader::Tcp(t)) = &h6.transport else {
        panic!("not a RST: {h6:?}")
    };
    assert!(t.rst, "a RST to the refused client");
    open(
        &mut h,
        "allow64",
        ep6(CLIENT6, 40002),
        ep6(HOST_LAN6, 82),
        ep(VM, 80),
    );
}

/// A target's packet that is no NAT64 flow's is fwd_ingress's as ever,
/// and an IPv4 packet to the SNAT port without its flow is not translated.
#[test]
fn ipv4_packets_without_a_nat64_flow_are_left_alone() {
    let Some(mut h) = host() else { return };
    let (client, listen, target) = (ep6(CLIENT6, 40003), ep6(HOST_LAN6, 80), ep(VM, 8080));
    let seen = open(&mut h, "web64", client, listen, target);
    // Same SNAT address and port, another source port: no flow.
    let stray = tcp4(ep(VM, 8081), seen, "A", b"x");
    let s = ingress("a stray segment to the SNAT port", VM_IF, stray)
        .expect(forwarder_tests::testrun::TCX_NEXT, Reason::PassNoMatch);
    let o = step(&mut h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], &[]);
}
