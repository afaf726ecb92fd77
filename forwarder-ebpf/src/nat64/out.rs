//! The IPv6 client's packets of a NAT64 flow, in `fwd_ingress6`: the new
//! flow's IPv4 source (`decide`), and each packet turned into an IPv4
//! packet from that source to the target (`translate`), after the checks a
//! router makes (hop limit; the IPv4 route's MTU, answered with packet too
//! big for that MTU + 20).
use aya_ebpf::programs::TcContext;
use forwarder_common::{
    addr_v4_word, FlowEntry, FlowFlags, ListenFlags, ListenerValue, Reason, SnatMode, PROTO_TCP,
    RULE_DROP_ERROR,
};

use crate::{
    counters,
    error::{log_rewrite_failed, RewriteError},
    fib::{self, NextHop, Route},
    hdr::{ETH_P_IP, ETH_TYPE, IPV4_HLEN, L4_DPORT, L4_SPORT, TCP_CHECK, TCP_SYN, UDP_CHECK},
    helpers::{
        skb::{self, Store},
        xlat,
    },
    ipv6::{
        parse::{bounded, Packet6, IPV6_HLEN},
        route::Decision6,
    },
    maps, mss, nat,
    parse::{Frag, Packet},
    reply::fold,
    verdict::Verdict,
};

/// The new NAT64 flow's IPv4 source and the interface its replies arrive
/// on: the forward's fixed `snat`, else the address the kernel would send
/// from toward the target (as IPv4 masquerade: BPF_FIB_LOOKUP_SRC, or the
/// daemon's route facts where the kernel lacks it), for a target with a
/// forwarding route of its own (on-link, or `path = "redirect"`). Any
/// other target (an IPv4 ClusterIP that only kube-proxy's DNAT in the
/// stack reaches, whose "route" is the default one) is the pool's
/// (`via_pool`). `None`: extension headers or fragments, or no pool: left
/// to the stack untranslated, as the IPv6 path leaves what only the stack
/// could deliver.
// A BPF-to-BPF call, as `ipv6::route::decide` (which it stands in for).
#[inline(never)]
pub fn decide(
    ctx: &TcContext,
    p: &Packet6,
    l: &ListenerValue,
    in_ifindex: u32,
) -> Result<Option<Decision6>, Reason> {
    if p.p.l4 != p.p.l3 + IPV6_HLEN || p.p.frag != Frag::None {
        // Extension headers and fragments are not translated: they would
        // have to be dropped or turned into IPv4 fragments (RFC 7915 5.1).
        return Ok(None);
    }
    let target = l.target_addr[0];
    // Zeroed when there is none rather than an Option (see path::decide).
    // The client's IPv6 address has no place in an IPv4 lookup: source 0.
    let to = match fib::route(ctx, in_ifindex, p.p.proto, 0, target) {
        Some(r) if !l.flags.contains(ListenFlags::VIA_STACK) => r,
        _ => Route::NONE,
    };
    if to.oif == 0 || (to.nexthop != target && !l.flags.contains(ListenFlags::VIA_REDIRECT)) {
        // No route, behind a gateway or only the stack's: a source of the
        // host's would be a martian to the stack, the pool's is not. Only
        // `path = "redirect"` vouches for the gateway.
        let d = via_pool(l);
        return Ok(if d.reply_iface == 0 { None } else { Some(d) });
    }
    let src = if l.snat_mode == SnatMode::FIXED {
        l.snat_addr[0]
    } else {
        to.src
    };
    if src == 0 {
        // No source known (no BPF_FIB_LOOKUP_SRC, no route facts yet).
        return Err(Reason::DropError);
    }
    Ok(Some(Decision6 {
        src: addr_v4_word(src),
        flags: FlowFlags::SNAT | FlowFlags::XLAT,
        reply_iface: to.oif,
    }))
}

/// A flow through the stack with the listener's pool source (see
/// `ListenerValue::snat_addr`), its replies leaving by the pool's device:
/// translated here and handed to the stack on the client's interface,
/// where netfilter's PREROUTING (kube-proxy's DNAT) and the routing
/// decision take it; its replies, routed to the pool, are translated back
/// at the pool device's egress (`back`). `reply_iface` 0: no pool.
// A plain value, every field set on every path: an Option's `None`
// leaves LLVM storing an uninitialised payload, which the verifier
// refuses (see path::decide).
#[inline(always)]
fn via_pool(l: &ListenerValue) -> Decision6 {
    let pool = l.snat_addr[1];
    // One field read in place: a copy of the config would cost 16 bytes
    // of a stack with no room left on 6.1.
    let dev = maps::CONFIG.get(0).map_or(0, |c| c.nat64_ifindex);
    Decision6 {
        src: addr_v4_word(pool),
        flags: FlowFlags::SNAT | FlowFlags::XLAT | FlowFlags::VIA_STACK,
        reply_iface: if pool == 0 { 0 } else { dev },
    }
}

/// The IPv4 packet `q` (an IPv6 packet, bounded offsets) becomes under
/// `e`: same place, 20 bytes shorter, the flow's new tuple.
#[inline(always)]
fn as_ipv4(q: &Packet, e: &FlowEntry) -> Packet {
    Packet {
        l3: q.l3,
        l4: q.l3 + IPV4_HLEN,
        proto: q.proto,
        ttl: q.ttl,
        tot_len: q.tot_len - (IPV6_HLEN - IPV4_HLEN) as u16,
        src: e.new_src[0],
        dst: e.new_dst[0],
        sport: e.new_sport,
        dport: e.new_dport,
        tcp_flags: q.tcp_flags,
        tcp_hlen: q.tcp_hlen,
        icmp_type: 0,
        frag: Frag::None,
        df: true,
        ip_id: 0,
    }
}

/// Translates the client's packet `p` of NAT64 flow entry `e` into IPv4
/// and sends it to the target's next hop, or for a flow through the stack
/// (`via_pool`) hands it to the stack as it is, TTL the hop limit.
// Own frame, at the depth of `ipv6::translate`, which it stands in for.
#[inline(never)]
pub fn translate(ctx: &TcContext, p: &Packet6, e: &FlowEntry) -> Verdict {
    let q = bounded(&p.p);
    if q.l4 != q.l3 + IPV6_HLEN {
        // Extension headers (see `decide`): to the stack untranslated.
        return Verdict::next(Reason::PassIpOptions);
    }
    if q.frag != Frag::None {
        return Verdict::next(Reason::PassFragment);
    }
    if q.ttl <= 1 {
        return Verdict::answer(Reason::ReplyTimeExceeded, 0);
    }
    let v4 = as_ipv4(&q, e);
    // Through the stack (the pool's flows): it forwards the packet and
    // decrements its TTL itself, and answers what does not fit.
    let stack = e.flags.contains(FlowFlags::VIA_STACK);
    let (oif, nexthop) = if stack {
        (0, 0)
    } else {
        match fib::next_hop(ctx, &v4, v4.src, v4.dst) {
            NextHop::Out { oif, nexthop } => (oif, nexthop),
            // Answered with the IPv6 MTU that fits (RFC 7915 5.1: IPv6
            // routers never fragment, so neither does this one).
            NextHop::TooBig(mtu) => {
                return Verdict::answer(Reason::ReplyFragNeeded, super::mtu_for_client(mtu))
            }
            // No forwarding route now: the stack would drop a packet from
            // one of its own addresses as a martian.
            NextHop::Stack => {
                counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
                return Verdict::shot(Reason::DropError);
            }
        }
    };
    let sent = rewrite(ctx, &q, p, e).and_then(|()| {
        if stack {
            Ok(Verdict::ok(Reason::FwdStack))
        } else {
            fib::send(ctx, &v4, oif, nexthop)
        }
    });
    match sent {
        Ok(v) => v,
        Err(err) => {
            log_rewrite_failed(ctx, e.rule_id, err);
            counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
            Verdict::shot(Reason::DropError)
        }
    }
}

/// Ports, MSS option and L4 checksum at the IPv6 offsets, then the family
/// change and the new IPv4 header (TTL still the hop limit: `fib::send`
/// decrements it with its checksum, as for any IPv4 packet).
#[inline(always)]
fn rewrite(ctx: &TcContext, q: &Packet, p: &Packet6, e: &FlowEntry) -> Result<(), RewriteError> {
    // Traffic class: the 4 bits after the version, the 4 bits after them.
    let vtc: [u8; 2] = skb::load(ctx, q.l3).map_err(|_| RewriteError::Load)?;
    let tos = (vtc[0] << 4) | (vtc[1] >> 4);
    nat::set_port(ctx, q, L4_SPORT, q.sport, e.new_sport)?;
    nat::set_port(ctx, q, L4_DPORT, q.dport, e.new_dport)?;
    if e.mss != 0
        && q.proto == PROTO_TCP
        && q.tcp_flags & TCP_SYN != 0
        && mss::clamp(ctx, q, e.mss)?
    {
        counters::count_mss_clamped(e.rule_id);
    }
    // The pseudo-header's addresses change family; its length and
    // protocol words sum the same in both (RFC 8200 8.1, RFC 793).
    let new = [e.new_src[0], e.new_dst[0]];
    let diff = xlat::csum_diff(&p.src, &new, 0)
        .and_then(|d| xlat::csum_diff::<u32, u32>(&p.dst, &[], d))
        .map_err(|_| RewriteError::L4Csum)?;
    let (csum, udp) = if q.proto == PROTO_TCP {
        (q.l4 + TCP_CHECK, false)
    } else {
        (q.l4 + UDP_CHECK, true)
    };
    xlat::l4_csum_add(ctx, csum, diff, udp).map_err(|_| RewriteError::L4Csum)?;
    xlat::change_proto(ctx, ETH_P_IP).map_err(|_| RewriteError::ChangeProto)?;
    let mut h = [0u8; IPV4_HLEN];
    ipv4_header(&mut h, tos, q, &new)?;
    skb::store(ctx, q.l3, &h, Store::RECOMPUTE_CSUM).map_err(|_| RewriteError::StoreHeader)?;
    if q.l3 != 0 {
        // The link header is outside skb->csum (a CHECKSUM_COMPLETE sum
        // starts at the network header): a plain store.
        skb::store(ctx, ETH_TYPE, &ETH_P_IP.to_be_bytes(), Store::PLAIN)
            .map_err(|_| RewriteError::StoreEthType)?;
    }
    Ok(())
}

/// RFC 7915 5.1: version 4, no options, TOS the traffic class, length,
/// identification 0 with DF (RFC 6864: an atomic datagram), TTL the hop
/// limit, the protocol, `addrs` source and destination, the checksum.
#[inline(always)]
fn ipv4_header(
    h: &mut [u8; IPV4_HLEN],
    tos: u8,
    q: &Packet,
    addrs: &[u32; 2],
) -> Result<(), RewriteError> {
    let len = (q.tot_len - (IPV6_HLEN - IPV4_HLEN) as u16).to_be_bytes();
    h[..12].copy_from_slice(&[
        0x45, tos, len[0], len[1], 0, 0, 0x40, 0, q.ttl, q.proto, 0, 0,
    ]);
    h[12..16].copy_from_slice(&addrs[0].to_ne_bytes());
    h[16..20].copy_from_slice(&addrs[1].to_ne_bytes());
    let sum = skb::csum_sum(&h[..], 0).map_err(|_| RewriteError::L3Csum)?;
    h[10..12].copy_from_slice(&fold(sum).to_ne_bytes());
    Ok(())
}
