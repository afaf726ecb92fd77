//! Direct packet access, the same for TC (`__sk_buff`) and XDP (`xdp_md`):
//! a header is a reference into the packet after one bounds check against
//! data_end, so the parser and the flow lookup are written once for both
//! hooks. The check sits right before the pointer it guards because the
//! verifier tracks it only on the register that was compared.
use core::mem::{align_of, size_of};

use aya_ebpf::programs::{TcContext, XdpContext};
use network_types::{
    icmp::Icmpv4Hdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use super::skb;
use crate::hdr::{ETH_HLEN, IPV4_HLEN, TCP_HLEN};

/// Plain wire data: alignment 1 and every bit pattern a valid value, so a
/// reference to one may sit at any packet offset over whatever bytes the
/// wire has.
///
/// # Safety
/// Implement only for types with exactly those two properties.
pub unsafe trait Wire {}

// SAFETY: byte arrays: alignment 1, any bytes.
unsafe impl<const N: usize> Wire for [u8; N] {}
// SAFETY: network-types' headers are repr(C) structs of u8 and byte-array
// fields (TCP's flags word included); the asserts below keep alignment 1.
unsafe impl Wire for Ipv4Hdr {}
// SAFETY: as above.
unsafe impl Wire for Ipv6Hdr {}
// SAFETY: as above.
unsafe impl Wire for TcpHdr {}
// SAFETY: as above.
unsafe impl Wire for UdpHdr {}
// SAFETY: as above.
unsafe impl Wire for Icmpv4Hdr {}
/// An Ethernet frame's link header, IPv4 header (no options) and the
/// first 20 bytes of L4 (a TCP header, or a UDP header and 12 bytes left
/// alone): everything the XDP rewrite touches, under one bounds check.
#[repr(C)]
pub struct EthIpv4L4 {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub ether_type: [u8; 2],
    pub ip: Ipv4Hdr,
    pub l4: [u8; TCP_HLEN],
}
// SAFETY: repr(C) of Wire fields, each alignment 1: no padding, any bytes.
unsafe impl Wire for EthIpv4L4 {}

const _: () = assert!(
    align_of::<Ipv4Hdr>() == 1
        && align_of::<Ipv6Hdr>() == 1
        && align_of::<TcpHdr>() == 1
        && align_of::<UdpHdr>() == 1
        && align_of::<Icmpv4Hdr>() == 1
        && size_of::<EthIpv4L4>() == ETH_HLEN + IPV4_HLEN + TCP_HLEN
);

/// A packet the program may read (and, in XDP, write) directly.
pub trait Frame {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The packet's length: an skb's includes data not in the linear part.
    fn len(&self) -> u32;

    /// Makes the first `upto` bytes (or all, if fewer) directly readable.
    /// An XDP frame always is; an skb may hold anything past the headers
    /// in frags (GRO, sendfile).
    fn pull(&self, upto: usize);

    /// The L3 protocol (EtherType) the kernel recorded for the packet,
    /// where there is no link header to read it from: skb->protocol. XDP
    /// runs only on Ethernet devices and has none.
    fn link_protocol(&self) -> Option<u16>;

    /// The `T` at packet offset `off`, when the linear data holds all of it.
    #[inline(always)]
    fn header<T: Wire>(&self, off: usize) -> Option<&T> {
        let start = self.data();
        if start + off + size_of::<T>() > self.data_end() {
            return None;
        }
        // SAFETY: in bounds (checked just above); T: Wire is valid at any
        // address over any bytes. A helper that moves the packet ends the
        // reference's validity, and the verifier refuses any use after one.
        Some(unsafe { &*((start + off) as *const T) })
    }

    /// As `header`, writable; `&mut self` keeps it the only one.
    #[inline(always)]
    fn header_mut<T: Wire>(&mut self, off: usize) -> Option<&mut T> {
        let start = self.data();
        if start + off + size_of::<T>() > self.data_end() {
            return None;
        }
        // SAFETY: as in `header`; the borrow of self rules out a second
        // reference to the packet while this one lives.
        Some(unsafe { &mut *((start + off) as *mut T) })
    }
}

/// A context to write an skb's headers through (`Frame::header_mut`),
/// for TC code that was handed `&TcContext`: the context is only the skb
/// pointer, so this is a second handle on the same packet. The caller
/// keeps `header_mut`'s promise: no other reference into the packet is
/// used while it writes (the verifier invalidates all of them at the next
/// helper that may move the packet anyway).
#[inline(always)]
pub fn tc_writer(ctx: &TcContext) -> TcContext {
    TcContext::new(ctx.skb.skb)
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }

    /// A no-op when the bytes already are linear. Never more than what is
    /// read: pulling payload into the linear part costs a copy, often a
    /// reallocation, per packet.
    #[inline(always)]
    fn pull(&self, upto: usize) {
        let len = TcContext::len(self) as usize;
        let want = if len < upto { len } else { upto };
        if self.data() + want > self.data_end() {
            // A failure leaves the skb as it was: the bounds checks that
            // follow then refuse what is still out of reach.
            let _ = skb::pull_data(self, want);
        }
    }

    #[inline(always)]
    fn link_protocol(&self) -> Option<u16> {
        Some(skb::protocol(self))
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
    #[inline(always)]
    fn pull(&self, _upto: usize) {}
    #[inline(always)]
    fn link_protocol(&self) -> Option<u16> {
        None
    }
}
