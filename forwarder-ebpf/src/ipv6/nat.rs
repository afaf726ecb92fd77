//! Rewriting an IPv6 packet to a flow entry's tuple. The addresses are in
//! the TCP/UDP pseudo-header (RFC 8200 8.1), so each changed 32-bit word
//! is folded into the L4 checksum with BPF_F_PSEUDO_HDR (the helper knows
//! whether the skb is CHECKSUM_PARTIAL); there is no IP header checksum,
//! so the stores themselves keep skb->csum right (`Store::RECOMPUTE_CSUM`).
//! Ports and the MSS option are the IPv4 path's own steps.
use aya_ebpf::programs::TcContext;
use forwarder_common::{FlowEntry, PROTO_TCP, PROTO_UDP};

use super::parse::{Packet6, IP6_DST, IP6_SRC};
use crate::{
    counters,
    error::RewriteError,
    hdr::{L4_DPORT, L4_SPORT, TCP_CHECK, TCP_SYN, UDP_CHECK},
    helpers::skb::{self, L4Csum, Store},
    mss, nat,
    parse::{Frag, Packet},
};

/// Addresses, ports, and the MSS option of a SYN when the rule clamps it.
/// `q` is `p.p` with bounded offsets (`parse::bounded`).
#[inline(always)]
pub fn apply(ctx: &TcContext, q: &Packet, p: &Packet6, e: &FlowEntry) -> Result<(), RewriteError> {
    set_addr(ctx, q, IP6_SRC, &p.src, &e.new_src)?;
    set_addr(ctx, q, IP6_DST, &p.dst, &e.new_dst)?;
    if q.frag == Frag::Later {
        // No L4 header (see `frag6`): the ports and the L4 checksum were
        // rewritten in the first fragment.
        return Ok(());
    }
    nat::set_port(ctx, q, L4_SPORT, q.sport, e.new_sport)?;
    nat::set_port(ctx, q, L4_DPORT, q.dport, e.new_dport)?;
    if e.mss != 0
        && q.proto == PROTO_TCP
        && q.tcp_flags & TCP_SYN != 0
        && mss::clamp(ctx, q, e.mss)?
    {
        counters::count_mss_clamped(e.rule_id);
    }
    Ok(())
}

/// Rewrites the source (`field` = IP6_SRC) or destination (IP6_DST).
#[inline(always)]
fn set_addr(
    ctx: &TcContext,
    p: &Packet,
    field: usize,
    old: &[u32; 4],
    new: &[u32; 4],
) -> Result<(), RewriteError> {
    if old == new {
        return Ok(());
    }
    let (csum, what) = match p.proto {
        PROTO_TCP => (p.l4 + TCP_CHECK, L4Csum::PLAIN),
        PROTO_UDP => (p.l4 + UDP_CHECK, L4Csum::UDP),
        _ => return Err(RewriteError::NoPorts),
    };
    // A later fragment carries no L4 checksum.
    let mut i = if p.frag == Frag::Later { 4 } else { 0 };
    while i < 4 {
        if old[i] != new[i] {
            skb::l4_csum_replace(ctx, csum, old[i], new[i], what.pseudo_header())
                .map_err(|_| RewriteError::L4Csum)?;
        }
        i += 1;
    }
    // No IP header checksum balances the new address in the packet's sum
    // (skb->csum of a CHECKSUM_COMPLETE skb): the store accounts for it.
    skb::store(ctx, p.l3 + field, new, Store::RECOMPUTE_CSUM).map_err(|_| RewriteError::StoreAddr)
}
