//! The IPv6 header and the TCP/UDP header after it, with direct packet
//! access (`Frame`), into the same `parse::Packet` the IPv4 path fills,
//! plus the 16-byte addresses.
//!
//! The fact a reader gets wrong: `Packet6::p` is a real `parse::Packet`
//! so the family-independent steps (the state machine in
//! conntrack::existing, nat::set_port, mss::clamp) run unchanged on it, but its IPv4 fields mean something
//! else here: `src`/`dst` are 0 (the addresses are `Packet6::src/dst`),
//! `ttl` is the hop limit and `tot_len` the whole packet (40 + payload).
//! Nothing IPv4-only (nat::set_addr, fib::forward, icmp) may be given it.
use core::mem::offset_of;

use forwarder_common::{Reason, PROTO_TCP, PROTO_UDP};
use network_types::{ip::Ipv6Hdr, udp::UdpHdr};

use crate::{
    hdr::{ETH_HLEN, ETH_TYPE, L4_DPORT, L4_SPORT, TCP_DOFF, TCP_FLAGS, TCP_HLEN, UDP_HLEN},
    helpers::frame::Frame,
    parse::{Frag, Packet},
};

pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPV6_HLEN: usize = Ipv6Hdr::LEN;
pub const IP6_HOP_LIMIT: usize = offset_of!(Ipv6Hdr, hop_limit);
pub const IP6_SRC: usize = offset_of!(Ipv6Hdr, src_addr);
pub const IP6_DST: usize = offset_of!(Ipv6Hdr, dst_addr);

/// Extension headers that may sit between the IPv6 header and TCP/UDP.
/// Not walked in this version: such packets are passed to the stack and
/// counted as `PassIpOptions` (the fragment header as `PassFragment`).
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;

/// A parsed IPv6 TCP/UDP packet (see the module comment), kept in the
/// `FWD_PKT6_SCRATCH` slot.
pub struct Packet6 {
    pub p: Packet,
    /// Source and destination as the flow key holds them: the packet's
    /// four 32-bit words each, in network byte order.
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

#[inline(always)]
fn words(b: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// Whether the frame carries IPv6 (by EtherType, or skb->protocol on an
/// L3 device), and where its header starts.
#[inline(always)]
pub fn l3_of<F: Frame>(ctx: &F, l3_device: bool) -> Option<usize> {
    if l3_device {
        return (ctx.link_protocol() == Some(ETH_P_IPV6)).then_some(0);
    }
    let ethertype: &[u8; 2] = ctx.header(ETH_TYPE)?;
    (u16::from_be_bytes(*ethertype) == ETH_P_IPV6).then_some(ETH_HLEN)
}

/// The IPv6 header at `l3` and the TCP or UDP header right after it,
/// into `out` (a per-CPU scratch slot: see `ipv6`). `Err(PassNoMatch)` for
/// other next headers (ICMPv6 among them: neighbour discovery and router
/// advertisements are never touched).
// A call of its own: its many live values (the address words) spill to
// its own frame, which is gone before the pipeline's deeper calls.
#[inline(never)]
pub fn packet<F: Frame>(ctx: &F, l3: usize, out: &mut Packet6) -> Result<(), Reason> {
    ctx.pull(l3 + IPV6_HLEN + TCP_HLEN);
    let h: &Ipv6Hdr = ctx.header(l3).ok_or(Reason::PassMalformed)?;
    if h.version() != 6 {
        return Err(Reason::PassMalformed);
    }
    let payload_len = u16::from_be_bytes(h.payload_len) as usize;
    if l3 + IPV6_HLEN + payload_len > ctx.len() as usize {
        return Err(Reason::PassMalformed);
    }
    let proto = h.next_hdr;
    match proto {
        PROTO_TCP | PROTO_UDP => {}
        NEXTHDR_FRAGMENT => return Err(Reason::PassFragment),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => return Err(Reason::PassIpOptions),
        _ => return Err(Reason::PassNoMatch),
    }
    out.src = words(&h.src_addr);
    out.dst = words(&h.dst_addr);
    // Field by field: a struct literal would be built on the stack first.
    let p = &mut out.p;
    p.l3 = l3;
    p.l4 = l3 + IPV6_HLEN;
    p.proto = proto;
    p.ttl = h.hop_limit;
    p.tot_len = (IPV6_HLEN + payload_len) as u16;
    p.src = 0;
    p.dst = 0;
    p.icmp_type = 0;
    // No fragments here (the fragment header is refused above); IPv6
    // routers never fragment, so a packet too big is always refused (DF).
    p.frag = Frag::None;
    p.df = true;
    p.ip_id = 0;
    if proto == PROTO_TCP {
        let t: &[u8; TCP_HLEN] = ctx.header(p.l4).ok_or(Reason::PassMalformed)?;
        if payload_len < TCP_HLEN {
            return Err(Reason::PassMalformed);
        }
        p.sport = u16::from_ne_bytes([t[L4_SPORT], t[L4_SPORT + 1]]);
        p.dport = u16::from_ne_bytes([t[L4_DPORT], t[L4_DPORT + 1]]);
        p.tcp_flags = t[TCP_FLAGS];
        p.tcp_hlen = (t[TCP_DOFF] >> 4) * 4;
        if (p.tcp_hlen as usize) < TCP_HLEN || p.tcp_hlen as usize > payload_len {
            return Err(Reason::PassMalformed);
        }
    } else {
        let u: &UdpHdr = ctx.header(p.l4).ok_or(Reason::PassMalformed)?;
        if payload_len < UDP_HLEN {
            return Err(Reason::PassMalformed);
        }
        p.sport = u16::from_ne_bytes(u.src);
        p.dport = u16::from_ne_bytes(u.dst);
        p.tcp_flags = 0;
        p.tcp_hlen = 0;
    }
    Ok(())
}

const _: () =
    assert!(core::mem::size_of::<Packet6>() == forwarder_common::PKT6_SCRATCH_SIZE as usize);

/// `p` with its offsets bounded for the verifier: the IPv6 header at 0
/// (L3 device) or after Ethernet, the TCP header length a multiple of 4 up
/// to 60 (what `packet` checked).
#[inline(always)]
pub fn bounded(p: &Packet) -> Packet {
    let l3 = if p.l3 == 0 { 0 } else { ETH_HLEN };
    Packet {
        l3,
        l4: l3 + IPV6_HLEN,
        proto: p.proto,
        ttl: p.ttl,
        tot_len: p.tot_len,
        src: 0,
        dst: 0,
        sport: p.sport,
        dport: p.dport,
        tcp_flags: p.tcp_flags,
        tcp_hlen: p.tcp_hlen & 0x3c,
        icmp_type: 0,
        frag: Frag::None,
        df: true,
        ip_id: 0,
    }
}
