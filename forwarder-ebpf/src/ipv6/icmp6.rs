//! ICMPv6 errors (destination unreachable, packet too big, time exceeded,
//! parameter problem: RFC 4443 3) about a NAT66 flow, translated back as
//! the IPv4 path's `icmp` translates ICMP errors: the error quotes the
//! packet as we translated it, so its flow is found by the reversed quote;
//! the quoted addresses and ports become what the flow's peer sent, the
//! outer destination the peer, and the error goes to the peer. Without
//! this a client behind a NAT66 forward never learns a smaller path MTU
//! (and a pod never learns the tailnet's 1280 bytes).
//!
//! The one fact a reader would get wrong: the ICMPv6 checksum covers a
//! pseudo-header (RFC 4443 2.3), unlike ICMP's: the outer addresses'
//! changes go into it with BPF_F_PSEUDO_HDR, as a TCP/UDP checksum's do
//! (`nat`), while the quoted bytes' changes are plain data to it. And the
//! quoted TCP/UDP checksum covers the quoted addresses (its own
//! pseudo-header): every quoted address word changes it too.
//!
//! Echo requests and replies (128, 129) and neighbour discovery and
//! router advertisements (133-137) never come here: `ipv6::run` passes
//! them to the stack untouched (`PassNoMatch`), as the IPv4 path passes an
//! echo to a listener's address.
use aya_ebpf::programs::TcContext;
use forwarder_common::{
    FlowEntry, FlowFlags, FlowKey, Hook, Reason, AF_INET6, PROTO_TCP, PROTO_UDP,
};
use network_types::ip::Ipv6Hdr;

use super::{
    parse::{bounded, Packet6, ICMPV6_HLEN, IP6_DST, IP6_SRC, IPV6_HLEN},
    route,
};
use crate::{
    conntrack,
    error::{log_rewrite_failed, RewriteError},
    evict,
    flow::handled_here,
    hdr::{L4_DPORT, L4_SPORT, QUOTED_L4_MIN, TCP_CHECK, UDP_CHECK, UDP_HLEN},
    helpers::{
        frame::Frame,
        skb::{self, L4Csum, Store},
    },
    icmp::replace,
    maps,
    parse::Packet,
    verdict::Verdict,
};

/// The ICMPv6 checksum, from the start of its header.
const ICMPV6_CHECK: usize = 2;

/// Whether an ICMPv6 type is one of the errors translated here.
#[inline(always)]
pub fn is_error(icmp_type: u8) -> bool {
    (1..=4).contains(&icmp_type)
}

/// The quoted header as found in the error.
struct Inner {
    /// Offsets of the quoted IPv6 header and the L4 header after it.
    l3: usize,
    l4: usize,
    sport: u16,
    dport: u16,
    /// Offset of the quoted L4 checksum, when the error quotes it.
    l4_csum: Option<usize>,
}

/// The quoted IPv6 header and the first 8 bytes of its TCP or UDP header
/// right after it, with the flow key of the direction the error travels
/// (the quote reversed) into `key`. A quote with extension headers is
/// not one of our packets: we send none.
#[inline(always)]
fn parse_inner(ctx: &TcContext, q: &Packet, key: &mut FlowKey) -> Option<Inner> {
    let l3 = q.l4 + ICMPV6_HLEN;
    let h: &Ipv6Hdr = ctx.header(l3)?;
    if h.version() != 6 {
        return None;
    }
    let proto = h.next_hdr;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let l4 = l3 + IPV6_HLEN;
    let ports: &[u8; QUOTED_L4_MIN] = ctx.header(l4)?;
    let sport = u16::from_ne_bytes([ports[L4_SPORT], ports[L4_SPORT + 1]]);
    let dport = u16::from_ne_bytes([ports[L4_DPORT], ports[L4_DPORT + 1]]);
    // How much of the quoted L4 header the error holds.
    let quoted = (q.tot_len as usize).saturating_sub(l4 - q.l3);
    let l4_csum = match proto {
        PROTO_TCP if quoted >= TCP_CHECK + 2 => Some(l4 + TCP_CHECK),
        // A zero UDP checksum means "none" (not valid on IPv6, but not
        // ours to fix): left alone.
        PROTO_UDP if quoted >= UDP_HLEN && (ports[UDP_CHECK] | ports[UDP_CHECK + 1]) != 0 => {
            Some(l4 + UDP_CHECK)
        }
        _ => None,
    };
    // Field by field (see `flow::set_key`): source and destination swap.
    let mut i = 0;
    while i < 4 {
        let w = 4 * i;
        key.src[i] = u32::from_ne_bytes([
            h.dst_addr[w],
            h.dst_addr[w + 1],
            h.dst_addr[w + 2],
            h.dst_addr[w + 3],
        ]);
        key.dst[i] = u32::from_ne_bytes([
            h.src_addr[w],
            h.src_addr[w + 1],
            h.src_addr[w + 2],
            h.src_addr[w + 3],
        ]);
        i += 1;
    }
    key.sport = dport;
    key.dport = sport;
    key.proto = proto;
    key.family = AF_INET6;
    key._pad = [0; 2];
    Some(Inner {
        l3,
        l4,
        sport,
        dport,
        l4_csum,
    })
}

/// Translates an ICMPv6 error about a tracked flow; an error that is not
/// ours gets `PassNoMatch` (the stack's), one that arrived on an
/// interface the flow's packets of its direction do not `PassWrongIface`
/// (as on IPv4: a forged error must not reach a peer translated). A
/// translated error is sent on from the top of the program
/// (`Verdict::answer(FwdRedirect)`, see `send`); one whose hop limit runs
/// out is dropped: no ICMPv6 error about an ICMPv6 error (RFC 4443 2.4(e)).
// A BPF-to-BPF call rather than inlined: its locals get their own frame.
#[inline(never)]
pub fn error(ctx: &TcContext, p: &Packet6, ifindex: u32) -> Verdict {
    const NOT_OURS: Verdict = Verdict::next(Reason::PassNoMatch);
    let q = bounded(&p.p);
    // The quoted IPv6 header and the 8 bytes after it are read directly.
    ctx.pull(q.l4 + ICMPV6_HLEN + IPV6_HLEN + QUOTED_L4_MIN);
    // The key off the stack (see `evict::spare_key`).
    let Some(key) = evict::spare_key() else {
        return NOT_OURS;
    };
    let Some(i) = parse_inner(ctx, &q, key) else {
        return NOT_OURS;
    };
    let Some(flow) = maps::flow_at(key) else {
        return NOT_OURS;
    };
    let e = flow.entry();
    // A NAT64 flow's peer speaks IPv4: not translated (docs/rules.md).
    if !handled_here(e, Hook::TcIngress) || e.flags.contains(FlowFlags::XLAT) {
        return NOT_OURS;
    }
    if !conntrack::arrived_right(e, ifindex) {
        return Verdict::next(Reason::PassWrongIface);
    }
    // An error sent by the peer itself names the peer as outer source: it
    // becomes the translated peer, like every other packet of the flow;
    // a router's own address stays.
    if q.ttl <= 1 {
        return Verdict::shot(Reason::DropError);
    }
    let from_peer = p.src == key.src;
    if let Err(err) = translate_back(ctx, &q, p, &i, e, from_peer) {
        log_rewrite_failed(ctx, e.rule_id, err);
        return Verdict::shot(Reason::DropError);
    }
    Verdict::answer(Reason::FwdRedirect, 0)
}

/// Rewrites the quote back to what its sender sent (addresses, ports, the
/// quoted checksum) and the outer header to the flow's peer, keeping the
/// ICMPv6 checksum right at every step.
#[inline(always)]
fn translate_back(
    ctx: &TcContext,
    q: &Packet,
    p: &Packet6,
    i: &Inner,
    e: &FlowEntry,
    from_peer: bool,
) -> Result<(), RewriteError> {
    let icmp_csum = q.l4 + ICMPV6_CHECK;
    // The quoted addresses, word by word (each changes the quoted
    // checksum through its pseudo-header, and the ICMPv6 checksum as data).
    let mut w = 0;
    while w < 4 {
        let off = i.l3 + IP6_SRC + 4 * w;
        let old: u32 = skb::load(ctx, off).map_err(|_| RewriteError::Load)?;
        replace(ctx, icmp_csum, off, old, e.new_dst[w], i.l4_csum)?;
        let off = i.l3 + IP6_DST + 4 * w;
        let old: u32 = skb::load(ctx, off).map_err(|_| RewriteError::Load)?;
        replace(ctx, icmp_csum, off, old, e.new_src[w], i.l4_csum)?;
        w += 1;
    }
    let (sport, dport) = (i.l4 + L4_SPORT, i.l4 + L4_DPORT);
    replace(ctx, icmp_csum, sport, i.sport, e.new_dport, i.l4_csum)?;
    replace(ctx, icmp_csum, dport, i.dport, e.new_sport, i.l4_csum)?;
    set_outer(ctx, q, icmp_csum, IP6_DST, &p.dst, &e.new_dst)?;
    if from_peer {
        set_outer(ctx, q, icmp_csum, IP6_SRC, &p.src, &e.new_src)?;
    }
    Ok(())
}

/// Rewrites an outer address (`field` = IP6_SRC or IP6_DST), which the
/// ICMPv6 checksum covers through its pseudo-header (as `nat::set_addr`
/// does for TCP/UDP).
#[inline(always)]
fn set_outer(
    ctx: &TcContext,
    q: &Packet,
    icmp_csum: usize,
    field: usize,
    old: &[u32; 4],
    new: &[u32; 4],
) -> Result<(), RewriteError> {
    if old == new {
        return Ok(());
    }
    let mut w = 0;
    while w < 4 {
        if old[w] != new[w] {
            skb::l4_csum_replace(
                ctx,
                icmp_csum,
                old[w],
                new[w],
                L4Csum::PLAIN.pseudo_header(),
            )
            .map_err(|_| RewriteError::L4Csum)?;
        }
        w += 1;
    }
    skb::store(ctx, q.l3 + field, new, Store::RECOMPUTE_CSUM).map_err(|_| RewriteError::StoreAddr)
}

/// Sends a translated error (`error`) to where its new outer addresses
/// lead, hop limit decremented, from the top of the program (the FIB
/// lookup's locals on `error`'s frame would deepen its call chain). One
/// too big for the next hop, or without a forwarding route, goes to the
/// stack as it is now (translated), as on the IPv4 path.
#[inline(never)]
pub fn send(ctx: &TcContext, p: &Packet6) -> Verdict {
    let q = bounded(&p.p);
    let (Ok(src), Ok(dst)) = (
        skb::load::<[u32; 4]>(ctx, q.l3 + IP6_SRC),
        skb::load::<[u32; 4]>(ctx, q.l3 + IP6_DST),
    ) else {
        return Verdict::shot(Reason::DropError);
    };
    match route::next_hop(ctx, &q, FlowFlags::empty(), &src, &dst) {
        Ok(next) => route::send(ctx, &q, &next).unwrap_or(Verdict::shot(Reason::DropError)),
        Err(v) if v.is_answer() => Verdict::ok(Reason::FwdStack),
        Err(v) => v,
    }
}
