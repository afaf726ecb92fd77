//! Forwarding decisions from the kernel's FIB, so routes, neighbours and
//! forwarding sysctls stay the kernel's business.
//!
//! On kernels whose lookup lacks BPF_FIB_LOOKUP_SKIP_NEIGH (< 6.3) or
//! BPF_FIB_LOOKUP_SRC (< 6.8, unless backported) the daemon fills in
//! (`forwarder_common::kernel`): without SKIP_NEIGH an unresolved
//! neighbour answers NO_NEIGH, which still is a route (the next hop is
//! written, bpf_redirect_neigh resolves it) but says nothing of the
//! egress interface, so that comes from the daemon's `ip route get` of the
//! target (`maps::route_hint`); without SRC so does the source address.
//! The branches are chosen by a load-time constant (`kernel_has`).
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_OUTPUT, BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC,
    },
    programs::TcContext,
};
use forwarder_common::{
    FibCache, FibFlags, IfaceFlags, NeighFlags, Reason, FEATURE_FIB_SKIP_NEIGH, FEATURE_FIB_SRC,
};

use crate::{
    error::RewriteError,
    hdr::{ETH_HLEN, ETH_P_IP, ETH_TYPE},
    helpers::{
        fib::FibParams,
        kernel_has,
        skb::{self, Store},
    },
    maps::{self, FlowRef},
    nat,
    parse::Packet,
    verdict::Verdict,
};

/// Forwarding a packet: route and MTU, no neighbour needed
/// (bpf_redirect_neigh resolves it, see `next_hop`), where the kernel has
/// the flag; without it the lookup also looks for the neighbour and
/// answers NO_NEIGH when it is unresolved (`egress`).
#[inline(always)]
fn forward_flags() -> u32 {
    if kernel_has(FEATURE_FIB_SKIP_NEIGH) {
        BPF_FIB_LOOKUP_SKIP_NEIGH
    } else {
        0
    }
}

/// As `forward_flags`, and the source address the kernel would pick where
/// the kernel can say (else `RouteHint::src`).
#[inline(always)]
fn route_flags() -> u32 {
    if kernel_has(FEATURE_FIB_SRC) {
        forward_flags() | BPF_FIB_LOOKUP_SRC
    } else {
        forward_flags()
    }
}

/// The egress interface of a lookup for `dst` that answered `rc`; 0 when
/// it is not a forwarding route. NO_NEIGH is one only without SKIP_NEIGH
/// (with it, an unresolved neighbour answers SUCCESS), and then the
/// kernel kept the interface to itself (it writes `ifindex` only on
/// SUCCESS before 6.3): the daemon's route facts for `dst` say it (for a
/// flow, `flow_next_hop` has one more answer).
#[inline(always)]
fn egress(p: &FibParams, rc: u32, dst: u32) -> u32 {
    if rc == BPF_FIB_LKUP_RET_SUCCESS {
        p.oif()
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH && !kernel_has(FEATURE_FIB_SKIP_NEIGH) {
        maps::route_hint(dst).oif
    } else {
        0
    }
}

/// What the FIB says about a destination.
#[derive(Clone, Copy)]
pub struct Route {
    /// Egress interface.
    pub oif: u32,
    /// Next hop: the destination itself when it is on-link (a connected
    /// route), else the gateway.
    pub nexthop: u32,
    /// The source address the kernel would pick (route preferred source or
    /// the egress device's primary address; BPF_FIB_LOOKUP_SRC, Linux 6.8,
    /// else the daemon's route facts for the destination). 0 without SRC
    /// for a destination the daemon has no facts for (not a target).
    pub src: u32,
}

impl Route {
    /// No route: every field zero.
    pub const NONE: Route = Route {
        oif: 0,
        nexthop: 0,
        src: 0,
    };
}

/// The route a packet from `src` arriving on `ifindex` would take to `dst`
/// (input-style lookup: forwarding must be enabled on `ifindex`). `None`
/// when the kernel would not forward it: no route, a local address,
/// blackhole, unreachable, forwarding disabled.
#[inline(always)]
pub fn route(ctx: &TcContext, ifindex: u32, proto: u8, src: u32, dst: u32) -> Option<Route> {
    let mut p = FibParams::v4(ifindex, proto, src, dst)?;
    let rc = p.lookup_rc(ctx, route_flags()) as u32;
    let oif = egress(&p, rc, dst);
    if oif == 0 {
        return None;
    }
    let src = if kernel_has(FEATURE_FIB_SRC) {
        p.src_v4()
    } else {
        maps::route_hint(dst).src
    };
    Some(Route {
        oif,
        nexthop: p.nexthop_v4(),
        src,
    })
}

/// Whether the route a packet from `src` arriving on `from` would take to
/// `dst` leaves by `out`. Without SKIP_NEIGH a route to an unresolved
/// neighbour names no interface (a client on a tun device has no
/// neighbour entry until the host sends to it): then whether a route to
/// `dst` through `out` exists, asked as an output lookup bound to `out`,
/// which matches only routes through that device.
#[inline(always)]
pub fn route_leaves_by(
    ctx: &TcContext,
    from: u32,
    proto: u8,
    src: u32,
    dst: u32,
    out: u32,
) -> bool {
    if let Some(r) = route(ctx, from, proto, src, dst) {
        return r.oif == out;
    }
    if kernel_has(FEATURE_FIB_SKIP_NEIGH) {
        return false;
    }
    let Some(mut p) = FibParams::v4(out, 0, 0, dst) else {
        return false;
    };
    let rc = p.lookup_rc(ctx, BPF_FIB_LOOKUP_OUTPUT) as u32;
    rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH
}

#[inline(always)]
fn is_l3(ifindex: u32) -> bool {
    maps::iface(ifindex).is_some_and(|c| c.flags.contains(IfaceFlags::L3))
}

/// Where a packet goes after translation, decided before it is touched
/// (issue 12: a check after the rewrite can only hand the stack a packet
/// it must drop as a martian).
#[derive(Clone, Copy)]
pub enum NextHop {
    /// Redirect out of `oif` through next hop `nexthop`.
    Out { oif: u32, nexthop: u32 },
    /// No plain answer (not forwarded, forwarding disabled, blackhole,
    /// unreachable): the stack decides, after translation.
    Stack,
    /// Bigger than the egress MTU (`mtu`).
    TooBig(u16),
}

/// The next hop of a packet `p` that will leave translated to `src` ->
/// `dst`. Only a non-GSO packet is checked against the MTU: a GSO packet is
/// segmented on egress, its IP length says nothing about the MTU.
#[inline(always)]
pub fn next_hop(ctx: &TcContext, p: &Packet, src: u32, dst: u32) -> NextHop {
    let Some(mut fp) = FibParams::v4(skb::ifindex(ctx), p.proto, src, dst) else {
        return NextHop::Stack;
    };
    if !kernel_has(FEATURE_FIB_SKIP_NEIGH) {
        return next_hop_without_skip_neigh(ctx, p, fp, dst);
    }
    if !skb::is_gso(ctx) {
        fp.set_tot_len(p.tot_len);
    }
    // SKIP_NEIGH: bpf_redirect_neigh resolves (and queues behind) the
    // neighbour itself. Handing a NO_NEIGH packet to the stack instead would
    // lose every SNATed packet: its source is now one of our own addresses,
    // which the stack drops as a martian, so the neighbour would never be
    // resolved and the flow could never start.
    let rc = fp.lookup_rc(ctx, forward_flags()) as u32;
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED {
        return NextHop::TooBig(fp.mtu_result());
    }
    match egress(&fp, rc, dst) {
        0 => NextHop::Stack,
        oif => NextHop::Out {
            oif,
            nexthop: fp.nexthop_v4(),
        },
    }
}

/// `next_hop` on a kernel without SKIP_NEIGH: a NO_NEIGH answer (and,
/// before 5.12, any answer) carries no MTU, so the lookup checks none and
/// the packet is compared with the daemon's MTU toward `dst` (none known,
/// not a target: the egress device's own check).
#[inline(always)]
fn next_hop_without_skip_neigh(
    ctx: &TcContext,
    p: &Packet,
    mut fp: FibParams,
    dst: u32,
) -> NextHop {
    let rc = fp.lookup_rc(ctx, forward_flags()) as u32;
    let oif = egress(&fp, rc, dst);
    if oif == 0 {
        return NextHop::Stack;
    }
    let mtu = maps::route_hint(dst).mtu;
    if mtu != 0 && !skb::is_gso(ctx) && p.tot_len as u32 > mtu {
        return NextHop::TooBig(mtu as u16);
    }
    NextHop::Out {
        oif,
        nexthop: fp.nexthop_v4(),
    }
}

/// The IP length the cache-filling lookup asks about: an IP header, which
/// fits any MTU, so the lookup answers SUCCESS with the route's MTU in
/// `mtu_result` (the same `ip_mtu_from_fib_result` the kernel compares a
/// given length with) and `flow_next_hop` compares each packet itself.
const ANY_LEN: u16 = 20;

/// The route generation the daemon last published (0 while none).
#[inline(always)]
fn route_gen() -> u32 {
    maps::ROUTE_GEN.get(0).copied().unwrap_or(0)
}

/// `next_hop` for a packet of `flow` translated to the flow's own
/// addresses, from the flow's cached FIB answer when it is of the current
/// route generation (issue 19: the lookup was the largest single cost of a
/// forwarded packet). Otherwise the FIB is asked and a forwarding answer
/// cached, with what the packets of the flow would otherwise look up in a
/// map each (`FibFlags`: an L3 egress device, a dead next hop); any other
/// answer (stack, no route) is asked again each time.
/// The MTU check is the kernel's (`tot_len > mtu`, GSO packets exempt),
/// made here against the cached route MTU.
#[inline(always)]
pub fn flow_next_hop(ctx: &TcContext, p: &Packet, flow: FlowRef) -> NextHop {
    let gen = route_gen();
    let c = flow.entry().fib;
    let (oif, nexthop, mtu) = if c.oif != 0 && c.gen == gen {
        (c.oif, c.nexthop, c.mtu)
    } else {
        let e = flow.entry();
        let Some(mut fp) = FibParams::v4(skb::ifindex(ctx), p.proto, e.new_src[0], e.new_dst[0])
        else {
            return NextHop::Stack;
        };
        let with_mtu = kernel_has(FEATURE_FIB_SKIP_NEIGH);
        if with_mtu {
            fp.set_tot_len(ANY_LEN);
        }
        let rc = fp.lookup_rc(ctx, forward_flags()) as u32;
        let mut oif = egress(&fp, rc, e.new_dst[0]);
        if oif == 0 && !kernel_has(FEATURE_FIB_SKIP_NEIGH) && rc == BPF_FIB_LKUP_RET_NO_NEIGH {
            // No route facts for the destination (a client, not a target):
            // where the flow's packets leave, decided at its creation. A
            // reply to a client on a tun device needs it: no neighbour
            // entry exists there until the host itself sent to it.
            oif = e.ct.out_iface;
        }
        if oif == 0 {
            return NextHop::Stack;
        }
        // Without SKIP_NEIGH the answer may carry no MTU (see
        // `next_hop_without_skip_neigh`): the daemon's, or no check.
        let mtu = if with_mtu {
            fp.mtu_result()
        } else {
            match maps::route_hint(e.new_dst[0]).mtu {
                0 => u16::MAX,
                m => m.min(u16::MAX as u32) as u16,
            }
        };
        let nexthop = fp.nexthop_v4();
        // Read once here, not per packet (see `FibFlags`).
        let mut flags = FibFlags::empty();
        if is_l3(oif) {
            flags |= FibFlags::L3_OIF;
        }
        if maps::neigh(nexthop).contains(NeighFlags::UNREACHABLE) {
            flags |= FibFlags::NEIGH_UNREACHABLE;
        }
        let fresh = FibCache {
            oif,
            nexthop,
            gen,
            mtu,
            flags,
        };
        flow.entry_mut().fib = fresh;
        (fresh.oif, fresh.nexthop, fresh.mtu)
    };
    if !skb::is_gso(ctx) && p.tot_len > mtu {
        return NextHop::TooBig(mtu);
    }
    NextHop::Out { oif, nexthop }
}

/// The address this host sends its own packets to `dst` from, out of the
/// interface the packet being answered came in on (output lookup with
/// BPF_FIB_LOOKUP_SRC): the source of the answers it builds. The lookup
/// needs a real device (`ifindex` 0 fails with ENODEV), and binding it to
/// the ingress device picks that device's route back. Without SRC: the
/// daemon's source toward `dst` when it is a target, else `addressed_to`
/// (the address the answered packet was sent to, one of ours for
/// everything the programs answer but a reply that keeps the client's
/// address, whose `dst` is the target).
#[inline(always)]
pub fn source_towards(ctx: &TcContext, dst: u32, addressed_to: u32) -> Option<u32> {
    if !kernel_has(FEATURE_FIB_SRC) {
        let hint = maps::route_hint(dst).src;
        return Some(if hint != 0 { hint } else { addressed_to });
    }
    let mut p = FibParams::v4(skb::ifindex(ctx), 0, 0, dst)?;
    p.lookup(
        ctx,
        BPF_FIB_LOOKUP_OUTPUT | forward_flags() | BPF_FIB_LOOKUP_SRC,
    )
    .then(|| p.src_v4())
}

/// Sends a translated packet out of `oif` through `nexthop` (from
/// `next_hop`): TTL decremented (we bypass the stack's forwarding, which
/// would), then `out`. An error is a failed TTL or link-header write: the
/// packet is half-done.
#[inline(always)]
pub fn send(ctx: &TcContext, p: &Packet, oif: u32, nexthop: u32) -> Result<Verdict, RewriteError> {
    nat::dec_ttl(ctx, p)?;
    out(ctx, p, oif, nexthop, is_l3(oif))
}

/// Redirects a packet whose TTL is already decremented out of `oif`
/// (`l3_oif`: an L3 device) through `nexthop`: link header pushed for an
/// L3 ingress, neighbour resolved by the kernel.
#[inline(always)]
pub fn out(
    ctx: &TcContext,
    p: &Packet,
    oif: u32,
    nexthop: u32,
    l3_oif: bool,
) -> Result<Verdict, RewriteError> {
    if l3_oif {
        // No neighbours on an L3 device: a plain redirect, which strips
        // any Ethernet header for a device that has none
        // (__bpf_redirect_no_mac).
        return Ok(Verdict::new(skb::redirect(oif), Reason::FwdRedirect));
    }
    if p.l3 == 0 {
        push_eth(ctx)?;
    }
    let action = skb::redirect_neigh_v4(oif, nexthop);
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
