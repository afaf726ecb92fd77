//! Forwarding decisions from the kernel's FIB, so routes, neighbours and
//! forwarding sysctls stay the kernel's business.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, bpf_redir_neigh, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC,
    },
    helpers::{bpf_fib_lookup as fib_lookup_helper, bpf_redirect_neigh},
    programs::TcContext,
};
use forwarder_common::{Reason, IFACE_L3};

use crate::{maps, nat, parse::Packet};

const AF_INET: u8 = 2;
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;

#[inline(always)]
fn params(
    in_ifindex: u32,
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
) -> bpf_fib_lookup {
    // SAFETY: bpf_fib_lookup is plain data; all-zero is its "unset" state.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto;
    p.sport = sport;
    p.dport = dport;
    p.ifindex = in_ifindex;
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    p
}

/// The source address the kernel would use towards `dst` (masquerade):
/// BPF_FIB_LOOKUP_SRC (Linux 6.8) fills it in from the route's preferred
/// source or the egress device's primary address.
#[inline(always)]
pub fn source_for(ctx: &TcContext, in_ifindex: u32, proto: u8, dst: u32) -> Option<u32> {
    let mut p = params(in_ifindex, proto, 0, dst, 0, 0);
    // SAFETY: p is a valid, fully initialised parameter block on our stack.
    let rc = unsafe {
        fib_lookup_helper(
            ctx.skb.skb as *mut _,
            &mut p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    // SAFETY: union field written by the helper on success.
    let src = unsafe { p.__bindgen_anon_3.ipv4_src };
    (rc == BPF_FIB_LKUP_RET_SUCCESS as i64 && src != 0).then_some(src)
}

/// Sends a translated packet on: straight to the egress device with
/// bpf_redirect_neigh when the FIB has a plain answer, else to the stack.
/// `p` holds the pre-translation header facts (offsets, TTL); the tuple is
/// the translated one.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn forward(
    ctx: &TcContext,
    p: &Packet,
    in_ifindex: u32,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
) -> (i32, Reason) {
    if p.ttl <= 1 {
        // Let the stack send Time Exceeded.
        return (TC_ACT_OK, Reason::FwdStack);
    }
    let mut fp = params(in_ifindex, p.proto, src, dst, sport, dport);
    // GSO packets are segmented on egress: their IP length says nothing
    // about the MTU, so only check the MTU for single packets.
    // SAFETY: reading a field of the context the kernel passed in.
    if unsafe { (*ctx.skb.skb).gso_size } == 0 {
        fp.__bindgen_anon_1.tot_len = p.tot_len;
    }
    // SKIP_NEIGH: bpf_redirect_neigh resolves (and queues behind) the
    // neighbour itself. Handing a NO_NEIGH packet to the stack instead would
    // lose every SNATed packet: its source is now one of our own addresses,
    // which the stack drops as a martian, so the neighbour would never be
    // resolved and the flow could never start.
    // SAFETY: fp is a valid, fully initialised parameter block.
    let rc = unsafe {
        fib_lookup_helper(
            ctx.skb.skb as *mut _,
            &mut fp,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // FRAG_NEEDED (the stack sends the ICMP), not forwarded, forwarding
        // disabled, blackhole...: the stack knows what to do.
        return (TC_ACT_OK, Reason::FwdStack);
    }
    let out = fp.ifindex;
    // L3 devices on either side need header changes bpf_redirect_neigh does
    // not make for us; the stack does them.
    let in_l3 = maps::iface(in_ifindex)
        .map(|c| c.flags & IFACE_L3 != 0)
        .unwrap_or(false);
    let out_l3 = maps::iface(out)
        .map(|c| c.flags & IFACE_L3 != 0)
        .unwrap_or(false);
    if in_l3 || out_l3 {
        return (TC_ACT_OK, Reason::FwdStack);
    }
    if nat::dec_ttl(ctx, p).is_err() {
        return (TC_ACT_SHOT, Reason::DropError);
    }
    let mut nh = bpf_redir_neigh {
        nh_family: AF_INET as u32,
        __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 {
            // SAFETY: union field written by the helper on success.
            ipv4_nh: unsafe { fp.__bindgen_anon_4.ipv4_dst },
        },
    };
    // SAFETY: nh is a valid parameter block; the helper returns the verdict.
    let verdict = unsafe {
        bpf_redirect_neigh(
            out,
            &mut nh,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    };
    (verdict as i32, Reason::FwdRedirect)
}
