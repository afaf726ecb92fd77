//! Header parsing with direct packet access, one parser for TC and XDP
//! (`Frame`). Every header is bounds-checked against data_end right before
//! use: the verifier tracks the check only on the register that was
//! compared, so the shape below is deliberate.
//!
//! IPv4 only today. The shape an IPv6 path fits into: `packet` picks the
//! family, `ipv4` fills `Packet` from its header, `l4` (family-independent)
//! the ports and flags; an `ipv6` would walk its extension headers to the
//! same `l4`. `Packet`'s addresses would then take the flow key's
//! `[u32; 4]` form.
use forwarder_common::{Reason, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use network_types::{icmp::Icmpv4Hdr, ip::Ipv4Hdr, udp::UdpHdr};

use crate::{
    hdr::{
        ETH_HLEN, ETH_P_IP, ETH_TYPE, ICMP_ECHO, ICMP_ECHOREPLY, ICMP_HLEN, IPV4_HLEN,
        IP_MF_OFFSET, L4_DPORT, L4_SPORT, TCP_DOFF, TCP_FLAGS, TCP_HLEN, UDP_HLEN,
    },
    helpers::frame::Frame,
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

impl Packet {
    /// The L4 length (TCP/UDP header and payload) as the IP header says.
    #[inline(always)]
    pub fn l4_len(&self) -> u16 {
        self.tot_len - IPV4_HLEN as u16
    }
}

/// Finds the IP header (after Ethernet, or at 0 on an L3 device: tun,
/// wireguard) and parses the packet, or says why the NAT must not touch it
/// (the reason it is counted under).
#[inline(always)]
pub fn packet<F: Frame>(ctx: &F, l3_device: bool) -> Result<Packet, Reason> {
    let l3 = if l3_device {
        // No link header; skb->protocol says what L3 is.
        if ctx.link_protocol() != Some(ETH_P_IP) {
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
    ctx.pull(l3 + PULL_L4);
    ipv4(ctx, l3)
}

/// The IPv4 header at `l3` and what follows it. Refuses fragments (no
/// ports after the first) and options (the rewrite offsets assume none).
#[inline(always)]
fn ipv4<F: Frame>(ctx: &F, l3: usize) -> Result<Packet, Reason> {
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
    l4(ctx, &mut p, tot_len as usize - IPV4_HLEN)?;
    Ok(p)
}

/// Ports and flags of the L4 header at `p.l4`, `l4_len` bytes long by the
/// IP header. Other protocols keep zero ports.
#[inline(always)]
fn l4<F: Frame>(ctx: &F, p: &mut Packet, l4_len: usize) -> Result<(), Reason> {
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
    Ok(())
}
