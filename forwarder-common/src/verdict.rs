//! What a program returns, as the kernel (and BPF_PROG_TEST_RUN) sees it.
//!
//! The one fact a reader gets wrong: under TCX, `TC_ACT_OK` ends the chain
//! (the packet goes on to the stack at once, skipping later TCX programs),
//! while `TCX_NEXT` lets the next program have it. Everything the forwarder
//! leaves untouched returns `TCX_NEXT`, so it composes with other TCX users;
//! only packets it translated or deliberately hands to the stack return
//! `TC_ACT_OK`.

/// TC: accept (include/uapi/linux/pkt_cls.h).
pub const TC_ACT_OK: i32 = 0;
/// TC: drop.
pub const TC_ACT_SHOT: i32 = 2;
/// TC: what bpf_redirect/bpf_redirect_neigh return; BPF_PROG_TEST_RUN only
/// reports it, nothing is sent.
pub const TC_ACT_REDIRECT: i32 = 7;
/// TCX: let the next program in the chain (or the stack) have the packet
/// (`TCX_NEXT`, include/uapi/linux/bpf.h).
pub const TCX_NEXT: i32 = -1;

/// XDP actions (`enum xdp_action`). Without BPF_F_TEST_XDP_LIVE_FRAMES a
/// test run's XDP_REDIRECT is only reported: nothing is transmitted.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
