//! Rewriting addresses and ports with the kernel's checksum helpers.
//!
//! Never recompute an L4 checksum by hand here: for CHECKSUM_PARTIAL skbs
//! (local senders, veth, virtio) the field only holds the pseudo-header sum,
//! and `bpf_l4_csum_replace` knows which case it is in. Address changes use
//! BPF_F_PSEUDO_HDR (they are in the TCP/UDP pseudo-header), port changes do
//! not; UDP adds BPF_F_MARK_MANGLED_0 because a zero UDP checksum means
//! "none" and must stay zero. ICMP has no pseudo-header.
use aya_ebpf::programs::TcContext;
use forwarder_common::{FlowEntry, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use crate::{
    counters,
    error::RewriteError,
    hdr::{
        ICMP_CHECK, ICMP_ECHO_ID, IP_CHECK, IP_DST, IP_SRC, IP_TTL, L4_DPORT, L4_SPORT, TCP_CHECK,
        TCP_SYN, UDP_CHECK,
    },
    helpers::skb::{self, L4Csum, Store},
    mss,
    parse::{Frag, Packet},
};

/// Rewrites the packet to flow entry `e`'s tuple: addresses, ports (the
/// identifier of an ICMP echo), and the MSS option of a SYN when the rule
/// clamps it. Stops at the first step that fails.
#[inline(always)]
pub fn apply(ctx: &TcContext, p: &Packet, e: &FlowEntry) -> Result<(), RewriteError> {
    // Read once, first: the fragment kind read again after the MSS walk
    // would keep the verifier from merging its states.
    let later = p.frag == Frag::Later;
    set_addr(ctx, p, IP_SRC, p.src, e.new_src[0])?;
    set_addr(ctx, p, IP_DST, p.dst, e.new_dst[0])?;
    if later {
        // No L4 header here: the ports and the L4 checksum (which covers
        // the whole datagram) were rewritten in the first fragment.
        return Ok(());
    }
    set_port(ctx, p, L4_SPORT, p.sport, e.new_sport)?;
    // ICMP echo carries one identifier, already rewritten above.
    if p.proto != PROTO_ICMP {
        set_port(ctx, p, L4_DPORT, p.dport, e.new_dport)?;
    }
    if e.mss != 0
        && p.proto == PROTO_TCP
        && p.tcp_flags & TCP_SYN != 0
        && mss::clamp(ctx, p, e.mss)?
    {
        counters::count_mss_clamped(e.rule_id);
    }
    Ok(())
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
