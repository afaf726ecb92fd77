//! bpf(2) commands aya 0.14 does not wrap, behind one raw call: opening a
//! pinned object by path (BPF_OBJ_GET) for BPF_LINK_DETACH, and whatever
//! the kernel probes (`probe::raw`) need.
//!
//! The one fact a reader gets wrong: deleting a link's pin file does not
//! detach the program when the unlink returns. The pin's reference is
//! dropped from the inode's eviction, and the kernel frees the link (which
//! is what takes the program off the interface) from a work queue a moment
//! later; a command that must leave no program behind when it returns
//! (`forwarder down`, a reload that drops an interface) ends the link's
//! attachment with BPF_LINK_DETACH first (Linux 5.9; TCX and XDP links
//! support it).
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// One bpf(2) call; its non-negative return value (an fd for commands that
/// create one).
pub(crate) fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: attr is a bpf_attr that started all-zero (the kernel checks
    // that the bytes a command does not use are zero); pointers in it stay
    // valid for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An all-zero bpf_attr, every field "unset".
pub(crate) fn zeroed_attr() -> bpf_attr {
    // SAFETY: all-zero is the documented "unset" state of every bpf_attr
    // field (plain integers).
    unsafe { std::mem::zeroed() }
}

/// Ends the attachment of the link pinned at `pin` now. The link object
/// lives on (its pin still holds it) but is attached to nothing: removing
/// the pin afterwards only frees it.
pub fn detach_pinned_link(pin: &Path) -> io::Result<()> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
    let fd = sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut attr = zeroed_attr();
    attr.link_detach.link_fd = link.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr).map(drop)
}
