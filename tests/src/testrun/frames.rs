//! Frames for the BPF_PROG_TEST_RUN tests: the fixture's addresses, flow
//! keys, frames built with etherparse (its checksums), checksum arithmetic
//! of this module's own (RFC 1071, no code shared with the programs) to
//! build the frames a test expects (see `expect`), and etherparse's reading
//! of the frames the programs left, every checksum recomputed.
//!
//! Frames are Ethernet, from `mac_of(source)` to `HOST_MAC`, IPv4 with
//! TTL 64 and a 20-byte header unless a helper says otherwise.
use etherparse::{
    Ipv4HeaderSlice, NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, TcpOptionElement,
    TransportHeader,
};
use forwarder_common::{
    addr_v4, addr_v4_octets, FlowEntry, FlowFlags, FlowKey, AF_INET, PROTO_ICMP, PROTO_TCP,
    PROTO_UDP,
};

// ---------------------------------------------------------------------------
// Addresses

pub type Ip = [u8; 4];
pub type Mac = [u8; 6];

/// An address and a port (for ICMP echo, the identifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ep {
    pub ip: Ip,
    pub port: u16,
}

pub const fn ep(ip: Ip, port: u16) -> Ep {
    Ep { ip, port }
}

/// A LAN client (the host is `testrun::HOST_LAN` there).
pub const CLIENT: Ip = [192, 168, 1, 10];
/// Another LAN host: a hairpin target (reached through the listening
/// interface, vmbr0, itself).
pub const LAN_PEER: Ip = [192, 168, 1, 20];
/// The VM the forwards' targets live on (on-link behind vmbr1).
pub const VM: Ip = [192, 168, 100, 80];
/// A second VM, on-link behind vmbr1 too.
pub const VM81: Ip = [192, 168, 100, 81];
/// A router on the VM side that is not the backend.
pub const VM_ROUTER: Ip = [192, 168, 100, 254];

/// The destination MAC of the frames the tests send to the host.
pub const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];

/// The MAC of `ip`: what frames from it carry, and what its neighbour
/// entry holds where a test makes one (`Host::neigh`).
pub fn mac_of(ip: Ip) -> Mac {
    [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]]
}

// ---------------------------------------------------------------------------
// Flow keys and entries

/// The key of the flow entry a packet from `src` to `dst` matches.
pub fn fkey(src: Ep, dst: Ep, proto: u8) -> FlowKey {
    FlowKey {
        src: addr_v4(src.ip),
        dst: addr_v4(dst.ip),
        sport: src.port.to_be(),
        dport: dst.port.to_be(),
        proto,
        family: AF_INET,
        _pad: [0; 2],
    }
}

/// A flow key for messages.
pub fn show(k: &FlowKey) -> String {
    let a = |x: &[u32; 4]| std::net::Ipv4Addr::from(addr_v4_octets(x));
    format!(
        "{}:{} -> {}:{} proto {}",
        a(&k.src),
        u16::from_be(k.sport),
        a(&k.dst),
        u16::from_be(k.dport),
        k.proto
    )
}

/// A flow entry as userspace can insert it (the dataplane never creates
/// ICMP echo flows): packets matching it are translated to
/// `new_src` -> `new_dst`; created and last seen at `now`, nothing counted.
pub fn flow_entry(new_src: Ep, new_dst: Ep, rule_id: u32, now: u64, flags: FlowFlags) -> FlowEntry {
    FlowEntry {
        new_src: addr_v4(new_src.ip),
        new_dst: addr_v4(new_dst.ip),
        new_sport: new_src.port.to_be(),
        new_dport: new_dst.port.to_be(),
        rule_id,
        created_ns: now,
        last_seen_ns: now,
        flags,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Frames (built with etherparse; checksums are etherparse's)

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

// ---------------------------------------------------------------------------
// Independent checksum arithmetic

pub fn sum16(data: &[u8]) -> u32 {
    let mut s = 0u32;
    for c in data.chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    s
}

pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// RFC 1071 checksum of `data` (its checksum field zeroed) plus `extra`.
fn inet_csum(data: &[u8], extra: u32) -> u16 {
    !fold(sum16(data) + extra)
}

fn pseudo(ip: &[u8], proto: u8, len: usize) -> u32 {
    sum16(&ip[12..20]) + u32::from(proto) + len as u32
}

/// The pseudo-header sum of the IPv4 packet `ip` (folded, not
/// complemented): what a sender that leaves the checksum to offload
/// (CHECKSUM_PARTIAL) writes into the TCP/UDP checksum field.
pub fn pseudo_sum(ip: &[u8]) -> u16 {
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    fold(pseudo(ip, ip[9], tot - 20))
}

/// Fixes the checksum of the IPv4 header `hdr`, whatever its IHL says: the
/// checksum covers the bytes given.
pub fn fix_ip_header(hdr: &mut [u8]) {
    if hdr.len() < 12 {
        return;
    }
    hdr[10..12].copy_from_slice(&[0, 0]);
    let c = inet_csum(hdr, 0);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes every checksum of the IPv4 packet at `ip[..]`: the header,
/// then TCP / UDP (a zero UDP checksum means "none" and stays zero; a
/// computed zero is sent as all ones) / ICMP, only over what is present (a
/// quoted packet may be cut short: its L4 checksum is left alone unless the
/// whole segment is there; bytes beyond the total length, Ethernet padding,
/// are not covered). ICMP errors get their quoted packet fixed first.
pub fn fix_checksums(ip: &mut [u8]) {
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    fix_ip_header(&mut ip[..20]);
    if ip.len() < tot {
        return; // a truncated quote: the L4 checksum cannot be computed
    }
    let proto = ip[9];
    let (hdr, l4) = ip.split_at_mut(20);
    let l4 = &mut l4[..tot - 20];
    match proto {
        PROTO_TCP => {
            l4[16..18].copy_from_slice(&[0, 0]);
            let c = inet_csum(l4, pseudo(hdr, proto, l4.len()));
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        // A zero UDP checksum means "none" and stays zero.
        PROTO_UDP if l4[6..8] != [0, 0] => {
            l4[6..8].copy_from_slice(&[0, 0]);
            let c = match inet_csum(l4, pseudo(hdr, proto, l4.len())) {
                0 => 0xffff,
                c => c,
            };
            l4[6..8].copy_from_slice(&c.to_be_bytes());
        }
        PROTO_ICMP => {
            if matches!(l4[0], 3 | 11 | 12) && l4.len() >= 28 {
                fix_checksums(&mut l4[8..]);
            }
            l4[2..4].copy_from_slice(&[0, 0]);
            let c = inet_csum(l4, 0);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

/// Rewrites the tuple of the IPv4 packet `ip` (ports; for ICMP echo the
/// identifier, taken from `src.port`) without fixing checksums.
pub fn set_tuple(ip: &mut [u8], src: Ep, dst: Ep) {
    ip[12..16].copy_from_slice(&src.ip);
    ip[16..20].copy_from_slice(&dst.ip);
    match ip[9] {
        PROTO_TCP | PROTO_UDP => {
            ip[20..22].copy_from_slice(&src.port.to_be_bytes());
            ip[22..24].copy_from_slice(&dst.port.to_be_bytes());
        }
        PROTO_ICMP => ip[24..26].copy_from_slice(&src.port.to_be_bytes()),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Checking a frame with etherparse

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
            p.src.port = t.source_port;
            p.dst.port = t.destination_port;
            p.mss = t.options_iterator().find_map(|o| match o {
                Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
                _ => None,
            });
        }
        (Some(TransportHeader::Udp(u)), PayloadSlice::Udp(payload)) => {
            if u.checksum != 0 {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv4(ip, payload).unwrap(),
                    "{case}: UDP checksum"
                );
            }
            p.src.port = u.source_port;
            p.dst.port = u.destination_port;
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
