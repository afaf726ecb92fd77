//! Header parsing with direct packet access, one parser for TC and XDP
//! (`Frame`). Every header is bounds-checked against data_end right before
//! use: the verifier tracks the check only on the register that was
//! compared, so the shape below is deliberate.
//!
//! IPv4. IPv6 has a parser of its own (`ipv6::parse`, TC ingress only),
//! called when this one says `PassNotIpv4`; it fills the same `Packet`
//! (its IPv4 fields read differently there, see that module).
use forwarder_common::{Reason, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use network_types::{icmp::Icmpv4Hdr, ip::Ipv4Hdr, udp::UdpHdr};

use crate::{
    hdr::{
        ETH_HLEN, ETH_P_IP, ETH_TYPE, ICMP_ECHO, ICMP_ECHOREPLY, ICMP_HLEN, IPV4_HLEN,
        IP_MF_OFFSET, L4_DPORT, L4_SPORT, TCP_DOFF, TCP_FLAGS, TCP_HLEN, UDP_HLEN,
    },
    helpers::frame::Frame,
};

/// What direct packet access reads of a TCP/UDP packet: IPv4 and the
/// fixed TCP header (the larger of the two L4 headers).
const PULL_L4: usize = IPV4_HLEN + TCP_HLEN;

/// Where a packet stands in IPv4 fragmentation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// A whole datagram.
    None,
    /// The first fragment (offset 0, more to come): it has the L4 header.
    First,
    /// A later fragment: no L4 header, ports unknown (see `frag`).
    Later,
}

/// A parsed IPv4 packet. Addresses and ports are raw network-order values
/// (as they sit in the packet), so rewriting never needs byte swaps.
pub struct Packet {
    /// Offset of the IPv4 header from ctx.data().
    pub l3: usize,
    /// Offset of the L4 header: l3 + the header length, options included.
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
    pub frag: Frag,
    /// Don't Fragment.
    pub df: bool,
    /// The IP identification (network order): with the addresses and the
    /// protocol, what ties fragments together.
    pub ip_id: u16,
}

impl Packet {
    /// The L4 length (TCP/UDP header and payload) as the IP header says.
    #[inline(always)]
    pub fn l4_len(&self) -> u16 {
        self.tot_len - (self.l4 - self.l3) as u16
    }

    /// A whole datagram without IP options: what the XDP rewrite (fixed
    /// offsets, ports in every packet) handles.
    #[inline(always)]
    pub fn is_plain(&self) -> bool {
        self.frag == Frag::None && self.l4 == self.l3 + IPV4_HLEN
    }
}

/// The IPv4 header's longest form (options included).
const IPV4_HLEN_MAX: usize = 60;
/// Don't Fragment, in frag_off (host order).
const IP_DF: u16 = 0x4000;
/// The fragment offset bits of frag_off (host order).
const IP_OFFSET: u16 = 0x1fff;

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

/// The IPv4 header at `l3` and what follows it. Options are skipped (the
/// L4 header starts at the header length); a later fragment has no L4
/// header and keeps zero ports (`frag` finds them).
#[inline(always)]
fn ipv4<F: Frame>(ctx: &F, l3: usize) -> Result<Packet, Reason> {
    let h: &Ipv4Hdr = ctx.header(l3).ok_or(Reason::PassMalformed)?;
    if h.version() != 4 {
        return Err(Reason::PassMalformed);
    }
    let ihl = h.ihl() as usize;
    if !(IPV4_HLEN..=IPV4_HLEN_MAX).contains(&ihl) {
        return Err(Reason::PassMalformed);
    }
    let tot_len = u16::from_be_bytes(h.tot_len);
    if (tot_len as usize) < ihl || l3 + tot_len as usize > ctx.len() as usize {
        return Err(Reason::PassMalformed);
    }
    let frag_off = u16::from_be_bytes(h.frags);
    let frag = if frag_off & IP_MF_OFFSET == 0 {
        Frag::None
    } else if frag_off & IP_OFFSET == 0 {
        Frag::First
    } else {
        Frag::Later
    };
    let mut p = Packet {
        l3,
        l4: l3 + ihl,
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
        frag,
        df: frag_off & IP_DF != 0,
        ip_id: u16::from_ne_bytes(h.id),
    };
    if frag == Frag::Later {
        return Ok(p);
    }
    if ihl > IPV4_HLEN {
        // The options pushed the L4 header past what `packet` pulled.
        ctx.pull(l3 + ihl + TCP_HLEN);
    }
    match l4(ctx, &mut p, tot_len as usize - ihl) {
        Ok(()) => Ok(p),
        // A first fragment too short for its L4 header (RFC 1858's "tiny
        // fragment"): the stack would reassemble it with ports nobody
        // checked, so it is dropped, not passed.
        Err(_) if frag == Frag::First => Err(Reason::DropError),
        Err(reason) => Err(reason),
    }
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
