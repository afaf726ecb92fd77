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
//!
//! Extension headers (hop-by-hop, routing with no segments left,
//! destination options, fragment) are walked to the L4 header with a
//! bounded loop, as ip6tables' conntrack does with ipv6_skip_exthdr: they
//! stay in the packet untouched, `p.l4` is past them. A fragment header
//! makes the packet a first or later fragment (`Frag`, the IPv4 path's
//! design, see `frag6`), with its 32-bit identification in `frag_id`.
use core::mem::offset_of;

use aya_ebpf::programs::TcContext;
use forwarder_common::{Reason, PROTO_TCP, PROTO_UDP};
use network_types::{ip::Ipv6Hdr, udp::UdpHdr};

use crate::{
    hdr::{ETH_HLEN, ETH_TYPE, L4_DPORT, L4_SPORT, TCP_DOFF, TCP_FLAGS, TCP_HLEN, UDP_HLEN},
    helpers::{frame::Frame, skb},
    parse::{Frag, Packet},
};

pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPV6_HLEN: usize = Ipv6Hdr::LEN;
pub const IP6_HOP_LIMIT: usize = offset_of!(Ipv6Hdr, hop_limit);
pub const IP6_SRC: usize = offset_of!(Ipv6Hdr, src_addr);
pub const IP6_DST: usize = offset_of!(Ipv6Hdr, dst_addr);

/// Extension headers that may sit between the IPv6 header and the L4
/// header (RFC 8200 4), walked by `packet`.
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
pub const PROTO_ICMPV6: u8 = 58;
/// The ICMPv6 header: type, code, checksum, 4 bytes of type-specific data
/// (a packet too big's MTU), then an error's quote.
pub const ICMPV6_HLEN: usize = 8;
/// The fixed size of a fragment header, and of the smallest extension
/// header (all are multiples of 8 bytes long).
const EXT_UNIT: usize = 8;
/// How many extension headers are walked: hop-by-hop, destination
/// options, routing, fragment, and the destination options that may
/// follow a routing header are the five RFC 8200 4.1 orders; more is no
/// packet a forward carries, and passes to the stack (`PassIpOptions`).
const MAX_EXT_HEADERS: usize = 5;
/// The most extension header bytes before the L4 header: a multiple of 8
/// under a power of two, so `bounded` can bound the L4 offset with a mask.
/// Longer chains pass to the stack (`PassIpOptions`).
pub const EXT_LEN_MAX: usize = 504;
const EXT_LEN_MASK: usize = 0x1f8;
const _: () = assert!(EXT_LEN_MAX & !EXT_LEN_MASK == 0 && EXT_LEN_MAX.is_multiple_of(EXT_UNIT));
/// Fragment offset (high 13 bits) and the more-fragments flag (bit 0) of
/// a fragment header's second word.
const FRAG_OFFSET_MASK: u16 = 0xfff8;
const FRAG_MORE: u16 = 1;

/// A parsed IPv6 TCP/UDP packet (see the module comment), kept in the
/// `FWD_PKT6_SCRATCH` slot.
pub struct Packet6 {
    pub p: Packet,
    /// Source and destination as the flow key holds them: the packet's
    /// four 32-bit words each, in network byte order.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// A fragment's identification (network order), with the addresses
    /// and the protocol what ties its datagram's fragments together.
    pub frag_id: u32,
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

/// The IPv6 header at `l3`, its extension headers, and the TCP, UDP or
/// ICMPv6 header after them, into `out` (a per-CPU scratch slot: see
/// `ipv6`). `Err(PassNoMatch)` for other protocols; `PassIpOptions` for a
/// chain this does not walk (too long, a routing header with segments
/// left, which names another node as the destination); `PassFragment`
/// for a fragment of another protocol; `DropError` for a first fragment
/// without its whole L4 header (RFC 7112: never to the stack, which
/// would reassemble it behind the allow-list's back, as on IPv4).
// A call of its own: its many live values (the address words) spill to
// its own frame, which is gone before the pipeline's deeper calls.
#[inline(never)]
pub fn packet(ctx: &TcContext, l3: usize, out: &mut Packet6) -> Result<(), Reason> {
    ctx.pull(l3 + IPV6_HLEN + TCP_HLEN);
    let h: &Ipv6Hdr = ctx.header(l3).ok_or(Reason::PassMalformed)?;
    if h.version() != 6 {
        return Err(Reason::PassMalformed);
    }
    let payload_len = u16::from_be_bytes(h.payload_len) as usize;
    if l3 + IPV6_HLEN + payload_len > ctx.len() as usize {
        return Err(Reason::PassMalformed);
    }
    out.src = words(&h.src_addr);
    out.dst = words(&h.dst_addr);
    out.frag_id = 0;
    let hop_limit = h.hop_limit;
    let mut next = h.next_hdr;
    // The walk (`h` is gone: a pull moves the packet).
    let end = l3 + IPV6_HLEN + payload_len;
    let mut l4 = l3 + IPV6_HLEN;
    let mut frag = Frag::None;
    let mut i = 0;
    while i < MAX_EXT_HEADERS {
        if !matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_FRAGMENT
        ) {
            break;
        }
        if l4 + EXT_UNIT > end {
            return Err(Reason::PassMalformed);
        }
        // Copied out (bpf_skb_load_bytes) rather than read in place: a
        // pull inside the loop invalidates the packet pointers LLVM keeps
        // from one iteration to the next ("R3 invalid mem access").
        let e: [u8; EXT_UNIT] = skb::load(ctx, l4).map_err(|_| Reason::PassMalformed)?;
        match next {
            // Only right after the IPv6 header (RFC 8200 4.3).
            NEXTHDR_HOP if i != 0 => return Err(Reason::PassIpOptions),
            // Segments left: the destination is not the final one, the
            // stack routes it on (RFC 8200 4.4).
            NEXTHDR_ROUTING if e[3] != 0 => return Err(Reason::PassIpOptions),
            NEXTHDR_FRAGMENT => {
                if frag != Frag::None {
                    return Err(Reason::PassMalformed);
                }
                let off_more = u16::from_be_bytes([e[2], e[3]]);
                frag = if off_more & FRAG_OFFSET_MASK != 0 {
                    Frag::Later
                } else if off_more & FRAG_MORE != 0 {
                    Frag::First
                } else {
                    // An atomic fragment (RFC 6946): a whole datagram.
                    Frag::None
                };
                out.frag_id = u32::from_ne_bytes([e[4], e[5], e[6], e[7]]);
                l4 += EXT_UNIT;
            }
            _ => l4 += (e[1] as usize + 1) * EXT_UNIT,
        }
        next = e[0];
        i += 1;
    }
    if l4 - (l3 + IPV6_HLEN) > EXT_LEN_MAX
        || matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_FRAGMENT
        )
    {
        return Err(Reason::PassIpOptions);
    }
    if l4 > end {
        return Err(Reason::PassMalformed);
    }
    let proto = next;
    let tracked = match proto {
        PROTO_TCP | PROTO_UDP => true,
        PROTO_ICMPV6 => frag == Frag::None,
        _ => false,
    };
    if !tracked {
        return Err(if frag == Frag::None {
            Reason::PassNoMatch
        } else {
            Reason::PassFragment
        });
    }
    // Field by field: a struct literal would be built on the stack first.
    let p = &mut out.p;
    p.l3 = l3;
    p.l4 = l4;
    p.proto = proto;
    p.ttl = hop_limit;
    p.tot_len = (IPV6_HLEN + payload_len) as u16;
    p.src = 0;
    p.dst = 0;
    p.sport = 0;
    p.dport = 0;
    p.tcp_flags = 0;
    p.tcp_hlen = 0;
    p.icmp_type = 0;
    p.frag = frag;
    // IPv6 routers never fragment: a packet too big is always refused.
    p.df = true;
    p.ip_id = 0;
    if frag == Frag::Later {
        // No L4 header: its ports come from its first fragment (`frag6`).
        return Ok(());
    }
    match l4_header(ctx, p, l4, end - l4) {
        Ok(()) => Ok(()),
        Err(_) if frag == Frag::First => Err(Reason::DropError),
        Err(reason) => Err(reason),
    }
}

/// Ports and flags of the TCP or UDP header at `l4` (`l4_len` bytes to
/// the end of the payload), or an ICMPv6 header's type. (`l4` as an
/// argument: `p.l4`, read back from the scratch slot, is a value the
/// verifier knows no bounds of.)
#[inline(always)]
fn l4_header(ctx: &TcContext, p: &mut Packet, l4: usize, l4_len: usize) -> Result<(), Reason> {
    // Past what `packet` pulled when extension headers came first.
    ctx.pull(l4 + TCP_HLEN);
    match p.proto {
        PROTO_TCP => {
            let t: &[u8; TCP_HLEN] = ctx.header(l4).ok_or(Reason::PassMalformed)?;
            if l4_len < TCP_HLEN {
                return Err(Reason::PassMalformed);
            }
            p.sport = u16::from_ne_bytes([t[L4_SPORT], t[L4_SPORT + 1]]);
            p.dport = u16::from_ne_bytes([t[L4_DPORT], t[L4_DPORT + 1]]);
            p.tcp_flags = t[TCP_FLAGS];
            p.tcp_hlen = (t[TCP_DOFF] >> 4) * 4;
            if (p.tcp_hlen as usize) < TCP_HLEN || p.tcp_hlen as usize > l4_len {
                return Err(Reason::PassMalformed);
            }
        }
        PROTO_UDP => {
            let u: &UdpHdr = ctx.header(l4).ok_or(Reason::PassMalformed)?;
            if l4_len < UDP_HLEN {
                return Err(Reason::PassMalformed);
            }
            p.sport = u16::from_ne_bytes(u.src);
            p.dport = u16::from_ne_bytes(u.dst);
        }
        _ => {
            let i: &[u8; ICMPV6_HLEN] = ctx.header(l4).ok_or(Reason::PassMalformed)?;
            if l4_len < ICMPV6_HLEN {
                return Err(Reason::PassMalformed);
            }
            p.icmp_type = i[0];
        }
    }
    Ok(())
}

const _: () =
    assert!(core::mem::size_of::<Packet6>() == forwarder_common::PKT6_SCRATCH_SIZE as usize);

/// `p` with its offsets bounded for the verifier: the IPv6 header at 0
/// (L3 device) or after Ethernet, up to `EXT_LEN_MAX` bytes of extension
/// headers (a multiple of 8), the TCP header length a multiple of 4 up
/// to 60 (what `packet` checked).
#[inline(always)]
pub fn bounded(p: &Packet) -> Packet {
    let l3 = if p.l3 == 0 { 0 } else { ETH_HLEN };
    let ext = p.l4.wrapping_sub(p.l3 + IPV6_HLEN) & EXT_LEN_MASK;
    Packet {
        l3,
        l4: l3 + IPV6_HLEN + ext,
        proto: p.proto,
        ttl: p.ttl,
        tot_len: p.tot_len,
        src: 0,
        dst: 0,
        sport: p.sport,
        dport: p.dport,
        tcp_flags: p.tcp_flags,
        tcp_hlen: p.tcp_hlen & 0x3c,
        icmp_type: p.icmp_type,
        frag: p.frag,
        df: true,
        ip_id: 0,
    }
}
