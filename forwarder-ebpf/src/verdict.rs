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

/// Not a TC action: marks `Verdict::answer` in the upper half of the
/// action word (TC actions are small, or -1), the MTU in the lower.
const ANSWER: i32 = 0x4000_0000;

/// Bits 0-31 the action, 32-63 the reason.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Verdict(u64);

const REASON_SHIFT: u32 = 32;

/// `Reason::ALL` padded to a power of two with `DropError`.
const REASON_TABLE: [Reason; (REASONS as usize).next_power_of_two()] = {
    let mut t = [Reason::DropError; (REASONS as usize).next_power_of_two()];
    let mut i = 0;
    while i < REASONS as usize {
        t[i] = Reason::ALL[i];
        i += 1;
    }
    t
};

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

    /// Not decided yet (a translated ICMP error to redirect, with
    /// `FwdRedirect`), or the packet is to be turned into the answer
    /// `reason` names (a `Reply*` reason; `mtu` for a frag-needed), which
    /// the entry point builds (`reply::answer`). One call site for the
    /// answers, at the top of the pipeline, keeps their stack frames off
    /// the deep call chains and their code verified once.
    #[inline(always)]
    pub const fn answer(reason: Reason, mtu: u16) -> Verdict {
        Verdict::new(ANSWER | mtu as i32, reason)
    }

    /// Not decided here: a packet of a NAT64 flow's IPv4 side, which the
    /// entry point hands to `fwd_ingress64` (`nat64::hand_over`). An
    /// `answer` no MTU-carrying answer uses (`FwdRedirect` with MTU 1).
    #[inline(always)]
    pub const fn nat64() -> Verdict {
        Verdict::answer(Reason::FwdRedirect, 1)
    }

    /// Whether this is [`Verdict::nat64`].
    #[inline(always)]
    pub const fn is_nat64(self) -> bool {
        self.0 == Verdict::nat64().0
    }

    /// Whether this is an `answer` still to be built.
    #[inline(always)]
    pub const fn is_answer(self) -> bool {
        // The whole upper half: TCX_NEXT (-1) has every bit set.
        (self.action() as u32) & 0xffff_0000 == ANSWER as u32
    }

    /// The MTU an `answer` carries.
    #[inline(always)]
    pub const fn mtu(self) -> u16 {
        self.action() as u16
    }

    #[inline(always)]
    pub const fn action(self) -> i32 {
        self.0 as u32 as i32
    }

    /// The reason, looked up under a power-of-two mask: a reason that came
    /// back from a BPF-to-BPF call is an unknown scalar to the verifier,
    /// and LLVM drops a `< REASONS` check (an enum cannot be out of range),
    /// so only a mask bounds the index. LLVM drops the mask too where it
    /// can prove the reason's range across the call, and 6.1's verifier
    /// cannot (it forgets all bounds of `x | y` with `y` unknown, as in an
    /// action from `bpf_redirect` or'ed with a reason: "R2 unbounded memory
    /// access"): black_box keeps the mask in the code.
    #[inline(always)]
    pub fn reason(self) -> Reason {
        let index = core::hint::black_box(self.0 >> REASON_SHIFT) as usize;
        REASON_TABLE[index & (REASON_TABLE.len() - 1)]
    }
}
