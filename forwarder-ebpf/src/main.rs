//! The forwarder's kernel programs. Entry points stay thin: they look up the
//! interface, classify the packet (`parse`), and count what they did
//! (`counters`). Shared layouts live in `forwarder-common`.
#![no_std]
#![no_main]

mod counters;
mod maps;
mod parse;

use aya_ebpf::{macros::classifier, programs::TcContext};
use forwarder_common::Reason;

/// TCX: let the next program in the chain (or the stack) have the packet.
/// Used for everything we leave untouched so we compose with other TCX users.
const TCX_NEXT: i32 = -1;

/// TC ingress on every interface the rules name.
#[classifier]
pub fn fwd_ingress(ctx: TcContext) -> i32 {
    // SAFETY: ctx.skb.skb is the valid __sk_buff the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(iface) = maps::iface(ifindex) else {
        return TCX_NEXT;
    };
    let reason = match parse::ipv4(&ctx, iface.flags) {
        Ok(_pkt) => Reason::PassNoMatch,
        Err(reason) => reason,
    };
    counters::count_iface(iface.slot, reason, ctx.len());
    TCX_NEXT
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
