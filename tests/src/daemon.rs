//! The real `forwarder` binary running inside a namespace.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    netns::{next_id, Bpffs, Netns, PREFIX},
    process::{run_in, wait_for, Bg},
};

/// Path of the binary under test: FORWARDER_BIN (set by `cargo xtask test`)
/// or the workspace's debug build.
pub fn forwarder_bin() -> PathBuf {
    std::env::var_os("FORWARDER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/forwarder"))
}

/// A running daemon with its own pin and run directories. Dropping it stops
/// the daemon; the bpffs mount goes with it.
pub struct Daemon {
    pub ns: String,
    pub bg: Bg,
    pub pin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub bpffs: Bpffs,
}

impl Daemon {
    /// Starts `forwarder run <args>` in `ns` and waits until it has written
    /// its status file (it has loaded and attached by then).
    pub fn start(ns: &Netns, args: &[&str]) -> Result<Daemon> {
        let bpffs = Bpffs::new()?;
        let pin_dir = bpffs.path.join("forwarder");
        let run_dir =
            std::env::temp_dir().join(format!("{PREFIX}{}-{}-run", std::process::id(), next_id()));
        let bin = forwarder_bin();
        let mut argv: Vec<&str> = vec![
            bin.to_str().unwrap(),
            "--pin-dir",
            pin_dir.to_str().unwrap(),
            "--run-dir",
            run_dir.to_str().unwrap(),
            "run",
        ];
        argv.extend_from_slice(args);
        let mut bg = Bg::spawn(Some(&ns.name), &argv)?;
        let status = run_dir.join("status.json");
        let ready = wait_for(Duration::from_secs(20), || {
            if status.exists() {
                return Some(true);
            }
            (!bg.is_running()).then_some(false)
        });
        if ready != Some(true) {
            bail!("daemon did not become ready; log:\n{}", bg.log());
        }
        Ok(Daemon {
            ns: ns.name.clone(),
            bg,
            pin_dir,
            run_dir,
            bpffs,
        })
    }

    /// Runs a `forwarder` CLI command against this daemon's directories.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let bin = forwarder_bin();
        let mut argv: Vec<&str> = vec![
            bin.to_str().unwrap(),
            "--pin-dir",
            self.pin_dir.to_str().unwrap(),
            "--run-dir",
            self.run_dir.to_str().unwrap(),
        ];
        argv.extend_from_slice(args);
        let out = run_in(Some(&self.ns), &argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn status_json(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["status", "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("parsing status JSON: {out}"))
    }

    pub fn log(&self) -> String {
        self.bg.log()
    }
}

impl Drop for Daemon {
    /// Stops the daemon and tears the dataplane down (`forwarder down`):
    /// a plain stop leaves the programs attached and forwarding.
    fn drop(&mut self) {
        self.bg.stop();
        let _ = self.cli(&["down"]);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
