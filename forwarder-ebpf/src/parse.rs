//! Header parsing with direct packet access. Every pointer is bounds-checked
//! against data_end right before use: the verifier tracks the check only on
//! the register that was compared, so the shape below is deliberate.
use aya_ebpf::programs::TcContext;
use forwarder_common::{Reason, IFACE_L3, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use network_types::{icmp::Icmpv4Hdr, ip::Ipv4Hdr, udp::UdpHdr};

use crate::{
    hdr::{
        ETH_HLEN, ETH_P_IP, ETH_TYPE, ICMP_ECHO, ICMP_ECHOREPLY, ICMP_HLEN, IPV4_HLEN,
        IP_MF_OFFSET, L4_DPORT, L4_SPORT, TCP_DOFF, TCP_FLAGS, TCP_HLEN, UDP_HLEN,
    },
    helpers::{frame::Frame, skb},
};

// Re-exported for conntrack, which reads the flags of `Packet`.
pub use crate::hdr::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// What direct packet access reads of a TCP/UDP packet: IPv4 and the
/// fixed TCP header (the larger of the two L4 headers).
const PULL_L4: usize = IPV4_HLEN + TCP_HLEN;

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

/// Makes the first `upto` bytes linear so direct access sees them (GRO'd
/// or sendfile skbs may hold anything past the headers in frags). A no-op
/// when they already are. Never more than what is read: pulling payload
/// into the linear part costs a copy, often a reallocation, per packet.
#[inline(always)]
pub fn pull(ctx: &TcContext, upto: usize) {
    let len = ctx.len() as usize;
    let want = if len < upto { len } else { upto };
    if ctx.data() + want > ctx.data_end() {
        // A failure leaves the skb as it was: the bounds checks that follow
        // then refuse what is still out of reach.
        let _ = skb::pull_data(ctx, want);
    }
}

/// Finds the IPv4 header (after Ethernet, or at 0 on L3 devices) and rejects
/// what the NAT must not touch, with the reason it is counted under.
#[inline(always)]
pub fn ipv4(ctx: &TcContext, iface_flags: u32) -> Result<Packet, Reason> {
    let l3 = if iface_flags & IFACE_L3 != 0 {
        // tun/wireguard: no link header; skb->protocol says what L3 is.
        if skb::protocol(ctx) != ETH_P_IP {
            return Err(Reason::PassNotIpv4);
        }
        0
    } else {
        let ethertype: &[u8; 2] = ctx.header(ETH_TYPE).ok_or(Reason::PassMalformed)?;
        if u16::from_be_bytes(*ethertype) != ETH_P_IP {
            return Err(Reason::PassNotIpv4);
        }
        ETH_HLEN
    };
    pull(ctx, l3 + PULL_L4);
    let h: &Ipv4Hdr = ctx.header(l3).ok_or(Reason::PassMalformed)?;
    if h.version() != 4 {
        return Err(Reason::PassMalformed);
    }
    let ihl = h.ihl() as usize;
    if ihl < IPV4_HLEN {
        return Err(Reason::PassMalformed);
    }
    let tot_len = u16::from_be_bytes(h.tot_len);
    if (tot_len as usize) < ihl || l3 + tot_len as usize > ctx.len() as usize {
        return Err(Reason::PassMalformed);
    }
    if u16::from_be_bytes(h.frags) & IP_MF_OFFSET != 0 {
        return Err(Reason::PassFragment);
    }
    if ihl != IPV4_HLEN {
        return Err(Reason::PassIpOptions);
    }
    let mut p = Packet {
        l3,
        l4: l3 + IPV4_HLEN,
        proto: h.proto,
        ttl: h.ttl,
        tot_len,
        src: u32::from_ne_bytes(h.src_addr),
        dst: u32::from_ne_bytes(h.dst_addr),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_hlen: 0,
        icmp_type: 0,
    };
    let l4_len = tot_len as usize - IPV4_HLEN;
    match p.proto {
        PROTO_TCP => {
            // Bytes, not network-types' TcpHdr: its data offset and flags
            // sit in a bitfield read bit by bit, many instructions per packet.
            let t: &[u8; TCP_HLEN] = ctx.header(p.l4).ok_or(Reason::PassMalformed)?;
            if l4_len < TCP_HLEN {
                return Err(Reason::PassMalformed);
            }
            p.sport = u16::from_ne_bytes([t[L4_SPORT], t[L4_SPORT + 1]]);
            p.dport = u16::from_ne_bytes([t[L4_DPORT], t[L4_DPORT + 1]]);
            p.tcp_flags = t[TCP_FLAGS];
            p.tcp_hlen = (t[TCP_DOFF] >> 4) * 4;
            if (p.tcp_hlen as usize) < TCP_HLEN || p.tcp_hlen as usize > l4_len {
                return Err(Reason::PassMalformed);
            }
        }
        PROTO_UDP => {
            let u: &UdpHdr = ctx.header(p.l4).ok_or(Reason::PassMalformed)?;
            if l4_len < UDP_HLEN {
                return Err(Reason::PassMalformed);
            }
            p.sport = u16::from_ne_bytes(u.src);
            p.dport = u16::from_ne_bytes(u.dst);
        }
        PROTO_ICMP => {
            let i: &Icmpv4Hdr = ctx.header(p.l4).ok_or(Reason::PassMalformed)?;
            if l4_len < ICMP_HLEN {
                return Err(Reason::PassMalformed);
            }
            p.icmp_type = i.type_;
            if i.type_ == ICMP_ECHO || i.type_ == ICMP_ECHOREPLY {
                // The identifier stands in for both ports.
                let id = u16::from_ne_bytes([i.data[0], i.data[1]]);
                p.sport = id;
                p.dport = id;
            }
        }
        _ => {}
    }
    Ok(p)
}
