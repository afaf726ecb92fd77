//! Where things sit in a packet: named sizes and offsets (Cilium writes
//! `offsetof(struct iphdr, check)`, never 10), taken from network-types'
//! wire-format structs, and the protocol numbers the programs compare.
//!
//! The one fact a reader would get wrong: offsets are relative to the
//! header they name (`IP_CHECK` is from the start of the IPv4 header), so a
//! packet offset is always `p.l3 + IP_CHECK` or `p.l4 + TCP_CHECK`.
use core::mem::{offset_of, size_of};

use network_types::{eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

pub const ETH_HLEN: usize = size_of::<EthHdr>();
pub const ETH_TYPE: usize = offset_of!(EthHdr, ether_type);
pub const ETH_P_IP: u16 = 0x0800;

/// The IPv4 header without options (the only kind we translate).
pub const IPV4_HLEN: usize = size_of::<Ipv4Hdr>();
pub const IP_TTL: usize = offset_of!(Ipv4Hdr, ttl);
pub const IP_PROTO: usize = offset_of!(Ipv4Hdr, proto);
pub const IP_CHECK: usize = offset_of!(Ipv4Hdr, check);
pub const IP_SRC: usize = offset_of!(Ipv4Hdr, src_addr);
pub const IP_DST: usize = offset_of!(Ipv4Hdr, dst_addr);
/// Version and header length in one byte: IPv4 without options.
pub const IPV4_VIHL_PLAIN: u8 = 0x45;
/// More-fragments flag and fragment offset bits of frag_off (host order).
pub const IP_MF_OFFSET: u16 = 0x3fff;

/// The fixed TCP header (options follow up to the data offset).
pub const TCP_HLEN: usize = size_of::<TcpHdr>();
pub const UDP_HLEN: usize = size_of::<UdpHdr>();
/// The ICMP header: type, code, checksum and 4 bytes of type-specific data
/// (an echo's identifier and sequence; unused in the errors we handle,
/// whose quoted IP header follows).
pub const ICMP_HLEN: usize = size_of::<Icmpv4Hdr>();

/// Source and destination port: the same place in TCP and UDP.
pub const L4_SPORT: usize = offset_of!(TcpHdr, source);
pub const L4_DPORT: usize = offset_of!(TcpHdr, dest);
const _: () = assert!(L4_SPORT == offset_of!(UdpHdr, src) && L4_DPORT == offset_of!(UdpHdr, dst));
// Adjacent: `nat::rewrite` writes both in one 4-byte store.
const _: () = assert!(L4_DPORT == L4_SPORT + 2);
/// The TCP data offset (high nibble) and, in the byte after it, the flags.
pub const TCP_DOFF: usize = offset_of!(TcpHdr, _bitfield_1);
pub const TCP_FLAGS: usize = TCP_DOFF + 1;
pub const TCP_CHECK: usize = offset_of!(TcpHdr, check);
pub const UDP_CHECK: usize = offset_of!(UdpHdr, check);
pub const ICMP_CHECK: usize = offset_of!(Icmpv4Hdr, check);
/// An echo's identifier: the first half of the type-specific data.
pub const ICMP_ECHO_ID: usize = offset_of!(Icmpv4Hdr, data);
/// Where an ICMP error quotes the offending packet's IP header.
pub const ICMP_QUOTE: usize = ICMP_HLEN;
/// What an ICMP error quotes at least of the offending L4 header
/// (RFC 792: "the first 64 bits"): the ports, and UDP's checksum.
pub const QUOTED_L4_MIN: usize = 8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHOREPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETERPROB: u8 = 12;

pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
/// Kind, length and a 16-bit value.
pub const TCPOLEN_MSS: u8 = 4;

/// The layouts above are the wire's; a change in the crate must not
/// move them silently.
const _: () = {
    assert!(ETH_HLEN == 14 && ETH_TYPE == 12);
    assert!(IPV4_HLEN == 20 && IP_TTL == 8 && IP_PROTO == 9 && IP_CHECK == 10);
    assert!(IP_SRC == 12 && IP_DST == 16);
    assert!(TCP_HLEN == 20 && TCP_DOFF == 12 && TCP_CHECK == 16);
    assert!(UDP_HLEN == 8 && UDP_CHECK == 6);
    assert!(ICMP_HLEN == 8 && ICMP_CHECK == 2 && ICMP_ECHO_ID == 4);
};
