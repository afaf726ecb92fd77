//! Checking a frame the programs left with etherparse: the facts a test
//! asserts (addresses, ports, TTL, MSS), every checksum recomputed,
//! quoted packets of ICMP errors included.
use etherparse::{
    Ipv4HeaderSlice, NetHeaders, PacketHeaders, PayloadSlice, TcpHeader, TcpOptionElement,
    TransportHeader,
};

use super::fixture::{ep, Ep, Mac};

/// The facts of a packet as etherparse reads them.
#[derive(Debug)]
pub struct Parsed {
    /// The MAC addresses; `None` for a packet without Ethernet header.
    pub dmac: Option<Mac>,
    pub smac: Option<Mac>,
    /// Addresses and TCP/UDP ports (the identifier of an ICMP echo on both
    /// sides; port 0 in an ICMP error).
    pub src: Ep,
    pub dst: Ep,
    pub ttl: u8,
    /// The TCP MSS option's value.
    pub mss: Option<u16>,
}

/// Parses `out` (Ethernet unless `l3`), recomputes every checksum with
/// etherparse (the IPv4 header's, TCP/UDP/ICMP's, and in an ICMP error
/// those of the quoted packet) and compares it with the packet's.
pub fn verify(case: &str, out: &[u8], l3: bool) -> Parsed {
    let h = if l3 {
        PacketHeaders::from_ip_slice(out)
    } else {
        PacketHeaders::from_ethernet_slice(out)
    }
    .unwrap_or_else(|e| panic!("{case}: output does not parse: {e}"));
    let eth = h.link.clone().and_then(|l| l.ethernet2());
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("{case}: output is not IPv4: {:?}", h.net);
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "{case}: IPv4 header checksum"
    );
    let mut p = Parsed {
        dmac: eth.as_ref().map(|e| e.destination),
        smac: eth.as_ref().map(|e| e.source),
        src: ep(ip.source, 0),
        dst: ep(ip.destination, 0),
        ttl: ip.time_to_live,
        mss: None,
    };
    match (&h.transport, &h.payload) {
        (Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(payload)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(ip, payload).unwrap(),
                "{case}: TCP checksum"
            );
            (p.src.port, p.dst.port) = (t.source_port, t.destination_port);
            p.mss = mss_option(t);
        }
        (Some(TransportHeader::Udp(u)), PayloadSlice::Udp(payload)) => {
            if u.checksum != 0 {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv4(ip, payload).unwrap(),
                    "{case}: UDP checksum"
                );
            }
            (p.src.port, p.dst.port) = (u.source_port, u.destination_port);
        }
        (Some(TransportHeader::Icmpv4(i)), PayloadSlice::Icmpv4(payload)) => {
            assert_eq!(
                i.checksum,
                i.icmp_type.calc_checksum(payload),
                "{case}: ICMP checksum"
            );
            let b = i.to_bytes();
            if matches!(b[0], 0 | 8) {
                let id = u16::from_be_bytes([b[4], b[5]]);
                p.src.port = id;
                p.dst.port = id;
            } else {
                verify_quote(case, payload);
            }
        }
        other => panic!("{case}: unexpected transport {other:?}"),
    }
    p
}

/// The value of the TCP MSS option of `t`, if it has one.
pub fn mss_option(t: &TcpHeader) -> Option<u16> {
    t.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    })
}

/// The packet quoted by an ICMP error: its IPv4 header checksum, and its
/// L4 checksum when all of it is quoted.
fn verify_quote(case: &str, quoted: &[u8]) {
    let h = Ipv4HeaderSlice::from_slice(quoted)
        .unwrap_or_else(|e| panic!("{case}: quoted header does not parse: {e}"));
    assert_eq!(
        h.header_checksum(),
        h.to_header().calc_header_checksum(),
        "{case}: quoted IPv4 header checksum"
    );
    if quoted.len() < usize::from(h.total_len()) {
        return;
    }
    let inner = PacketHeaders::from_ip_slice(quoted)
        .unwrap_or_else(|e| panic!("{case}: quoted packet does not parse: {e}"));
    let Some(NetHeaders::Ipv4(ip, _)) = &inner.net else {
        unreachable!()
    };
    match (&inner.transport, &inner.payload) {
        (Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(payload)) => assert_eq!(
            t.checksum,
            t.calc_checksum_ipv4(ip, payload).unwrap(),
            "{case}: quoted TCP checksum"
        ),
        (Some(TransportHeader::Udp(u)), PayloadSlice::Udp(payload)) if u.checksum != 0 => {
            assert_eq!(
                u.checksum,
                u.calc_checksum_ipv4(ip, payload).unwrap(),
                "{case}: quoted UDP checksum"
            )
        }
        _ => {}
    }
}

/// Byte-for-byte comparison with the first difference named.
pub fn assert_bytes(case: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{case}: output differs from the expected frame at byte {at} (len {} vs {}):\n got  {:02x?}\n want {:02x?}",
        got.len(),
        want.len(),
        &got[at.saturating_sub(4)..(at + 12).min(got.len())],
        &want[at.saturating_sub(4)..(at + 12).min(want.len())],
    );
}
