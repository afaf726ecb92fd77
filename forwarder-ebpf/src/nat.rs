//! Rewriting addresses and ports with the kernel's checksum helpers.
//!
//! Never recompute an L4 checksum by hand here: for CHECKSUM_PARTIAL skbs
//! (local senders, veth, virtio) the field only holds the pseudo-header sum,
//! and `bpf_l4_csum_replace` knows which case it is in. Address changes use
//! BPF_F_PSEUDO_HDR (they are in the TCP/UDP pseudo-header), port changes do
//! not; UDP adds BPF_F_MARK_MANGLED_0 because a zero UDP checksum means
//! "none" and must stay zero. ICMP has no pseudo-header.
//!
//! The fast path (`rewrite`, a whole TCP/UDP datagram with a checksum)
//! makes one checksum helper call for both addresses and one for both
//! ports, each with the summed diff (`forwarder_common::csum`), updates the
//! IPv4 header checksum by hand (it always covers complete data) and writes
//! the fields directly: 2 helper calls where the per-field steps below make
//! 10 (issue 19). The per-field steps remain for what it leaves out
//! (later fragments, ICMP echo, UDP without checksum, ICMP errors).
use aya_ebpf::programs::TcContext;
use forwarder_common::{csum, FlowEntry, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use network_types::ip::Ipv4Hdr;

use crate::{
    counters,
    error::RewriteError,
    hdr::{
        ICMP_CHECK, ICMP_ECHO_ID, IP_CHECK, IP_DST, IP_SRC, IP_TTL, L4_DPORT, L4_SPORT, TCP_CHECK,
        TCP_SYN, UDP_CHECK,
    },
    helpers::{
        frame::{self, Frame},
        skb::{self, L4Csum, Store},
    },
    mss,
    parse::{Frag, Packet},
};

/// Rewrites the packet to flow entry `e`'s tuple: addresses, ports (the
/// identifier of an ICMP echo), and the MSS option of a SYN when the rule
/// clamps it; with `dec_ttl`, the TTL too (a packet redirected past the
/// stack's forwarding, which would). Stops at the first step that fails.
#[inline(always)]
pub fn apply(
    ctx: &TcContext,
    p: &Packet,
    e: &FlowEntry,
    dec_ttl: bool,
) -> Result<(), RewriteError> {
    // Read once, first: the fragment kind read again after the MSS walk
    // would keep the verifier from merging its states.
    let later = p.frag == Frag::Later;
    let done = !later && rewrite(ctx, p, e, dec_ttl)?;
    if !done {
        set_addr(ctx, p, IP_SRC, p.src, e.new_src[0])?;
        set_addr(ctx, p, IP_DST, p.dst, e.new_dst[0])?;
        if !later {
            set_port(ctx, p, L4_SPORT, p.sport, e.new_sport)?;
            // ICMP echo carries one identifier, already rewritten above.
            if p.proto != PROTO_ICMP {
                set_port(ctx, p, L4_DPORT, p.dport, e.new_dport)?;
            }
        }
        if dec_ttl {
            self::dec_ttl(ctx, p)?;
        }
    }
    // (A later fragment has no L4 header, hence no MSS option.)
    if !later
        && e.mss != 0
        && p.proto == PROTO_TCP
        && p.tcp_flags & TCP_SYN != 0
        && mss::clamp(ctx, p, e.mss)?
    {
        counters::count_mss_clamped(e.rule_id);
    }
    Ok(())
}

/// The fast path of `apply` for a TCP or UDP packet with its L4 header
/// (see the module comment); false, having changed nothing, for anything
/// else: the per-field steps take it.
// Not inlined: own stack frame. Inlined, the values it keeps across its
// two helper calls were spilled into `translate`'s frame (96 -> 176
// bytes), one frame too many for 6.1's 512-byte call chain; here they
// are read again from the entry after the calls instead.
#[inline(never)]
fn rewrite(
    ctx: &TcContext,
    p: &Packet,
    e: &FlowEntry,
    dec_ttl: bool,
) -> Result<bool, RewriteError> {
    // The offsets as the verifier can bound them: read back from the
    // caller's frame they are unknown scalars, and direct access needs a
    // bounded offset. The masks change no valid value (the IP header
    // starts at 0 or 14, L4 at most 60 bytes after it).
    let l4 = p.l4 & 0x7f;
    let (off, what) = match p.proto {
        PROTO_TCP => (l4 + TCP_CHECK, L4Csum::PLAIN),
        PROTO_UDP => (l4 + UDP_CHECK, L4Csum::UDP),
        _ => return Ok(false),
    };
    if p.proto == PROTO_UDP {
        // A UDP datagram without checksum: its port stores must update
        // skb->csum themselves (see `set_port`), which only the helper
        // store can.
        let check: &[u8; 2] = ctx.header(off).ok_or(RewriteError::Load)?;
        if *check == [0, 0] {
            return Ok(false);
        }
    }
    let addr_diff = csum::add(
        csum::diff32(p.src, e.new_src[0]),
        csum::diff32(p.dst, e.new_dst[0]),
    );
    if p.src != e.new_src[0] || p.dst != e.new_dst[0] {
        skb::l4_csum_diff(ctx, off, addr_diff, what.pseudo_header())
            .map_err(|_| RewriteError::L4Csum)?;
    }
    let ports_changed = p.sport != e.new_sport || p.dport != e.new_dport;
    if ports_changed {
        let port_diff = csum::add(
            csum::diff16(p.sport, e.new_sport),
            csum::diff16(p.dport, e.new_dport),
        );
        skb::l4_csum_diff(ctx, off, port_diff, what).map_err(|_| RewriteError::L4Csum)?;
    }
    // The helpers may have moved the packet: the headers are found anew.
    let mut w = frame::tc_writer(ctx);
    let ip: &mut Ipv4Hdr = w.header_mut(p.l3 & 0x1f).ok_or(RewriteError::StoreAddr)?;
    let mut ip_diff = addr_diff;
    if dec_ttl {
        // TTL shares a 16-bit checksum word with the protocol byte.
        let ttl = p.ttl - 1;
        ip_diff = csum::add(
            ip_diff,
            csum::diff16(
                u16::from_ne_bytes([p.ttl, p.proto]),
                u16::from_ne_bytes([ttl, p.proto]),
            ),
        );
        ip.ttl = ttl;
    }
    ip.check = csum::apply_diff(u16::from_ne_bytes(ip.check), ip_diff).to_ne_bytes();
    ip.src_addr = e.new_src[0].to_ne_bytes();
    ip.dst_addr = e.new_dst[0].to_ne_bytes();
    if ports_changed {
        let ports: &mut [u8; 4] = w
            .header_mut((p.l4 & 0x7f) + L4_SPORT)
            .ok_or(RewriteError::StorePort)?;
        let (s, d) = (e.new_sport.to_ne_bytes(), e.new_dport.to_ne_bytes());
        *ports = [s[0], s[1], d[0], d[1]];
    }
    Ok(true)
}

/// Where the L4 checksum sits and how the helper must treat it (nowhere
/// in a later fragment).
#[inline(always)]
fn l4_csum_of(p: &Packet) -> Option<(usize, L4Csum)> {
    if p.frag == Frag::Later {
        return None;
    }
    match p.proto {
        PROTO_TCP => Some((p.l4 + TCP_CHECK, L4Csum::PLAIN)),
        PROTO_UDP => Some((p.l4 + UDP_CHECK, L4Csum::UDP)),
        _ => None,
    }
}

/// Rewrites the source (`field` = IP_SRC) or destination (IP_DST) address.
#[inline(always)]
pub fn set_addr(
    ctx: &TcContext,
    p: &Packet,
    field: usize,
    old: u32,
    new: u32,
) -> Result<(), RewriteError> {
    if old == new {
        return Ok(());
    }
    if let Some((off, what)) = l4_csum_of(p) {
        skb::l4_csum_replace(ctx, off, old, new, what.pseudo_header())
            .map_err(|_| RewriteError::L4Csum)?;
    }
    skb::l3_csum_replace(ctx, p.l3 + IP_CHECK, old, new).map_err(|_| RewriteError::L3Csum)?;
    skb::store(ctx, p.l3 + field, &new, Store::PLAIN).map_err(|_| RewriteError::StoreAddr)
}

/// Rewrites the source (`field` = L4_SPORT) or destination (L4_DPORT)
/// port; for ICMP echo the identifier, whatever `field` says.
#[inline(always)]
pub fn set_port(
    ctx: &TcContext,
    p: &Packet,
    field: usize,
    old: u16,
    new: u16,
) -> Result<(), RewriteError> {
    if old == new {
        return Ok(());
    }
    let (field, csum, what) = match p.proto {
        PROTO_ICMP => (p.l4 + ICMP_ECHO_ID, p.l4 + ICMP_CHECK, L4Csum::PLAIN),
        _ => match l4_csum_of(p) {
            Some((c, what)) => (p.l4 + field, c, what),
            None => return Err(RewriteError::NoPorts),
        },
    };
    // A UDP datagram without checksum (0) has no checksum change to balance
    // the port change, so on a CHECKSUM_COMPLETE skb the store itself must
    // update skb->csum, or the stack is handed a stale packet sum. (With a
    // checksum the two changes cancel out and skb->csum stays right.)
    let no_csum =
        p.proto == PROTO_UDP && skb::load::<u16>(ctx, csum).map_err(|_| RewriteError::Load)? == 0;
    let how = if no_csum {
        Store::RECOMPUTE_CSUM
    } else {
        Store::PLAIN
    };
    skb::l4_csum_replace(ctx, csum, old, new, what).map_err(|_| RewriteError::L4Csum)?;
    skb::store(ctx, field, &new, how).map_err(|_| RewriteError::StorePort)
}

/// Decrements the TTL (we bypass the stack's forwarding, which would).
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, p: &Packet) -> Result<(), RewriteError> {
    // TTL shares a 16-bit checksum word with the protocol byte.
    let old = u16::from_ne_bytes([p.ttl, p.proto]);
    let new = u16::from_ne_bytes([p.ttl - 1, p.proto]);
    skb::l3_csum_replace(ctx, p.l3 + IP_CHECK, old, new).map_err(|_| RewriteError::L3Csum)?;
    skb::store(ctx, p.l3 + IP_TTL, &(p.ttl - 1), Store::PLAIN).map_err(|_| RewriteError::StoreTtl)
}
