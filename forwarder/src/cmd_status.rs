//! `forwarder status`: reads the pinned maps directly (works while the daemon
//! is down or busy) plus the daemon's status file.
use std::{path::Path, process::ExitCode};

use anyhow::Result;
use forwarder::{counters, state};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Status {
    daemon: Option<state::DaemonState>,
    interfaces: Vec<counters::IfaceCounters>,
}

pub fn status(pin_dir: &Path, run_dir: &Path, args: StatusArgs) -> Result<ExitCode> {
    let st = Status {
        daemon: state::read(run_dir).ok(),
        interfaces: counters::read_pinned(pin_dir)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &st.daemon {
        Some(d) => println!("daemon: pid {}, rules {:?}", d.pid, d.rules_file),
        None => println!("daemon: no status file in the run directory (not running?)"),
    }
    for i in &st.interfaces {
        let (p, b) = i.total();
        println!(
            "interface {} (ifindex {}{}): {p} packets, {b} bytes",
            i.name.as_deref().unwrap_or("?"),
            i.ifindex,
            if i.l3 { ", L3" } else { "" }
        );
        for r in i.reasons.iter().filter(|r| r.packets > 0) {
            println!(
                "  {:<18} {:>12} pkts {:>14} bytes",
                r.reason, r.packets, r.bytes
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
