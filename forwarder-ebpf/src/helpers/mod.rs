//! Every kernel helper the programs call, each behind one small safe
//! function with one SAFETY line (Cilium's lib/csum.h, Katran's
//! csum_helpers.h): the program logic never calls `bpf_*` itself and
//! writes no `unsafe`. `skb` holds what needs a TC `__sk_buff`, `frame`
//! direct packet access for TC and XDP alike, `tcp_opts` a SYN's options
//! copied out for the MSS walk, `map_value` map values used in place,
//! this file the rest.
//!
//! The one fact a reader would get wrong: a helper that writes the packet
//! (store, checksum replace, pull, change_head) may move it, so every
//! packet pointer or `frame::header` reference taken before it is invalid.
//! The verifier refuses a program that uses one; take them again.
pub mod fib;
pub mod frame;
pub mod map_value;
pub mod skb;
pub mod tcp_opts;
pub mod xlat;

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};
use forwarder_common::{FEATURES_ALL, FEATURE_COARSE_TIME};

/// What the kernel has (`forwarder_common::kernel`), set by the loader from
/// the daemon's probe. In `.rodata`, which the loader freezes: the verifier
/// reads it as a constant and skips the branches this kernel cannot run.
#[no_mangle]
static FWD_KERNEL_FEATURES: u32 = FEATURES_ALL;

/// Whether the kernel has `feature` (a `FEATURE_*` bit). Read volatile so
/// that LLVM keeps the load (it would fold the default value in): the
/// verifier, not the compiler, prunes the other branch.
#[inline(always)]
pub fn kernel_has(feature: u32) -> bool {
    // SAFETY: a plain u32 global, only ever read.
    unsafe { core::ptr::read_volatile(&FWD_KERNEL_FEATURES) & feature != 0 }
}

/// CLOCK_MONOTONIC at tick resolution: a cached read rather than a
/// clocksource access, which matters per packet; the timeouts it is
/// compared with are seconds. A kernel without the coarse helper (5.10)
/// reads the same clock at full resolution.
#[inline(always)]
pub fn ktime_coarse_ns() -> u64 {
    if kernel_has(FEATURE_COARSE_TIME) {
        // SAFETY: no arguments, no side effects.
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        // SAFETY: as above.
        unsafe { bpf_ktime_get_ns() }
    }
}

/// A pseudo-random number (not for secrets).
#[inline(always)]
pub fn prandom_u32() -> u32 {
    // SAFETY: no arguments, no side effects.
    unsafe { bpf_get_prandom_u32() }
}
