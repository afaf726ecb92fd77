//! Running the `forwarder` command line as a user would, for the CLI tests:
//! exit code, stdout and stderr, and the JSON a command printed.
use std::process::{Command, Output};

use crate::daemon::forwarder_bin;

/// What a command did.
#[derive(Debug)]
pub struct Ran {
    /// The exit code; -1 when a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn of(o: &Output) -> Ran {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// stdout as JSON; panics with the output when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `forwarder ARGS` in this process's namespaces.
pub fn forwarder(args: &[&str]) -> Ran {
    Ran::of(
        &Command::new(forwarder_bin())
            .args(args)
            .output()
            .expect("running forwarder"),
    )
}

/// `forwarder ARGS` inside network namespace `ns`.
pub fn forwarder_in(ns: &str, args: &[&str]) -> Ran {
    let bin = forwarder_bin();
    let mut argv = vec![bin.to_str().expect("a UTF-8 path")];
    argv.extend_from_slice(args);
    Ran::of(
        &crate::process::command_in(Some(ns), &argv)
            .output()
            .expect("running forwarder"),
    )
}
