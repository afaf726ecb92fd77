//! The IPv6 side of the test_run fixture, shared by the NAT66 and NAT64
//! tables (tests/tests/test_run/nat66*.rs, nat64*.rs, ipv6_answers.rs):
//! the IPv6 addresses of the fixture's two bridges and their peers, the
//! fixture with those addresses set, IPv6 frames built by etherparse, and
//! etherparse's reading of the IPv6 frames the programs leave.
//!
//! ```text
//!  lan ── veth ── vmbr0  2001:db8:1::55/64  (clients 2001:db8:1::10, ::11)
//!  vm  ── veth ── vmbr1  fd00:100::1/64     (target fd00:100::80 on-link)
//! ```
//!
//! The fact a reader would get wrong: the MAC of an IPv6 peer is
//! `frames::mac_of` of the last four bytes of its address, so a NAT66 or
//! NAT64 test needs no neighbour of its own beyond what `Host` installs.
use anyhow::Context;
use etherparse::{
    Icmpv6Type, NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, TransportHeader,
};
use forwarder_common::{FlowKey, AF_INET6, PROTO_TCP};

use super::{
    frames::{mac_of, mss_option, ETH, HOST_MAC},
    host::Host,
};
use crate::dual_stack;

pub type Ip6 = [u8; 16];

/// `prefix` (a /64) with interface identifier `host`.
pub const fn ip6(prefix: [u8; 8], host: u16) -> Ip6 {
    let h = host.to_be_bytes();
    [
        prefix[0], prefix[1], prefix[2], prefix[3], prefix[4], prefix[5], prefix[6], prefix[7], 0,
        0, 0, 0, 0, 0, h[0], h[1],
    ]
}
/// vmbr0's IPv6 network (the clients').
pub const LAN6: [u8; 8] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0];
/// vmbr1's IPv6 network (the VMs').
pub const VM6NET: [u8; 8] = [0xfd, 0, 0x01, 0, 0, 0, 0, 0];
pub const CLIENT6: Ip6 = ip6(LAN6, 0x10);
/// A client outside the allow-lists.
pub const OTHER6: Ip6 = ip6(LAN6, 0x11);
pub const HOST_LAN6: Ip6 = ip6(LAN6, 0x55);
pub const HOST_VM6: Ip6 = ip6(VM6NET, 1);
pub const VM6: Ip6 = ip6(VM6NET, 0x80);
/// `HOST_LAN6` as `ip addr` takes it.
pub const HOST_LAN6_CIDR: &str = "2001:db8:1::55/64";
/// `HOST_VM6` as `ip addr` takes it.
pub const HOST_VM6_CIDR: &str = "fd00:100::1/64";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ep6 {
    pub ip: Ip6,
    pub port: u16,
}

pub const fn ep6(ip: Ip6, port: u16) -> Ep6 {
    Ep6 { ip, port }
}

/// The fixture (`Host::new(64)`) with IPv6 forwarding on and each
/// `(interface, address)` of `addrs` set (no DAD: usable at once); the
/// caller adds its routes and loads its rules. `None` (the test skips)
/// without root; `default_name` names the test when its thread has none.
pub fn ipv6_host(default_name: &str, addrs: &[(&str, &str)]) -> Option<Host> {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or(default_name);
    if !crate::require_root(test) {
        return None;
    }
    let h = Host::new(64).expect("test namespace and dataplane");
    dual_stack::enable_router(&h.ns).expect("IPv6 forwarding");
    for (dev, addr) in addrs {
        dual_stack::addr6(&h.ns, dev, addr)
            .with_context(|| format!("{addr} on {dev}"))
            .expect("IPv6 address");
    }
    Some(h)
}

pub fn mac6(ip: Ip6) -> [u8; 6] {
    mac_of([ip[12], ip[13], ip[14], ip[15]])
}

/// The address as the flow table stores it (four native-endian words).
pub fn words(ip: Ip6) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, c) in ip.chunks(4).enumerate() {
        w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

/// The flow key of an IPv6 packet `src` -> `dst`.
pub fn key6(src: Ep6, dst: Ep6, proto: u8) -> FlowKey {
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

/// A UDP datagram `src` -> `dst`, hop limit 64.
pub fn udp6(src: Ep6, dst: Ep6, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac6(src.ip), HOST_MAC)
        .ipv6(src.ip, dst.ip, 64)
        .udp(src.port, dst.port)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// An ICMPv6 error to `to` from `from`, quoting `input`'s IPv6 header and
/// its TCP header (20 bytes) or UDP header (8), in a frame back to
/// `input`'s sender: the answer a router builds.
pub fn icmp6_answer(input: &[u8], from: Ip6, to: Ip6, ty: Icmpv6Type) -> Vec<u8> {
    let l4 = if input[ETH + 6] == PROTO_TCP { 20 } else { 8 };
    let quote = &input[ETH..ETH + 40 + l4];
    let mut v = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, mac6(to))
        .ipv6(from, to, 64)
        .icmpv6(ty)
        .write(&mut v, quote)
        .unwrap();
    v
}

/// What etherparse reads in an IPv6 output frame whose TCP/UDP checksum
/// it recomputed over the IPv6 pseudo-header and found right.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen6 {
    pub src: Ep6,
    pub dst: Ep6,
    pub hop: u8,
    pub mss: Option<u16>,
    pub payload: Vec<u8>,
}

/// Reads the IPv6 TCP or UDP frame `out`, its checksum recomputed.
pub fn read6(case: &str, out: &[u8]) -> Seen6 {
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
            (s.src.port, s.dst.port) = (t.source_port, t.destination_port);
            s.mss = mss_option(t);
            s.payload = payload.to_vec();
        }
        (Some(TransportHeader::Udp(u)), PayloadSlice::Udp(payload)) => {
            assert_eq!(
                u.checksum,
                u.calc_checksum_ipv6(ip, payload).unwrap(),
                "{case}: UDP checksum"
            );
            (s.src.port, s.dst.port) = (u.source_port, u.destination_port);
            s.payload = payload.to_vec();
        }
        other => panic!("{case}: unexpected transport {other:?}"),
    }
    s
}
