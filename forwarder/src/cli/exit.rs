//! Exit codes, and how a failed command says why: a sentence on stderr, or
//! with `--json` one JSON object on stdout (where the caller's parser
//! reads), so a script never has to parse prose.
//!
//! The codes follow the conventions of the tools the forwarder replaces
//! (iptables, conntrack, grep, diff): 0 yes, 1 no or invalid, 2 usage, and
//! 3 "nothing is running to ask". The one fact a reader gets wrong: exit 1
//! is not only an error. `explain` exits 1 when a packet is not forwarded,
//! `diff` when the file would change something, `import` when something
//! was left out; the output says which, and the JSON `error` object is only
//! printed for real failures.
use std::io::Write;

use rules::Diagnostics;
use serde_json::{json, Value};

pub const SUCCESS: u8 = 0;
pub const FAILURE: u8 = 1;
/// clap's own code for a command line it cannot parse.
pub const USAGE: u8 = 2;
pub const NOT_RUNNING: u8 = 3;

/// Every exit code with its meaning: the man page's EXIT STATUS section
/// (packaging/docgen) and `--help` are made from this table.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (
        SUCCESS,
        "success: the file is valid (check), the packet is forwarded (explain), nothing would \
         change (diff), the reload applied (reload), everything was translated (import), the \
         daemon is ready (status --ready)",
    ),
    (
        FAILURE,
        "no, or invalid: an invalid rules file (the error names file, line, rule and a fix), a \
         packet that matches no forward or is refused (explain), a file that would change the \
         running forwards (diff), a rejected reload, nothing or not everything translated \
         (import), NAT rules or socat still in the way (migrate-check), a missing kernel feature \
         (doctor), or an error from the kernel or the file system",
    ),
    (USAGE, "usage error: unknown command or option, a bad value"),
    (
        NOT_RUNNING,
        "not running: no daemon to reload or report on, no pinned dataplane for status or \
         conntrack to read",
    ),
];

/// Nothing is running to answer the question (exit 3): no daemon holds
/// the run directory's lock, or nothing is pinned to read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotRunning(pub String);

/// A rules file that did not load: every problem, each with its place.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRules(pub Diagnostics);

/// The exit code for a failed command.
pub fn code_of(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<NotRunning>().is_some() {
        NOT_RUNNING
    } else {
        FAILURE
    }
}

/// One diagnostic as JSON: where, how bad, what and how to fix it.
pub fn diagnostic_json(file: &str, d: &rules::Diagnostic) -> Value {
    json!({
        "severity": d.severity.as_str(),
        "file": d.file.as_deref().unwrap_or(file),
        "line": d.location.map(|l| l.line),
        "column": d.location.map(|l| l.column),
        "context": d.context,
        "message": d.message,
        "help": d.help,
    })
}

pub fn diagnostics_json(diags: &Diagnostics) -> Vec<Value> {
    diags
        .items
        .iter()
        .map(|d| diagnostic_json(&diags.file, d))
        .collect()
}

/// The `error` object printed with `--json`.
pub fn error_json(e: &anyhow::Error) -> Value {
    let code = code_of(e);
    let mut obj = json!({
        "error": {
            "kind": if code == NOT_RUNNING { "not_running" } else { "failed" },
            "message": format!("{e:#}"),
            "exit_code": code,
        }
    });
    if let Some(InvalidRules(d)) = e.downcast_ref::<InvalidRules>() {
        obj["error"]["kind"] = json!("invalid_rules");
        obj["error"]["message"] = json!(invalid_summary(d));
        obj["error"]["diagnostics"] = json!(diagnostics_json(d));
    }
    obj
}

/// "rules.toml: 2 errors, not loaded".
pub fn invalid_summary(d: &Diagnostics) -> String {
    let n = d.errors().count();
    format!(
        "{}: {n} error{}, not loaded",
        d.file,
        if n == 1 { "" } else { "s" }
    )
}

/// Says why a command failed, as JSON on stdout or as text on stderr; the
/// exit code.
pub fn report(e: &anyhow::Error, json: bool) -> u8 {
    if json {
        print_json(&error_json(e));
    } else if let Some(InvalidRules(d)) = e.downcast_ref::<InvalidRules>() {
        eprintln!("{d}");
        eprintln!("{}", invalid_summary(d));
    } else {
        eprintln!("error: {e:#}");
    }
    code_of(e)
}

/// A usage error (clap's): as JSON when the command line asked for JSON,
/// else clap's own message. Help and version requests print as usual.
pub fn usage(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let info = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !info && std::env::args().any(|a| a == "--json") {
        print_json(&json!({
            "error": {
                "kind": "usage",
                "message": e.kind().as_str().map_or_else(|| e.to_string(), str::to_string),
                "detail": e.render().to_string(),
                "exit_code": USAGE,
            }
        }));
        std::process::exit(USAGE.into());
    }
    e.exit()
}

/// Pretty JSON and a newline on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut out = std::io::stdout().lock();
    // A closed pipe ends the process (SIGPIPE, see `main`); any other
    // write error has nowhere left to be reported.
    let _ = writeln!(out, "{text}");
}
