//! TCP MSS clamping on SYN and SYN-ACK: a tailnet peer (MTU 1280) and a
//! pod network (MTU 1500) would otherwise agree on segments the narrow side
//! cannot carry, and large transfers stall wherever ICMP is filtered.
use aya_ebpf::programs::TcContext;

use crate::{
    error::RewriteError,
    hdr::{TCPOLEN_MSS, TCPOPT_EOL, TCPOPT_MSS, TCPOPT_NOP, TCP_CHECK, TCP_HLEN},
    helpers::skb::{self, L4Csum, Store},
    parse::Packet,
};

/// Lowers the MSS option of `p` (a SYN or SYN-ACK) to `clamp` when it is
/// larger. Returns whether it changed the packet. Headers were pulled
/// linear by the parser only up to the fixed part, so options are read with
/// ctx.load (bpf_skb_load_bytes), which copes with any layout.
#[inline(always)]
pub fn clamp(ctx: &TcContext, p: &Packet, clamp: u16) -> Result<bool, RewriteError> {
    let opts = p.l4 + TCP_HLEN;
    let end = p.l4 + p.tcp_hlen as usize;
    let mut off = opts;
    // No step counter: every step moves `off` forward and the header's end
    // (at most 40 option bytes) stops the walk. That covers options in any
    // order and number, and is cheaper to verify than a counter (which
    // keeps the verifier from pruning across iterations): about 134k
    // instructions verified for fwd_ingress, where a counter capped at 16
    // steps already costs 149k and one at 40 exceeds the 1M limit.
    loop {
        // Kind and length in one load. Fewer than two bytes left: only a
        // NOP or EOL fits there, no MSS (and loading the missing length
        // byte would fail, or read past the header).
        if off + 2 > end {
            return Ok(false);
        }
        let [kind, len]: [u8; 2] = skb::load(ctx, off).map_err(|_| RewriteError::Mss)?;
        if kind == TCPOPT_EOL {
            return Ok(false);
        }
        if kind == TCPOPT_NOP {
            off += 1;
            continue;
        }
        if len < 2 || off + len as usize > end {
            // Malformed options: leave the packet alone.
            return Ok(false);
        }
        if kind == TCPOPT_MSS && len == TCPOLEN_MSS {
            let at = off + 2;
            let raw: [u8; 2] = skb::load(ctx, at).map_err(|_| RewriteError::Mss)?;
            if u16::from_be_bytes(raw) <= clamp {
                return Ok(false);
            }
            let new = clamp.to_be_bytes();
            let (old_w, new_w) = (u16::from_ne_bytes(raw), u16::from_ne_bytes(new));
            // The checksum sums 16-bit words from the start of the header;
            // a value at an odd offset straddles two words, which is the
            // same as the byte-swapped value at an even one (RFC 1071 2(B)).
            let odd = (at - p.l4) % 2 == 1;
            let (o, n) = if odd {
                (old_w.swap_bytes(), new_w.swap_bytes())
            } else {
                (old_w, new_w)
            };
            skb::l4_csum_replace(ctx, p.l4 + TCP_CHECK, o, n, L4Csum::PLAIN)
                .map_err(|_| RewriteError::Mss)?;
            skb::store(ctx, at, &new, Store::PLAIN).map_err(|_| RewriteError::Mss)?;
            return Ok(true);
        }
        off += len as usize;
    }
}
