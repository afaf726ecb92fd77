//! Frames built with etherparse (its checksums, not ours), and the edits
//! hostile or awkward cases need: IP options, VLAN tags, TTL, truncation,
//! a chosen L4 checksum. An edit that changes the IPv4 header fixes its
//! checksum unless the case is about a bad one.
use etherparse::PacketBuilder;
use forwarder_common::{PROTO_TCP, PROTO_UDP};

use super::{
    csum::{fix_ip_header, fold, pseudo_sum, sum16},
    fixture::{mac_of, Ep, Ip, CLIENT, HOST_MAC},
};

/// Length of the Ethernet header: where the IPv4 header starts.
pub const ETH: usize = 14;
/// The TTL frames are sent with.
pub const TTL: u8 = 64;

/// Initial sequence numbers of the one connection every test frame is a
/// segment of: the side with the higher port (the client) starts at
/// `CLIENT_ISN`, the other at `SERVER_ISN`. A SYN carries its side's ISN,
/// every other segment ISN + 1 and acknowledges the other side's ISN + 1,
/// so a handshake, FINs and RSTs built here pass conntrack's window checks
/// (repeated data reads as retransmission).
pub const CLIENT_ISN: u32 = 999_999;
pub const SERVER_ISN: u32 = 1_999_999;

/// A TCP segment with raw TCP options `opts` (whole words). Flags: any of
/// "S", "A", "F", "R", "P". Sequence numbers: see `CLIENT_ISN`.
pub fn tcp_opts(src: Ep, dst: Ep, flags: &str, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let (mine, theirs) = if src.port > dst.port {
        (CLIENT_ISN, SERVER_ISN)
    } else {
        (SERVER_ISN, CLIENT_ISN)
    };
    let seq = if flags.contains('S') { mine } else { mine + 1 };
    tcp_seg(src, dst, flags, (seq, theirs + 1), opts, payload)
}

/// A TCP segment with these (sequence, acknowledgement) numbers (the
/// acknowledgement sent with "A"), window 64,240; flags and options as for
/// [`tcp_opts`].
pub fn tcp_seg(
    src: Ep,
    dst: Ep,
    flags: &str,
    (seq, ack): (u32, u32),
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(mac_of(src.ip), HOST_MAC)
        .ipv4(src.ip, dst.ip, TTL)
        .tcp(src.port, dst.port, seq, 64_240);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(ack),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => panic!("flag {f}"),
        };
    }
    if !opts.is_empty() {
        b = b.options_raw(opts).expect("tcp options");
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// A TCP segment without options; flags as for [`tcp_opts`].
pub fn tcp(src: Ep, dst: Ep, flags: &str, payload: &[u8]) -> Vec<u8> {
    tcp_opts(src, dst, flags, &[], payload)
}

pub fn udp(src: Ep, dst: Ep, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_of(src.ip), HOST_MAC)
        .ipv4(src.ip, dst.ip, TTL)
        .udp(src.port, dst.port);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// A UDP datagram without checksum (0: "none").
pub fn udp_nocsum(src: Ep, dst: Ep, payload: &[u8]) -> Vec<u8> {
    set_l4_check(udp(src, dst, payload), 0)
}

/// A UDP payload of `len` bytes (even) whose datagram from `src` to `dst`
/// has the checksum 0 when computed: its last word makes the sum all ones.
/// Sent, such a checksum is written as 0xffff (RFC 768).
pub fn zero_sum_payload(src: Ep, dst: Ep, len: usize) -> Vec<u8> {
    assert!(len >= 2 && len.is_multiple_of(2));
    let mut payload = vec![b'z'; len];
    payload[len - 2..].copy_from_slice(&[0, 0]);
    let f = udp(src, dst, &payload);
    let ip = &f[ETH..];
    let mut l4 = ip[20..].to_vec();
    l4[6..8].copy_from_slice(&[0, 0]);
    let word = !fold(sum16(&l4) + u32::from(pseudo_sum(ip)));
    payload[len - 2..].copy_from_slice(&word.to_be_bytes());
    payload
}

/// An ICMP echo request (or reply) with identifier `id`, sequence 7.
pub fn echo(src: Ip, dst: Ip, id: u16, request: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_of(src), HOST_MAC).ipv4(src, dst, TTL);
    let b = if request {
        b.icmpv4_echo_request(id, 7)
    } else {
        b.icmpv4_echo_reply(id, 7)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"ping payload 0123456789").unwrap();
    v
}

/// An ICMP error from `src` to `dst` quoting `quoted` (an IPv4 packet, as
/// much of it as the sender quotes).
pub fn icmp_error(src: Ip, dst: Ip, ty: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_of(src), HOST_MAC)
        .ipv4(src, dst, TTL)
        .icmpv4_raw(ty, code, rest);
    let mut v = Vec::new();
    b.write(&mut v, quoted).unwrap();
    v
}

/// The IPv4 packet of a frame (what an ICMP error quotes).
pub fn ip_of(frame: &[u8]) -> Vec<u8> {
    frame[ETH..].to_vec()
}

/// The frame as an L3 device (tun, wireguard) delivers it: no Ethernet
/// header, the IPv4 header at offset 0.
///
/// BPF_PROG_TEST_RUN builds every tc skb as Ethernet, whatever the device:
/// eth_type_trans takes skb->protocol from bytes 12-13, and ctx_in cannot
/// set it. The program reads an L3 interface's packets from offset 0 and
/// trusts skb->protocol, so an L3 packet can be expressed when its bytes
/// 12-13, the first half of the IPv4 source address, read 0x0800: with a
/// source in 8.0.0.0/16 the program sees exactly what a tun device would
/// hand it (data at the IPv4 header, protocol ETH_P_IP). That is why the
/// tailnet peers of the tests are in 8.0.0.0/16. (The skb's network header
/// still sits 14 bytes in, which only matters for the CHECKSUM_COMPLETE
/// check; see `tc::step`.)
pub fn l3(frame: &[u8]) -> Vec<u8> {
    let ip = ip_of(frame);
    assert_eq!(
        &ip[12..14],
        &[8, 0],
        "an L3 test frame needs a source in 8.0.0.0/16"
    );
    ip
}

/// A broadcast ARP frame from `src` (its body all zeros).
pub fn arp(src: Ip) -> Vec<u8> {
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&mac_of(src));
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    arp
}

/// An IPv6 TCP segment from the client's MAC, fd..:40000 to fe..:80.
/// Flags: any of "S", "A" (acknowledging 1).
pub fn tcp6(flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(mac_of(CLIENT), HOST_MAC)
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .tcp(40000, 80, 1, 1000);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            _ => panic!("flag {f}"),
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// `frame` with an 802.1Q tag (VLAN 10) after the MAC addresses.
pub fn vlan_tagged(frame: &[u8]) -> Vec<u8> {
    let mut v = frame.to_vec();
    v.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    v
}

/// `frame` with one word of IPv4 options (NOPs, IHL 6), its total length
/// and header checksum to match.
pub fn with_ip_options(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[ETH] = 0x46;
    f.splice(ETH + 20..ETH + 20, [1u8, 1, 1, 1]);
    let tl = (f.len() - ETH) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tl.to_be_bytes());
    fix_ip_header(&mut f[ETH..ETH + 24]);
    f
}

/// Sets bytes of the IPv4 header of an Ethernet frame and fixes the
/// checksum of its first 20 bytes (nothing else).
pub fn patch_ip(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[ETH + at..ETH + at + bytes.len()].copy_from_slice(bytes);
    with_ip_csum(frame)
}

/// The frame with its IPv4 header checksum (of the first 20 bytes) fixed.
pub fn with_ip_csum(mut f: Vec<u8>) -> Vec<u8> {
    fix_ip_header(&mut f[ETH..ETH + 20]);
    f
}

pub fn with_ttl(frame: &[u8], ttl: u8) -> Vec<u8> {
    patch_ip(frame.to_vec(), 8, &[ttl])
}

/// The frame cut `keep` bytes into its L4 header, total length to match.
pub fn truncate_l4(f: &[u8], keep: usize) -> Vec<u8> {
    let mut f = f[..ETH + 20 + keep].to_vec();
    let tl = (20 + keep) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tl.to_be_bytes());
    with_ip_csum(f)
}

/// Offset of the L4 checksum field in a frame.
fn l4_check_at(frame: &[u8]) -> usize {
    ETH + 20
        + match frame[ETH + 9] {
            PROTO_TCP => 16,
            PROTO_UDP => 6,
            p => panic!("no L4 checksum for protocol {p}"),
        }
}

/// The frame with this TCP/UDP checksum field (for UDP, 0 is "none").
pub fn set_l4_check(mut frame: Vec<u8>, check: u16) -> Vec<u8> {
    let at = l4_check_at(&frame);
    frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
    frame
}

/// The TCP/UDP checksum field of a frame.
pub fn l4_check(frame: &[u8]) -> u16 {
    let at = l4_check_at(frame);
    u16::from_be_bytes([frame[at], frame[at + 1]])
}
