//! What a TC stage decided: the action the kernel gets (TC_ACT_*) and the
//! `Reason` the packet is counted under, in one register.
//!
//! The one fact a reader would get wrong: a pair such as `(i32, Reason)`
//! returned from a BPF-to-BPF call (the `#[inline(never)]` stages that keep
//! the 512-byte stack in check) goes back through a pointer into the
//! caller's stack, and LLVM may leave that pointer in r0 at the exit, which
//! the verifier refuses ("cannot return stack pointer to the caller"). A
//! single u64 is returned in r0 itself.
//!
//! The actions themselves (`TC_ACT_OK`, `TC_ACT_SHOT`, `TCX_NEXT`) are
//! `forwarder_common::verdict`'s, shared with the tests that check them.
use forwarder_common::{Reason, REASONS, TCX_NEXT, TC_ACT_OK, TC_ACT_SHOT};

/// Bits 0-31 the action, 32-63 the reason.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Verdict(u64);

const REASON_SHIFT: u32 = 32;

impl Verdict {
    #[inline(always)]
    pub const fn new(action: i32, reason: Reason) -> Verdict {
        Verdict(action as u32 as u64 | (reason as u64) << REASON_SHIFT)
    }

    /// Left untouched for the next program or the stack.
    #[inline(always)]
    pub const fn next(reason: Reason) -> Verdict {
        Verdict::new(TCX_NEXT, reason)
    }

    /// Accepted as it now is.
    #[inline(always)]
    pub const fn ok(reason: Reason) -> Verdict {
        Verdict::new(TC_ACT_OK, reason)
    }

    /// Dropped.
    #[inline(always)]
    pub const fn shot(reason: Reason) -> Verdict {
        Verdict::new(TC_ACT_SHOT, reason)
    }

    #[inline(always)]
    pub const fn action(self) -> i32 {
        self.0 as u32 as i32
    }

    #[inline(always)]
    pub const fn reason(self) -> Reason {
        Reason::ALL[(self.0 >> REASON_SHIFT) as usize % REASONS as usize]
    }
}
