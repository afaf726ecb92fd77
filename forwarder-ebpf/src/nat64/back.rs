//! `fwd_ingress64`: the IPv4 side of NAT64 flows, tail-called by
//! fwd_ingress for a packet whose flow entry is `FlowFlags::XLAT` (the
//! target's replies) or an ICMP error about such a flow (`icmp`). A reply
//! goes through the shared state machine (`conntrack::existing`) and
//! becomes an IPv6 packet from the forward's listen address to the client,
//! after the checks a router makes: TTL (answered with ICMP time exceeded
//! to the target, as the IPv4 path does) and the route to the client's
//! MTU (answered with fragmentation needed for that MTU - 20).
//!
//! The fact a reader gets wrong: this program parses the packet again and
//! finds its flow again. fwd_ingress only saw the flag: its 512-byte stack
//! has no room for the translation (Linux 6.1 verifies its deepest call
//! chain at exactly 512 bytes).
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_SKIP_NEIGH,
    },
    programs::TcContext,
};
use forwarder_common::{
    FlowEntry, FlowFlags, Hook, IfaceConfig, IfaceFlags, Reason, FEATURE_FIB_SKIP_NEIGH,
    PROTO_ICMP, PROTO_TCP, PROTO_UDP, RULE_DROP_ERROR, RULE_DROP_OUT_OF_WINDOW, TCX_NEXT,
};

use super::GROWTH;
use crate::{
    conntrack::{self, Arrival, Hit},
    counters,
    error::{log_rewrite_failed, RewriteError},
    flow::handled_here,
    hdr::{ETH_HLEN, ETH_TYPE, IPV4_HLEN, L4_DPORT, L4_SPORT, TCP_CHECK, TCP_SYN, UDP_CHECK},
    helpers::{
        fib::FibParams,
        kernel_has,
        skb::{self, Store},
        xlat,
    },
    ipv6::parse::{ETH_P_IPV6, IPV6_HLEN},
    maps, mss, nat,
    parse::{self, Frag, Packet},
    reply,
    verdict::Verdict,
};

/// The whole of `fwd_ingress64`: the interface's settings, the packet,
/// the translation, the interface counter (as `tc::run`).
#[inline(always)]
pub fn entry(ctx: &TcContext) -> i32 {
    let ifindex = skb::ifindex(ctx);
    let Some(iface) = maps::iface(ifindex) else {
        return TCX_NEXT;
    };
    // The pool's device (`at_pool_egress`): read from `iface` where
    // needed, not kept in locals of its own (6.1's 512-byte stack).
    let len = ctx.len();
    let verdict = match parse::packet(ctx, iface.flags.contains(IfaceFlags::L3)) {
        Ok(p) => {
            let v = if p.frag != Frag::None {
                // Not reassembled here (see the module comment of `nat64`).
                Verdict::next(Reason::PassFragment)
            } else if p.proto == PROTO_ICMP {
                if at_pool_egress(&iface) {
                    // Not translated at the pool's device (docs/
                    // CONFORMANCE.md): the dummy drops it.
                    Verdict::next(Reason::PassNoMatch)
                } else {
                    // An ICMP error about a NAT64 flow (a call of its own,
                    // at the depth of `run`).
                    super::icmp::translate(ctx, &p, ifindex)
                }
            } else {
                run(ctx, &p, ifindex, len, at_pool_egress(&iface))
            };
            if v.is_answer() {
                // Time exceeded, fragmentation needed: to the target.
                reply::answer(ctx, &p, v)
            } else {
                v
            }
        }
        Err(reason) => Verdict::next(reason),
    };
    let hook = if at_pool_egress(&iface) {
        Hook::TcEgress
    } else {
        Hook::TcIngress
    };
    counters::count_iface(iface.slot, hook, verdict.reason(), len);
    verdict.action()
}

/// Whether this run is at egress of the NAT64 pool's device: nothing
/// arrives there; the replies of flows through the stack leave by it (see
/// `nat64::out::via_pool`), and fwd_egress hands them over only there.
#[inline(always)]
fn at_pool_egress(iface: &IfaceConfig) -> bool {
    iface.flags.contains(IfaceFlags::NAT64_DEV)
}

// Out of line, as every stage below: the entry's frame holds the parsed
// packet, and the deepest chain (run, translate, rewrite, mss::clamp)
// must fit 512 bytes. `egress`: at the pool's device, where only the
// replies of flows through the stack are translated.
#[inline(never)]
fn run(ctx: &TcContext, p: &Packet, ifindex: u32, len: u32, egress: bool) -> Verdict {
    if p.proto != PROTO_TCP && p.proto != PROTO_UDP {
        return Verdict::next(Reason::PassNoMatch);
    }
    let key = conntrack::key_of(p);
    let Some(flow) = maps::flow(key) else {
        return Verdict::next(Reason::PassNoMatch);
    };
    let hook = if egress {
        Hook::TcEgress
    } else {
        Hook::TcIngress
    };
    if !flow.entry().flags.contains(FlowFlags::XLAT) || !handled_here(flow.entry(), hook) {
        return Verdict::next(Reason::PassNoMatch);
    }
    let a = Arrival { ifindex, len };
    match conntrack::existing(ctx, p, flow.entry_mut(), &key, &a) {
        Hit::Forward => {}
        // Expired: nothing to translate it to; the stack answers it.
        Hit::Gone => return Verdict::next(Reason::PassNoMatch),
        Hit::WrongIface => return Verdict::next(Reason::PassWrongIface),
        Hit::OutOfWindow => {
            counters::count_rule_drop(flow.entry().rule_id, RULE_DROP_OUT_OF_WINDOW);
            return Verdict::shot(Reason::DropOutOfWindow);
        }
    }
    let e = flow.entry();
    counters::count_rule(e.rule_id, len);
    translate(ctx, p, e)
}

/// Translates the target's packet `p` of NAT64 reply entry `e` into IPv6
/// and sends it to the client's next hop.
// Own frame: the FIB answer and the header buffer stay off `run`'s.
#[inline(never)]
fn translate(ctx: &TcContext, p: &Packet, e: &FlowEntry) -> Verdict {
    // A reply through the stack (`VIA_STACK`, at the pool's egress) was
    // forwarded by it already: its TTL checked and decremented.
    let stack = e.flags.contains(FlowFlags::VIA_STACK);
    if p.ttl <= 1 && !stack {
        return Verdict::answer(Reason::ReplyTimeExceeded, 0);
    }
    let refused = if p.l4 != p.l3 + IPV4_HLEN {
        // IPv4 options: RFC 7915 4.1 drops them; a target sends none.
        true
    } else {
        // A UDP datagram without checksum: IPv6 requires one, and the
        // whole datagram would have to be summed (RFC 7915 4.5 lets a
        // translator drop it).
        p.proto == PROTO_UDP && skb::load::<u16>(ctx, p.l4 + UDP_CHECK).unwrap_or(0) == 0
    };
    if refused {
        counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
        return Verdict::shot(Reason::DropError);
    }
    let (oif, fib) = match next_hop(ctx, p.proto, e, p.tot_len + GROWTH) {
        Ok(next) => next,
        // No answer from the pool's egress: the packet's source is the
        // target's un-DNATed address, an error to it would need the
        // stack's NAT (docs/CONFORMANCE.md; TCP is kept within the path
        // by the client's MSS).
        Err(v) if !v.is_answer() || stack => {
            counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
            return Verdict::shot(Reason::DropError);
        }
        Err(v) => return v,
    };
    // Two calls in a row rather than one inside the other: the chain down
    // to mss::clamp stays within 512 bytes.
    let done = rewrite(ctx, p, e)
        .and_then(|()| to_ipv6(ctx, p, e))
        .and_then(|()| send(ctx, p.l3, oif, &fib));
    match done {
        Ok(v) => v,
        Err(err) => {
            log_rewrite_failed(ctx, e.rule_id, err);
            counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
            Verdict::shot(Reason::DropError)
        }
    }
}

/// The route to the client of reply entry `e` (`new_dst`) for an IPv6
/// packet of `v6_len` bytes, as a forwarding lookup from the interface
/// the client's packets arrive on (where IPv6 forwarding is on: the
/// IPv4 side may have no IPv6 at all). `Err`: the answer (fragmentation
/// needed for the route's MTU - 20: the IPv4 size that fits) or a drop
/// (no route to the client).
#[inline(always)]
pub(super) fn next_hop(
    ctx: &TcContext,
    proto: u8,
    e: &FlowEntry,
    v6_len: u16,
) -> Result<(u32, FibParams), Verdict> {
    let from = if e.ct.out_iface != 0 {
        e.ct.out_iface
    } else {
        skb::ifindex(ctx)
    };
    let Some(mut fib) = FibParams::v6(from, proto, &e.new_src, &e.new_dst) else {
        return Err(Verdict::shot(Reason::DropError));
    };
    // A GSO packet is checked per segment on egress (bpf_skb_change_proto
    // lowered its segment size by 20).
    if v6_len != 0 && !skb::is_gso(ctx) {
        fib.set_tot_len(v6_len);
    }
    let skip_neigh = kernel_has(FEATURE_FIB_SKIP_NEIGH);
    let flags = if skip_neigh {
        BPF_FIB_LOOKUP_SKIP_NEIGH
    } else {
        0
    };
    let rc = fib.lookup_rc(ctx, flags) as u32;
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED {
        let mtu = fib.mtu_result().saturating_sub(GROWTH);
        return Err(Verdict::answer(Reason::ReplyFragNeeded, mtu));
    }
    // Without SKIP_NEIGH an unresolved neighbour names no interface: the
    // one the client's packets came in on (as `fib::flow_next_hop`).
    let oif = if rc == BPF_FIB_LKUP_RET_SUCCESS {
        fib.oif()
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH && !skip_neigh {
        e.ct.out_iface
    } else {
        0
    };
    if oif == 0 {
        return Err(Verdict::shot(Reason::DropError));
    }
    Ok((oif, fib))
}

/// Ports and MSS option at the IPv4 offsets.
#[inline(never)]
fn rewrite(ctx: &TcContext, p: &Packet, e: &FlowEntry) -> Result<(), RewriteError> {
    nat::set_port(ctx, p, L4_SPORT, p.sport, e.new_sport)?;
    nat::set_port(ctx, p, L4_DPORT, p.dport, e.new_dport)?;
    if e.mss != 0
        && p.proto == PROTO_TCP
        && p.tcp_flags & TCP_SYN != 0
        && mss::clamp(ctx, p, e.mss)?
    {
        counters::count_mss_clamped(e.rule_id);
    }
    Ok(())
}

/// The L4 checksum for the new pseudo-header, the family change and the
/// new IPv6 header (hop limit: the TTL decremented, unless the stack did
/// already: a reply through the stack, `VIA_STACK`).
// Out of line: its header buffer stays off the frames above mss::clamp.
#[inline(never)]
fn to_ipv6(ctx: &TcContext, p: &Packet, e: &FlowEntry) -> Result<(), RewriteError> {
    let forwarded = e.flags.contains(FlowFlags::VIA_STACK);
    let tos: u8 = skb::load(ctx, p.l3 + 1).map_err(|_| RewriteError::Load)?;
    let old = [p.src, p.dst];
    let diff = xlat::csum_diff(&old, &e.new_src, 0)
        .and_then(|d| xlat::csum_diff::<u32, u32>(&[], &e.new_dst, d))
        .map_err(|_| RewriteError::L4Csum)?;
    let (csum, udp) = if p.proto == PROTO_TCP {
        (p.l4 + TCP_CHECK, false)
    } else {
        (p.l4 + UDP_CHECK, true)
    };
    xlat::l4_csum_add(ctx, csum, diff, udp).map_err(|_| RewriteError::L4Csum)?;
    xlat::change_proto(ctx, ETH_P_IPV6).map_err(|_| RewriteError::ChangeProto)?;
    let mut h = [0u8; IPV6_HLEN];
    let payload = p.tot_len - IPV4_HLEN as u16;
    ipv6_header(
        &mut h,
        tos,
        payload,
        p.proto,
        if forwarded { p.ttl } else { p.ttl - 1 },
        &e.new_src,
        &e.new_dst,
    );
    skb::store(ctx, p.l3, &h, Store::RECOMPUTE_CSUM).map_err(|_| RewriteError::StoreHeader)?;
    if p.l3 != 0 {
        skb::store(ctx, ETH_TYPE, &ETH_P_IPV6.to_be_bytes(), Store::PLAIN)
            .map_err(|_| RewriteError::StoreEthType)?;
    }
    Ok(())
}

/// RFC 7915 4.1: version 6, traffic class the TOS, no flow label, the
/// payload length, next header the protocol, `hop` limit, the addresses
/// (as the flow table holds them), into `h[..40]`.
#[inline(always)]
pub(super) fn ipv6_header(
    h: &mut [u8],
    tos: u8,
    payload: u16,
    next: u8,
    hop: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
) {
    if h.len() < IPV6_HLEN {
        return;
    }
    let len = payload.to_be_bytes();
    h[..8].copy_from_slice(&[0x60 | (tos >> 4), tos << 4, 0, 0, len[0], len[1], next, hop]);
    let mut i = 0;
    while i < 4 {
        h[8 + 4 * i..12 + 4 * i].copy_from_slice(&src[i].to_ne_bytes());
        h[24 + 4 * i..28 + 4 * i].copy_from_slice(&dst[i].to_ne_bytes());
        i += 1;
    }
}

/// Sends a packet that became IPv6 out of `oif` (as `ipv6::route::send`
/// without the hop limit, already written): a plain redirect to an L3
/// device, else through the next hop's neighbour, which the kernel
/// resolves; a packet from an L3 device first gets the room for a link
/// header bpf_redirect_neigh needs (`fib::push_eth`).
#[inline(always)]
pub(super) fn send(
    ctx: &TcContext,
    l3: usize,
    oif: u32,
    fib: &FibParams,
) -> Result<Verdict, RewriteError> {
    if maps::iface(oif).is_some_and(|c| c.flags.contains(IfaceFlags::L3)) {
        return Ok(Verdict::new(skb::redirect(oif), Reason::FwdRedirect));
    }
    if l3 == 0 {
        skb::change_head(ctx, ETH_HLEN).map_err(|_| RewriteError::ChangeHead)?;
        skb::store(ctx, ETH_TYPE, &ETH_P_IPV6.to_be_bytes(), Store::PLAIN)
            .map_err(|_| RewriteError::StoreEthType)?;
    }
    let action = skb::redirect_neigh_v6(oif, &fib.nexthop_v6());
    Ok(Verdict::new(action, Reason::FwdRedirect))
}
