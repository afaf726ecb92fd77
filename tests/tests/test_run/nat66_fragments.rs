//! IPv6 fragments through NAT66 flows (forwarder-ebpf/src/ipv6/frag6.rs),
//! the IPv4 fragment design (test_run/ct_fragments.rs, docs/rules.md) for
//! IPv6's fragment header: a first fragment carries the UDP header and
//! starts or continues its flow like a whole datagram; a later fragment
//! finds its flow through the first's ports and gets the same addresses
//! (its bytes are payload: no ports, no checksum to touch). A later
//! fragment whose first was not seen goes to the stack untouched; a first
//! fragment too short for its ports is dropped (RFC 7112). What makes
//! this common: a pod that learned a path MTU of 1280 from a packet too
//! big fragments its UDP answers itself (tests/tests/tailnet6_pmtu_e2e.rs).
//!
//! Each output fragment's IPv6 header is read by etherparse (its fragment
//! header by hand, see `reassembled`), the pieces are put back together,
//! and etherparse recomputes the UDP checksum of the whole datagram over
//! the new pseudo-header.
//!
//! Topology and rules: test_run/nat66.rs.
use etherparse::{Ipv6Header, PacketBuilder, UdpHeader};
use forwarder_common::{Reason, PROTO_UDP};
use forwarder_tests::testrun::{
    frames::HOST_MAC,
    ipv6::{ep6, key6, mac6, Ep6, CLIENT6, HOST_LAN6, HOST_VM6, VM6},
    tc::*,
    LAN_IF, SNAT_PORTS, TCX_NEXT, TC_ACT_REDIRECT, TC_ACT_SHOT, VM_IF,
};

use super::nat66::host;

const NEXTHDR_FRAGMENT: u8 = 44;

/// A UDP datagram `src` -> `dst` with `len` bytes of payload, as one frame
/// (etherparse computes its checksum).
fn datagram(src: Ep6, dst: Ep6, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac6(src.ip), HOST_MAC)
        .ipv6(src.ip, dst.ip, 64)
        .udp(src.port, dst.port)
        .write(&mut v, &payload)
        .unwrap();
    v
}

/// `whole` (a frame with a plain IPv6 header) cut into fragments of
/// identification `id`, the L4 bytes split at `cuts` (multiples of 8), as
/// a sender fragments (RFC 8200 4.5): each fragment the IPv6 header, a
/// fragment header, its piece.
fn fragments(whole: &[u8], id: u32, cuts: &[usize]) -> Vec<Vec<u8>> {
    let (eth, ip, l4) = (&whole[..14], &whole[14..54], &whole[54..]);
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(l4.len());
    bounds
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            assert_eq!(a % 8, 0, "fragment offsets are multiples of 8");
            let more = b < l4.len();
            let mut f = eth.to_vec();
            f.extend_from_slice(ip);
            f[14 + 4..14 + 6].copy_from_slice(&((8 + b - a) as u16).to_be_bytes());
            f[14 + 6] = NEXTHDR_FRAGMENT;
            let off_more = a as u16 | more as u16;
            f.extend_from_slice(&[ip[6], 0, (off_more >> 8) as u8, off_more as u8]);
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&l4[a..b]);
            f
        })
        .collect()
}

/// Reads output fragments with etherparse: each from `src` to `dst` one
/// hop down, identification `id` kept, offsets in order; then the UDP
/// datagram they make, whose ports it returns after checking its checksum
/// over the pseudo-header of `src` and `dst`.
fn reassembled(case: &str, outs: &[Vec<u8>], src: [u8; 16], dst: [u8; 16], id: u32) -> (u16, u16) {
    let mut l4 = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        let (ip, rest) = Ipv6Header::from_slice(&out[14..])
            .unwrap_or_else(|e| panic!("{case}: fragment {i} does not parse: {e}"));
        assert_eq!(
            (ip.source, ip.destination),
            (src, dst),
            "{case}: fragment {i}'s addresses"
        );
        assert_eq!(ip.hop_limit, 63, "{case}: fragment {i}'s hop limit");
        assert_eq!(ip.next_header.0, NEXTHDR_FRAGMENT, "{case}: fragment {i}");
        // The fragment header by hand: etherparse 0.16 reads its offset
        // and M flag with IPv4's bit layout (JulianSchmid/etherparse#150,
        // fixed in 0.20), RFC 8200 4.5 has the offset in the top 13 bits
        // of bytes 2-3 and M in the lowest.
        let (fh, piece) = rest.split_at(8);
        let off_more = u16::from_be_bytes([fh[2], fh[3]]);
        let ident = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
        assert_eq!(ident, id, "{case}: fragment {i}'s identification");
        assert_eq!(
            (off_more & 0xfff8) as usize,
            l4.len(),
            "{case}: fragment {i}'s offset"
        );
        assert_eq!(
            off_more & 1 == 1,
            i + 1 < outs.len(),
            "{case}: fragment {i}'s M flag"
        );
        assert_eq!(fh[0], PROTO_UDP, "{case}: fragment {i}'s next header");
        l4.extend_from_slice(&piece[..ip.payload_length as usize - 8]);
    }
    let (udp, payload) = UdpHeader::from_slice(&l4).unwrap();
    assert_eq!(udp.length as usize, l4.len(), "{case}: UDP length");
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv6_raw(src, dst, payload).unwrap(),
        "{case}: UDP checksum of the reassembled datagram"
    );
    (udp.source_port, udp.destination_port)
}

#[test]
fn a_fragmented_udp_datagram_is_translated_fragment_by_fragment_both_ways() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 50100);
    let listen = ep6(HOST_LAN6, 5353);
    let vm = ep6(VM6, 53);
    let query = fragments(&datagram(client, listen, 2000), 0x1234_5678, &[1232]);

    // The first fragment starts the flow (dns6: masquerade).
    let s = ingress("first fragment of the query", LAN_IF, query[0].clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("dns6", created(true, false))
        .out(Out::Checked);
    let o = step(&mut h, &s);
    let orig = key6(client, listen, PROTO_UDP);
    let first_out = o.run.out.clone();
    let e = entry(&s.description, &o.after, &orig);
    let seen = ep6(HOST_VM6, u16::from_be(e.new_sport));
    assert!(SNAT_PORTS.contains(&seen.port), "SNAT port {}", seen.port);
    let reply = key6(vm, seen, PROTO_UDP);
    assert_flows(&s.description, &o.delta, &[orig, reply], &[], &[]);

    // The later one, through the first's ports: same flow, same addresses.
    let s = ingress("later fragment of the query", LAN_IF, query[1].clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("dns6", translated())
        .out(Out::Checked);
    let o = step(&mut h, &s);
    assert_flows(&s.description, &o.delta, &[], &[], &[orig]);
    let ports = reassembled(
        "query",
        &[first_out, o.run.out.clone()],
        HOST_VM6,
        VM6,
        0x1234_5678,
    );
    assert_eq!(ports, (seen.port, vm.port), "query ports at the VM");

    // The VM's answer in three fragments (a sender that learned a smaller
    // path MTU): each goes back to the client from the listener.
    let answer = fragments(&datagram(vm, seen, 3000), 0x9abc_def0, &[1232, 2464]);
    let mut outs = Vec::new();
    for (i, f) in answer.into_iter().enumerate() {
        let s = ingress(format!("answer fragment {i}"), VM_IF, f)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("dns6", translated())
            .out(Out::Checked);
        outs.push(step(&mut h, &s).run.out);
    }
    let ports = reassembled("answer", &outs, HOST_LAN6, CLIENT6, 0x9abc_def0);
    assert_eq!(
        ports,
        (listen.port, client.port),
        "answer ports at the client"
    );
}

#[test]
fn a_later_fragment_whose_first_was_not_seen_goes_to_the_stack_untouched() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 50101);
    let listen = ep6(HOST_LAN6, 5353);
    let query = fragments(&datagram(client, listen, 2000), 77, &[1232]);
    // Out of order: the later fragment first. Not ours to decide: the
    // stack either reassembles a datagram of its own or never can.
    steps_leave_flows_alone(
        &mut h,
        &[
            ingress("later fragment before its first", LAN_IF, query[1].clone())
                .expect(TCX_NEXT, Reason::PassFragment),
        ],
    );
    // The first one still starts the flow.
    let s = ingress("its first fragment, after it", LAN_IF, query[0].clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("dns6", created(true, false))
        .out(Out::Checked);
    step(&mut h, &s);
}

#[test]
fn a_first_fragment_too_short_for_its_ports_is_dropped_and_icmpv6_fragments_pass() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 50102);
    let listen = ep6(HOST_LAN6, 5353);
    // The UDP header split across two fragments would need the offset
    // to be 4: fragment offsets are in 8-byte units, so the first
    // fragment is cut to 4 bytes of L4 by hand (its header says so).
    let mut tiny = fragments(&datagram(client, listen, 2000), 78, &[1232])[0].clone();
    tiny.truncate(14 + 40 + 8 + 4);
    tiny[14 + 4..14 + 6].copy_from_slice(&12u16.to_be_bytes());
    let mut echo = Vec::new();
    PacketBuilder::ethernet2(mac6(CLIENT6), HOST_MAC)
        .ipv6(CLIENT6, HOST_LAN6, 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut echo, &[0u8; 2000])
        .unwrap();
    let echo = fragments(&echo, 79, &[1232]);
    steps_leave_flows_alone(
        &mut h,
        &[
            ingress("first fragment with 4 bytes of UDP", LAN_IF, tiny)
                .expect(TC_ACT_SHOT, Reason::DropError),
            ingress("first fragment of an echo request", LAN_IF, echo[0].clone())
                .expect(TCX_NEXT, Reason::PassFragment),
            ingress("later fragment of an echo request", LAN_IF, echo[1].clone())
                .expect(TCX_NEXT, Reason::PassFragment),
        ],
    );
}
