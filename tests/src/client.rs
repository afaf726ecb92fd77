//! Real clients run in a namespace under a hard time bound, and checks of
//! what the far end saw (server logs, checksums).
use std::{path::Path, time::Duration};

use anyhow::{bail, ensure, Context, Result};

use crate::{
    netns::Netns,
    process::{command_in, wait_for},
};

/// Output of a client command; never fails by itself.
pub struct Out {
    pub ok: bool,
    /// Exit code; 124 when `timeout` killed it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit={}{} after {:.1}s stdout={:?} stderr={:?}",
            self.code.map_or("signal".into(), |c| c.to_string()),
            if self.code == Some(124) {
                " (timed out)"
            } else {
                ""
            },
            self.elapsed.as_secs_f64(),
            truncate(&self.stdout),
            truncate(&self.stderr)
        )
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(2000) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Runs `args` in `ns` under `timeout -k 2 secs` (a hard bound on top of
/// the command's own timeouts, so a broken dataplane fails instead of
/// hanging).
/// `secs` is multiplied by `time_scale()`.
pub fn client(ns: &Netns, secs: u32, args: &[&str]) -> Out {
    let t = (secs * crate::process::time_scale()).to_string();
    let mut v = vec!["timeout", "-k", "2", t.as_str()];
    v.extend_from_slice(args);
    let t0 = std::time::Instant::now();
    match command_in(Some(&ns.name), &v).output() {
        Ok(o) => Out {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            elapsed: t0.elapsed(),
        },
        Err(e) => Out {
            ok: false,
            code: None,
            stdout: String::new(),
            stderr: format!("spawning {v:?}: {e}"),
            elapsed: t0.elapsed(),
        },
    }
}

/// `curl` of `url` from `ns` with a connect timeout of `connect` seconds
/// and an overall bound of `total` seconds; `extra` goes before the URL.
pub fn curl(ns: &Netns, connect: u32, total: u32, extra: &[&str], url: &str) -> Out {
    let scale = crate::process::time_scale();
    let (c, m) = ((connect * scale).to_string(), (total * scale).to_string());
    let mut v = vec![
        "curl",
        "-sS",
        "--connect-timeout",
        c.as_str(),
        "--max-time",
        m.as_str(),
    ];
    v.extend_from_slice(extra);
    v.push(url);
    client(ns, total + 3, &v)
}

pub fn sha256(path: &Path) -> Result<String> {
    let out = command_in(None, &["sha256sum", path.to_str().unwrap()]).output()?;
    ensure!(out.status.success(), "sha256sum {}", path.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .context("sha256sum output")?
        .to_string())
}

/// Waits (briefly: servers log right after the exchange) until `peers`
/// holds at least `n` entries past `before`, then checks that every new
/// entry is `expect`.
pub fn check_new_peers(
    what: &str,
    before: usize,
    n: usize,
    expect: &str,
    peers: impl Fn() -> Vec<String>,
) -> Result<()> {
    let got = wait_for(Duration::from_secs(3), || {
        let p = peers();
        (p.len() >= before + n).then_some(p)
    });
    let Some(p) = got else {
        let p = peers();
        bail!(
            "{what}: expected {n} new client address(es) in the server log, got {:?}",
            p.get(before..).unwrap_or_default()
        );
    };
    let new = &p[before..];
    ensure!(
        new.iter().all(|a| a == expect),
        "{what}: server saw clients {new:?}, expected all {expect}"
    );
    Ok(())
}
