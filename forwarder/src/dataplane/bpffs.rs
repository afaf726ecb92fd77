//! bpffs handling: pins only survive on a bpf filesystem, and on a fresh host
//! (or inside `ip netns exec`, which remounts /sys) /sys/fs/bpf may be a plain
//! sysfs directory.
use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use anyhow::{bail, Context, Result};

/// statfs f_type of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Makes sure `pin_dir` lives on bpffs and exists. Mounts bpffs on
/// /sys/fs/bpf when the pin directory is under it and nothing is mounted
/// there yet; any other location must already be a bpffs mount.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<()> {
    let sys_bpf = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(sys_bpf) && !is_bpffs(sys_bpf) {
        mount_bpffs(sys_bpf)?;
    }
    let parent = pin_dir.parent().unwrap_or(pin_dir);
    if !is_bpffs(parent) && !is_bpffs(pin_dir) {
        bail!(
            "{} is not on a bpf filesystem; mount one with `mount -t bpf bpf {}` \
             or choose a --pin-dir under /sys/fs/bpf",
            pin_dir.display(),
            parent.display()
        );
    }
    std::fs::create_dir_all(pin_dir)
        .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    Ok(())
}

pub fn mount_bpffs(at: &Path) -> Result<()> {
    std::fs::create_dir_all(at).ok();
    let target = CString::new(at.as_os_str().as_bytes())?;
    let fstype = CString::new("bpf")?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mounting bpffs on {}", at.display()));
    }
    Ok(())
}
