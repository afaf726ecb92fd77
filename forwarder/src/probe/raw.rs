//! Probes aya 0.14 has no API for, as raw bpf(2) calls: a tiny classifier
//! built from instructions (to ask bpf_fib_lookup which flags it knows, and
//! to ask BPF_LINK_CREATE whether it knows TCX), and a throwaway hash map
//! (to ask for BPF_MAP_LOOKUP_BATCH). They must not depend on our own
//! object: on an old kernel that object may not load at all, and these
//! answers are part of saying why.
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use aya_obj::generated::{bpf_cmd, bpf_insn, bpf_prog_type};

use crate::dataplane::sys::{sys_bpf, zeroed_attr as zeroed};

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
    // SAFETY: plain data; all-zero is valid.
    let mut i: bpf_insn = unsafe { std::mem::zeroed() };
    i.code = code;
    i.set_dst_reg(dst);
    i.set_src_reg(src);
    i.off = off;
    i.imm = imm;
    i
}

// Opcodes (include/uapi/linux/bpf.h, bpf_common.h).
const MOV64_IMM: u8 = 0xb7;
const MOV64_REG: u8 = 0xbf;
const ADD64_IMM: u8 = 0x07;
const STDW_IMM: u8 = 0x7a; // *(u64 *)(dst + off) = imm
const STB_IMM: u8 = 0x72; // *(u8 *)(dst + off) = imm
const STW_IMM: u8 = 0x62; // *(u32 *)(dst + off) = imm
const CALL: u8 = 0x85;
const JNE_IMM: u8 = 0x55; // if dst != imm goto pc + off
const LDXW: u8 = 0x61; // dst = *(u32 *)(src + off)
const EXIT: u8 = 0x95;
const BPF_FUNC_FIB_LOOKUP: i32 = 69;
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R10: u8 = 10;

/// Loads a classifier; the verifier log on failure.
fn load_classifier(insns: &[bpf_insn]) -> Result<OwnedFd, String> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = zeroed();
    // SAFETY: union access to the BPF_PROG_LOAD member.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS as u32;
    u.insn_cnt = insns.len() as u32;
    u.insns = insns.as_ptr() as u64;
    u.license = license.as_ptr() as u64;
    u.log_level = 1;
    u.log_size = log.len() as u32;
    u.log_buf = log.as_mut_ptr() as u64;
    match sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(format!(
                "{e}: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            ))
        }
    }
}

/// `r0 = 0; exit`: a classifier that does nothing, to attach somewhere.
pub fn trivial_classifier() -> Result<OwnedFd, String> {
    load_classifier(&[insn(MOV64_IMM, R0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)])
}

/// Whether bpf_fib_lookup accepts `flags`. The helper checks its flags
/// before anything else and returns -EINVAL for bits it does not know,
/// which the program hands back as its return value (BPF_PROG_TEST_RUN).
/// A verifier would accept any flags: only running it tells.
/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: the kernel NUL-terminates release.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
pub fn fib_lookup_accepts(flags: u32) -> Result<bool, String> {
    Ok(fib_lookup_rc(flags)? != -libc::EINVAL)
}

/// What bpf_fib_lookup returns for `flags` in a test run (a BPF_FIB_LKUP_RET_*
/// code, or a negative errno), looking up nothing in particular from
/// loopback (the test run's skb lives on it).
pub fn fib_lookup_rc(flags: u32) -> Result<i32, String> {
    fib_lookup(1, 0, flags, false)
}

/// Runs bpf_fib_lookup in a test program: from `ifindex` to `dst`
/// (network order). Returns the helper's return code, or with `want_src`
/// the source address it filled in (network order, as an i32) when it
/// succeeded.
pub fn fib_lookup(ifindex: u32, dst: u32, flags: u32, want_src: bool) -> Result<i32, String> {
    // struct bpf_fib_lookup on the stack at fp-64: family at 0, ifindex at
    // 8, ipv4_src at 16, ipv4_dst at 32; the rest zero.
    let mut prog = vec![insn(MOV64_REG, R6, R1, 0, 0)];
    for off in (-64..0).step_by(8) {
        prog.push(insn(STDW_IMM, R10, 0, off, 0));
    }
    prog.extend([
        insn(STB_IMM, R10, 0, -64, libc::AF_INET),
        insn(STW_IMM, R10, 0, -56, ifindex as i32),
        insn(STW_IMM, R10, 0, -32, dst as i32),
        insn(MOV64_REG, R1, R6, 0, 0),
        insn(MOV64_REG, R2, R10, 0, 0),
        insn(ADD64_IMM, R2, 0, 0, -64),
        insn(MOV64_IMM, R3, 0, 0, 64),
        insn(MOV64_IMM, R4, 0, 0, flags as i32),
        insn(CALL, 0, 0, 0, BPF_FUNC_FIB_LOOKUP),
    ]);
    if want_src {
        prog.extend([insn(JNE_IMM, R0, 0, 1, 0), insn(LDXW, R0, R10, -48, 0)]);
    }
    prog.push(insn(EXIT, 0, 0, 0, 0));
    let fd = load_classifier(&prog)?;
    // An Ethernet header + an IPv4 header's worth of zeroes: test_run
    // wants at least ETH_HLEN bytes.
    let data = [0u8; 34];
    let mut out = [0u8; 64];
    let mut attr = zeroed();
    // SAFETY: union access to the BPF_PROG_TEST_RUN member.
    let t = unsafe { &mut attr.test };
    t.prog_fd = std::os::fd::AsRawFd::as_raw_fd(&fd) as u32;
    t.data_in = data.as_ptr() as u64;
    t.data_size_in = data.len() as u32;
    t.data_out = out.as_mut_ptr() as u64;
    t.data_size_out = out.len() as u32;
    t.repeat = 1;
    sys_bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr).map_err(|e| format!("test run: {e}"))?;
    // SAFETY: as above.
    Ok(unsafe { attr.test.retval } as i32)
}

/// BPF_TCX_INGRESS (include/uapi/linux/bpf.h; aya 0.14's bindings have it,
/// but as an enum this kernel may not know).
const BPF_TCX_INGRESS: u32 = 46;

/// Whether BPF_LINK_CREATE knows TCX (Linux 6.6), asked without touching
/// any interface: a TCX attach to an ifindex that cannot exist fails with
/// ENODEV when TCX is there, EINVAL when the attach type is unknown.
pub fn tcx_supported() -> Result<bool, String> {
    let prog = trivial_classifier()?;
    let mut attr = zeroed();
    // SAFETY: union access to the BPF_LINK_CREATE member.
    let l = unsafe { &mut attr.link_create };
    l.__bindgen_anon_1.prog_fd = std::os::fd::AsRawFd::as_raw_fd(&prog) as u32;
    l.__bindgen_anon_2.target_ifindex = u32::MAX;
    l.attach_type = BPF_TCX_INGRESS;
    match sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) {
        Ok(fd) => {
            // Cannot happen (no such interface); do not leak it anyway.
            // SAFETY: a new fd nothing else owns.
            drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(format!("BPF_LINK_CREATE: {e}")),
    }
}

/// Whether BPF_MAP_LOOKUP_BATCH (Linux 5.6) works on a hash map: on an
/// empty map it answers ENOENT; a kernel without it EINVAL.
pub fn map_lookup_batch_supported() -> Result<bool, String> {
    let mut attr = zeroed();
    // SAFETY: union access to the BPF_MAP_CREATE member.
    let m = unsafe { &mut attr.__bindgen_anon_1 };
    m.map_type = aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_HASH as u32;
    m.key_size = 4;
    m.value_size = 4;
    m.max_entries = 1;
    let fd =
        sys_bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr).map_err(|e| format!("BPF_MAP_CREATE: {e}"))?;
    // SAFETY: a new fd nothing else owns.
    let map = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let (mut keys, mut values, mut out_batch) = ([0u32; 1], [0u32; 1], 0u64);
    let mut attr = zeroed();
    // SAFETY: union access to the batch member.
    let b = unsafe { &mut attr.batch };
    b.map_fd = std::os::fd::AsRawFd::as_raw_fd(&map) as u32;
    b.keys = keys.as_mut_ptr() as u64;
    b.values = values.as_mut_ptr() as u64;
    b.out_batch = &mut out_batch as *mut u64 as u64;
    b.count = 1;
    match sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(format!("BPF_MAP_LOOKUP_BATCH: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probes must be able to say "no": a flag no kernel knows is
    /// refused, the ones this machine's kernel (6.18) has are accepted.
    /// Root only (BPF); skipped loudly otherwise, fatal under CI.
    #[test]
    fn fib_flag_probe_tells_known_from_unknown_flags() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("FORWARDER_REQUIRE_ROOT_TESTS").is_none(),
                "needs root"
            );
            eprintln!("!!!! SKIPPED: needs root for BPF !!!!");
            return;
        }
        assert_eq!(fib_lookup_accepts(1 << 31), Ok(false));
        assert_eq!(fib_lookup_accepts(0), Ok(true));
        if crate::probe::kernel_release().starts_with("6.18") {
            assert_eq!(
                fib_lookup_accepts(crate::probe::checks::BPF_FIB_LOOKUP_SRC),
                Ok(true)
            );
            assert_eq!(tcx_supported(), Ok(true));
        }
        assert_eq!(map_lookup_batch_supported(), Ok(true));
    }
}
