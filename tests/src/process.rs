//! Commands in namespaces: checked one-shot runs and background processes
//! that are killed when their guard drops.
use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Runs `args` in network namespace `ns` (or the current one for `None`)
/// and fails with its output when it exits non-zero.
pub fn run_in(ns: Option<&str>, args: &[&str]) -> Result<Output> {
    let out = command_in(ns, args)
        .output()
        .with_context(|| format!("spawning {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} in {ns:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

pub fn command_in(ns: Option<&str>, args: &[&str]) -> Command {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    c.stdin(Stdio::null());
    c
}

/// A background process, killed (SIGTERM, then SIGKILL) on drop. Its output
/// goes to a log file that `log()` returns for failure messages.
pub struct Bg {
    pub child: Child,
    pub log: PathBuf,
    pub what: String,
}

impl Bg {
    pub fn spawn(ns: Option<&str>, args: &[&str]) -> Result<Bg> {
        let log = std::env::temp_dir().join(format!(
            "fwt-{}-{}.log",
            std::process::id(),
            crate::netns::next_id()
        ));
        let f = std::fs::File::create(&log)?;
        let child = command_in(ns, args)
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("spawning {args:?}"))?;
        Ok(Bg {
            child,
            log,
            what: format!("{args:?}"),
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait (bounded); returns the exit status if it exited.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.is_running() {
            self.stop();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// How much slower than this machine the tests run: FORWARDER_TEST_TIME_SCALE
/// (default 1). `cargo xtask vm-test` sets it, since its guest is emulated
/// (qemu TCG, tens of times slower); every bound on a wait or a client
/// command is multiplied by it, so a slow machine waits longer instead of
/// failing.
pub fn time_scale() -> u32 {
    std::env::var("FORWARDER_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// Polls `f` until it returns Some or `timeout` (times `time_scale()`) passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout * time_scale();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
