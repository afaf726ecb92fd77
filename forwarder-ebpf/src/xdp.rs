//! The XDP accelerator: established flows only, on Ethernet interfaces with
//! native XDP. It looks the packet up in the same connection table the TC
//! programs fill, rewrites it with incremental checksum updates
//! (`forwarder_common::csum`), asks the FIB for the next hop and redirects
//! through a devmap. Everything else (first packets, TCP control packets,
//! ICMP, fragments, stack-path flows, frames whose checksum was left to
//! offload, unresolved neighbours) is passed on untouched to the TC
//! program, which stays the source of truth.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
        BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::{bpf_fib_lookup as fib_lookup_helper, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{DevMapHash, PerCpuArray},
    programs::XdpContext,
};
use forwarder_common::{
    csum, FlowEntry, FlowKey, Reason, AF_INET, FLOW_VIA_STACK, PROTO_TCP, PROTO_UDP,
};

use crate::{
    conntrack, counters,
    maps::FLOWS,
    parse::{ETH_HLEN, IPV4_HLEN},
};

/// Egress devices XDP may redirect to (ifindex -> ifindex), filled by the
/// daemon with the interfaces that run the XDP accelerator: a device
/// without ndo_xdp_xmit would drop redirected frames.
#[map(name = "FWD_XDP_DEVS")]
pub static XDP_DEVS: DevMapHash = DevMapHash::with_max_entries(64, 0);

#[map(name = "FWD_XDP_FIB")]
static FIB_PARAMS: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IP: u16 = 0x0800;
const TCP_FIN_SYN_RST: u8 = 0x07;

#[inline(always)]
fn ptr<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

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
pub fn handle(ctx: &XdpContext, len: u32, ifindex: u32) -> (u32, Reason) {
    const TO_TC: (u32, Reason) = (XDP_PASS, Reason::PassToTc);
    let Some(eth) = ptr::<[u8; ETH_HLEN]>(ctx, 0) else {
        return (XDP_PASS, Reason::PassMalformed);
    };
    // SAFETY: bounds-checked by ptr.
    let eth = unsafe { &mut *eth };
    if be16(eth, 12) != ETH_P_IP {
        return (XDP_PASS, Reason::PassNotIpv4);
    }
    let Some(ip) = ptr::<[u8; IPV4_HLEN]>(ctx, ETH_HLEN) else {
        return (XDP_PASS, Reason::PassMalformed);
    };
    // SAFETY: bounds-checked by ptr.
    let ip = unsafe { &mut *ip };
    if ip[0] != 0x45 {
        return if ip[0] >> 4 == 4 && ip[0] & 0x0f > 5 {
            (XDP_PASS, Reason::PassIpOptions)
        } else {
            (XDP_PASS, Reason::PassMalformed)
        };
    }
    let tot_len = be16(ip, 2);
    if ETH_HLEN + tot_len as usize > len as usize || (tot_len as usize) < IPV4_HLEN + 8 {
        return (XDP_PASS, Reason::PassMalformed);
    }
    if be16(ip, 6) & 0x3fff != 0 {
        return (XDP_PASS, Reason::PassFragment);
    }
    let proto = ip[9];
    let ttl = ip[8];
    let l4 = ETH_HLEN + IPV4_HLEN;
    // The first 20 bytes of TCP, or the 8 of UDP (and 12 we do not touch).
    let (sport, dport, check_at, l4_min) = match proto {
        PROTO_TCP => (0, 2, 16, 20),
        PROTO_UDP => (0, 2, 6, 8),
        _ => return TO_TC,
    };
    if (tot_len as usize) < IPV4_HLEN + l4_min {
        return (XDP_PASS, Reason::PassMalformed);
    }
    let Some(t) = ptr::<[u8; 20]>(ctx, l4) else {
        // A UDP datagram shorter than 20 bytes of L4: rare, TC has it.
        return TO_TC;
    };
    // SAFETY: bounds-checked by ptr.
    let t = unsafe { &mut *t };
    let l4_len = tot_len - IPV4_HLEN as u16;
    if proto == PROTO_TCP {
        // The same validation as TC's parse: a data offset below the
        // minimum header or beyond the segment is malformed, for the stack
        // to refuse, never to be forwarded.
        let doff = u16::from(t[12] >> 4) * 4;
        if doff < 20 || doff > l4_len {
            return (XDP_PASS, Reason::PassMalformed);
        }
        if t[13] & TCP_FIN_SYN_RST != 0 {
            // Control packets drive the TCP state (and MSS clamping): TC's.
            return TO_TC;
        }
    }
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
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
        sport: u16::from_ne_bytes([t[sport], t[sport + 1]]),
        dport: u16::from_ne_bytes([t[dport], t[dport + 1]]),
        proto,
        family: AF_INET,
        _pad: [0; 2],
    };
    let Some(e) = FLOWS.get_ptr_mut(key) else {
        return TO_TC;
    };
    // SAFETY: a map value, valid for this run.
    let entry: &FlowEntry = unsafe { &*e };
    if entry.flags & FLOW_VIA_STACK != 0 || ttl <= 1 {
        return TO_TC;
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: the map value, valid for this run.
    if !conntrack::xdp_admit(unsafe { &mut *e }, &key, ifindex, now) {
        return TO_TC;
    }
    let (nsrc, ndst) = (
        u32::from_be(entry.new_src[0]),
        u32::from_be(entry.new_dst[0]),
    );
    let (nsport, ndport) = (u16::from_be(entry.new_sport), u16::from_be(entry.new_dport));

    // Next hop for the translated packet, neighbour included: anything but
    // a plain answer (no neighbour yet, too big, not forwarded) is TC's.
    let Some(fp) = FIB_PARAMS.get_ptr_mut(0) else {
        return TO_TC;
    };
    // SAFETY: per-CPU scratch, ours for this run.
    let fp = unsafe { &mut *fp };
    // SAFETY: plain data; all-zero is its "unset" state.
    unsafe { core::ptr::write_bytes(fp as *mut bpf_fib_lookup, 0, 1) };
    fp.family = AF_INET;
    fp.l4_protocol = proto;
    fp.ifindex = ifindex;
    fp.__bindgen_anon_1.tot_len = tot_len;
    fp.__bindgen_anon_3.ipv4_src = nsrc.to_be();
    fp.__bindgen_anon_4.ipv4_dst = ndst.to_be();
    // SAFETY: valid parameter block; ctx is the xdp_md the kernel passed.
    let rc = unsafe {
        fib_lookup_helper(
            ctx.ctx as *mut _,
            fp,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return TO_TC;
    }
    let out = fp.ifindex;
    if XDP_DEVS.get_ifindex(out).is_none() {
        return TO_TC;
    }

    // Rewrite: addresses (IP header and L4 pseudo-header), ports, TTL.
    let mut ipc = be16(ip, 10);
    let mut l4c = check;
    ipc = csum::replace32(ipc, src, nsrc);
    ipc = csum::replace32(ipc, dst, ndst);
    // TTL shares its 16-bit word with the protocol.
    ipc = csum::replace16(
        ipc,
        u16::from_be_bytes([ttl, proto]),
        u16::from_be_bytes([ttl - 1, proto]),
    );
    let (osport, odport) = (be16(t, sport), be16(t, dport));
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
    ip[8] = ttl - 1;
    put16(ip, 10, ipc);
    ip[12..16].copy_from_slice(&nsrc.to_be_bytes());
    ip[16..20].copy_from_slice(&ndst.to_be_bytes());
    put16(t, sport, nsport);
    put16(t, dport, ndport);
    put16(t, check_at, l4c);
    eth[0..6].copy_from_slice(&fp.dmac);
    eth[6..12].copy_from_slice(&fp.smac);

    let tcp_hdr = (proto == PROTO_TCP).then_some(&*t);
    // SAFETY: map value pointer; plain adds as in conntrack::existing.
    conntrack::xdp_account(unsafe { &mut *e }, tcp_hdr, l4_len, len, now);
    counters::count_rule(entry.rule_id, len);
    match XDP_DEVS.redirect(out, 0) {
        Ok(XDP_REDIRECT) => (XDP_REDIRECT, Reason::FwdRedirect),
        // Cannot happen after the lookup above. The frame is rewritten
        // already: dropping it (and counting) beats passing it mangled.
        _ => (XDP_DROP, Reason::DropError),
    }
}
