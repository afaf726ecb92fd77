//! IPv6 extension headers on NAT66 packets (forwarder-ebpf/src/ipv6/
//! parse.rs): hop-by-hop, destination options and a routing header with no
//! segments left are walked to the TCP/UDP header and the packet is
//! translated with them kept as they were, as ip6tables' NAT does
//! (ipv6_skip_exthdr, then the addresses and ports). What the walk does
//! not take goes to the stack untouched, counted `pass_ip_options`: a
//! routing header with segments left (the destination is not the final
//! one), a hop-by-hop header anywhere but first (RFC 8200 4.3), more than
//! five headers or more than 504 bytes of them.
//!
//! Outputs are read by etherparse (which walks the same headers) with the
//! TCP/UDP checksum recomputed; the headers themselves are compared byte
//! for byte. Topology and rules: test_run/nat66.rs.
use forwarder_common::{Reason, PROTO_TCP, PROTO_UDP};
use forwarder_tests::testrun::{
    ipv6::{ep6, key6, read6, udp6, CLIENT6, HOST_LAN6, HOST_VM6, VM6},
    tc::*,
    LAN_IF, SNAT_PORTS, TCX_NEXT, TC_ACT_REDIRECT,
};

use super::nat66::{host, tcp6};

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_DEST: u8 = 60;

/// An extension header of `units` x 8 bytes: hop-by-hop and destination
/// options padded with Pad1 options (zero bytes), a routing header of an
/// experimental type (253, RFC 4727) with `segments_left`. Its
/// next-header byte is set by `with_ext`.
fn ext(kind: u8, units: usize, segments_left: u8) -> (u8, Vec<u8>) {
    let mut b = vec![0u8; units * 8];
    b[1] = (units - 1) as u8;
    if kind == NEXTHDR_ROUTING {
        b[2] = 253;
        b[3] = segments_left;
    }
    (kind, b)
}

/// `frame` (Ethernet, a plain IPv6 header, L4) with `chain` inserted
/// after the IPv6 header, next-header bytes and payload length fixed.
/// The L4 checksum does not cover them (nor changes: no routing header
/// here names another destination).
fn with_ext(frame: &[u8], chain: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut f = frame[..54].to_vec();
    let mut next = frame[14 + 6];
    let mut body = Vec::new();
    for (kind, bytes) in chain.iter().rev() {
        let mut b = bytes.clone();
        b[0] = next;
        next = *kind;
        let mut both = b;
        both.extend_from_slice(&body);
        body = both;
    }
    f[14 + 6] = next;
    let plen = u16::from_be_bytes([f[18], f[19]]) as usize + body.len();
    f[18..20].copy_from_slice(&(plen as u16).to_be_bytes());
    f.extend_from_slice(&body);
    f.extend_from_slice(&frame[54..]);
    f
}

#[test]
fn a_syn_behind_a_hop_by_hop_header_is_translated_with_the_header_kept() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 40100);
    let listen = ep6(HOST_LAN6, 80);
    let hbh = ext(NEXTHDR_HOP, 1, 0);
    let syn = with_ext(
        &tcp6(client, listen, "S", 64, b""),
        std::slice::from_ref(&hbh),
    );
    let s = ingress("SYN behind a hop-by-hop header", LAN_IF, syn)
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web6", created(true, false).mss())
        .out(Out::Checked);
    let o = step(&mut h, &s);
    let got = read6(&s.description, &o.run.out);
    assert_eq!(got.src.ip, HOST_VM6, "source");
    assert!(SNAT_PORTS.contains(&got.src.port), "SNAT port");
    assert_eq!(got.dst, ep6(VM6, 8080), "destination");
    assert_eq!(got.hop, 63, "hop limit");
    assert_eq!(got.mss, Some(1440), "MSS clamped behind the header");
    assert_eq!(o.run.out[14 + 6], NEXTHDR_HOP, "next header");
    let mut want = hbh.1.clone();
    want[0] = PROTO_TCP;
    assert_eq!(&o.run.out[54..62], &want[..], "the hop-by-hop header kept");
    let orig = key6(client, listen, PROTO_TCP);
    let reply = key6(ep6(VM6, 8080), ep6(HOST_VM6, got.src.port), PROTO_TCP);
    assert_flows(&s.description, &o.delta, &[orig, reply], &[], &[]);
}

#[test]
fn a_datagram_behind_destination_options_and_a_finished_routing_header_is_translated() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 50200);
    let listen = ep6(HOST_LAN6, 5353);
    let chain = [ext(NEXTHDR_DEST, 2, 0), ext(NEXTHDR_ROUTING, 1, 0)];
    let q = with_ext(&udp6(client, listen, b"\x12\x34 behind options"), &chain);
    let s = ingress("UDP behind destination options and routing", LAN_IF, q)
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("dns6", created(true, false))
        .out(Out::Checked);
    let o = step(&mut h, &s);
    let got = read6(&s.description, &o.run.out);
    assert_eq!(got.src.ip, HOST_VM6, "source");
    assert_eq!(got.dst, ep6(VM6, 53), "destination");
    assert_eq!(got.payload, b"\x12\x34 behind options", "payload");
    assert_eq!(o.run.out[14 + 6], NEXTHDR_DEST, "next header");
    assert_eq!(o.run.out[54], NEXTHDR_ROUTING, "the chain kept");
    // The routing header after 16 bytes of destination options.
    assert_eq!(o.run.out[54 + 16], PROTO_UDP, "the chain kept");
    assert_eq!(&o.run.out[54 + 16 + 2..54 + 16 + 4], &[253, 0]);
}

#[test]
fn extension_header_chains_the_walk_does_not_take_go_to_the_stack_untouched() {
    let Some(mut h) = host() else { return };
    let syn = |port| tcp6(ep6(CLIENT6, port), ep6(HOST_LAN6, 80), "S", 64, b"");
    let pass = |what: &str, frame: Vec<u8>| {
        ingress(what, LAN_IF, frame).expect(TCX_NEXT, Reason::PassIpOptions)
    };
    steps_leave_flows_alone(
        &mut h,
        &[
            pass(
                "routing header with a segment left",
                with_ext(&syn(40101), &[ext(NEXTHDR_ROUTING, 3, 1)]),
            ),
            pass(
                "hop-by-hop after destination options",
                with_ext(
                    &syn(40102),
                    &[ext(NEXTHDR_DEST, 1, 0), ext(NEXTHDR_HOP, 1, 0)],
                ),
            ),
            pass(
                "six destination options headers",
                with_ext(&syn(40103), &vec![ext(NEXTHDR_DEST, 1, 0); 6]),
            ),
            pass(
                "512 bytes of destination options",
                with_ext(&syn(40104), &[ext(NEXTHDR_DEST, 64, 0)]),
            ),
        ],
    );
}
