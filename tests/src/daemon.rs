//! The real `forwarder` binary running inside a namespace.
use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    netns::{next_id, Bpffs, Netns, PREFIX},
    process::{command_in, run_in, wait_for, Bg},
};

/// Path of the binary under test: FORWARDER_BIN (set by `cargo xtask test`)
/// or the workspace's debug build.
pub fn forwarder_bin() -> PathBuf {
    std::env::var_os("FORWARDER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/forwarder"))
}

/// How the daemons of this test run attach their TC programs, as
/// `forwarder status` names it: "tc-legacy" when the suite runs with
/// FORWARDER_FORCE_ATTACH=tc-legacy or on a kernel without TCX (asked of
/// `forwarder doctor --quick`, once), else "tcx".
pub fn tc_mode() -> &'static str {
    static MODE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    MODE.get_or_init(|| {
        if std::env::var("FORWARDER_FORCE_ATTACH").as_deref() == Ok("tc-legacy") {
            return "tc-legacy";
        }
        let tcx = std::process::Command::new(forwarder_bin())
            .args(["doctor", "--quick", "--json"])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["features"]["tcx"].as_bool());
        match tcx {
            Some(false) => "tc-legacy",
            _ => "tcx",
        }
    })
}

/// A running daemon with its own pin and run directories. Dropping it stops
/// the daemon and tears its dataplane down (`forwarder down`); the bpffs
/// mount goes with it.
pub struct Daemon {
    pub ns: String,
    /// `None` between `kill9` and `respawn`.
    pub bg: Option<Bg>,
    args: Vec<String>,
    pub pin_dir: PathBuf,
    pub run_dir: PathBuf,
    pub bpffs: Bpffs,
    /// Logs of earlier incarnations (before `kill9`/`stop`).
    old_logs: String,
}

impl Daemon {
    /// Starts `forwarder run <args>` in `ns` and waits until it has written
    /// its status file (it has loaded and attached by then).
    pub fn start(ns: &Netns, args: &[&str]) -> Result<Daemon> {
        let bpffs = Bpffs::new()?;
        let pin_dir = bpffs.path.join("forwarder");
        let run_dir =
            std::env::temp_dir().join(format!("{PREFIX}{}-{}-run", std::process::id(), next_id()));
        let mut d = Daemon {
            ns: ns.name.clone(),
            bg: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            pin_dir,
            run_dir,
            bpffs,
            old_logs: String::new(),
        };
        d.respawn()?;
        Ok(d)
    }

    fn global_args(&self) -> Vec<String> {
        vec![
            forwarder_bin().to_string_lossy().into_owned(),
            "--pin-dir".into(),
            self.pin_dir.to_string_lossy().into_owned(),
            "--run-dir".into(),
            self.run_dir.to_string_lossy().into_owned(),
        ]
    }

    /// Starts the daemon (again) with the same arguments and directories
    /// and waits until the new process has published its status.
    pub fn respawn(&mut self) -> Result<()> {
        if let Some(mut old) = self.bg.take() {
            old.stop();
            self.old_logs.push_str(&old.log());
        }
        let mut argv = self.global_args();
        argv.push("run".into());
        argv.extend(self.args.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut bg = Bg::spawn(Some(&self.ns), &argv)?;
        let pid = bg.child.id();
        let status = self.run_dir.join("status.json");
        let ready = wait_for(Duration::from_secs(30), || {
            let published = std::fs::read(&status)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["pid"].as_u64() == Some(pid as u64));
            if published {
                return Some(true);
            }
            (!bg.is_running()).then_some(false)
        });
        if ready != Some(true) {
            bail!("daemon did not become ready; log:\n{}", bg.log());
        }
        self.bg = Some(bg);
        Ok(())
    }

    /// SIGKILL: no cleanup at all, as in a crash.
    pub fn kill9(&mut self) -> Result<()> {
        let mut bg = self.bg.take().context("daemon not running")?;
        bg.child.kill()?;
        bg.child.wait()?;
        self.old_logs.push_str(&bg.log());
        Ok(())
    }

    /// SIGTERM and wait: the dataplane stays (unless started with
    /// --teardown-on-exit).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut bg = self.bg.take()?;
        let st = bg.stop();
        self.old_logs.push_str(&bg.log());
        st
    }

    pub fn pid(&self) -> Option<u32> {
        self.bg.as_ref().map(|b| b.child.id())
    }

    /// Runs a `forwarder` CLI command against this daemon's directories;
    /// stdout, failing when the command fails.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut argv = self.global_args();
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = run_in(Some(&self.ns), &argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like `cli`, but returns the output whatever the exit status.
    pub fn cli_output(&self, args: &[&str]) -> Result<Output> {
        let mut argv = self.global_args();
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Ok(command_in(Some(&self.ns), &argv).output()?)
    }

    pub fn status_json(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["status", "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("parsing status JSON: {out}"))
    }

    /// The counters of rule `name` from `status --json`.
    pub fn rule_counters(&self, name: &str) -> Result<serde_json::Value> {
        let st = self.status_json()?;
        st["rules"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["counters"]["name"] == name))
            .map(|r| r["counters"].clone())
            .with_context(|| format!("rule {name} not in status: {st}"))
    }

    /// The daemon's status file as it is now.
    pub fn state(&self) -> Result<serde_json::Value> {
        let b = std::fs::read(self.run_dir.join("status.json"))?;
        Ok(serde_json::from_slice(&b)?)
    }

    /// Every log line of this daemon so far, across restarts.
    pub fn log(&self) -> String {
        let mut s = self.old_logs.clone();
        if let Some(bg) = &self.bg {
            s.push_str(&bg.log());
        }
        s
    }
}

impl Drop for Daemon {
    /// Stops the daemon and tears the dataplane down (`forwarder down`):
    /// a plain stop leaves the programs attached and forwarding.
    /// A test that fails while the daemon lives gets its log printed.
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- forwarder daemon log ----\n{}", self.log());
        }
        let _ = self.cli(&["down"]);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
