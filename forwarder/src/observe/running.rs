//! Which daemon runs: a lock file in the run directory, held (`flock`,
//! exclusive) by the daemon for as long as it lives, with its pid inside.
//!
//! The one fact a reader gets wrong: a pid in a file proves nothing. After
//! a SIGKILL the status file still names the dead daemon's pid, and the
//! kernel may have given that pid to any other process since. The lock is
//! released by the kernel when its holder dies, so "the lock is held" is
//! the proof that the daemon lives; and the signal goes through a pidfd
//! opened while the lock was seen held by that pid, so not even a pid
//! recycled in between can receive it.
use std::{
    fs::File,
    io::{Read, Seek, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use super::status::ensure_run_dir;

/// A process's resident set size (the daemon's, for `status` and metrics) (`VmRSS` of /proc/PID/status), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("daemon.lock")
}

/// The daemon's hold on its run directory; released when dropped or when
/// the process ends, however it ends.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

fn open(path: &Path, create: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// flock without blocking: whether it was taken.
fn try_flock(f: &File, how: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

impl DaemonLock {
    /// Takes the run directory's lock for this process and records its
    /// pid, or says which daemon holds it.
    pub fn take(run_dir: &Path) -> Result<DaemonLock> {
        ensure_run_dir(run_dir)?;
        let path = lock_path(run_dir);
        let mut f = open(&path, true).with_context(|| format!("opening {}", path.display()))?;
        if !try_flock(&f, libc::LOCK_EX)? {
            match running_pid(run_dir) {
                Some(pid) => bail!(
                    "another forwarder daemon (pid {pid}) runs with run directory {}",
                    run_dir.display()
                ),
                None => bail!(
                    "another forwarder daemon is starting with run directory {}",
                    run_dir.display()
                ),
            }
        }
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())?;
        f.sync_all()?;
        Ok(DaemonLock { _file: f })
    }
}

/// The pid of the daemon that holds the lock of `run_dir`; `None` when no
/// daemon runs (nobody holds it, or there is no lock file). A daemon that
/// has taken the lock but not yet written its pid counts as not running.
pub fn running_pid(run_dir: &Path) -> Option<u32> {
    let mut f = open(&lock_path(run_dir), false).ok()?;
    if try_flock(&f, libc::LOCK_SH).ok()? {
        // Free: nobody runs. Our shared lock goes with the file.
        return None;
    }
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|p| *p != 0)
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to the daemon of `run_dir`, never to another process:
/// the pid comes from the lock's holder, and the signal goes through a
/// pidfd taken before the holder is checked once more. Returns the pid, or
/// `None` when no daemon runs.
pub fn signal_daemon(run_dir: &Path, signal: libc::c_int) -> Result<Option<u32>> {
    let Some(pid) = running_pid(run_dir) else {
        return Ok(None);
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        // Gone in the meantime.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e).context("pidfd_open (Linux 5.3 or newer)"),
    };
    // The process the pidfd names had `pid` when it was opened; if the
    // lock is still held by `pid`, that process is the daemon.
    if running_pid(run_dir) != Some(pid) {
        return Ok(None);
    }
    // SAFETY: plain syscall on a pidfd we own; no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(None);
        }
        return Err(e).context("signalling the daemon");
    }
    Ok(Some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fwd-lock-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_holder_is_running_and_a_second_daemon_is_refused() {
        let d = dir();
        assert_eq!(running_pid(&d), None, "no lock file: nobody");
        let lock = DaemonLock::take(&d).unwrap();
        // flock locks belong to the open file description: a second open
        // of the file (as another process does) sees it held.
        assert_eq!(running_pid(&d), Some(std::process::id()));
        let e = DaemonLock::take(&d).unwrap_err();
        assert!(format!("{e}").contains("another forwarder daemon"), "{e}");
        drop(lock);
        assert_eq!(running_pid(&d), None, "released");
        let _again = DaemonLock::take(&d).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_pid_in_a_stale_lock_file_is_not_a_running_daemon() {
        let d = dir();
        // What a SIGKILLed daemon leaves: the file, its pid, no lock. The
        // pid here is our own, alive: it must still not count.
        std::fs::write(lock_path(&d), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running_pid(&d), None);
        assert_eq!(signal_daemon(&d, 0).unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
