//! TCP MSS clamping on SYN and SYN-ACK: a tailnet peer (MTU 1280) and a
//! pod network (MTU 1500) would otherwise agree on segments the narrow side
//! cannot carry, and large transfers stall wherever ICMP is filtered.
//!
//! The one fact a reader would get wrong: the option walk is shaped for the
//! verifiers of older kernels, not for speed. Walking the skb with a
//! variable offset compared to a variable end made 6.1's and 6.12's
//! verifiers give up ("The sequence of 8193 jumps is too complex"): they
//! cannot prune a loop state while it is still being explored, and each
//! step left a state the next could not be matched against. Here the
//! options are copied out once and walked with one index checked against a
//! constant (`MAX_OPTION_BYTES`), so every step's state is "index in
//! [k, 39]" and the walk ends within 40 steps on every path.
use aya_ebpf::programs::TcContext;

use crate::{
    error::RewriteError,
    hdr::{TCPOLEN_MSS, TCPOPT_EOL, TCPOPT_MSS, TCPOPT_NOP, TCP_CHECK, TCP_HLEN},
    helpers::{
        skb::{self, L4Csum, Store},
        tcp_opts::{self, MAX_OPTION_BYTES},
    },
    parse::Packet,
};

/// Lowers the MSS option of `p` (a SYN or SYN-ACK) to `clamp` when it is
/// larger. Returns whether it changed the packet.
///
/// The options are copied into a zeroed per-CPU buffer with one
/// bpf_skb_load_bytes (which copes with any skb layout: the parser pulled
/// only the fixed header). Bytes past the header read as EOL, so an option
/// claiming more room than the header has ends the walk like a malformed
/// one, and an MSS option cut off by the header's end is left alone.
#[inline(always)]
pub fn clamp(ctx: &TcContext, p: &Packet, clamp: u16) -> Result<bool, RewriteError> {
    let opts = p.l4 + TCP_HLEN;
    let n = (p.tcp_hlen as usize).wrapping_sub(TCP_HLEN);
    if n == 0 {
        return Ok(false);
    }
    // The parser saw at most 40 option bytes: None is a failed load.
    let b = tcp_opts::load(ctx, opts, n).ok_or(RewriteError::Mss)?;
    let mut i = 0usize;
    while i < MAX_OPTION_BYTES {
        let kind = b[i];
        if kind == TCPOPT_EOL {
            return Ok(false);
        }
        if kind == TCPOPT_NOP {
            i += 1;
            continue;
        }
        let len = b[i + 1];
        if len < 2 {
            // Malformed options: leave the packet alone.
            return Ok(false);
        }
        if kind == TCPOPT_MSS && len == TCPOLEN_MSS {
            if i + TCPOLEN_MSS as usize > n {
                // Cut off by the header's end.
                return Ok(false);
            }
            return rewrite(ctx, p, opts + i + 2, [b[i + 2], b[i + 3]], clamp);
        }
        i += len as usize;
    }
    Ok(false)
}

/// Writes `clamp` over the MSS value `raw` at packet offset `at` when it is
/// larger, with the checksum.
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    p: &Packet,
    at: usize,
    raw: [u8; 2],
    clamp: u16,
) -> Result<bool, RewriteError> {
    if u16::from_be_bytes(raw) <= clamp {
        return Ok(false);
    }
    let new = clamp.to_be_bytes();
    let (old_w, new_w) = (u16::from_ne_bytes(raw), u16::from_ne_bytes(new));
    // The checksum sums 16-bit words from the start of the header; a value
    // at an odd offset straddles two words, which is the same as the
    // byte-swapped value at an even one (RFC 1071 2(B)).
    let odd = (at - p.l4) % 2 == 1;
    let (o, n) = if odd {
        (old_w.swap_bytes(), new_w.swap_bytes())
    } else {
        (old_w, new_w)
    };
    skb::l4_csum_replace(ctx, p.l4 + TCP_CHECK, o, n, L4Csum::PLAIN)
        .map_err(|_| RewriteError::Mss)?;
    skb::store(ctx, at, &new, Store::PLAIN).map_err(|_| RewriteError::Mss)?;
    Ok(true)
}
