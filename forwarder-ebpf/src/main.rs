//! The forwarder's kernel programs. Each entry point is a short pipeline
//! (see `tc` and `xdp`): find the interface, parse (`parse`, shared by TC
//! and XDP), find or create the flow (`flow`, `conntrack`, with the
//! per-flow SNAT/path decision in `path`), rewrite (`nat`, `mss`, `icmp`),
//! send on (`fib`), count (`counters`). Every kernel helper is called
//! through `helpers`; shared layouts live in `forwarder-common`.
#![no_std]
#![no_main]

mod conntrack;
mod counters;
mod error;
mod evict;
mod fib;
mod flow;
mod frag;
mod hdr;
mod helpers;
mod icmp;
mod ipv6;
mod maps;
mod mss;
mod nat;
mod nat64;
mod newflow;
mod parse;
mod path;
mod reply;
mod tc;
mod verdict;
mod xdp;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use forwarder_common::Hook;

/// TC ingress on every interface the rules use (listening and backend
/// side): creates flows, translates, redirects.
#[classifier]
pub fn fwd_ingress(ctx: TcContext) -> i32 {
    tc::run(&ctx, Hook::TcIngress)
}

/// TC egress on the same interfaces: translates back the replies of flows
/// that went through the stack (their backend's answer only becomes
/// recognisable after netfilter undid kube-proxy's DNAT), nothing else.
#[classifier]
pub fn fwd_egress(ctx: TcContext) -> i32 {
    tc::run(&ctx, Hook::TcEgress)
}

/// IPv6 at TC ingress (NAT66): never attached, tail-called by fwd_ingress
/// for every packet that is not IPv4 (see `ipv6`).
#[classifier]
pub fn fwd_ingress6(ctx: TcContext) -> i32 {
    ipv6::entry(&ctx)
}

/// The IPv4 side of NAT64 flows at TC ingress: never attached,
/// tail-called by fwd_ingress for the target's replies and ICMP errors
/// about such flows (see `nat64`).
#[classifier]
pub fn fwd_ingress64(ctx: TcContext) -> i32 {
    nat64::back::entry(&ctx)
}

/// IPv6 at TC egress: never attached, tail-called by fwd_egress for every
/// packet that is not IPv4; translates back the replies of IPv6 flows
/// through the stack (see `ipv6::stack`).
#[classifier]
pub fn fwd_egress6(ctx: TcContext) -> i32 {
    ipv6::egress(&ctx)
}

/// XDP accelerator on Ethernet interfaces with native XDP: established
/// flows only; everything else goes on to fwd_ingress (see `xdp`).
#[xdp]
pub fn fwd_xdp(mut ctx: XdpContext) -> u32 {
    xdp::run(&mut ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
