//! What a router answers for NAT64 flows, and ICMP errors about them
//! translated between the families (RFC 7915 4.2): hop limit 1 (ICMPv6
//! time exceeded to the client), TTL 1 (ICMP time exceeded to the
//! target), too big both ways (packet too big with the IPv4 route's MTU +
//! 20; fragmentation needed with the IPv6 route's MTU - 20), and the
//! target's (or its routers') ICMP errors about the flow becoming the
//! ICMPv6 errors the client understands, the quote turned back into what
//! the client sent, every checksum recomputed by etherparse.
//!
//! Topology and rules: test_run/nat64.rs.
use etherparse::{
    icmpv6::TimeExceededCode, Icmpv4Slice, Icmpv6Slice, Icmpv6Type, Ipv6HeaderSlice, NetHeaders,
    PacketHeaders, TransportHeader,
};
use forwarder_common::{Reason, PROTO_TCP, PROTO_UDP};
use forwarder_tests::testrun::{
    frames::{ep, icmp_error, ip_of, tcp, udp, with_ttl, Ep, Ip, ETH, VM, VM_ROUTER},
    ipv6::{ep6, icmp6_answer, udp6, Ep6, Ip6, CLIENT6, HOST_LAN6},
    tc::*,
    LAN_IF, TCX_NEXT, TC_ACT_REDIRECT, VM_IF,
};

use super::nat64::{host, keys, open, tcp4, tcp6, through6, HOST_VM};

/// An ICMPv6 message as etherparse reads it, its checksum valid over the
/// IPv6 pseudo-header: outer addresses and hop limit, type, code, the
/// 4 bytes after them, and the quoted IPv6 header's addresses, payload
/// length and hop limit with the quoted ports.
#[derive(Debug, PartialEq, Eq)]
struct Icmp6Seen {
    from: Ip6,
    to: Ip6,
    hop: u8,
    type_code: (u8, u8),
    word: u32,
    quote: (Ep6, Ep6),
    quote_len: u16,
    quote_hop: u8,
    quote_next: u8,
}

fn read_icmp6(case: &str, out: &[u8]) -> Icmp6Seen {
    let h = PacketHeaders::from_ethernet_slice(out)
        .unwrap_or_else(|e| panic!("{case}: output does not parse: {e}"));
    let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
        panic!("{case}: output is not IPv6: {:?}", h.net);
    };
    assert_eq!(
        usize::from(ip.payload_length) + 40 + ETH,
        out.len(),
        "{case}: length"
    );
    assert!(
        matches!(h.transport, Some(TransportHeader::Icmpv6(_))),
        "{case}: ICMPv6"
    );
    let icmp = Icmpv6Slice::from_slice(&out[ETH + 40..]).unwrap();
    assert!(
        icmp.is_checksum_valid(ip.source, ip.destination),
        "{case}: ICMPv6 checksum"
    );
    let b = &out[ETH + 40..];
    let q = Ipv6HeaderSlice::from_slice(&b[8..]).unwrap();
    let ports = &b[8 + 40..8 + 44];
    Icmp6Seen {
        from: ip.source,
        to: ip.destination,
        hop: ip.hop_limit,
        type_code: (b[0], b[1]),
        word: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        quote: (
            ep6(q.source(), u16::from_be_bytes([ports[0], ports[1]])),
            ep6(q.destination(), u16::from_be_bytes([ports[2], ports[3]])),
        ),
        quote_len: q.payload_length(),
        quote_hop: q.hop_limit(),
        quote_next: q.next_header().0,
    }
}

/// An ICMP error as etherparse reads it (every checksum verified by
/// `frames::verify` in `Out::Answer`): outer addresses, type, code, the
/// 4 bytes after them.
fn read_icmp4(out: &[u8]) -> (Ip, Ip, u8, u8, [u8; 4]) {
    let h = PacketHeaders::from_ethernet_slice(out).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4: {:?}", h.net)
    };
    let icmp = Icmpv4Slice::from_slice(&out[ETH + 20..]).unwrap();
    let b = icmp.slice();
    (
        ip.source,
        ip.destination,
        b[0],
        b[1],
        [b[4], b[5], b[6], b[7]],
    )
}

const TARGET: Ep = ep(VM, 8080);

fn listen() -> Ep6 {
    ep6(HOST_LAN6, 80)
}

#[test]
fn hop_limit_1_and_ttl_1_are_answered_to_their_own_sender() {
    let Some(mut h) = host() else { return };
    // A SYN that expires here: ICMPv6 time exceeded from vmbr0's address,
    // no flow.
    let syn = tcp6(ep6(CLIENT6, 41000), listen(), "S", 1, b"");
    let want = icmp6_answer(
        &syn,
        HOST_LAN6,
        CLIENT6,
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded),
    );
    let s = ingress("SYN with hop limit 1", LAN_IF, syn)
        .expect(TC_ACT_REDIRECT, Reason::ReplyTimeExceeded)
        .out(Out::Answer);
    let o = step(&mut h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], &[]);
    read_icmp6(&s.description, &o.run.out);
    assert_eq!(o.run.out, want, "{}: answer bytes", s.description);

    // The target's segment with TTL 1: ICMP time exceeded to the target,
    // from vmbr1's address, quoting what it sent.
    let client = ep6(CLIENT6, 41001);
    let seen = open(&mut h, "web64", client, listen(), TARGET);
    let [_, reply] = keys(client, listen(), TARGET, seen, PROTO_TCP);
    let data = with_ttl(&tcp4(TARGET, seen, "A", b"reply data"), 1);
    let s = ingress("the target's segment with TTL 1", VM_IF, data)
        .expect(TC_ACT_REDIRECT, Reason::ReplyTimeExceeded)
        .rule("web64", translated())
        .out(Out::Answer);
    let o = step(&mut h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], &[reply]);
    let (from, to, ty, code, _) = read_icmp4(&o.run.out);
    assert_eq!(
        (from, to, ty, code),
        (HOST_VM, VM, 11, 0),
        "{}",
        s.description
    );
}

#[test]
fn too_big_is_answered_with_the_other_familys_mtu() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 41010);
    let seen = open(&mut h, "web64", client, listen(), TARGET);
    let [orig, reply] = keys(client, listen(), TARGET, seen, PROTO_TCP);
    h.ns.ip(&["link", "set", VM_IF, "mtu", "1300"]).unwrap();
    // 40 + 20 + 1280 = 1340 bytes of IPv6, 1320 as IPv4 toward a 1300 MTU:
    // packet too big for 1320, what fits once translated.
    let big = tcp6(client, listen(), "A", 64, &[7u8; 1280]);
    let want = icmp6_answer(
        &big,
        HOST_LAN6,
        CLIENT6,
        Icmpv6Type::PacketTooBig { mtu: 1320 },
    );
    let s = ingress("1340-byte IPv6 segment toward a 1300 IPv4 MTU", LAN_IF, big)
        .expect(TC_ACT_REDIRECT, Reason::ReplyFragNeeded)
        .rule("web64", translated())
        .out(Out::Answer);
    let o = step(&mut h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], &[orig, reply]);
    assert_eq!(o.run.out, want, "{}: answer bytes", s.description);
    // 1320 bytes of IPv6 are 1300 of IPv4: they go.
    let s = ingress(
        "1320-byte IPv6 segment",
        LAN_IF,
        tcp6(client, listen(), "A", 64, &[7u8; 1260]),
    )
    .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
    .rule("web64", translated())
    .out(Out::Checked);
    let o = step(&mut h, &s);
    assert_eq!(o.run.out.len(), ETH + 1300);

    // The other way: 20 + 20 + 1250 = 1290 bytes of IPv4 are 1310 of IPv6
    // toward a 1280 MTU: fragmentation needed for 1260, to the target.
    h.ns.ip(&["link", "set", LAN_IF, "mtu", "1280"]).unwrap();
    let s = ingress(
        "1290-byte IPv4 segment toward a 1280 IPv6 MTU",
        VM_IF,
        tcp4(TARGET, seen, "A", &[9u8; 1250]),
    )
    .expect(TC_ACT_REDIRECT, Reason::ReplyFragNeeded)
    .rule("web64", translated())
    .out(Out::Answer);
    let o = step(&mut h, &s);
    let (from, to, ty, code, rest) = read_icmp4(&o.run.out);
    assert_eq!(
        (from, to, ty, code),
        (HOST_VM, VM, 3, 4),
        "{}",
        s.description
    );
    assert_eq!(
        u16::from_be_bytes([rest[2], rest[3]]),
        1260,
        "{}: MTU",
        s.description
    );
    let s = ingress(
        "1260-byte IPv4 segment",
        VM_IF,
        tcp4(TARGET, seen, "A", &[9u8; 1220]),
    )
    .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
    .rule("web64", translated());
    let (_, got) = through6(&mut h, &s);
    assert_eq!(got.payload, vec![9u8; 1220]);
}

/// The target's and its routers' ICMP errors about a NAT64 flow reach the
/// client as ICMPv6 errors quoting its own packet; one RFC 7915 cannot
/// map (parameter problem) is left alone.
#[test]
fn icmp_errors_about_a_nat64_flow_become_icmpv6_errors_to_the_client() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 41020);
    let seen = open(&mut h, "web64", client, listen(), TARGET);
    // What the target got: the translated SYN's headers (TTL 63).
    let mut sent = ip_of(&tcp(seen, TARGET, "A", b"12345678"));
    sent[8] = 63;
    // (what, sender, type, code, the 4 bytes after them) -> ICMPv6 (type,
    // code) and the 4 bytes after them.
    type Case = (&'static str, Ip, u8, u8, [u8; 4], (u8, u8), u32);
    let cases: [Case; 4] = [
        (
            "frag needed from a router",
            VM_ROUTER,
            3,
            4,
            [0, 0, 0x05, 0x78],
            (2, 0),
            1420,
        ),
        (
            "port unreachable from the target",
            VM,
            3,
            3,
            [0; 4],
            (1, 4),
            0,
        ),
        (
            "host unreachable from a router",
            VM_ROUTER,
            3,
            1,
            [0; 4],
            (1, 0),
            0,
        ),
        (
            "time exceeded from a router",
            VM_ROUTER,
            11,
            0,
            [0; 4],
            (3, 0),
            0,
        ),
    ];
    for (what, from, ty, code, rest, want, word) in cases {
        let err = icmp_error(from, HOST_VM, ty, code, rest, &sent);
        let s = ingress(what, VM_IF, err.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .out(Out::Checked);
        let o = step(&mut h, &s);
        assert_flows(what, &o.delta, &[], &[], &[]);
        let got = read_icmp6(what, &o.run.out);
        assert_eq!(
            o.run.out.len(),
            err.len() + 40,
            "{what}: 20 bytes more per IP header"
        );
        assert_eq!(
            got,
            Icmp6Seen {
                from: HOST_LAN6,
                to: CLIENT6,
                hop: 63,
                type_code: want,
                word,
                quote: (client, listen()),
                quote_len: 20 + 8,
                quote_hop: 63,
                quote_next: PROTO_TCP,
            },
            "{what}"
        );
    }
    let err = icmp_error(VM_ROUTER, HOST_VM, 12, 0, [20, 0, 0, 0], &sent);
    let s =
        ingress("parameter problem: not mapped", VM_IF, err).expect(TCX_NEXT, Reason::PassNoMatch);
    step(&mut h, &s);
}

/// A UDP flow's port unreachable, quoting the whole datagram: the quote's
/// tail comes through unchanged.
#[test]
fn a_port_unreachable_about_a_nat64_datagram_quotes_it_whole() {
    let Some(mut h) = host() else { return };
    let (client, listen, target) = (ep6(CLIENT6, 50001), ep6(HOST_LAN6, 5353), ep(VM, 53));
    let query = b"a query nobody answers".to_vec();
    let s = ingress("DNS query", LAN_IF, udp6(client, listen, &query))
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("dns64", created(true, false))
        .out(Out::Checked);
    let o = step(&mut h, &s);
    let seen = ep(
        HOST_VM,
        u16::from_be_bytes([o.run.out[ETH + 20], o.run.out[ETH + 21]]),
    );
    let quoted = ip_of(&udp(seen, target, &query));
    let err = icmp_error(VM, HOST_VM, 3, 3, [0; 4], &quoted);
    let s = ingress("port unreachable", VM_IF, err)
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .out(Out::Checked);
    let o = step(&mut h, &s);
    let got = read_icmp6(&s.description, &o.run.out);
    assert_eq!((got.type_code, got.quote), ((1, 4), (client, listen)));
    assert_eq!(
        (got.quote_len, got.quote_next),
        (8 + query.len() as u16, PROTO_UDP)
    );
    assert!(o.run.out.ends_with(&query), "the quoted payload");
}
