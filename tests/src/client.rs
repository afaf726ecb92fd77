//! Running real client programs in a namespace with a hard time bound, and
//! checking what they got.
use anyhow::{ensure, Context, Result};

use crate::{netns::Netns, process::command_in};

/// Output of a client command; never fails by itself.
pub struct Out {
    pub ok: bool,
    /// Exit code; 124 when `timeout` killed it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit={}{} stdout={:?} stderr={:?}",
            self.code.map_or("signal".into(), |c| c.to_string()),
            if self.code == Some(124) {
                " (timed out)"
            } else {
                ""
            },
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

/// Runs `args` in `ns` under `timeout` (a hard bound on top of the
/// command's own timeouts, so a broken dataplane fails instead of hanging).
pub fn client(ns: &Netns, secs: u32, args: &[&str]) -> Out {
    let t = secs.to_string();
    let mut v = vec!["timeout", "-k", "2", t.as_str()];
    v.extend_from_slice(args);
    match command_in(Some(&ns.name), &v).output() {
        Ok(o) => Out {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Out {
            ok: false,
            code: None,
            stdout: String::new(),
            stderr: format!("spawning {v:?}: {e}"),
        },
    }
}

/// sha256 of a file, as sha256sum prints it.
pub fn sha256(path: &std::path::Path) -> Result<String> {
    let out = command_in(None, &["sha256sum", path.to_str().unwrap()]).output()?;
    ensure!(out.status.success(), "sha256sum {}", path.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .context("sha256sum output")?
        .to_string())
}
