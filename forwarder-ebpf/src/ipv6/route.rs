//! IPv6 routes from the kernel's FIB: the per-flow decision (source and
//! path: redirect or stack) and sending a translated packet to its next
//! hop or the stack (the IPv4 path's `path` and `fib::forward`, for
//! 16-byte addresses and without an IP checksum). The fact a reader gets
//! wrong: a flow through the stack keeps the client's address, always (the
//! stack drops packets from its own addresses as martians), and only its
//! replies' translation happens elsewhere (`stack`, at egress).
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC,
    },
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use forwarder_common::{
    FlowEntry, FlowFlags, IfaceFlags, ListenFlags, ListenerValue, Reason, SnatMode, PROTO_TCP,
};

use super::parse::{Packet6, ETH_P_IPV6, IP6_HOP_LIMIT};
use crate::{
    error::RewriteError,
    hdr::{ETH_HLEN, ETH_TYPE, UDP_HLEN},
    helpers::{
        fib::FibParams,
        skb::{self, Store},
    },
    maps,
    parse::Packet,
    verdict::Verdict,
};

/// As in `fib`: a route with the source the kernel would pick; a
/// forwarding lookup whose neighbour bpf_redirect_neigh resolves.
const ROUTE_WITH_SRC: u32 = BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH;
const FORWARD_ROUTE: u32 = BPF_FIB_LOOKUP_SKIP_NEIGH;
const OUTPUT_ROUTE: u32 = BPF_FIB_LOOKUP_OUTPUT | BPF_FIB_LOOKUP_SKIP_NEIGH;

/// The new flow's source toward the target, its flags (`SNAT`,
/// `VIA_STACK`), and where its replies arrive.
#[repr(C)]
pub struct Decision6 {
    pub src: [u32; 4],
    pub flags: FlowFlags,
    /// Where replies arrive: the interface of the route to the target, or,
    /// for flows through the stack, the listening interface (whose egress
    /// program, `fwd_egress6`, translates them: see `stack`).
    pub reply_iface: u32,
}

const _: () =
    assert!(core::mem::size_of::<Decision6>() == forwarder_common::DECISION6_SCRATCH_SIZE as usize);

/// The decision of the flow being created, from `super::create_flow` to
/// `flow::create`, passed through per-CPU memory on purpose (as
/// `newflow`'s port plan): read back from a map, its flags and addresses
/// are unknown to the verifier, so the creation and the first packet's
/// translation are walked once, not once per way of deciding (redirect,
/// SNAT, stack, NAT64: each a constant on the stack otherwise).
#[map(name = "FWD_DECISION6_SCRATCH")]
pub static DECISION6: PerCpuArray<Decision6> = PerCpuArray::with_max_entries(1, 0);

struct Route6 {
    oif: u32,
    src: [u32; 4],
    /// The target is the next hop itself (no gateway): the kernel leaves
    /// the lookup's destination as it was unless the route has one.
    on_link: bool,
}

/// The route a packet from `src` arriving on `ifindex` would take to `dst`
/// (input-style lookup), with the source address the kernel would pick.
#[inline(always)]
fn route(
    ctx: &TcContext,
    ifindex: u32,
    proto: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
) -> Option<Route6> {
    let mut p = FibParams::v6(ifindex, proto, src, dst)?;
    if !p.lookup(ctx, ROUTE_WITH_SRC) {
        return None;
    }
    Some(Route6 {
        oif: p.oif(),
        src: p.src_v6(),
        on_link: p.nexthop_v6() == *dst,
    })
}

/// Which source the target sees and which way the flow goes, as the IPv4
/// path's `path::decide` decides them. Without a forwarding route (a
/// Kubernetes IPv6 ClusterIP, which kube-proxy's DNAT in PREROUTING makes
/// reachable; a local address; a kernel without BPF_FIB_LOOKUP_SRC) or
/// with `path = "stack"` the flow goes through the stack with the
/// client's address (the stack drops packets from its own addresses as
/// martians, so a SNATed one is refused); so does a flow that keeps the
/// client's address toward a target behind a gateway, unless `path =
/// "redirect"`. `snat = "auto"` keeps the client's address when the
/// target's replies would be routed back out of the interface the client
/// came in on (and the target is not on that side), like the IPv4 path
/// minus its learning (`path::auto_probe`, whose evidence map holds IPv4
/// clients); through the stack it always keeps it.
// A BPF-to-BPF call, as `path::decide`: inlined into the pipeline, LLVM
// kept a value in R1 across the FIB scratch lookup ("R1 !read_ok").
#[inline(never)]
pub fn decide(
    ctx: &TcContext,
    p: &Packet6,
    l: &ListenerValue,
    in_ifindex: u32,
) -> Result<Decision6, Reason> {
    let target = &l.target_addr;
    let forced_stack = l.flags.contains(ListenFlags::VIA_STACK);
    let to = if forced_stack {
        None
    } else {
        route(ctx, in_ifindex, p.p.proto, &p.src, target)
    };
    let src = match (&to, l.snat_mode) {
        _ if forced_stack => p.src,
        (_, SnatMode::FIXED) => l.snat_addr,
        (Some(to), SnatMode::MASQUERADE) => to.src,
        (None, SnatMode::MASQUERADE) => return Err(Reason::DropError),
        (Some(to), SnatMode::AUTO) => {
            let back = to.oif != in_ifindex
                && route(ctx, to.oif, p.p.proto, target, &p.src)
                    .is_some_and(|b| b.oif == in_ifindex);
            if back {
                p.src
            } else {
                to.src
            }
        }
        _ => p.src,
    };
    let mut flags = if src != p.src {
        FlowFlags::SNAT
    } else {
        FlowFlags::empty()
    };
    let redirect_to = match to {
        Some(to) if flags.contains(FlowFlags::SNAT) => Some(to.oif),
        Some(to) if to.on_link || l.flags.contains(ListenFlags::VIA_REDIRECT) => Some(to.oif),
        _ => None,
    };
    let reply_iface = match redirect_to {
        Some(oif) => oif,
        // SNAT with no forwarding route: nothing can deliver it.
        None if flags.contains(FlowFlags::SNAT) => return Err(Reason::DropError),
        None => {
            flags |= FlowFlags::VIA_STACK;
            in_ifindex
        }
    };
    Ok(Decision6 {
        src,
        flags,
        reply_iface,
    })
}

/// Where a translated packet goes (from `next_hop`): the FIB answer, in
/// per-CPU scratch (the egress device and the next hop's address), or,
/// for a flow through the stack, that scratch unused.
// One shape for both, on purpose: a redirect and a stack flow reach the
// rewrite in `super::translate` in the same verifier state, so the rewrite
// (and its MSS option walk) is verified once, not once per path (an enum
// here cost fwd_ingress6 108k instructions). `via_stack` tells them apart.
pub struct Next6 {
    fib: FibParams,
}

/// The route for a packet once translated to `src` -> `dst`, checked as a
/// router checks before forwarding (RFC 8200 3, RFC 4443 3.1), on the
/// packet as its sender sent it, so an answer quotes what the sender
/// knows: `Err` is the verdict instead (hop limit 1 or 0: time exceeded;
/// larger than the route's MTU: packet too big with that MTU, which IPv6
/// routers never fragment; no route or forwarding off: the stack's).
/// A flow through the stack (`e_flags` has `VIA_STACK`) gets the hop
/// limit check only: the stack routes it, as the IPv4 path's `translate`.
#[inline(always)]
pub fn next_hop(
    ctx: &TcContext,
    p: &Packet,
    e_flags: FlowFlags,
    src: &[u32; 4],
    dst: &[u32; 4],
) -> Result<Next6, Verdict> {
    if p.ttl <= 1 {
        return Err(Verdict::answer(Reason::ReplyTimeExceeded, 0));
    }
    let in_ifindex = skb::ifindex(ctx);
    let Some(mut fib) = FibParams::v6(in_ifindex, p.proto, src, dst) else {
        return Err(Verdict::ok(Reason::FwdStack));
    };
    if e_flags.contains(FlowFlags::VIA_STACK) {
        return Ok(Next6 { fib });
    }
    // A GSO packet leaves as segments of gso_size bytes of payload behind
    // the headers: those must fit (as the kernel's forwarding path checks
    // with skb_gso_validate_network_len), extension headers included.
    let gso = skb::gso_size(ctx);
    let l4_hlen = if p.proto == PROTO_TCP {
        p.tcp_hlen as u32
    } else {
        UDP_HLEN as u32
    };
    let len = if gso == 0 {
        p.tot_len
    } else {
        ((p.l4 - p.l3) as u32 + l4_hlen + gso).min(u16::MAX as u32) as u16
    };
    fib.set_tot_len(len);
    match fib.lookup_rc(ctx, FORWARD_ROUTE) {
        rc if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 => Ok(Next6 { fib }),
        rc if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 => {
            Err(Verdict::answer(Reason::ReplyFragNeeded, fib.mtu_result()))
        }
        _ => Err(Verdict::ok(Reason::FwdStack)),
    }
}

/// Whether `e` is a flow through the stack, which `super::translate`
/// hands to the stack as it is (`FwdStack`) rather than to `send`.
// Read anew from the entry after the rewrite, not kept from `next_hop`: a
// value kept in a register would give the two paths different states
// through the rewrite (see `Next6`).
#[inline(always)]
pub fn via_stack(e: &FlowEntry) -> bool {
    // SAFETY: a plain read of a field of a live map value.
    let flags = unsafe { core::ptr::read_volatile(&e.flags) };
    flags.contains(FlowFlags::VIA_STACK)
}

/// Sends a translated packet to the next hop `next_hop` found: hop limit
/// decremented (we bypass the stack's forwarding, which would), link
/// header pushed for an L3 ingress, neighbour resolved by the kernel.
#[inline(always)]
pub fn send(ctx: &TcContext, p: &Packet, next: &Next6) -> Result<Verdict, RewriteError> {
    let fib = &next.fib;
    let out = fib.oif();
    // No IP header checksum in IPv6: nothing balances the new hop limit
    // in skb->csum but the store itself.
    skb::store(
        ctx,
        p.l3 + IP6_HOP_LIMIT,
        &(p.ttl - 1),
        Store::RECOMPUTE_CSUM,
    )
    .map_err(|_| RewriteError::StoreTtl)?;
    if maps::iface(out).is_some_and(|c| c.flags.contains(IfaceFlags::L3)) {
        return Ok(Verdict::new(skb::redirect(out), Reason::FwdRedirect));
    }
    if p.l3 == 0 {
        // From an L3 device: room for the Ethernet header redirect_neigh
        // replaces (see fib::push_eth).
        skb::change_head(ctx, ETH_HLEN).map_err(|_| RewriteError::ChangeHead)?;
        skb::store(ctx, ETH_TYPE, &ETH_P_IPV6.to_be_bytes(), Store::PLAIN)
            .map_err(|_| RewriteError::StoreEthType)?;
    }
    let action = skb::redirect_neigh_v6(out, &fib.nexthop_v6());
    Ok(Verdict::new(action, Reason::FwdRedirect))
}

/// The address this host sends its own packets to `dst` from, out of the
/// interface the packet being answered came in on (as `fib::source_towards`).
#[inline(always)]
pub fn source_towards(ctx: &TcContext, dst: &[u32; 4]) -> Option<[u32; 4]> {
    let mut p = FibParams::v6(skb::ifindex(ctx), 0, &[0; 4], dst)?;
    p.lookup(ctx, OUTPUT_ROUTE | BPF_FIB_LOOKUP_SRC)
        .then(|| p.src_v6())
}
