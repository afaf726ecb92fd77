//! The helpers of NAT64's family change (`nat64`): the skb turned from
//! IPv6 into IPv4 and back (bpf_skb_change_proto, which exists for exactly
//! this since Linux 4.8), and the checksum arithmetic for the
//! pseudo-header that changes with it.
//!
//! The one fact a reader would get wrong: bpf_skb_change_proto only moves
//! bytes. It inserts (4 -> 6) or removes (6 -> 4) 20 bytes right after the
//! link header and fixes skb->protocol and the GSO type and size; it
//! writes no header. The caller writes the whole new IP header (and the
//! EtherType) itself, and the L4 checksum must already account for the new
//! pseudo-header (`csum_diff` + `l4_csum_add`).
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::{bpf_csum_diff, bpf_l4_csum_replace, bpf_skb_change_proto},
    programs::TcContext,
};

use super::skb::Errno;

/// Turns the skb into a packet of EtherType `proto` (host order, IPv4 or
/// IPv6):
/// 20 bytes removed or inserted after the link header (see the module
/// comment). Invalidates every packet pointer.
#[inline(always)]
pub fn change_proto(ctx: &TcContext, proto: u16) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; flags must be 0.
    let rc = unsafe { bpf_skb_change_proto(ctx.skb.skb, proto.to_be(), 0) };
    if rc < 0 {
        Err(rc)
    } else {
        Ok(())
    }
}

/// `seed` plus the one's-complement sum of `to` minus that of `from`
/// (each a whole number of 32-bit words, read as they lie in memory;
/// either may be empty): the change a checksum must absorb when `from` is
/// replaced by `to`.
#[inline(always)]
pub fn csum_diff<A, B>(from: &[A], to: &[B], seed: u32) -> Result<u32, Errno> {
    let (from_len, to_len) = (core::mem::size_of_val(from), core::mem::size_of_val(to));
    let ptr = |p: *const u8, len: usize| {
        if len == 0 {
            core::ptr::null_mut()
        } else {
            p as *mut u32
        }
    };
    // SAFETY: both buffers are valid for their lengths (a null pointer
    // only with length 0, which the helper allows); it only reads them.
    let rc = unsafe {
        bpf_csum_diff(
            ptr(from.as_ptr() as *const u8, from_len),
            from_len as u32,
            ptr(to.as_ptr() as *const u8, to_len),
            to_len as u32,
            seed,
        )
    };
    if rc < 0 {
        Err(rc)
    } else {
        Ok(rc as u32)
    }
}

/// Folds `diff` (from `csum_diff`) of the TCP/UDP pseudo-header into the
/// L4 checksum at `off` (BPF_F_PSEUDO_HDR: a CHECKSUM_PARTIAL skb's
/// field holds the pseudo-header sum, which the helper then updates).
/// `udp`: a zero UDP checksum stays zero ("none").
#[inline(always)]
pub fn l4_csum_add(ctx: &TcContext, off: usize, diff: u32, udp: bool) -> Result<(), Errno> {
    let mut flags = BPF_F_PSEUDO_HDR as u64;
    if udp {
        flags |= BPF_F_MARK_MANGLED_0 as u64;
    }
    // SAFETY: helper on our own skb; it validates the offset. Size 0 in
    // the flags: `to` is a precomputed difference, `from` must be 0.
    let rc = unsafe { bpf_l4_csum_replace(ctx.skb.skb, off as u32, 0, diff as u64, flags) };
    if rc < 0 {
        Err(rc)
    } else {
        Ok(())
    }
}
