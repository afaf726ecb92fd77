//! The XDP accelerator: established flows only, on Ethernet interfaces with
//! native XDP. It shares the front half with TC (`parse::packet`, the flow
//! table through `flow::lookup`, the FIB parameter block, the accounting),
//! rewrites with incremental checksum updates (`forwarder_common::csum`),
//! asks the FIB for the next hop and redirects through a devmap.
//! Everything else (first packets, TCP control packets, ICMP, fragments,
//! stack-path flows, frames whose checksum was left to offload, unresolved
//! neighbours) is passed on untouched to the TC program, which stays the
//! source of truth. So is all of IPv6, counted as `PassIpv6ToTc`: NAT66
//! flows are translated by the TC programs (`ipv6`), which keep GSO; an
//! XDP fast path for them would need the IPv6 parse, 16-byte incremental
//! checksum updates and a second FIB family in this program's verifier
//! budget, for the one case (NIC ingress, small packets) XDP helps.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    macros::map,
    maps::DevMapHash,
    programs::XdpContext,
};
use forwarder_common::{
    csum, FlowEntry, FlowFlags, Hook, Reason, MAX_IFACES, PROTO_TCP, PROTO_UDP,
};

use crate::{
    conntrack, counters, flow,
    hdr::{L4_DPORT, L4_SPORT, TCP_CHECK, TCP_FIN, TCP_RST, TCP_SYN, UDP_CHECK},
    helpers::{
        fib::FibParams,
        frame::{EthIpv4L4, Frame},
        ktime_coarse_ns,
    },
    maps,
    parse::{self, Packet},
};

/// Egress devices XDP may redirect to (ifindex -> ifindex), filled by the
/// daemon with the interfaces that run the XDP accelerator: a device
/// without ndo_xdp_xmit would drop redirected frames.
#[map(name = "FWD_XDP_DEVS")]
pub static XDP_DEVS: DevMapHash = DevMapHash::with_max_entries(MAX_IFACES, 0);

/// The FIB's full answer, neighbour included (no flags): XDP rewrites the
/// MACs itself.
const FORWARD_WITH_NEIGH: u32 = 0;

const TO_TC: (u32, Reason) = (XDP_PASS, Reason::PassToTc);

/// fwd_xdp: interface -> parse -> accelerate -> count.
#[inline(always)]
pub fn run(ctx: &mut XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(iface) = maps::iface(ifindex) else {
        return XDP_PASS;
    };
    let len = Frame::len(ctx);
    // XDP runs only on Ethernet devices: never an L3 one.
    let (action, reason) = match parse::packet(ctx, false) {
        Ok(p) => accelerate(ctx, &p, ifindex, len),
        // TC drops it (and counts it once).
        Err(Reason::DropError) => TO_TC,
        Err(Reason::PassNotIpv4) if crate::ipv6::parse::l3_of(ctx, false).is_some() => {
            (XDP_PASS, Reason::PassIpv6ToTc)
        }
        Err(reason) => (XDP_PASS, reason),
    };
    counters::count_iface(iface.slot, Hook::Xdp, reason, len);
    action
}

/// An established flow's packet, rewritten and redirected here; anything
/// else to TC.
#[inline(always)]
fn accelerate(ctx: &mut XdpContext, p: &Packet, ifindex: u32, len: u32) -> (u32, Reason) {
    // Fragments and IP options: offsets and ports the fixed-layout rewrite
    // below does not handle.
    if !p.is_plain() {
        return TO_TC;
    }
    let Some(check_at) = l4_check_of(p) else {
        return TO_TC;
    };
    // TCP control packets drive the TCP state (and MSS clamping): TC's.
    if p.proto == PROTO_TCP && p.tcp_flags & (TCP_FIN | TCP_SYN | TCP_RST) != 0 {
        return TO_TC;
    }
    let Some(f) = ctx.header::<EthIpv4L4>(0) else {
        // A UDP datagram shorter than 20 bytes of L4: rare, TC has it.
        return TO_TC;
    };
    let check = u16::from_be_bytes([f.l4[check_at], f.l4[check_at + 1]]);
    if checksum_left_to_offload(p, check) {
        return TO_TC;
    }
    let Some(flow) = flow::lookup(p) else {
        return TO_TC;
    };
    // A NAT64 flow changes the packet's family: TC's (`nat64`).
    if flow
        .entry()
        .flags
        .intersects(FlowFlags::VIA_STACK | FlowFlags::XLAT)
        || p.ttl <= 1
    {
        return TO_TC;
    }
    let now = ktime_coarse_ns();
    // The flow's state decides too: its interface, its timer, a UDP state
    // change XDP can make itself (see `conntrack::xdp_admit`).
    if !conntrack::xdp_admit(flow.entry_mut(), &conntrack::key_of(p), ifindex, now) {
        return TO_TC;
    }
    let e = flow.entry();
    let Some(hop) = next_hop(ctx, p, e, ifindex) else {
        return TO_TC;
    };
    if rewrite(ctx, p, e, &hop, check_at, check).is_none() {
        return TO_TC;
    }
    let rule_id = e.rule_id;
    // The TCP header as rewritten (sequence, acknowledgement and window
    // are untouched), for the window tracking.
    let tcp = if p.proto == PROTO_TCP {
        ctx.header::<EthIpv4L4>(0).map(|f| f.l4)
    } else {
        None
    };
    conntrack::xdp_account(flow.entry_mut(), tcp.as_ref(), p.l4_len(), len, now);
    counters::count_rule(rule_id, len);
    match XDP_DEVS.redirect(hop.oif(), 0) {
        Ok(XDP_REDIRECT) => (XDP_REDIRECT, Reason::FwdRedirect),
        // Cannot happen after the lookup in `next_hop`. The frame is
        // rewritten already: dropping it (and counting) beats passing it
        // mangled.
        _ => (XDP_DROP, Reason::DropError),
    }
}

/// Where the L4 checksum sits in TCP and UDP, the protocols XDP handles.
#[inline(always)]
fn l4_check_of(p: &Packet) -> Option<usize> {
    match p.proto {
        PROTO_TCP => Some(TCP_CHECK),
        PROTO_UDP => Some(UDP_CHECK),
        _ => None,
    }
}

/// Whether the sender left the checksum to offload (CHECKSUM_PARTIAL):
/// only the skb path can finish it correctly.
#[inline(always)]
fn checksum_left_to_offload(p: &Packet, check: u16) -> bool {
    let udp_no_csum = p.proto == PROTO_UDP && check == 0;
    let (src, dst) = (u32::from_be(p.src), u32::from_be(p.dst));
    !udp_no_csum && check == csum::pseudo_header_sum(src, dst, p.proto, p.l4_len())
}

/// Next hop for the translated packet, neighbour included, on a device
/// XDP may redirect to: anything but a plain answer (no neighbour yet, too
/// big, not forwarded) is TC's.
#[inline(always)]
fn next_hop(ctx: &XdpContext, p: &Packet, e: &FlowEntry, ifindex: u32) -> Option<FibParams> {
    let mut fp = FibParams::v4(ifindex, p.proto, e.new_src[0], e.new_dst[0])?;
    fp.set_tot_len(p.tot_len);
    if !fp.lookup(ctx, FORWARD_WITH_NEIGH) {
        return None;
    }
    XDP_DEVS.get_ifindex(fp.oif())?;
    Some(fp)
}

/// Rewrites addresses (IP header and L4 pseudo-header), ports, TTL and
/// MACs, updating both checksums incrementally. `check` is the L4
/// checksum as found, at `check_at` in the L4 header.
#[inline(always)]
fn rewrite(
    ctx: &mut XdpContext,
    p: &Packet,
    e: &FlowEntry,
    hop: &FibParams,
    check_at: usize,
    check: u16,
) -> Option<()> {
    let (src, dst) = (u32::from_be(p.src), u32::from_be(p.dst));
    let (nsrc, ndst) = (u32::from_be(e.new_src[0]), u32::from_be(e.new_dst[0]));
    let (osport, odport) = (u16::from_be(p.sport), u16::from_be(p.dport));
    let (nsport, ndport) = (u16::from_be(e.new_sport), u16::from_be(e.new_dport));
    let w = ctx.header_mut::<EthIpv4L4>(0)?;
    let mut ipc = u16::from_be_bytes(w.ip.check);
    ipc = csum::replace32(ipc, src, nsrc);
    ipc = csum::replace32(ipc, dst, ndst);
    // TTL shares its 16-bit word with the protocol.
    ipc = csum::replace16(
        ipc,
        u16::from_be_bytes([p.ttl, p.proto]),
        u16::from_be_bytes([p.ttl - 1, p.proto]),
    );
    let mut l4c = check;
    let udp_no_csum = p.proto == PROTO_UDP && check == 0;
    if !udp_no_csum {
        l4c = csum::replace32(l4c, src, nsrc);
        l4c = csum::replace32(l4c, dst, ndst);
        l4c = csum::replace16(l4c, osport, nsport);
        l4c = csum::replace16(l4c, odport, ndport);
        if p.proto == PROTO_UDP && l4c == 0 {
            // A computed zero is sent as all ones (RFC 768).
            l4c = 0xffff;
        }
    }
    w.ip.ttl = p.ttl - 1;
    w.ip.check = ipc.to_be_bytes();
    w.ip.src_addr = e.new_src[0].to_ne_bytes();
    w.ip.dst_addr = e.new_dst[0].to_ne_bytes();
    put16(&mut w.l4, L4_SPORT, nsport);
    put16(&mut w.l4, L4_DPORT, ndport);
    put16(&mut w.l4, check_at, l4c);
    w.dmac = hop.dmac();
    w.smac = hop.smac();
    Some(())
}

#[inline(always)]
fn put16(b: &mut [u8], at: usize, v: u16) {
    let x = v.to_be_bytes();
    b[at] = x[0];
    b[at + 1] = x[1];
}
