//! Rewriting addresses and ports with the kernel's checksum helpers.
//!
//! Never recompute an L4 checksum by hand here: for CHECKSUM_PARTIAL skbs
//! (local senders, veth, virtio) the field only holds the pseudo-header sum,
//! and `bpf_l4_csum_replace` knows which case it is in. Address changes use
//! BPF_F_PSEUDO_HDR (they are in the TCP/UDP pseudo-header), port changes do
//! not; UDP adds BPF_F_MARK_MANGLED_0 because a zero UDP checksum means
//! "none" and must stay zero. ICMP has no pseudo-header.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM},
    helpers::{bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_skb_store_bytes},
    programs::TcContext,
};
use forwarder_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use crate::parse::Packet;

/// Offsets inside the IPv4 header.
const IP_CSUM: usize = 10;
pub const IP_SRC: usize = 12;
pub const IP_DST: usize = 16;
const IP_TTL: usize = 8;

/// Helper return code to Result (negative errno on failure).
#[inline(always)]
pub fn ok(rc: i64) -> Result<(), ()> {
    if rc < 0 {
        Err(())
    } else {
        Ok(())
    }
}

#[inline(always)]
fn store<T>(ctx: &TcContext, off: usize, v: &T) -> Result<(), ()> {
    store_flags(ctx, off, v, 0)
}

#[inline(always)]
fn store_flags<T>(ctx: &TcContext, off: usize, v: &T, flags: u64) -> Result<(), ()> {
    // SAFETY: the helper bounds-checks offset and length against the skb.
    ok(unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb,
            off as u32,
            v as *const T as *const _,
            core::mem::size_of::<T>() as u32,
            flags,
        )
    })
}

#[inline(always)]
fn l3_csum(ctx: &TcContext, off: usize, old: u64, new: u64, size: u64) -> Result<(), ()> {
    // SAFETY: helper on our own skb; it validates the offset.
    ok(unsafe { bpf_l3_csum_replace(ctx.skb.skb, off as u32, old, new, size) })
}

#[inline(always)]
fn l4_csum(ctx: &TcContext, off: usize, old: u64, new: u64, flags: u64) -> Result<(), ()> {
    // SAFETY: helper on our own skb; it validates the offset.
    ok(unsafe { bpf_l4_csum_replace(ctx.skb.skb, off as u32, old, new, flags) })
}

/// Offset of the L4 checksum and the extra helper flags for this protocol.
#[inline(always)]
fn l4_csum_of(p: &Packet) -> Option<(usize, u64)> {
    match p.proto {
        PROTO_TCP => Some((p.l4 + 16, 0)),
        PROTO_UDP => Some((p.l4 + 6, BPF_F_MARK_MANGLED_0 as u64)),
        _ => None,
    }
}

/// Rewrites the source (`field` = IP_SRC) or destination (IP_DST) address.
#[inline(always)]
pub fn set_addr(ctx: &TcContext, p: &Packet, field: usize, old: u32, new: u32) -> Result<(), ()> {
    if old == new {
        return Ok(());
    }
    if let Some((off, flags)) = l4_csum_of(p) {
        l4_csum(
            ctx,
            off,
            old as u64,
            new as u64,
            flags | BPF_F_PSEUDO_HDR as u64 | 4,
        )?;
    }
    l3_csum(ctx, p.l3 + IP_CSUM, old as u64, new as u64, 4)?;
    store(ctx, p.l3 + field, &new)
}

/// Rewrites the source (`which` = 0) or destination (2) port; for ICMP echo
/// the identifier (at offset 4), whatever `which` says.
#[inline(always)]
pub fn set_port(ctx: &TcContext, p: &Packet, which: usize, old: u16, new: u16) -> Result<(), ()> {
    if old == new {
        return Ok(());
    }
    let (field, csum, flags) = match p.proto {
        PROTO_ICMP => (p.l4 + 4, p.l4 + 2, 0),
        _ => match l4_csum_of(p) {
            Some((c, f)) => (p.l4 + which, c, f),
            None => return Err(()),
        },
    };
    // A UDP datagram without checksum (0) has no checksum change to balance
    // the port change, so on a CHECKSUM_COMPLETE skb the store itself must
    // update skb->csum, or the stack is handed a stale packet sum. (With a
    // checksum the two changes cancel out and skb->csum stays right.)
    let no_csum = p.proto == PROTO_UDP && ctx.load::<u16>(csum).map_err(|_| ())? == 0;
    let recompute = if no_csum {
        BPF_F_RECOMPUTE_CSUM as u64
    } else {
        0
    };
    l4_csum(ctx, csum, old as u64, new as u64, flags | 2)?;
    store_flags(ctx, field, &new, recompute)
}

/// Decrements the TTL (we bypass the stack's forwarding, which would).
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, p: &Packet) -> Result<(), ()> {
    // TTL shares a 16-bit checksum word with the protocol byte.
    let old = u16::from_ne_bytes([p.ttl, p.proto]);
    let new = u16::from_ne_bytes([p.ttl - 1, p.proto]);
    l3_csum(ctx, p.l3 + IP_CSUM, old as u64, new as u64, 2)?;
    store(ctx, p.l3 + IP_TTL, &(p.ttl - 1))
}
