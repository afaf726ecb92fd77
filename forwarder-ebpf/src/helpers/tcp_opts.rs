//! The option bytes of a TCP header, copied out of the skb into per-CPU
//! scratch space (`FWD_MSS_SCRATCH`) where a walk can read them at an index
//! checked against a constant.
//!
//! The one fact a reader would get wrong: why not the stack. The walk
//! reads at a variable offset; the verifiers of 5.10 and 5.11 accept that
//! only in map values (variable-offset stack reads came with 5.12), and a
//! map value keeps the 40 bytes off the 512-byte stack of the call chain.
use aya_ebpf::{helpers::bpf_skb_load_bytes, macros::map, maps::PerCpuArray, programs::TcContext};
use forwarder_common::MSS_SCRATCH_SIZE;

/// At most 40 option bytes follow the 20-byte fixed TCP header.
pub const MAX_OPTION_BYTES: usize = 40;

/// The scratch buffer: the options, then zeroes (EOL) up to its end, so a
/// walk step may read a few bytes past the last option byte it checked.
pub type OptionBytes = [u8; MSS_SCRATCH_SIZE as usize];

#[map(name = "FWD_MSS_SCRATCH")]
static OPTIONS: PerCpuArray<OptionBytes> = PerCpuArray::with_max_entries(1, 0);

/// Copies the `len` (1..=40) option bytes at packet offset `off` into this
/// CPU's scratch buffer, zeroed behind them. None when `len` is out of
/// range or the skb is shorter.
#[inline(always)]
pub fn load(ctx: &TcContext, off: usize, len: usize) -> Option<&'static OptionBytes> {
    let buf = OPTIONS.get_ptr_mut(0)?;
    // Zeroed a word at a time: `write_bytes` is a call to `memset`, a
    // subprogram of its own, whose frame 6.1's verifier counts as 32 bytes
    // of the 512 the deepest call chain may use. Volatile, or LLVM merges
    // the stores back into that call.
    let words = buf as *mut u64;
    let mut i = 0;
    while i < MSS_SCRATCH_SIZE as usize / 8 {
        // SAFETY: this CPU's slot, ours alone for the rest of this run (a
        // program run is never interrupted by another on the same CPU);
        // a map value is 8-byte aligned and the slot holds `i`'s word.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
    // Bounded here, after the map lookup and right before the helper call,
    // in the one shape 6.1's verifier follows: `len - 1` checked against a
    // constant, then the length passed as that value plus one (it learns
    // nothing from `len != 0`, and forgets the bounds of a value LLVM keeps
    // on the stack across the lookup while it could still be negative).
    // black_box keeps LLVM from folding it back into a range it knows.
    let below = core::hint::black_box(len.wrapping_sub(1));
    if below >= MAX_OPTION_BYTES {
        return None;
    }
    let len = below + 1;
    // SAFETY: the helper checks offset and length against the skb and
    // writes at most 40 bytes into the 64-byte buffer.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            off as u32,
            buf as *mut _,
            len as u32,
        )
    };
    // SAFETY: this CPU's slot (see above); the caller only reads it.
    (rc >= 0).then(|| unsafe { &*buf })
}
