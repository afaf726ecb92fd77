//! `forwarder doctor`: can this machine's kernel run the forwarder? Prints
//! every probe (see `crate::probe`) as a table or JSON, starts nothing,
//! changes nothing outside a scratch network namespace that vanishes with
//! the probe. Exit 0 when nothing fatal is missing, 1 otherwise.
//!
//! A command of its own rather than `check --kernel`: `check` judges a
//! rules file, offline and as any user; this judges the machine, as root.
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::probe::{self, Impact, Probe, ProbeOptions, Status};

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 the forwarder can run on this kernel (some features may \
                        be degraded, listed); 1 something it needs is missing."
)]
pub struct DoctorArgs {
    /// Print the probe results as JSON (errors too).
    #[arg(long)]
    pub json: bool,
    /// Skip loading the object and the attach probes (no scratch namespace).
    #[arg(long)]
    pub quick: bool,
    /// Probe this eBPF object file instead of the embedded one (would a
    /// candidate build load on this kernel?).
    #[arg(long, value_name = "FILE")]
    pub object: Option<std::path::PathBuf>,
    /// Write the whole verifier log of each program the kernel rejects to
    /// DIR/<program>.log (the table shows only its last words).
    #[arg(long, value_name = "DIR")]
    pub verifier_log: Option<std::path::PathBuf>,
}

pub fn doctor(args: DoctorArgs) -> Result<ExitCode> {
    let object = match &args.object {
        Some(path) => Some(read_aligned(path)?),
        None => None,
    };
    let p = probe::probe(&ProbeOptions {
        attach: !args.quick,
        object,
        verifier_log: args.verifier_log.clone(),
    });
    if args.json {
        super::exit::print_json(&p);
    } else {
        print!("{}", render(&p));
    }
    Ok(if p.fatal().next().is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// An object file, read into 8-byte aligned memory (the ELF parser reads
/// its headers in place) and kept for the life of the command.
fn read_aligned(path: &std::path::Path) -> Result<&'static [u8]> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `words` owns at least bytes.len() bytes; u8 has no alignment
    // or validity requirements.
    let view =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, bytes.len()) };
    view.copy_from_slice(&bytes);
    let words: &'static [u64] = Box::leak(words.into_boxed_slice());
    // SAFETY: as above; the leaked allocation lives until the process ends.
    Ok(unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, bytes.len()) })
}

fn result(status: Status, impact: Impact) -> &'static str {
    match (status, impact) {
        (Status::Yes, _) => "yes",
        (Status::Skipped, _) => "skipped",
        (_, Impact::Fatal) => "NO",
        (_, Impact::Degraded) => "no (degraded)",
        (_, Impact::Info) => "no",
    }
}

/// The table, then one line per problem with what to do, then a verdict.
pub fn render(p: &Probe) -> String {
    let width = p
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:width$}  {:13}  DETAIL\n", "CHECK", "RESULT");
    for c in &p.checks {
        let detail = match c.status {
            Status::Error => format!("probe failed: {}", c.detail),
            _ => c.detail.clone(),
        };
        out += &format!(
            "{:width$}  {:13}  {}\n",
            c.name,
            result(c.status, c.impact),
            detail
        );
    }
    let fatal: Vec<_> = p.fatal().collect();
    let degraded: Vec<_> = p.degraded().collect();
    if !fatal.is_empty() || !degraded.is_empty() {
        out += "\n";
    }
    for c in &fatal {
        out += &format!("error: {}\n", c.advice);
    }
    for c in &degraded {
        out += &format!("warning: {}\n", c.advice);
    }
    out += &if fatal.is_empty() {
        format!("\nkernel {}: the forwarder can run here\n", p.kernel)
    } else {
        format!(
            "\nkernel {}: the forwarder cannot run here ({} fatal)\n",
            p.kernel,
            fatal.len()
        )
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Check, Features};

    fn check(name: &str, status: Status, impact: Impact, advice: &str) -> Check {
        Check {
            name: name.into(),
            status,
            impact,
            detail: String::new(),
            advice: advice.into(),
        }
    }

    #[test]
    fn problems_get_one_line_each_and_a_verdict() {
        let p = Probe {
            kernel: "6.1.0-57-amd64".into(),
            features: Features::default(),
            checks: vec![
                check("kernel BTF", Status::Yes, Impact::Info, ""),
                check(
                    "TCX (tc links)",
                    Status::No,
                    Impact::Fatal,
                    "kernel 6.1.0-57-amd64: no TCX (Linux 6.6)",
                ),
                check(
                    "XDP native (veth)",
                    Status::Error,
                    Impact::Degraded,
                    "kernel 6.1.0-57-amd64: no native XDP",
                ),
            ],
        };
        let text = render(&p);
        assert!(text.contains("TCX (tc links)     NO"), "{text}");
        assert!(text.contains("error: kernel 6.1.0-57-amd64: no TCX (Linux 6.6)\n"));
        assert!(text.contains("warning: kernel 6.1.0-57-amd64: no native XDP\n"));
        assert!(
            text.ends_with("the forwarder cannot run here (1 fatal)\n"),
            "{text}"
        );
    }
}
