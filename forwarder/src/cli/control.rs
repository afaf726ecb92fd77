//! `forwarder reload` and `forwarder down`: talking to the daemon.
//!
//! There is no socket: the daemon holds a lock file in its run directory
//! (root only) with its pid, publishes the result of every load in its
//! status file there, and everything else the CLI needs is in the pinned
//! maps. A signal is the whole protocol,
//! so there is nothing to version or secure beyond file permissions, and
//! `status`/`conntrack` keep working while no daemon runs (the pinned
//! dataplane goes on forwarding).
use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use super::exit::{self, NotRunning};
use crate::{
    dataplane,
    observe::{running, status},
};
use anyhow::{bail, Context, Result};
use serde_json::json;

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// SIGHUP to the daemon, then wait for it to report the load's result and
/// print it with what the load changed (the same summary `forwarder diff`
/// gives before).
pub fn reload(run_dir: &Path, json: bool) -> Result<ExitCode> {
    let no_daemon = || {
        NotRunning(format!(
            "no forwarder daemon is running (nothing holds {}): nothing to reload",
            running::lock_path(run_dir).display()
        ))
    };
    running::running_pid(run_dir).ok_or_else(no_daemon)?;
    let before = status::read(run_dir)?.generation;
    running::signal_daemon(run_dir, libc::SIGHUP)?.ok_or_else(no_daemon)?;
    let mut st = None;
    let done = wait_until(Duration::from_secs(15), || {
        st = status::read(run_dir).ok();
        st.as_ref().is_some_and(|s| s.generation > before)
    });
    let st = st
        .filter(|_| done)
        .context("the daemon did not report the reload within 15 s")?;
    let error = st.rules_error.as_deref().unwrap_or("(no details)");
    let load = st.last_load.as_ref();
    let applied = load.is_some_and(|l| l.applied);
    let mixed = load.is_some_and(|l| l.maps_mixed);
    if json {
        let changes = load.and_then(|l| l.changes.as_ref());
        let mut v = json!({
            "applied": applied,
            "summary": load.map(|l| l.summary.as_str()),
            "changes": changes,
        });
        if !applied {
            v["error"] = json!({
                "kind": if mixed { "rollback_failed" } else { "rejected" },
                "message": error,
                "exit_code": exit::FAILURE,
            });
        }
        exit::print_json(&v);
    } else if applied {
        let l = load.expect("applied implies a load");
        println!("applied: {}", l.summary);
        if let Some(c) = &l.changes {
            print!("{}", c.render());
        }
    } else if mixed {
        eprintln!(
            "failed, and the rollback failed too: the maps hold a mix of the old and the \
             new file until the daemon's retry succeeds:"
        );
        eprintln!("{error}");
    } else {
        eprintln!("rejected; the running configuration is unchanged:");
        eprintln!("{error}");
    }
    Ok(if applied {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Stops the daemon if one runs, then removes every program, link and pin
/// under the pin directory.
pub fn down(pin_dir: &Path, run_dir: &Path, json: bool) -> Result<ExitCode> {
    let stopped = running::signal_daemon(run_dir, libc::SIGTERM)?;
    if let Some(pid) = stopped {
        // Its lock goes with its last file descriptor, when it has exited.
        let gone = wait_until(Duration::from_secs(15), || {
            running::running_pid(run_dir).is_none()
        });
        if !gone {
            bail!("the daemon (pid {pid}) did not stop within 15 s");
        }
        if !json {
            println!("stopped the daemon (pid {pid})");
        }
    }
    let removed = dataplane::teardown(pin_dir)?;
    let _ = std::fs::remove_file(status::status_path(run_dir));
    if json {
        exit::print_json(&json!({
            "stopped_daemon_pid": stopped,
            "removed_pins": removed.len(),
            "pin_dir": pin_dir,
        }));
    } else if removed.is_empty() {
        println!("nothing pinned under {}", pin_dir.display());
    } else {
        println!(
            "removed {} pins under {} (programs detached, flow table freed)",
            removed.len(),
            pin_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
