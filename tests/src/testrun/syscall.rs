//! The BPF_PROG_TEST_RUN command of bpf(2), made by hand: the one copy of
//! its attribute layout, shared by the test harness ([`super::prog`]) and
//! the bench tool (tools/src/bin/bench_prog, which times hand-assembled
//! programs with it).
//!
//! Hand-written because aya's `TestRunOptions` cannot pass
//! BPF_F_TEST_SKB_CHECKSUM_COMPLETE (its flags are crate-private) and
//! cannot run a program aya did not load.
//!
//! The fact a reader would get wrong: without an output buffer the kernel
//! still runs the program and reports its verdict and time; it only skips
//! copying the packet back.
use std::os::fd::{AsRawFd, BorrowedFd};

/// `BPF_PROG_TEST_RUN` (`enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `BPF_F_TEST_SKB_CHECKSUM_COMPLETE`: the test skb comes with
/// CHECKSUM_COMPLETE, and the kernel checks after the run that the program
/// kept skb->csum right (EBADMSG otherwise).
pub const BPF_F_TEST_SKB_CHECKSUM_COMPLETE: u32 = 1 << 2;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one BPF_PROG_TEST_RUN call passes in.
pub struct TestRun<'a> {
    /// The packet the program runs on.
    pub data: &'a [u8],
    /// The context (`struct __sk_buff`, `struct xdp_md`), or empty.
    pub ctx: &'a [u8],
    /// Where the packet as the program left it goes; `None`: not copied.
    pub out: Option<&'a mut [u8]>,
    /// Runs in the call (the kernel's `duration` is their mean).
    pub repeat: u32,
    /// `BPF_F_TEST_*` flags.
    pub flags: u32,
}

/// What the kernel reported of a BPF_PROG_TEST_RUN call.
#[derive(Clone, Copy, Debug)]
pub struct TestRunResult {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// Mean nanoseconds per run, as the kernel measured them.
    pub duration_ns: u32,
    /// Bytes of the output packet written into `out`.
    pub data_size_out: u32,
}

/// One BPF_PROG_TEST_RUN of program `prog`.
pub fn prog_test_run(prog: BorrowedFd<'_>, run: TestRun<'_>) -> std::io::Result<TestRunResult> {
    let (data_out, data_size_out) = match run.out {
        Some(out) => (out.as_mut_ptr() as u64, out.len() as u32),
        None => (0, 0),
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: run.data.len() as u32,
        data_size_out,
        data_in: run.data.as_ptr() as u64,
        data_out,
        repeat: run.repeat,
        ctx_size_in: run.ctx.len() as u32,
        ctx_in: run.ctx.as_ptr() as u64,
        flags: run.flags,
        ..Default::default()
    };
    // SAFETY: attr points at buffers borrowed by `run`, which outlive the
    // call; the kernel writes at most `data_size_out` bytes to `data_out`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TestRunResult {
        retval: attr.retval,
        duration_ns: attr.duration,
        data_size_out: attr.data_size_out,
    })
}
