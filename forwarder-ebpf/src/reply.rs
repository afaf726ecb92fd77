//! Answers the router sends itself, built in BPF from the packet that
//! caused them and sent back out of the interface it arrived on: ICMP
//! errors (time exceeded, fragmentation needed, port and host unreachable)
//! and TCP resets. They replace what the stack would send if the packet
//! had gone through it untranslated: quoting the packet as its sender sent
//! it (RFC 792, RFC 1812 4.3.2.3), from the address the kernel would pick
//! for a packet to the sender.
//!
//! The one fact a reader would get wrong: the answer is the packet itself,
//! rebuilt in place (BPF cannot allocate a packet). Everything the answer
//! needs is read out first into per-CPU scratch, then the packet is cut
//! (`change_tail`), given room for new headers (`adjust_room`), written
//! over, its link addresses swapped (the frame's source is the right next
//! hop back), and redirected to the egress of its own interface. Cilium's
//! NodePort answers frag-needed for DSR the same way.
//!
//! The skb's checksum-offload state is left as it arrived (no helper
//! resets it). On veth, where a local sender's skbs are CHECKSUM_PARTIAL,
//! the receiver trusts it, and the checksums written here are complete and
//! correct. A CHECKSUM_COMPLETE skb (from a NIC) keeps a packet sum the
//! reshaping does not fully follow: a NIC sending it ignores that sum, a
//! local receiver (veth) finds it wrong and verifies the packet itself
//! (possibly logging "hw csum failure"). BPF_PROG_TEST_RUN cases check
//! every byte with an independent packet library.
use aya_ebpf::{macros::map, maps::PerCpuArray, programs::TcContext};
use forwarder_common::Reason;

use crate::{
    fib,
    hdr::{ETH_HLEN, IPV4_HLEN, TCP_ACK, TCP_FIN, TCP_HLEN, TCP_RST, TCP_SYN},
    helpers::{
        map_value,
        skb::{self, Store},
    },
    parse::Packet,
    verdict::Verdict,
};

/// What an ICMP error quotes: the offending IPv4 header (options
/// included) and the first 8 bytes after it (RFC 792).
const QUOTED_PAYLOAD: usize = 8;
const QUOTE_MAX: usize = 60 + QUOTED_PAYLOAD;
/// New IPv4 header and ICMP header in front of the quote.
const ICMP_ERROR_HLEN: usize = IPV4_HLEN + 8;
/// The TCP pseudo-header (RFC 793): addresses, zero, protocol, length.
const PSEUDO_HLEN: usize = 12;
/// Precedence "internetwork control", as Linux sends its ICMP errors.
const TOS_INTERNET_CONTROL: u8 = 0xc0;
const REPLY_TTL: u8 = 64;
const IP_DF: u8 = 0x40;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;

/// Room to build an answer in: the headers and the quote (an ICMP error),
/// or the headers and the pseudo-header (a TCP reset); then the frame's
/// two link addresses.
const ANSWER_MAX: usize = ICMP_ERROR_HLEN + QUOTE_MAX;
pub(crate) const MACS: usize = ANSWER_MAX;
pub(crate) const SCRATCH_LEN: usize = ANSWER_MAX + 12;
const _: () = assert!(SCRATCH_LEN == forwarder_common::REPLY_SCRATCH_SIZE as usize);
const _: () = assert!(ANSWER_MAX >= IPV4_HLEN + TCP_HLEN + PSEUDO_HLEN);

/// Per-CPU: 96 bytes on the stack would count toward the 512 bytes of the
/// whole call chain (see `conntrack::create`).
#[map(name = "FWD_REPLY_SCRATCH")]
static SCRATCH: PerCpuArray<[u8; SCRATCH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// The ICMP errors the router sends. Fieldless: `icmp_error` is a
/// BPF-to-BPF call, and an enum with data travels in two registers, the
/// second left unset for the variants without it (the verifier refuses
/// reading it: "R4 !read_ok").
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum IcmpError {
    /// 11/0: TTL exceeded in transit.
    TimeExceeded,
    /// 3/4: fragmentation needed, with the next-hop MTU (`icmp_error`'s
    /// `mtu`).
    FragNeeded,
    /// 3/3: port unreachable (a refused datagram).
    PortUnreach,
    /// 3/1: host unreachable (the target's neighbour is dead).
    HostUnreach,
}

impl IcmpError {
    #[inline(always)]
    fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::TimeExceeded => (11, 0),
            IcmpError::FragNeeded => (3, 4),
            IcmpError::PortUnreach => (3, 3),
            IcmpError::HostUnreach => (3, 1),
        }
    }

    #[inline(always)]
    fn reason(self) -> Reason {
        match self {
            IcmpError::TimeExceeded => Reason::ReplyTimeExceeded,
            IcmpError::FragNeeded => Reason::ReplyFragNeeded,
            IcmpError::PortUnreach => Reason::ReplyPortUnreach,
            IcmpError::HostUnreach => Reason::ReplyHostUnreach,
        }
    }
}

/// The one's-complement checksum of a sum from `skb::csum_sum`, in the
/// byte order the words were summed in: store it with `to_ne_bytes`.
#[inline(always)]
pub(crate) fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// An IPv4 header without options into `h` (checksum included).
#[inline(always)]
fn ipv4_header(h: &mut [u8], tos: u8, tot_len: u16, df: bool, proto: u8, src: u32, dst: u32) {
    if h.len() < IPV4_HLEN {
        return;
    }
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&tot_len.to_be_bytes());
    h[4] = 0;
    h[5] = 0;
    h[6] = if df { IP_DF } else { 0 };
    h[7] = 0;
    h[8] = REPLY_TTL;
    h[9] = proto;
    h[10] = 0;
    h[11] = 0;
    h[12..16].copy_from_slice(&src.to_ne_bytes());
    h[16..20].copy_from_slice(&dst.to_ne_bytes());
}

/// Fills in the checksum of the IPv4 header at the start of `h`.
#[inline(always)]
fn ipv4_checksum(h: &mut [u8; SCRATCH_LEN]) -> Result<(), ()> {
    let (hdr, _) = h.split_at_mut(IPV4_HLEN);
    let sum = skb::csum_sum(hdr, 0).map_err(|_| ())?;
    hdr[10..12].copy_from_slice(&fold(sum).to_ne_bytes());
    Ok(())
}

/// Swaps the frame's link addresses (nothing to do on an L3 device), by
/// way of the scratch space: arrays on the stack here would push the
/// deepest call chain past 512 bytes.
#[inline(always)]
pub(crate) fn swap_macs(
    ctx: &TcContext,
    p: &Packet,
    buf: &mut [u8; SCRATCH_LEN],
) -> Result<(), ()> {
    if p.l3 != ETH_HLEN {
        return Ok(());
    }
    let macs = &mut buf[MACS..MACS + 12];
    skb::load_bytes(ctx, 0, macs).map_err(|_| ())?;
    // Destination <- the frame's source, source <- its destination.
    skb::store_bytes(ctx, 0, &macs[6..], Store::PLAIN).map_err(|_| ())?;
    skb::store_bytes(ctx, 6, &macs[..6], Store::PLAIN).map_err(|_| ())
}

/// The answers' per-CPU scratch space (shared with `ipv6::reply`).
#[inline(always)]
pub(crate) fn scratch() -> Option<&'static mut [u8; SCRATCH_LEN]> {
    map_value::per_cpu(&SCRATCH, 0)
}

/// Builds the answer `v` (a `Verdict::answer`) asks for out of `p`.
#[inline(always)]
pub fn answer(ctx: &TcContext, p: &Packet, v: Verdict) -> Verdict {
    let err = match v.reason() {
        Reason::ReplyReset => return tcp_reset(ctx, p),
        Reason::ReplyTimeExceeded => IcmpError::TimeExceeded,
        Reason::ReplyFragNeeded => IcmpError::FragNeeded,
        Reason::ReplyHostUnreach => IcmpError::HostUnreach,
        _ => IcmpError::PortUnreach,
    };
    icmp_error(ctx, p, err, v.mtu())
}

/// Turns `p` into ICMP error `err` to its sender and sends it back out of
/// the interface it arrived on; `mtu` is the next-hop MTU of a
/// FragNeeded (0 otherwise). A failure (no route back, a helper refusing)
/// drops the packet: it was not going to be forwarded anyway.
// Out of line: its locals get their own frame (512-byte stack).
#[inline(never)]
pub fn icmp_error(ctx: &TcContext, p: &Packet, err: IcmpError, mtu: u16) -> Verdict {
    match build_icmp_error(ctx, p, err, mtu) {
        Ok(()) => Verdict::new(skb::redirect(skb::ifindex(ctx)), err.reason()),
        Err(()) => Verdict::shot(Reason::DropError),
    }
}

#[inline(always)]
fn build_icmp_error(ctx: &TcContext, p: &Packet, err: IcmpError, mtu: u16) -> Result<(), ()> {
    let src = fib::source_towards(ctx, p.src, p.dst).ok_or(())?;
    // The header and 8 bytes, whole words (the checksum helper sums
    // words), never more than the packet has.
    let ihl = p.l4 - p.l3;
    let mut quote = ihl + QUOTED_PAYLOAD;
    if quote > p.tot_len as usize {
        quote = p.tot_len as usize & !3;
    }
    if !(IPV4_HLEN..=QUOTE_MAX).contains(&quote) {
        return Err(());
    }
    let buf = scratch().ok_or(())?;
    // Bounded again after the map lookup, right before the helper call, in
    // the shape 6.1's verifier follows (see helpers::tcp_opts::load): it
    // forgets the range checked above once LLVM keeps `quote` on the stack,
    // and then sees a length that may be 0.
    let below = core::hint::black_box(quote.wrapping_sub(1));
    if below >= QUOTE_MAX {
        return Err(());
    }
    let quote = below + 1;
    let body = buf
        .get_mut(ICMP_ERROR_HLEN..ICMP_ERROR_HLEN + quote)
        .ok_or(())?;
    skb::load_bytes(ctx, p.l3, body).map_err(|_| ())?;
    let (ty, code) = err.type_code();
    let icmp = &mut buf[IPV4_HLEN..ICMP_ERROR_HLEN];
    icmp[0] = ty;
    icmp[1] = code;
    // Checksum (for now) and the unused half-word: zero.
    icmp[2] = 0;
    icmp[3] = 0;
    icmp[4] = 0;
    icmp[5] = 0;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    let icmp_and_quote = buf.get_mut(IPV4_HLEN..ICMP_ERROR_HLEN + quote).ok_or(())?;
    let sum = skb::csum_sum(icmp_and_quote, 0).map_err(|_| ())?;
    icmp_and_quote[2..4].copy_from_slice(&fold(sum).to_ne_bytes());
    let tot_len = (ICMP_ERROR_HLEN + quote) as u16;
    ipv4_header(
        &mut buf[..],
        TOS_INTERNET_CONTROL,
        tot_len,
        false,
        PROTO_ICMP,
        src,
        p.src,
    );
    ipv4_checksum(buf)?;

    // Reshape: link header + quote, then room for the new headers.
    skb::change_tail(ctx, p.l3 + quote).map_err(|_| ())?;
    skb::grow_after_link_header(ctx, ICMP_ERROR_HLEN).map_err(|_| ())?;
    let answer = buf.get(..ICMP_ERROR_HLEN + quote).ok_or(())?;
    skb::store_bytes(ctx, p.l3, answer, Store::RECOMPUTE_CSUM).map_err(|_| ())?;
    swap_macs(ctx, p, buf)
}

/// Answers TCP segment `p` with a reset (RFC 793 "Reset Generation": the
/// segment's ACK becomes the RST's sequence number; without an ACK the RST
/// acknowledges the segment) from the address and port it was sent to.
/// Never call it for a segment that is itself a RST.
// Out of line: its locals get their own frame (512-byte stack).
#[inline(never)]
pub fn tcp_reset(ctx: &TcContext, p: &Packet) -> Verdict {
    match build_tcp_reset(ctx, p) {
        Ok(()) => Verdict::new(skb::redirect(skb::ifindex(ctx)), Reason::ReplyReset),
        Err(()) => Verdict::shot(Reason::DropError),
    }
}

#[inline(always)]
fn build_tcp_reset(ctx: &TcContext, p: &Packet) -> Result<(), ()> {
    if p.tcp_flags & TCP_RST != 0 {
        return Err(());
    }
    let seq = u32::from_be(skb::load::<u32>(ctx, p.l4 + 4).map_err(|_| ())?);
    let ack = u32::from_be(skb::load::<u32>(ctx, p.l4 + 8).map_err(|_| ())?);
    let ihl = p.l4 - p.l3;
    let payload = (p.tot_len as usize)
        .saturating_sub(ihl)
        .saturating_sub(p.tcp_hlen as usize) as u32;
    let (rst_seq, rst_ack, flags) = if p.tcp_flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let syn_fin = (p.tcp_flags & TCP_SYN != 0) as u32 + (p.tcp_flags & TCP_FIN != 0) as u32;
        (0, seq.wrapping_add(payload + syn_fin), TCP_RST | TCP_ACK)
    };
    let buf = scratch().ok_or(())?;
    // Pseudo-header after the two headers; the TCP checksum covers it and
    // the TCP header (no options, no data).
    let pseudo = &mut buf[IPV4_HLEN + TCP_HLEN..IPV4_HLEN + TCP_HLEN + PSEUDO_HLEN];
    pseudo[0..4].copy_from_slice(&p.dst.to_ne_bytes());
    pseudo[4..8].copy_from_slice(&p.src.to_ne_bytes());
    pseudo[8..12].copy_from_slice(&[0, PROTO_TCP, 0, TCP_HLEN as u8]);
    let seed = skb::csum_sum(pseudo, 0).map_err(|_| ())?;
    let t = &mut buf[IPV4_HLEN..IPV4_HLEN + TCP_HLEN];
    t[0..2].copy_from_slice(&p.dport.to_ne_bytes());
    t[2..4].copy_from_slice(&p.sport.to_ne_bytes());
    t[4..8].copy_from_slice(&rst_seq.to_be_bytes());
    t[8..12].copy_from_slice(&rst_ack.to_be_bytes());
    // Data offset, flags, and a zero window, as one word; then the
    // checksum over what precedes it (the checksum and urgent pointer
    // words, still to come, add nothing while zero) and those two words in
    // one store. Separate zero stores become a call to memset, a frame
    // this call chain has no room for.
    t[12..16].copy_from_slice(&[((TCP_HLEN / 4) as u8) << 4, flags, 0, 0]);
    let sum = skb::csum_sum(&t[..16], seed).map_err(|_| ())?;
    let [c0, c1] = fold(sum).to_ne_bytes();
    t[16..20].copy_from_slice(&[c0, c1, 0, 0]);
    ipv4_header(
        &mut buf[..],
        0,
        (IPV4_HLEN + TCP_HLEN) as u16,
        true,
        PROTO_TCP,
        p.dst,
        p.src,
    );
    ipv4_checksum(buf)?;

    // Reshape: link header + the first 40 bytes, IP options cut out.
    skb::change_tail(ctx, p.l3 + ihl + TCP_HLEN).map_err(|_| ())?;
    if ihl > IPV4_HLEN {
        skb::shrink_after_ip_header(ctx, ihl - IPV4_HLEN).map_err(|_| ())?;
    }
    let answer = &buf[..IPV4_HLEN + TCP_HLEN];
    skb::store_bytes(ctx, p.l3, answer, Store::RECOMPUTE_CSUM).map_err(|_| ())?;
    swap_macs(ctx, p, buf)
}
