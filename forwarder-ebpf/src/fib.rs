//! Forwarding decisions from the kernel's FIB, so routes, neighbours and
//! forwarding sysctls stay the kernel's business.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, bpf_redir_neigh, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC,
    },
    helpers::{
        bpf_fib_lookup as fib_lookup_helper, bpf_redirect, bpf_redirect_neigh, bpf_skb_change_head,
        bpf_skb_store_bytes,
    },
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use forwarder_common::{IfaceFlags, Reason, AF_INET, TC_ACT_OK, TC_ACT_SHOT};

use crate::{
    maps, nat,
    parse::{Packet, ETH_HLEN},
};

/// What the FIB says about a destination.
#[derive(Clone, Copy)]
pub struct Route {
    /// Egress interface.
    pub oif: u32,
    /// Next hop: the destination itself when it is on-link (a connected
    /// route), else the gateway.
    pub nexthop: u32,
    /// The source address the kernel would pick (route preferred source or
    /// the egress device's primary address; BPF_FIB_LOOKUP_SRC, Linux 6.8).
    pub src: u32,
}

/// Per-CPU room for the 64-byte lookup parameters: on the stack they would
/// count toward the 512 bytes the whole call chain may use.
#[map(name = "FWD_FIB_SCRATCH")]
static FIB_PARAMS: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

/// The scratch parameter block, reset for a lookup.
#[inline(always)]
fn params(ifindex: u32, proto: u8, src: u32, dst: u32) -> Option<&'static mut bpf_fib_lookup> {
    // SAFETY: per-CPU slot, ours for the duration of this run; a program
    // run is not preempted by another on the same CPU.
    let p = unsafe { &mut *FIB_PARAMS.get_ptr_mut(0)? };
    // SAFETY: bpf_fib_lookup is plain data; all-zero is its "unset" state.
    unsafe { core::ptr::write_bytes(p as *mut bpf_fib_lookup, 0, 1) };
    p.family = AF_INET;
    p.l4_protocol = proto;
    p.ifindex = ifindex;
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    Some(p)
}

#[inline(always)]
fn lookup(ctx: &TcContext, p: &mut bpf_fib_lookup, flags: u32) -> i64 {
    // SAFETY: p is a valid, fully initialised parameter block on our stack.
    unsafe {
        fib_lookup_helper(
            ctx.skb.skb as *mut _,
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    }
}

/// The route a packet from `src` arriving on `ifindex` would take to `dst`
/// (input-style lookup: forwarding must be enabled on `ifindex`). `None`
/// when the kernel would not forward it: no route, a local address,
/// blackhole, unreachable, forwarding disabled.
#[inline(always)]
pub fn route(ctx: &TcContext, ifindex: u32, proto: u8, src: u32, dst: u32) -> Option<Route> {
    let p = params(ifindex, proto, src, dst)?;
    let rc = lookup(ctx, p, BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH);
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return None;
    }
    // SAFETY: union fields written by the helper on success.
    let (nexthop, src) = unsafe { (p.__bindgen_anon_4.ipv4_dst, p.__bindgen_anon_3.ipv4_src) };
    Some(Route {
        oif: p.ifindex,
        nexthop,
        src,
    })
}

/// The interface this host would send a locally generated packet to `dst`
/// out of (output-style lookup, as for a reply the stack generates).
#[inline(always)]
pub fn output_oif(ctx: &TcContext, dst: u32) -> Option<u32> {
    let p = params(0, 0, 0, dst)?;
    let rc = lookup(ctx, p, BPF_FIB_LOOKUP_OUTPUT | BPF_FIB_LOOKUP_SKIP_NEIGH);
    (rc == BPF_FIB_LKUP_RET_SUCCESS as i64).then_some(p.ifindex)
}

#[inline(always)]
fn is_l3(ifindex: u32) -> bool {
    maps::iface(ifindex).is_some_and(|c| c.flags.contains(IfaceFlags::L3))
}

/// Sends a translated packet on: straight to the egress device when the
/// FIB has a plain answer, else to the stack. `p` holds the pre-translation
/// header facts (offsets, TTL); `src`/`dst` are the translated addresses.
#[inline(always)]
pub fn forward(ctx: &TcContext, p: &Packet, src: u32, dst: u32) -> (i32, Reason) {
    if p.ttl <= 1 {
        // Let the stack send Time Exceeded.
        return (TC_ACT_OK, Reason::PassTtl);
    }
    // SAFETY: reading a field of the context the kernel passed in.
    let in_ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(fp) = params(in_ifindex, p.proto, src, dst) else {
        return (TC_ACT_OK, Reason::FwdStack);
    };
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
    let rc = lookup(ctx, fp, BPF_FIB_LOOKUP_SKIP_NEIGH);
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // FRAG_NEEDED (the stack sends the ICMP), not forwarded, forwarding
        // disabled, blackhole...: the stack knows what to do.
        return (TC_ACT_OK, Reason::FwdStack);
    }
    let out = fp.ifindex;
    if nat::dec_ttl(ctx, p).is_err() {
        return (TC_ACT_SHOT, Reason::DropError);
    }
    if is_l3(out) {
        // No neighbours on an L3 device: a plain redirect, which strips
        // any Ethernet header for a device that has none
        // (__bpf_redirect_no_mac).
        // SAFETY: plain helper call; it returns the verdict.
        let verdict = unsafe { bpf_redirect(out, 0) };
        return (verdict as i32, Reason::FwdRedirect);
    }
    if p.l3 == 0 && push_eth(ctx).is_err() {
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

/// A packet from an L3 device (tun, wireguard) has no link header, and
/// bpf_redirect_neigh drops such skbs (`mac_header >= network_header` in
/// __bpf_redirect_neigh). bpf_skb_change_head exists for exactly this: it
/// pushes zeroed room for a MAC header, which redirect_neigh then strips
/// and replaces with the real one. Only the EtherType must be right.
#[inline(always)]
fn push_eth(ctx: &TcContext) -> Result<(), ()> {
    // SAFETY: helpers on our own skb; they validate lengths and offsets.
    nat::ok(unsafe { bpf_skb_change_head(ctx.skb.skb, ETH_HLEN as u32, 0) })?;
    let ethertype: [u8; 2] = [0x08, 0x00];
    nat::ok(unsafe { bpf_skb_store_bytes(ctx.skb.skb, 12, ethertype.as_ptr() as *const _, 2, 0) })
}
