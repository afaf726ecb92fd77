//! Header parsing with direct packet access. Every pointer is bounds-checked
//! against data_end right before use: the verifier tracks the check only on
//! the register that was compared, so the shape below is deliberate.
use aya_ebpf::programs::TcContext;
use forwarder_common::{Reason, IFACE_L3};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPV4_HLEN: usize = 20;
/// More-fragments flag and fragment offset bits of frag_off (host order).
const IP_MF_OFFSET: u16 = 0x3fff;

/// An IPv4 packet located in the linear data.
// The NAT path reads these; the counting-only entry point does not yet.
#[allow(dead_code)]
pub struct Ipv4 {
    /// Offset of the IPv4 header from ctx.data().
    pub l3: usize,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
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

/// Finds the IPv4 header (after Ethernet, or at 0 on L3 devices) and rejects
/// what the NAT must not touch, with the reason it is counted under.
#[inline(always)]
pub fn ipv4(ctx: &TcContext, iface_flags: u32) -> Result<Ipv4, Reason> {
    let l3 = if iface_flags & IFACE_L3 != 0 {
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
    let tot_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    if tot_len < ihl || l3 + tot_len > ctx.len() as usize {
        return Err(Reason::PassMalformed);
    }
    if u16::from_be_bytes([h[6], h[7]]) & IP_MF_OFFSET != 0 {
        return Err(Reason::PassFragment);
    }
    if ihl != IPV4_HLEN {
        return Err(Reason::PassIpOptions);
    }
    Ok(Ipv4 {
        l3,
        proto: h[9],
        src: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        dst: u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
    })
}
