//! Header parsing with direct packet access. Every pointer is bounds-checked
//! against data_end right before use: the verifier tracks the check only on
//! the register that was compared, so the shape below is deliberate.
use aya_ebpf::{helpers::bpf_skb_pull_data, programs::TcContext};
use forwarder_common::{IfaceFlags, Reason, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
pub const IPV4_HLEN: usize = 20;
/// More-fragments flag and fragment offset bits of frag_off (host order).
const IP_MF_OFFSET: u16 = 0x3fff;
/// What direct packet access reads of a TCP/UDP packet: IPv4 and the
/// fixed TCP header (the larger of the two L4 headers).
const PULL_L4: usize = IPV4_HLEN + 20;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHOREPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETERPROB: u8 = 12;

/// A parsed IPv4 packet. Addresses and ports are raw network-order values
/// (as they sit in the packet), so rewriting never needs byte swaps.
pub struct Packet {
    /// Offset of the IPv4 header from ctx.data().
    pub l3: usize,
    /// Offset of the L4 header (options are refused, so l3 + 20).
    pub l4: usize,
    pub proto: u8,
    pub ttl: u8,
    pub tot_len: u16,
    pub src: u32,
    pub dst: u32,
    /// TCP/UDP ports; the identifier (twice) for ICMP echo.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// TCP header length in bytes (data offset x 4), for the MSS option.
    pub tcp_hlen: u8,
    pub icmp_type: u8,
}

#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Makes the first `upto` bytes linear so direct access sees them (GRO'd
/// or sendfile skbs may hold anything past the headers in frags). A no-op
/// when they already are. Never more than what is read: pulling payload
/// into the linear part costs a copy, often a reallocation, per packet.
#[inline(always)]
pub fn pull(ctx: &TcContext, upto: usize) {
    let len = ctx.len() as usize;
    let want = if len < upto { len } else { upto };
    if ctx.data() + want > ctx.data_end() {
        // SAFETY: plain helper call on our own skb.
        unsafe { bpf_skb_pull_data(ctx.skb.skb, want as u32) };
    }
}

/// Finds the IPv4 header (after Ethernet, or at 0 on L3 devices) and rejects
/// what the NAT must not touch, with the reason it is counted under.
#[inline(always)]
pub fn ipv4(ctx: &TcContext, iface_flags: IfaceFlags) -> Result<Packet, Reason> {
    let l3 = if iface_flags.contains(IfaceFlags::L3) {
        // tun/wireguard: no link header; skb->protocol says what L3 is.
        // SAFETY: reading a field of the context the kernel passed in.
        let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
        if proto != ETH_P_IP {
            return Err(Reason::PassNotIpv4);
        }
        0
    } else {
        let ethertype: *const [u8; 2] = ptr_at(ctx, 12).ok_or(Reason::PassMalformed)?;
        // SAFETY: bounds-checked by ptr_at.
        if u16::from_be_bytes(unsafe { *ethertype }) != ETH_P_IP {
            return Err(Reason::PassNotIpv4);
        }
        ETH_HLEN
    };
    pull(ctx, l3 + PULL_L4);
    let hdr: *const [u8; IPV4_HLEN] = ptr_at(ctx, l3).ok_or(Reason::PassMalformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let h = unsafe { &*hdr };
    if h[0] >> 4 != 4 {
        return Err(Reason::PassMalformed);
    }
    let ihl = (h[0] & 0x0f) as usize * 4;
    if ihl < IPV4_HLEN {
        return Err(Reason::PassMalformed);
    }
    let tot_len = u16::from_be_bytes([h[2], h[3]]);
    if (tot_len as usize) < ihl || l3 + tot_len as usize > ctx.len() as usize {
        return Err(Reason::PassMalformed);
    }
    if u16::from_be_bytes([h[6], h[7]]) & IP_MF_OFFSET != 0 {
        return Err(Reason::PassFragment);
    }
    if ihl != IPV4_HLEN {
        return Err(Reason::PassIpOptions);
    }
    let mut p = Packet {
        l3,
        l4: l3 + IPV4_HLEN,
        proto: h[9],
        ttl: h[8],
        tot_len,
        src: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        dst: u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_hlen: 0,
        icmp_type: 0,
    };
    let l4_len = tot_len as usize - IPV4_HLEN;
    match p.proto {
        PROTO_TCP => {
            let t: *const [u8; 20] = ptr_at(ctx, p.l4).ok_or(Reason::PassMalformed)?;
            if l4_len < 20 {
                return Err(Reason::PassMalformed);
            }
            // SAFETY: bounds-checked by ptr_at.
            let t = unsafe { &*t };
            p.sport = u16::from_ne_bytes([t[0], t[1]]);
            p.dport = u16::from_ne_bytes([t[2], t[3]]);
            p.tcp_flags = t[13];
            p.tcp_hlen = (t[12] >> 4) * 4;
            if (p.tcp_hlen as usize) < 20 || p.tcp_hlen as usize > l4_len {
                return Err(Reason::PassMalformed);
            }
        }
        PROTO_UDP => {
            let u: *const [u8; 8] = ptr_at(ctx, p.l4).ok_or(Reason::PassMalformed)?;
            if l4_len < 8 {
                return Err(Reason::PassMalformed);
            }
            // SAFETY: bounds-checked by ptr_at.
            let u = unsafe { &*u };
            p.sport = u16::from_ne_bytes([u[0], u[1]]);
            p.dport = u16::from_ne_bytes([u[2], u[3]]);
        }
        PROTO_ICMP => {
            let i: *const [u8; 8] = ptr_at(ctx, p.l4).ok_or(Reason::PassMalformed)?;
            if l4_len < 8 {
                return Err(Reason::PassMalformed);
            }
            // SAFETY: bounds-checked by ptr_at.
            let i = unsafe { &*i };
            p.icmp_type = i[0];
            if i[0] == ICMP_ECHO || i[0] == ICMP_ECHOREPLY {
                let id = u16::from_ne_bytes([i[4], i[5]]);
                p.sport = id;
                p.dport = id;
            }
        }
        _ => {}
    }
    Ok(p)
}
