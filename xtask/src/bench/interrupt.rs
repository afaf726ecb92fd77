//! Stopping a benchmark cleanly: SIGINT/SIGTERM/SIGHUP only set a flag,
//! and every step checks it, so the run unwinds through its guards instead
//! of dying with namespaces, processes and pins left behind.
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Set by SIGINT/SIGTERM/SIGHUP: the benchmark stops at the next step and
/// unwinds, so every guard (namespaces, processes, bpffs) cleans up.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

pub(super) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}
