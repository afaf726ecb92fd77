//! Answers the router sends itself for IPv6 packets of its forwards, built
//! in BPF from the packet that caused them and sent back out of the
//! interface it arrived on: ICMPv6 time exceeded (hop limit), packet too
//! big (the route's MTU), destination unreachable / port unreachable (a
//! refused datagram, `reject = "rst"`), and TCP resets (a refused segment).
//! They replace what the stack would send had the packet gone through it
//! untranslated: the error quotes the packet as its sender sent it.
//!
//! The one fact a reader would get wrong: as on the IPv4 path (`reply`,
//! whose per-CPU scratch space and link-address swap this uses), the
//! answer is the packet itself, cut and rewritten in place. The ICMPv6
//! checksum covers a pseudo-header (RFC 4443 2.3, RFC 8200 8.1), unlike
//! ICMP's: the new header's addresses, which sit right before the ICMPv6
//! header in the scratch space, are summed with it in one pass, and the
//! length and next-header words are the seed.
//!
//! The quote is the offending IPv6 header and its TCP header (20 bytes)
//! or UDP header (8), not "as much as fits in 1280 bytes" as RFC 4443
//! 2.4(c) suggests: the scratch space is 108 bytes. Linux senders accept
//! it (icmpv6_notify needs the header and 8 bytes). A TCP quote reaches
//! past the TCP checksum on purpose: bpf_skb_change_tail refuses to cut a
//! CHECKSUM_PARTIAL skb (what a local sender's TSO segment is) before the
//! end of the checksum field it still has to fill in (EINVAL).
use aya_ebpf::programs::TcContext;
use forwarder_common::Reason;

use super::{
    parse::{bounded, Packet6, IPV6_HLEN},
    route,
};
use crate::{
    hdr::{TCP_ACK, TCP_FIN, TCP_HLEN, TCP_RST, TCP_SYN},
    helpers::skb::{self, Store},
    reply::{fold, scratch, swap_macs, MACS, SCRATCH_LEN},
    verdict::Verdict,
};

const ICMPV6_HLEN: usize = 8;
/// The offending packet's IPv6 header and its UDP header, or its TCP
/// header (see the module comment).
const QUOTE_UDP: usize = IPV6_HLEN + 8;
const QUOTE_TCP: usize = IPV6_HLEN + TCP_HLEN;
/// The new IPv6 header and the ICMPv6 header in front of the quote.
const ERROR_HLEN: usize = IPV6_HLEN + ICMPV6_HLEN;
/// Where the addresses start in an IPv6 header: from here to the end of
/// the header is the pseudo-header's address part.
const IP6_ADDRS: usize = 8;
const PROTO_ICMPV6: u8 = 58;
const PROTO_TCP: u8 = 6;
/// Linux's default hop limit for the packets it sends.
const HOP_LIMIT: u8 = 64;
// The TCP quote reaches into the link addresses' slot (`MACS`), which
// `swap_macs` fills only after the answer is stored.
const _: () = assert!(ERROR_HLEN + QUOTE_TCP <= SCRATCH_LEN);
const _: () = assert!(IPV6_HLEN + TCP_HLEN <= MACS);

/// The ICMPv6 errors built here. Fieldless, as `reply::IcmpError`.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Icmp6Error {
    /// 3/0: hop limit exceeded in transit.
    TimeExceeded,
    /// 2/0: packet too big, with the next-hop MTU.
    PacketTooBig,
    /// 1/4: port unreachable (a refused datagram).
    PortUnreach,
}

impl Icmp6Error {
    #[inline(always)]
    fn type_code(self) -> (u8, u8) {
        match self {
            Icmp6Error::TimeExceeded => (3, 0),
            Icmp6Error::PacketTooBig => (2, 0),
            Icmp6Error::PortUnreach => (1, 4),
        }
    }

    /// Counted under the IPv4 path's reasons (`reply_frag_needed` for a
    /// packet too big: the same answer to the same condition).
    #[inline(always)]
    fn reason(self) -> Reason {
        match self {
            Icmp6Error::TimeExceeded => Reason::ReplyTimeExceeded,
            Icmp6Error::PacketTooBig => Reason::ReplyFragNeeded,
            Icmp6Error::PortUnreach => Reason::ReplyPortUnreach,
        }
    }
}

/// Builds the answer `v` (a `Verdict::answer`) asks for out of `p`.
#[inline(always)]
pub fn answer(ctx: &TcContext, p: &Packet6, v: Verdict) -> Verdict {
    let err = match v.reason() {
        // Not an answer: a translated ICMPv6 error to send on.
        Reason::FwdRedirect => return super::icmp6::send(ctx, p),
        Reason::ReplyReset => return tcp_reset(ctx, p),
        Reason::ReplyTimeExceeded => Icmp6Error::TimeExceeded,
        Reason::ReplyFragNeeded => Icmp6Error::PacketTooBig,
        _ => Icmp6Error::PortUnreach,
    };
    icmp_error(ctx, p, err, v.mtu())
}

/// The one's-complement sum seed of the pseudo-header's length and
/// next-header words (its addresses are summed from the header itself).
#[inline(always)]
fn pseudo_seed(upper_len: usize, next_header: u8) -> u32 {
    let len = upper_len as u16;
    u32::from_ne_bytes([0, 0, (len >> 8) as u8, len as u8])
        + u32::from_ne_bytes([0, 0, 0, next_header])
}

/// An IPv6 header into `h[..40]`: no traffic class, no flow label.
#[inline(always)]
fn ipv6_header(h: &mut [u8], payload_len: usize, next: u8, src: &[u32; 4], dst: &[u32; 4]) {
    if h.len() < IPV6_HLEN {
        return;
    }
    let len = payload_len as u16;
    h[0..8].copy_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, next, HOP_LIMIT]);
    let mut i = 0;
    while i < 4 {
        h[8 + 4 * i..12 + 4 * i].copy_from_slice(&src[i].to_ne_bytes());
        h[24 + 4 * i..28 + 4 * i].copy_from_slice(&dst[i].to_ne_bytes());
        i += 1;
    }
}

/// Turns `p` into ICMPv6 error `err` to its sender and sends it back out
/// of the interface it arrived on (`mtu`: a packet too big's next-hop
/// MTU). A failure drops the packet: it was not going to be forwarded.
// Out of line: its locals get their own frame (512-byte stack).
#[inline(never)]
fn icmp_error(ctx: &TcContext, p: &Packet6, err: Icmp6Error, mtu: u16) -> Verdict {
    // Two constant lengths, each verified on its own path.
    let built = if p.p.proto == PROTO_TCP {
        build_icmp_error::<QUOTE_TCP>(ctx, p, err, mtu)
    } else {
        build_icmp_error::<QUOTE_UDP>(ctx, p, err, mtu)
    };
    match built {
        Ok(()) => Verdict::new(skb::redirect(skb::ifindex(ctx)), err.reason()),
        Err(()) => Verdict::shot(Reason::DropError),
    }
}

#[inline(always)]
fn build_icmp_error<const QUOTE: usize>(
    ctx: &TcContext,
    p: &Packet6,
    err: Icmp6Error,
    mtu: u16,
) -> Result<(), ()> {
    // The address this host would send its own packet to the sender from;
    // without an answer (no BPF_FIB_LOOKUP_SRC before Linux 6.8), the
    // address the packet was sent to: a listener or SNAT address of ours.
    let src = route::source_towards(ctx, &p.src).unwrap_or(p.dst);
    let q = bounded(&p.p);
    let buf = scratch().ok_or(())?;
    let quote = &mut buf[ERROR_HLEN..ERROR_HLEN + QUOTE];
    // `parse::packet` took the packet with a whole TCP or UDP header.
    skb::load_bytes(ctx, q.l3, quote).map_err(|_| ())?;
    let (ty, code) = err.type_code();
    let word = if matches!(err, Icmp6Error::PacketTooBig) {
        mtu as u32
    } else {
        0
    };
    let w = word.to_be_bytes();
    // Type, code, a zero checksum (for now), the MTU or unused word.
    buf[IPV6_HLEN..ERROR_HLEN].copy_from_slice(&[ty, code, 0, 0, w[0], w[1], w[2], w[3]]);
    ipv6_header(
        &mut buf[..],
        ICMPV6_HLEN + QUOTE,
        PROTO_ICMPV6,
        &src,
        &p.src,
    );
    let summed = &buf[IP6_ADDRS..ERROR_HLEN + QUOTE];
    let seed = pseudo_seed(ICMPV6_HLEN + QUOTE, PROTO_ICMPV6);
    let sum = skb::csum_sum(summed, seed).map_err(|_| ())?;
    buf[IPV6_HLEN + 2..IPV6_HLEN + 4].copy_from_slice(&fold(sum).to_ne_bytes());

    // Reshape: link header + quote, then room for the new headers.
    skb::change_tail(ctx, q.l3 + QUOTE).map_err(|_| ())?;
    skb::grow_after_link_header(ctx, ERROR_HLEN).map_err(|_| ())?;
    let answer = buf.get(..ERROR_HLEN + QUOTE).ok_or(())?;
    skb::store_bytes(ctx, q.l3, answer, Store::RECOMPUTE_CSUM).map_err(|_| ())?;
    swap_macs(ctx, &q, buf)
}

/// Answers TCP segment `p` with a reset from the address and port it was
/// sent to (RFC 9293 3.10.7.1, as `reply::tcp_reset`). A reset is never
/// answered.
// Out of line: its locals get their own frame (512-byte stack).
#[inline(never)]
fn tcp_reset(ctx: &TcContext, p: &Packet6) -> Verdict {
    match build_tcp_reset(ctx, p) {
        Ok(()) => Verdict::new(skb::redirect(skb::ifindex(ctx)), Reason::ReplyReset),
        Err(()) => Verdict::shot(Reason::DropError),
    }
}

#[inline(always)]
fn build_tcp_reset(ctx: &TcContext, p: &Packet6) -> Result<(), ()> {
    let q = bounded(&p.p);
    if q.proto != PROTO_TCP || q.tcp_flags & TCP_RST != 0 {
        return Err(());
    }
    let seq = u32::from_be(skb::load::<u32>(ctx, q.l4 + 4).map_err(|_| ())?);
    let ack = u32::from_be(skb::load::<u32>(ctx, q.l4 + 8).map_err(|_| ())?);
    // After the extension headers too, if any.
    let payload = (q.tot_len as usize)
        .saturating_sub(q.l4 - q.l3)
        .saturating_sub(q.tcp_hlen as usize) as u32;
    let (rst_seq, rst_ack, flags) = if q.tcp_flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let syn_fin = (q.tcp_flags & TCP_SYN != 0) as u32 + (q.tcp_flags & TCP_FIN != 0) as u32;
        (0, seq.wrapping_add(payload + syn_fin), TCP_RST | TCP_ACK)
    };
    let buf = scratch().ok_or(())?;
    ipv6_header(&mut buf[..], TCP_HLEN, PROTO_TCP, &p.dst, &p.src);
    let t = &mut buf[IPV6_HLEN..IPV6_HLEN + TCP_HLEN];
    t[0..2].copy_from_slice(&q.dport.to_ne_bytes());
    t[2..4].copy_from_slice(&q.sport.to_ne_bytes());
    t[4..8].copy_from_slice(&rst_seq.to_be_bytes());
    t[8..12].copy_from_slice(&rst_ack.to_be_bytes());
    // Data offset, flags, a zero window; a zero checksum and urgent
    // pointer while summing (whole words: see `reply::build_tcp_reset`).
    t[12..16].copy_from_slice(&[((TCP_HLEN / 4) as u8) << 4, flags, 0, 0]);
    t[16..20].copy_from_slice(&[0, 0, 0, 0]);
    let seed = pseudo_seed(TCP_HLEN, PROTO_TCP);
    let sum = skb::csum_sum(&buf[IP6_ADDRS..IPV6_HLEN + TCP_HLEN], seed).map_err(|_| ())?;
    buf[IPV6_HLEN + 16..IPV6_HLEN + 18].copy_from_slice(&fold(sum).to_ne_bytes());

    // Reshape: link header + the first 60 bytes (TCP options cut).
    skb::change_tail(ctx, q.l3 + IPV6_HLEN + TCP_HLEN).map_err(|_| ())?;
    let answer = &buf[..IPV6_HLEN + TCP_HLEN];
    skb::store_bytes(ctx, q.l3, answer, Store::RECOMPUTE_CSUM).map_err(|_| ())?;
    swap_macs(ctx, &q, buf)
}
