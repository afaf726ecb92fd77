//! What the kernel programs are told about the kernel they run on, at load
//! time: the `FWD_KERNEL_FEATURES` word (a read-only global the daemon sets
//! from its start-up probe) and the route facts (`FWD_ROUTE_HINTS`) the
//! daemon supplies where the kernel's FIB lookup cannot.
//!
//! The one fact a reader would get wrong: a missing feature is not tested
//! at run time. The word lives in `.rodata`, a frozen read-only map, so the
//! verifier knows its value and never visits the branch a kernel cannot
//! run: a helper or flag it lacks in a pruned branch is never seen.

/// Name of the global (in the object's `.rodata`) the loader sets.
pub const GLOBAL_KERNEL_FEATURES: &str = "FWD_KERNEL_FEATURES";

/// `bpf_fib_lookup` knows BPF_FIB_LOOKUP_SKIP_NEIGH (Linux 6.3): a lookup
/// answers the egress interface and MTU even when the neighbour is
/// unresolved. Without it the programs take both from `RouteHint`.
pub const FEATURE_FIB_SKIP_NEIGH: u32 = 1 << 0;
/// `bpf_fib_lookup` knows BPF_FIB_LOOKUP_SRC (Linux 6.8; Debian 12's 6.1
/// has it backported): a lookup answers the source address too.
pub const FEATURE_FIB_SRC: u32 = 1 << 1;
/// The TC and XDP programs may call `bpf_ktime_get_coarse_ns` (Linux
/// 5.11); without it they read `bpf_ktime_get_ns` (the same clock,
/// CLOCK_MONOTONIC, at full resolution and a little more cost).
pub const FEATURE_COARSE_TIME: u32 = 1 << 2;
/// Every feature: the object's default, what a current kernel has.
pub const FEATURES_ALL: u32 = FEATURE_FIB_SKIP_NEIGH | FEATURE_FIB_SRC | FEATURE_COARSE_TIME;

/// Route facts for an IPv4 target, from the daemon's `ip route get`
/// (`FWD_ROUTE_HINTS`, keyed by the target's address word): what the FIB
/// lookup leaves out on a kernel without SKIP_NEIGH (the egress interface
/// when the neighbour is unresolved) or SRC (the source it would pick).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RouteHint {
    /// Egress interface of the route to the target.
    pub oif: u32,
    /// The source the kernel picks toward the target (the route's
    /// preferred source or the egress interface's primary address), as an
    /// IPv4 address word in network order; 0: none known.
    pub src: u32,
    /// The MTU toward the target (the egress link's, lowered by a route
    /// `mtu`); 0: unknown. Before 6.3 a NO_NEIGH answer carries none, and
    /// before 5.12 no answer does (`mtu_result`).
    pub mtu: u32,
}
