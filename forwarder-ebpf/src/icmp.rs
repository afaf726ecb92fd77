//! ICMP errors (destination unreachable incl. fragmentation needed, time
//! exceeded, parameter problem) about a tracked flow carry the offending
//! packet's header as we translated it. The error must be translated back:
//! outer destination, the embedded addresses and ports, the embedded IP
//! checksum, the embedded L4 checksum when present, and the ICMP checksum
//! over all of that, or path-MTU discovery breaks (cilium/cilium#47755 is
//! this bug in a big project). tailscale0's MTU 1280 puts it on the main path.
use aya_ebpf::{
    helpers::{bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_skb_store_bytes},
    programs::TcContext,
};
use forwarder_common::{FlowKey, Hook, Reason, PROTO_TCP, PROTO_UDP, TCX_NEXT, TC_ACT_SHOT};

use crate::{
    deliver, handled_here,
    maps::FLOWS,
    nat,
    parse::{ptr_at, Packet, IPV4_HLEN},
};

/// The embedded header as found in the error.
struct Inner {
    l3: usize,
    l4: usize,
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    /// Offset of the embedded L4 checksum, when the error quotes it.
    l4_csum: Option<usize>,
}

#[inline(always)]
fn parse_inner(ctx: &TcContext, p: &Packet) -> Option<Inner> {
    let l3 = p.l4 + 8;
    let h: *const [u8; IPV4_HLEN] = ptr_at(ctx, l3)?;
    // SAFETY: bounds-checked by ptr_at.
    let h = unsafe { &*h };
    if h[0] != 0x45 {
        return None;
    }
    let proto = h[9];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let l4 = l3 + IPV4_HLEN;
    let ports: *const [u8; 8] = ptr_at(ctx, l4)?;
    // SAFETY: bounds-checked by ptr_at.
    let ports = unsafe { &*ports };
    // How much of the embedded L4 header the error quotes.
    let quoted = (p.tot_len as usize).saturating_sub(IPV4_HLEN + 8 + IPV4_HLEN);
    let l4_csum = match proto {
        PROTO_TCP if quoted >= 18 => Some(l4 + 16),
        // A zero UDP checksum means "none": leave it alone.
        PROTO_UDP if quoted >= 8 && (ports[6] | ports[7]) != 0 => Some(l4 + 6),
        _ => None,
    };
    Some(Inner {
        l3,
        l4,
        proto,
        src: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        dst: u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
        sport: u16::from_ne_bytes([ports[0], ports[1]]),
        dport: u16::from_ne_bytes([ports[2], ports[3]]),
        l4_csum,
    })
}

/// Replaces a 16/32-bit value inside the ICMP payload and keeps the ICMP
/// checksum (and, via `also`, an embedded checksum covering it) right.
#[inline(always)]
fn replace(
    ctx: &TcContext,
    icmp_csum: usize,
    off: usize,
    old: u32,
    new: u32,
    size: u64,
    also: Option<usize>,
) -> Result<(), ()> {
    if old == new {
        return Ok(());
    }
    let skb = ctx.skb.skb;
    if let Some(c) = also {
        // The embedded checksum changes too: account for that word in the
        // ICMP checksum as well (read before/after the update).
        let before: u16 = ctx.load(c).map_err(|_| ())?;
        // SAFETY: helpers on our own skb; they validate offsets.
        nat::ok(unsafe { bpf_l3_csum_replace(skb, c as u32, old as u64, new as u64, size) })?;
        let after: u16 = ctx.load(c).map_err(|_| ())?;
        nat::ok(unsafe {
            bpf_l4_csum_replace(skb, icmp_csum as u32, before as u64, after as u64, 2)
        })?;
    }
    // SAFETY: as above.
    nat::ok(unsafe { bpf_l4_csum_replace(skb, icmp_csum as u32, old as u64, new as u64, size) })?;
    let r = if size == 4 {
        // SAFETY: storing 4 bytes we own on the stack.
        unsafe { bpf_skb_store_bytes(skb, off as u32, &new as *const u32 as *const _, 4, 0) }
    } else {
        let v = new as u16;
        // SAFETY: storing 2 bytes we own on the stack.
        unsafe { bpf_skb_store_bytes(skb, off as u32, &v as *const u16 as *const _, 2, 0) }
    };
    nat::ok(r)
}

/// Translates an ICMP error about a tracked flow; an error that is not ours
/// (here) gets TCX_NEXT and `PassNoMatch`. A plain pair, not an Option:
/// this is a BPF-to-BPF call, and BTF cannot describe the layout Rust gives
/// `Option<(i32, Reason)>` (a union member at a non-zero offset), which
/// makes the kernel refuse the object's BTF.
// A BPF-to-BPF call rather than inlined: its locals get their own frame
// instead of adding to the caller's (512-byte stack limit).
#[inline(never)]
pub fn error(ctx: &TcContext, p: &Packet, hook: Hook) -> (i32, Reason) {
    const NOT_OURS: (i32, Reason) = (TCX_NEXT, Reason::PassNoMatch);
    // The quoted IPv4 header and the 8 bytes after it are read directly.
    crate::parse::pull(ctx, p.l4 + 8 + IPV4_HLEN + 8);
    let Some(i) = parse_inner(ctx, p) else {
        return NOT_OURS;
    };
    // The quoted packet went out translated; the error travels back the
    // way its replies would, so the reversed quote is that direction's key.
    let key = FlowKey::v4(i.dst, i.src, i.dport, i.sport, i.proto);
    // A pointer into the map value rather than a copy: this function's
    // frame counts toward the 512-byte stack of the whole call chain.
    let Some(e) = FLOWS.get_ptr(key) else {
        return NOT_OURS;
    };
    // SAFETY: a map value stays valid for the rest of this program run.
    let e = unsafe { &*e };
    if !handled_here(e, hook) {
        return NOT_OURS;
    }
    let (new_src, new_dst) = (e.new_src[0], e.new_dst[0]);
    // An error sent by the peer itself names the peer as outer source: it
    // becomes the translated peer, like every other packet of the flow.
    let outer_src = if p.src == i.dst { new_src } else { p.src };
    let icmp_csum = p.l4 + 2;
    let ip_csum = Some(i.l3 + 10);
    let done = replace(ctx, icmp_csum, i.l3 + 12, i.src, new_dst, 4, ip_csum)
        .and_then(|_| replace(ctx, icmp_csum, i.l3 + 16, i.dst, new_src, 4, ip_csum))
        .and_then(|_| {
            // The embedded L4 checksum covers the pseudo-header addresses.
            match i.l4_csum {
                Some(c) => replace_csum_only(ctx, icmp_csum, c, i.src, new_dst)
                    .and_then(|_| replace_csum_only(ctx, icmp_csum, c, i.dst, new_src)),
                None => Ok(()),
            }
        })
        .and_then(|_| {
            replace(
                ctx,
                icmp_csum,
                i.l4,
                i.sport as u32,
                e.new_dport as u32,
                2,
                i.l4_csum,
            )
        })
        .and_then(|_| {
            replace(
                ctx,
                icmp_csum,
                i.l4 + 2,
                i.dport as u32,
                e.new_sport as u32,
                2,
                i.l4_csum,
            )
        })
        .and_then(|_| nat::set_addr(ctx, p, nat::IP_DST, p.dst, new_dst))
        .and_then(|_| nat::set_addr(ctx, p, nat::IP_SRC, p.src, outer_src));
    if done.is_err() {
        return (TC_ACT_SHOT, Reason::DropError);
    }
    deliver(ctx, p, hook, e, outer_src, new_dst)
}

/// An embedded checksum whose pseudo-header address changed: the address
/// itself is rewritten separately (it sits in the embedded IP header).
#[inline(always)]
fn replace_csum_only(
    ctx: &TcContext,
    icmp_csum: usize,
    c: usize,
    old: u32,
    new: u32,
) -> Result<(), ()> {
    if old == new {
        return Ok(());
    }
    let skb = ctx.skb.skb;
    let before: u16 = ctx.load(c).map_err(|_| ())?;
    // SAFETY: helpers on our own skb; they validate offsets.
    nat::ok(unsafe { bpf_l3_csum_replace(skb, c as u32, old as u64, new as u64, 4) })?;
    let after: u16 = ctx.load(c).map_err(|_| ())?;
    nat::ok(unsafe { bpf_l4_csum_replace(skb, icmp_csum as u32, before as u64, after as u64, 2) })
}
