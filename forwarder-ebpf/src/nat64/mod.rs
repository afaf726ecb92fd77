//! NAT64 (issue 13): IPv6 clients of an IPv4 target, per flow (an RFC
//! 6146-style session in the shared flow table, RFC 7915 header
//! translation), always SNATed to an IPv4 address of the host (the
//! forward's fixed `snat`, else the address the route to the target
//! leaves from, as IPv4 masquerade).
//!
//! ```text
//! client [v6]:p -> listen [v6]:80      fwd_ingress6: ipv6::run -> out::decide,
//!                                        ipv6::flow::create, out::translate
//!        becomes host v4:q -> target v4:80
//! target v4:80 -> host v4:q            fwd_ingress finds an XLAT entry and
//!                                        tail-calls fwd_ingress64: back::run
//!        becomes listen [v6]:80 -> client [v6]:p
//! ICMP error about host v4:q -> target  fwd_ingress (icmp::error) -> fwd_ingress64:
//!                                        icmp::translate, an ICMPv6 error to the client
//! ```
//!
//! A target without a forwarding route (an IPv4 ClusterIP) is reached
//! through the stack instead (`out::via_pool`, `FlowFlags::VIA_STACK`): the
//! source is the forward's NAT64 pool address (192.0.0.2, not the host's:
//! the stack would drop that as a martian), the translated packet goes to
//! the stack on the client's interface (kube-proxy's DNAT picks a pod),
//! and the reply, routed to the pool, leaves by the daemon's dummy `fwd64`
//! (`IfaceFlags::NAT64_DEV`), whose fwd_egress hands it to fwd_ingress64
//! at egress: translated as above, hop limit the TTL (the stack forwarded
//! it and decremented it already).
//!
//! Both entries of a flow carry `FlowFlags::XLAT`: the original entry's
//! key is IPv6 and its new tuple IPv4, the reply entry's the other way
//! round, and `FlowKey::peer_of` flips the family between them, so the
//! state machine, expiry, eviction and `conntrack list` pair them as any
//! flow's.
//!
//! The fact a reader gets wrong: the packet changes size. The header
//! translation is one bpf_skb_change_proto (20 bytes out or in after the
//! link header) and a whole new IP header written over the old one's
//! place; the L4 checksum is carried across by the difference of the two
//! pseudo-headers (ports and the MSS option are rewritten first, at the
//! old offsets). MTU arithmetic follows: an IPv6 packet too big for the
//! IPv4 route is answered with packet too big for that MTU + 20 (at least
//! 1280), an IPv4 reply too big for the route to the client with
//! fragmentation needed for that MTU - 20. Every translated IPv4 packet
//! has DF set (RFC 7915 5.1) and identification 0 (RFC 6864).
//!
//! Not translated (stated in docs/CONFORMANCE.md): IPv6 extension
//! headers and fragments, IPv4 fragments and options of the target's
//! packets (passed to the stack untranslated and counted, as the IPv6
//! path does), a UDP reply without checksum (dropped, RFC 7915 4.5
//! allows it), ICMPv6 errors from the client side about a NAT64 flow
//! (passed to the stack), echo (ping) through a NAT64 forward, and NAT46.
pub mod back;
mod icmp;
pub mod out;

use aya_ebpf::programs::TcContext;
use forwarder_common::PROG_SLOT_NAT64;

/// IPv6 minimum link MTU (RFC 8200 5): the least packet too big says.
pub const IPV6_MIN_MTU: u16 = 1280;
/// What the IPv6 header adds over an IPv4 header without options.
pub const GROWTH: u16 = 20;

/// Hands a packet of a NAT64 flow's IPv4 side (a reply, an ICMP error
/// about the flow) to `fwd_ingress64`; returns only when that program is
/// not in `FWD_PROGS`, and the packet then goes on untranslated.
// Inlined into fwd_ingress's own frame (see `ipv6::tail_call`).
#[inline(always)]
pub fn hand_over(ctx: &TcContext) {
    // SAFETY: a tail call replaces this program's run with fwd_ingress64's
    // on the same context; on failure nothing happened.
    unsafe { crate::ipv6::PROGS.tail_call(ctx, PROG_SLOT_NAT64) };
}

/// The packet too big MTU for an IPv6 client whose packet, as IPv4, is too
/// big for an IPv4 route of `mtu4`.
#[inline(always)]
pub fn mtu_for_client(mtu4: u16) -> u16 {
    let m = mtu4.saturating_add(GROWTH);
    if m < IPV6_MIN_MTU {
        IPV6_MIN_MTU
    } else {
        m
    }
}
