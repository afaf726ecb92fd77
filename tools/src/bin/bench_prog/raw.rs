//! Hand-assembled BPF programs and the few bpf(2) commands to load and
//! time them, for `primitives` (the ablation of the TC program's time).
//!
//! Hand-written because no crate does it: aya loads programs only from
//! ELF objects, and an object of its own would need the BPF toolchain
//! (bpf-linker, build-std) in the tools crate's build. A program here is a
//! few helper calls in a row, so the bytes are easy to write and there is
//! no compiler between what is measured and what runs: each primitive costs
//! exactly its instructions.
//!
//! The one fact a reader would get wrong: these programs run against the
//! *production* maps (found by name among the maps the loaded `fwd_ingress`
//! uses), so a lookup here walks the same table, the same buckets and the
//! same key size as the real program's.
use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, ensure, Result};
use forwarder_tests::testrun::syscall::{prog_test_run, TestRun};

/// One instruction (`struct bpf_insn`).
#[derive(Clone, Copy)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;
/// The program's context, saved at entry (callee-saved across helpers).
pub const R6: u8 = 6;
pub const R8: u8 = 8;
pub const R9: u8 = 9;
pub const R10: u8 = 10;

/// Helper ids (`enum bpf_func_id`).
pub mod helper {
    pub const MAP_LOOKUP: i32 = 1;
    pub const MAP_UPDATE: i32 = 2;
    pub const MAP_DELETE: i32 = 3;
    pub const PRANDOM_U32: i32 = 7;
    pub const L4_CSUM_REPLACE: i32 = 11;
    pub const FIB_LOOKUP: i32 = 69;
    pub const SK_LOOKUP_TCP: i32 = 84;
    pub const SK_RELEASE: i32 = 86;
    pub const MAP_PUSH: i32 = 87;
    pub const REDIRECT_NEIGH: i32 = 152;
    pub const KTIME_COARSE_NS: i32 = 160;
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// A program being written: instructions appended in order.
#[derive(Default, Clone)]
pub struct Asm(pub Vec<Insn>);

impl Asm {
    pub fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.0.push(insn(0xb7, dst, 0, 0, imm));
        self
    }
    pub fn mov(&mut self, dst: u8, src: u8) -> &mut Self {
        self.0.push(insn(0xbf, dst, src, 0, 0));
        self
    }
    pub fn add_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.0.push(insn(0x07, dst, 0, 0, imm));
        self
    }
    /// `dst = *(u64 *)(src + off)`
    pub fn ldx64(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.0.push(insn(0x79, dst, src, off, 0));
        self
    }
    /// `*(u64 *)(dst + off) = src`
    pub fn stx64(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.0.push(insn(0x7b, dst, src, off, 0));
        self
    }
    /// `*(u32 *)(dst + off) = src`
    pub fn stx32(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.0.push(insn(0x63, dst, src, off, 0));
        self
    }
    /// `*(u32 *)(dst + off) = imm`
    pub fn st32(&mut self, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.0.push(insn(0x62, dst, 0, off, imm));
        self
    }
    /// `dst = map` (a map fd the kernel resolves at load).
    pub fn ld_map(&mut self, dst: u8, map_fd: i32) -> &mut Self {
        self.0.push(insn(0x18, dst, 1, 0, map_fd));
        self.0.push(insn(0, 0, 0, 0, 0));
        self
    }
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.0.push(insn(0x85, 0, 0, 0, helper));
        self
    }
    /// `if dst == imm goto +off`
    pub fn jeq_imm(&mut self, dst: u8, imm: i32, off: i16) -> &mut Self {
        self.0.push(insn(0x15, dst, 0, off, imm));
        self
    }
    /// `if dst != imm goto +off`
    pub fn jne_imm(&mut self, dst: u8, imm: i32, off: i16) -> &mut Self {
        self.0.push(insn(0x55, dst, 0, off, imm));
        self
    }
    pub fn exit(&mut self) -> &mut Self {
        self.0.push(insn(0x95, 0, 0, 0, 0));
        self
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Writes `bytes` (a whole number of 32-bit words) to the stack at
    /// `r10 + off`.
    pub fn st_bytes(&mut self, off: i16, bytes: &[u8]) -> &mut Self {
        assert!(bytes.len().is_multiple_of(4), "stack data in whole words");
        for (i, w) in bytes.chunks(4).enumerate() {
            let word = i32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
            self.st32(R10, off + 4 * i as i16, word);
        }
        self
    }

    fn encode(&self) -> Vec<u64> {
        self.0
            .iter()
            .map(|i| {
                i.code as u64
                    | (i.regs as u64) << 8
                    | (i.off as u16 as u64) << 16
                    | (i.imm as u32 as u64) << 32
            })
            .collect()
    }
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<i64> {
    // SAFETY: bpf(2) with an attr of the layout `cmd` expects (zeroed
    // beyond the fields set); the kernel reads at most size_of::<T>().
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        bail!("{}", std::io::Error::last_os_error());
    }
    Ok(r)
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`,
/// zero-padded.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 8],
}

/// Loads `asm` as a TC classifier named `name` (up to 15 bytes); the
/// verifier's log in the error when it refuses.
pub fn load(name: &str, asm: &Asm) -> Result<OwnedFd> {
    let insns = asm.encode();
    let license = CString::new("GPL")?;
    let mut log = vec![0u8; 1 << 16];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    for (d, s) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a new fd the kernel just returned, ours alone.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            bail!(
                "loading {name}: {e}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    _rest: [u32; 27],
}

/// A private map (preallocated when a hash).
pub fn map_create(map_type: u32, key_size: u32, value_size: u32, max: u32) -> Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries: max,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: a new fd the kernel just returned, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One BPF_PROG_TEST_RUN call (the harness's, which the test_run tables
/// use too): (return value of the last run, mean ns per run as the kernel
/// measured it).
pub fn test_run(prog: &OwnedFd, data: &[u8], ctx: &[u8], repeat: u32) -> Result<(u32, u64)> {
    let r = prog_test_run(
        prog.as_fd(),
        TestRun {
            data,
            ctx,
            out: None,
            repeat,
            flags: 0,
        },
    )?;
    Ok((r.retval, r.duration_ns as u64))
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The kernel's id of the program `prog` (to find its statistics).
pub fn prog_id(prog: &OwnedFd) -> Result<u32> {
    // `struct bpf_prog_info` starts with type, id; the kernel fills no
    // more than `info_len` bytes.
    let mut info = [0u32; 2];
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    ensure!(info[1] != 0, "program without an id");
    Ok(info[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding the kernel expects (include/uapi/linux/bpf.h): opcode,
    /// dst in the low nibble, src in the high one, then off and imm, little
    /// endian; a map load is two slots.
    #[test]
    fn encodes_like_the_uapi() {
        let mut a = Asm::default();
        a.mov_imm(R0, -1).ld_map(R1, 7).stx32(R10, -8, R2).exit();
        let e = a.encode();
        assert_eq!(e[0], 0xffff_ffff_0000_00b7);
        assert_eq!(e[1], 0x0000_0007_0000_1118);
        assert_eq!(e[2], 0);
        assert_eq!(e[3], 0x0000_0000_fff8_2a63);
        assert_eq!(e[4], 0x95);
    }
}
