//! ICMP errors (destination unreachable incl. fragmentation needed, time
//! exceeded, parameter problem) about a tracked flow carry the offending
//! packet's header as we translated it. The error must be translated back:
//! outer destination, the embedded addresses and ports, the embedded IP
//! checksum, the embedded L4 checksum when present, and the ICMP checksum
//! over all of that, or path-MTU discovery breaks (cilium/cilium#47755 is
//! this bug in a big project). tailscale0's MTU 1280 puts it on the main path.
use aya_ebpf::programs::TcContext;
use forwarder_common::{FlowEntry, FlowFlags, FlowKey, Hook, Reason, PROTO_TCP, PROTO_UDP};
use network_types::ip::Ipv4Hdr;

use crate::{
    conntrack,
    error::{log_rewrite_failed, RewriteError},
    evict,
    flow::handled_here,
    hdr::{
        ICMP_CHECK, ICMP_QUOTE, IPV4_HLEN, IPV4_VIHL_PLAIN, IP_CHECK, IP_DST, IP_SRC, L4_DPORT,
        L4_SPORT, QUOTED_L4_MIN, TCP_CHECK, UDP_CHECK, UDP_HLEN,
    },
    helpers::{
        frame::Frame,
        skb::{self, CsumWord, L4Csum, Store},
    },
    maps, nat,
    parse::Packet,
    tc,
    verdict::Verdict,
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
    let l3 = p.l4 + ICMP_QUOTE;
    let h: &Ipv4Hdr = ctx.header(l3)?;
    if h.vihl != IPV4_VIHL_PLAIN {
        return None;
    }
    let proto = h.proto;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let (src, dst) = (
        u32::from_ne_bytes(h.src_addr),
        u32::from_ne_bytes(h.dst_addr),
    );
    let l4 = l3 + IPV4_HLEN;
    let ports: &[u8; QUOTED_L4_MIN] = ctx.header(l4)?;
    // How much of the embedded L4 header the error quotes.
    let quoted = (p.tot_len as usize).saturating_sub(IPV4_HLEN + ICMP_QUOTE + IPV4_HLEN);
    let l4_csum = match proto {
        PROTO_TCP if quoted >= TCP_CHECK + 2 => Some(l4 + TCP_CHECK),
        // A zero UDP checksum means "none": leave it alone.
        PROTO_UDP if quoted >= UDP_HLEN && (ports[UDP_CHECK] | ports[UDP_CHECK + 1]) != 0 => {
            Some(l4 + UDP_CHECK)
        }
        _ => None,
    };
    Some(Inner {
        l3,
        l4,
        proto,
        src,
        dst,
        sport: u16::from_ne_bytes([ports[L4_SPORT], ports[L4_SPORT + 1]]),
        dport: u16::from_ne_bytes([ports[L4_DPORT], ports[L4_DPORT + 1]]),
        l4_csum,
    })
}

/// Replaces a 16/32-bit value inside the ICMP payload and keeps the ICMP
/// checksum (and, via `also`, an embedded checksum covering it) right.
#[inline(always)]
pub(crate) fn replace<T: CsumWord + PartialEq>(
    ctx: &TcContext,
    icmp_csum: usize,
    off: usize,
    old: T,
    new: T,
    also: Option<usize>,
) -> Result<(), RewriteError> {
    if old == new {
        return Ok(());
    }
    if let Some(c) = also {
        replace_csum_only(ctx, icmp_csum, c, old, new)?;
    }
    skb::l4_csum_replace(ctx, icmp_csum, old, new, L4Csum::PLAIN)
        .map_err(|_| RewriteError::L4Csum)?;
    skb::store(ctx, off, &new, Store::PLAIN).map_err(|_| RewriteError::StoreQuoted)
}

/// Translates an ICMP error about a tracked flow; an error that is not ours
/// (here) gets TCX_NEXT and `PassNoMatch`. A `Verdict`, not an Option:
/// this is a BPF-to-BPF call, and BTF cannot describe the layout Rust gives
/// `Option<(i32, Reason)>` (a union member at a non-zero offset), which
/// makes the kernel refuse the object's BTF (and see `verdict` on pairs).
// A BPF-to-BPF call rather than inlined: its locals get their own frame
// instead of adding to the caller's (512-byte stack limit).
#[inline(never)]
pub fn error(ctx: &TcContext, p: &Packet, hook: Hook, ifindex: u32) -> Verdict {
    const NOT_OURS: Verdict = Verdict::next(Reason::PassNoMatch);
    // The quoted IPv4 header and the 8 bytes after it are read directly.
    ctx.pull(p.l4 + ICMP_QUOTE + IPV4_HLEN + QUOTED_L4_MIN);
    let Some(i) = parse_inner(ctx, p) else {
        return NOT_OURS;
    };
    // The quoted packet went out translated; the error travels back the
    // way its replies would, so the reversed quote is that direction's key
    // (built off the stack: see `evict::spare_key`).
    let Some(key) = evict::spare_key() else {
        return NOT_OURS;
    };
    *key = FlowKey::v4(i.dst, i.src, i.dport, i.sport, i.proto);
    // A pointer into the map value rather than a copy: this function's
    // frame counts toward the 512-byte stack of the whole call chain.
    let Some(flow) = maps::flow_at(key) else {
        return NOT_OURS;
    };
    let e = flow.entry();
    if !handled_here(e, hook) {
        return NOT_OURS;
    }
    // Bound like every packet of the direction it travels like (issue 11):
    // a forged error on another interface must not reach a flow's peer
    // translated (a frag-needed lowering its PMTU, an unreachable ending
    // its connection). Left untranslated, as such packets are. (`ifindex`
    // comes as an argument: read here, it costs this frame the bytes the
    // 512-byte stack of the deepest call chain does not have.)
    if !conntrack::arrived_right(e, ifindex) {
        return Verdict::next(Reason::PassWrongIface);
    }
    if e.flags.contains(FlowFlags::XLAT) {
        // About a NAT64 flow: becomes an ICMPv6 error (`nat64::icmp`).
        return Verdict::nat64();
    }
    let new_src = e.new_src[0];
    // An error sent by the peer itself names the peer as outer source: it
    // becomes the translated peer, like every other packet of the flow.
    let outer_src = if p.src == i.dst { new_src } else { p.src };
    if let Err(err) = translate_back(ctx, p, &i, e, outer_src) {
        log_rewrite_failed(ctx, e.rule_id, err);
        return Verdict::shot(Reason::DropError);
    }
    tc::deliver(p, hook, e)
}

/// Rewrites the quoted packet back to what its sender sent (addresses,
/// ports, both embedded checksums) and the outer header to the flow's
/// peer, keeping the ICMP checksum right at every step.
#[inline(always)]
fn translate_back(
    ctx: &TcContext,
    p: &Packet,
    i: &Inner,
    e: &FlowEntry,
    outer_src: u32,
) -> Result<(), RewriteError> {
    let (new_src, new_dst) = (e.new_src[0], e.new_dst[0]);
    let icmp_csum = p.l4 + ICMP_CHECK;
    let ip_csum = Some(i.l3 + IP_CHECK);
    replace(ctx, icmp_csum, i.l3 + IP_SRC, i.src, new_dst, ip_csum)?;
    replace(ctx, icmp_csum, i.l3 + IP_DST, i.dst, new_src, ip_csum)?;
    if let Some(c) = i.l4_csum {
        // The embedded L4 checksum covers the pseudo-header addresses.
        replace_csum_only(ctx, icmp_csum, c, i.src, new_dst)?;
        replace_csum_only(ctx, icmp_csum, c, i.dst, new_src)?;
    }
    let (sport, dport) = (i.l4 + L4_SPORT, i.l4 + L4_DPORT);
    replace(ctx, icmp_csum, sport, i.sport, e.new_dport, i.l4_csum)?;
    replace(ctx, icmp_csum, dport, i.dport, e.new_sport, i.l4_csum)?;
    nat::set_addr(ctx, p, IP_DST, p.dst, new_dst)?;
    nat::set_addr(ctx, p, IP_SRC, p.src, outer_src)
}

/// Updates the embedded checksum at `c` for a value it covers changing
/// from `old` to `new` (a port, or an address of its pseudo-header, which
/// is rewritten separately in the embedded IP header), and the ICMP
/// checksum for the embedded checksum's own change (read before and after).
#[inline(always)]
fn replace_csum_only<T: CsumWord + PartialEq>(
    ctx: &TcContext,
    icmp_csum: usize,
    c: usize,
    old: T,
    new: T,
) -> Result<(), RewriteError> {
    if old == new {
        return Ok(());
    }
    let before: u16 = skb::load(ctx, c).map_err(|_| RewriteError::Load)?;
    // An embedded checksum is plain data here: l3_csum_replace updates it
    // without any of the L4 helper's skb checksum-state handling.
    skb::l3_csum_replace(ctx, c, old, new).map_err(|_| RewriteError::QuotedCsum)?;
    let after: u16 = skb::load(ctx, c).map_err(|_| RewriteError::Load)?;
    skb::l4_csum_replace(ctx, icmp_csum, before, after, L4Csum::PLAIN)
        .map_err(|_| RewriteError::L4Csum)
}
