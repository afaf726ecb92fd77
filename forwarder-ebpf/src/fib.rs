//! Forwarding decisions from the kernel's FIB, so routes, neighbours and
//! forwarding sysctls stay the kernel's business.
use aya_ebpf::{
    bindings::{BPF_FIB_LOOKUP_OUTPUT, BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC},
    programs::TcContext,
};
use forwarder_common::{IfaceFlags, Reason};

use crate::{
    error::RewriteError,
    hdr::{ETH_HLEN, ETH_P_IP, ETH_TYPE},
    helpers::{
        fib::FibParams,
        skb::{self, Store},
    },
    maps, nat,
    parse::Packet,
    verdict::Verdict,
};

/// Route only, as for the per-flow decision: no neighbour needed (the
/// redirect resolves it), and the source address the kernel would pick.
const ROUTE_WITH_SRC: u32 = BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH;
/// As for a packet this host sends itself (output lookup).
const OUTPUT_ROUTE: u32 = BPF_FIB_LOOKUP_OUTPUT | BPF_FIB_LOOKUP_SKIP_NEIGH;
/// Forwarding a packet: route and MTU; bpf_redirect_neigh resolves the
/// neighbour (see `forward`).
const FORWARD_ROUTE: u32 = BPF_FIB_LOOKUP_SKIP_NEIGH;

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

/// The route a packet from `src` arriving on `ifindex` would take to `dst`
/// (input-style lookup: forwarding must be enabled on `ifindex`). `None`
/// when the kernel would not forward it: no route, a local address,
/// blackhole, unreachable, forwarding disabled.
#[inline(always)]
pub fn route(ctx: &TcContext, ifindex: u32, proto: u8, src: u32, dst: u32) -> Option<Route> {
    let mut p = FibParams::v4(ifindex, proto, src, dst)?;
    if !p.lookup(ctx, ROUTE_WITH_SRC) {
        return None;
    }
    Some(Route {
        oif: p.oif(),
        nexthop: p.nexthop_v4(),
        src: p.src_v4(),
    })
}

/// The interface this host would send a locally generated packet to `dst`
/// out of (output-style lookup, as for a reply the stack generates).
#[inline(always)]
pub fn output_oif(ctx: &TcContext, dst: u32) -> Option<u32> {
    let mut p = FibParams::v4(0, 0, 0, dst)?;
    p.lookup(ctx, OUTPUT_ROUTE).then(|| p.oif())
}

#[inline(always)]
fn is_l3(ifindex: u32) -> bool {
    maps::iface(ifindex).is_some_and(|c| c.flags.contains(IfaceFlags::L3))
}

/// Sends a translated packet on: straight to the egress device when the
/// FIB has a plain answer, else to the stack. `p` holds the pre-translation
/// header facts (offsets, TTL); `src`/`dst` are the translated addresses.
/// An error is a failed TTL or link-header write: the packet is half-done.
#[inline(always)]
pub fn forward(ctx: &TcContext, p: &Packet, src: u32, dst: u32) -> Result<Verdict, RewriteError> {
    if p.ttl <= 1 {
        // Let the stack send Time Exceeded.
        return Ok(Verdict::ok(Reason::PassTtl));
    }
    let in_ifindex = skb::ifindex(ctx);
    let Some(mut fp) = FibParams::v4(in_ifindex, p.proto, src, dst) else {
        return Ok(Verdict::ok(Reason::FwdStack));
    };
    // GSO packets are segmented on egress: their IP length says nothing
    // about the MTU, so only check the MTU for single packets.
    if !skb::is_gso(ctx) {
        fp.set_tot_len(p.tot_len);
    }
    // SKIP_NEIGH: bpf_redirect_neigh resolves (and queues behind) the
    // neighbour itself. Handing a NO_NEIGH packet to the stack instead would
    // lose every SNATed packet: its source is now one of our own addresses,
    // which the stack drops as a martian, so the neighbour would never be
    // resolved and the flow could never start.
    if !fp.lookup(ctx, FORWARD_ROUTE) {
        // FRAG_NEEDED (the stack sends the ICMP), not forwarded, forwarding
        // disabled, blackhole...: the stack knows what to do.
        return Ok(Verdict::ok(Reason::FwdStack));
    }
    let out = fp.oif();
    nat::dec_ttl(ctx, p)?;
    if is_l3(out) {
        // No neighbours on an L3 device: a plain redirect, which strips
        // any Ethernet header for a device that has none
        // (__bpf_redirect_no_mac).
        return Ok(Verdict::new(skb::redirect(out), Reason::FwdRedirect));
    }
    if p.l3 == 0 {
        push_eth(ctx)?;
    }
    let action = skb::redirect_neigh_v4(out, fp.nexthop_v4());
    Ok(Verdict::new(action, Reason::FwdRedirect))
}

/// A packet from an L3 device (tun, wireguard) has no link header, and
/// bpf_redirect_neigh drops such skbs (`mac_header >= network_header` in
/// __bpf_redirect_neigh). bpf_skb_change_head exists for exactly this: it
/// pushes zeroed room for a MAC header, which redirect_neigh then strips
/// and replaces with the real one. Only the EtherType must be right.
#[inline(always)]
fn push_eth(ctx: &TcContext) -> Result<(), RewriteError> {
    skb::change_head(ctx, ETH_HLEN).map_err(|_| RewriteError::ChangeHead)?;
    skb::store(ctx, ETH_TYPE, &ETH_P_IP.to_be_bytes(), Store::PLAIN)
        .map_err(|_| RewriteError::StoreEthType)
}
