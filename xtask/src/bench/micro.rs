//! Micro-benchmarks of the TC program itself: runs `bench_prog` (tools
//! crate), which times the program with BPF_PROG_TEST_RUN in a namespace of
//! its own and prints JSON.
use std::{path::Path, time::Duration};

use super::{
    measure::{exec, tail},
    results::Micro,
};

pub fn argv(bin: &Path, quick: bool) -> Vec<String> {
    let (batches, creates) = if quick { (300, 1000) } else { (2000, 5000) };
    vec![
        bin.display().to_string(),
        "--batches".into(),
        batches.to_string(),
        "--creates".into(),
        creates.to_string(),
    ]
}

/// `root` only shortens the command line shown in the report.
pub fn run(root: &Path, bin: &Path, quick: bool) -> Micro {
    let argv = argv(bin, quick);
    let shown = self::argv(bin.strip_prefix(root).unwrap_or(bin), quick);
    let mut m = Micro {
        command: shown.join(" "),
        ..Default::default()
    };
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    match exec(None, &args, Duration::from_secs(300)) {
        Ok(out) if out.status.success() => match serde_json::from_slice(&out.stdout) {
            Ok(v) => m.result = Some(v),
            Err(e) => m.error = Some(format!("bench_prog printed no JSON ({e})")),
        },
        Ok(out) => {
            m.error = Some(format!(
                "bench_prog failed ({}): {}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr))
            ))
        }
        Err(e) => m.error = Some(format!("{e:#}")),
    }
    m
}
