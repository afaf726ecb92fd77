//! Running a measurement tool: in a namespace, with a deadline, stopped
//! early on an interrupt, its output collected by threads (a chatty tool
//! can never block on a full pipe), and the tail of its output for errors.
use std::{
    io::Read,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use forwarder_tests::{netns::Netns, process::command_in};

use crate::bench::interrupt::interrupted;

/// Runs `argv` in `ns` with a deadline, stopping early when the benchmark
/// is interrupted. Output is collected by threads so a chatty tool can
/// never block on a full pipe.
pub fn exec(ns: Option<&str>, argv: &[&str], timeout: Duration) -> Result<Output> {
    let mut child = command_in(ns, argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {argv:?}"))?;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if interrupted() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = (t_out.join(), t_err.join());
            if interrupted() {
                bail!("interrupted");
            }
            bail!("{argv:?} timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// `exec` in `ns` that also fails on a non-zero exit.
pub(super) fn exec_ok(ns: &Netns, argv: &[String], secs: u32) -> Result<String> {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = exec(Some(&ns.name), &args, Duration::from_secs(secs as u64 + 20))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        // The tool, not the `taskset -c N` in front of it.
        let tool = if argv[0] == "taskset" {
            &argv[3]
        } else {
            &argv[0]
        };
        bail!(
            "{tool} failed ({}): {}{}",
            out.status,
            tail(&stdout),
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(stdout)
}

/// The last few lines of a tool's output, for error messages.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(6)..].join("\n")
}
