//! The XDP accelerator: established flows only, on Ethernet interfaces with
//! native XDP. It looks the packet up in the same connection table the TC
//! programs fill, rewrites it with incremental checksum updates
//! (`forwarder_common::csum`), asks the FIB for the next hop and redirects
//! through a devmap. Everything else (first packets, TCP control packets,
//! ICMP, fragments, stack-path flows, frames whose checksum was left to
//! offload, unresolved neighbours) is passed on untouched to the TC
//! program, which stays the source of truth.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    macros::map,
    maps::DevMapHash,
    programs::XdpContext,
};
use forwarder_common::{csum, FlowKey, Reason, AF_INET, FLOW_VIA_STACK, PROTO_TCP, PROTO_UDP};
use network_types::ip::Ipv4Hdr;

use crate::{
    counters,
    hdr::{
        ETH_HLEN, ETH_P_IP, ETH_TYPE, IPV4_HLEN, IPV4_VIHL_PLAIN, IP_MF_OFFSET, L4_DPORT, L4_SPORT,
        TCP_CHECK, TCP_DOFF, TCP_FIN, TCP_FLAGS, TCP_HLEN, TCP_RST, TCP_SYN, UDP_CHECK, UDP_HLEN,
    },
    helpers::{
        fib::FibParams,
        frame::{EthIpv4L4, Frame},
        ktime_coarse_ns,
    },
    maps,
};

/// Egress devices XDP may redirect to (ifindex -> ifindex), filled by the
/// daemon with the interfaces that run the XDP accelerator: a device
/// without ndo_xdp_xmit would drop redirected frames.
#[map(name = "FWD_XDP_DEVS")]
pub static XDP_DEVS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// The FIB's full answer, neighbour included (no flags): XDP rewrites the
/// MACs itself.
const FORWARD_WITH_NEIGH: u32 = 0;

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn put16(b: &mut [u8], at: usize, v: u16) {
    let x = v.to_be_bytes();
    b[at] = x[0];
    b[at + 1] = x[1];
}

/// Handles one frame: (XDP action, what to count it as).
#[inline(always)]
pub fn handle(ctx: &mut XdpContext, len: u32, ifindex: u32) -> (u32, Reason) {
    const TO_TC: (u32, Reason) = (XDP_PASS, Reason::PassToTc);
    let Some(ethertype) = ctx.header::<[u8; 2]>(ETH_TYPE) else {
        return (XDP_PASS, Reason::PassMalformed);
    };
    if u16::from_be_bytes(*ethertype) != ETH_P_IP {
        return (XDP_PASS, Reason::PassNotIpv4);
    }
    let Some(ip) = ctx.header::<Ipv4Hdr>(ETH_HLEN) else {
        return (XDP_PASS, Reason::PassMalformed);
    };
    if ip.vihl != IPV4_VIHL_PLAIN {
        return if ip.version() == 4 && ip.ihl() as usize > IPV4_HLEN {
            (XDP_PASS, Reason::PassIpOptions)
        } else {
            (XDP_PASS, Reason::PassMalformed)
        };
    }
    let tot_len = u16::from_be_bytes(ip.tot_len);
    if ETH_HLEN + tot_len as usize > len as usize || (tot_len as usize) < IPV4_HLEN + UDP_HLEN {
        return (XDP_PASS, Reason::PassMalformed);
    }
    if u16::from_be_bytes(ip.frags) & IP_MF_OFFSET != 0 {
        return (XDP_PASS, Reason::PassFragment);
    }
    let proto = ip.proto;
    let ttl = ip.ttl;
    // The first 20 bytes of TCP, or the 8 of UDP (and 12 we do not touch).
    let (check_at, l4_min) = match proto {
        PROTO_TCP => (TCP_CHECK, TCP_HLEN),
        PROTO_UDP => (UDP_CHECK, UDP_HLEN),
        _ => return TO_TC,
    };
    if (tot_len as usize) < IPV4_HLEN + l4_min {
        return (XDP_PASS, Reason::PassMalformed);
    }
    let Some(f) = ctx.header::<EthIpv4L4>(0) else {
        // A UDP datagram shorter than 20 bytes of L4: rare, TC has it.
        return TO_TC;
    };
    let (ip, t) = (&f.ip, &f.l4);
    let l4_len = tot_len - IPV4_HLEN as u16;
    if proto == PROTO_TCP {
        // The same validation as TC's parse: a data offset below the
        // minimum header or beyond the segment is malformed, for the stack
        // to refuse, never to be forwarded.
        let doff = u16::from(t[TCP_DOFF] >> 4) * 4;
        if doff < TCP_HLEN as u16 || doff > l4_len {
            return (XDP_PASS, Reason::PassMalformed);
        }
        if t[TCP_FLAGS] & (TCP_FIN | TCP_SYN | TCP_RST) != 0 {
            // Control packets drive the TCP state (and MSS clamping): TC's.
            return TO_TC;
        }
    }
    let src = u32::from_be_bytes(ip.src_addr);
    let dst = u32::from_be_bytes(ip.dst_addr);
    let check = be16(t, check_at);
    let udp_no_csum = proto == PROTO_UDP && check == 0;
    if !udp_no_csum && check == csum::pseudo_header_sum(src, dst, proto, l4_len) {
        // The sender left the checksum to offload (CHECKSUM_PARTIAL): only
        // the skb path can finish it correctly.
        return TO_TC;
    }
    let key = FlowKey {
        src: [src.to_be(), 0, 0, 0],
        dst: [dst.to_be(), 0, 0, 0],
        sport: u16::from_ne_bytes([t[L4_SPORT], t[L4_SPORT + 1]]),
        dport: u16::from_ne_bytes([t[L4_DPORT], t[L4_DPORT + 1]]),
        proto,
        family: AF_INET,
        _pad: [0; 2],
    };
    let Some(flow) = maps::flow(key) else {
        return TO_TC;
    };
    let entry = flow.entry();
    if entry.flags & FLOW_VIA_STACK != 0 || ttl <= 1 {
        return TO_TC;
    }
    let (nsrc, ndst) = (
        u32::from_be(entry.new_src[0]),
        u32::from_be(entry.new_dst[0]),
    );
    let (nsport, ndport) = (u16::from_be(entry.new_sport), u16::from_be(entry.new_dport));

    // Next hop for the translated packet, neighbour included: anything but
    // a plain answer (no neighbour yet, too big, not forwarded) is TC's.
    let Some(mut fp) = FibParams::v4(ifindex, proto, nsrc.to_be(), ndst.to_be()) else {
        return TO_TC;
    };
    fp.set_tot_len(tot_len);
    if !fp.lookup(ctx, FORWARD_WITH_NEIGH) {
        return TO_TC;
    }
    let out = fp.oif();
    if XDP_DEVS.get_ifindex(out).is_none() {
        return TO_TC;
    }

    // Rewrite: addresses (IP header and L4 pseudo-header), ports, TTL.
    let mut ipc = u16::from_be_bytes(ip.check);
    let mut l4c = check;
    ipc = csum::replace32(ipc, src, nsrc);
    ipc = csum::replace32(ipc, dst, ndst);
    // TTL shares its 16-bit word with the protocol.
    ipc = csum::replace16(
        ipc,
        u16::from_be_bytes([ttl, proto]),
        u16::from_be_bytes([ttl - 1, proto]),
    );
    let (osport, odport) = (be16(t, L4_SPORT), be16(t, L4_DPORT));
    if !udp_no_csum {
        l4c = csum::replace32(l4c, src, nsrc);
        l4c = csum::replace32(l4c, dst, ndst);
        l4c = csum::replace16(l4c, osport, nsport);
        l4c = csum::replace16(l4c, odport, ndport);
        if proto == PROTO_UDP && l4c == 0 {
            // A computed zero is sent as all ones (RFC 768).
            l4c = 0xffff;
        }
    }
    let Some(w) = ctx.header_mut::<EthIpv4L4>(0) else {
        return TO_TC;
    };
    w.ip.ttl = ttl - 1;
    w.ip.check = ipc.to_be_bytes();
    w.ip.src_addr = nsrc.to_be_bytes();
    w.ip.dst_addr = ndst.to_be_bytes();
    put16(&mut w.l4, L4_SPORT, nsport);
    put16(&mut w.l4, L4_DPORT, ndport);
    put16(&mut w.l4, check_at, l4c);
    w.dmac = fp.dmac();
    w.smac = fp.smac();

    let rule_id = flow.entry().rule_id;
    let e = flow.as_ptr();
    // SAFETY: map value pointer; plain adds as in conntrack::touch.
    unsafe {
        (*e).last_seen_ns = ktime_coarse_ns();
        (*e).packets += 1;
        (*e).bytes += len as u64;
    }
    counters::count_rule(rule_id, len);
    match XDP_DEVS.redirect(out, 0) {
        Ok(XDP_REDIRECT) => (XDP_REDIRECT, Reason::FwdRedirect),
        // Cannot happen after the lookup above. The frame is rewritten
        // already: dropping it (and counting) beats passing it mangled.
        _ => (XDP_DROP, Reason::DropError),
    }
}
