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
struct RuleView {
    #[serde(flatten)]
    rule: state::RuleStatus,
    counters: counters::RuleCount,
}

#[derive(Serialize)]
struct Status {
    daemon: Option<state::DaemonState>,
    rules: Vec<RuleView>,
    conntrack: counters::TableFill,
    interfaces: Vec<counters::IfaceCounters>,
}

pub fn status(pin_dir: &Path, run_dir: &Path, args: StatusArgs) -> Result<ExitCode> {
    let daemon = state::read(run_dir).ok();
    let rules: Vec<state::RuleStatus> =
        daemon.as_ref().map(|d| d.rules.clone()).unwrap_or_default();
    let ids: Vec<u32> = rules.iter().map(|r| r.id).collect();
    let (counts, conntrack) = counters::read_rules_pinned(pin_dir, &ids)?;
    let st = Status {
        rules: rules
            .into_iter()
            .zip(counts)
            .map(|(rule, counters)| RuleView { rule, counters })
            .collect(),
        conntrack,
        interfaces: counters::read_pinned(pin_dir)?,
        daemon,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_text(&st);
    Ok(ExitCode::SUCCESS)
}

fn print_text(st: &Status) {
    match &st.daemon {
        Some(d) => {
            println!(
                "daemon: pid {}, rules {}",
                d.pid,
                d.rules_file
                    .as_ref()
                    .map_or("-".into(), |p| p.display().to_string())
            );
            if let Some(e) = &d.rules_error {
                println!("LAST RELOAD REJECTED (running configuration unchanged):\n{e}");
            }
        }
        None => println!("daemon: no status file in the run directory (not running?)"),
    }
    println!(
        "conntrack: {} flows ({} of {} entries)",
        st.conntrack.flows, st.conntrack.entries, st.conntrack.capacity_entries
    );
    println!();
    println!(
        "{:<16} {:<10} {:<16} {:<5} {:<12} {:<22} {:<14} {:>8} {:>10} {:>12} {:>7}",
        "RULE",
        "IN",
        "LISTEN",
        "PROTO",
        "PORTS",
        "TARGET",
        "SNAT",
        "FLOWS",
        "PACKETS",
        "BYTES",
        "DROPS"
    );
    for r in &st.rules {
        let drops: u64 = r.counters.drops.values().sum();
        println!(
            "{:<16} {:<10} {:<16} {:<5} {:<12} {:<22} {:<14} {:>8} {:>10} {:>12} {:>7}",
            r.rule.name,
            r.rule.iface,
            r.rule.listen,
            r.rule.proto,
            r.rule.ports,
            r.rule.target,
            r.rule.snat,
            r.counters.active_flows,
            r.counters.packets,
            r.counters.bytes,
            drops
        );
        for (name, n) in r.counters.drops.iter().filter(|(_, n)| **n > 0) {
            println!("    drop {name}: {n}");
        }
    }
    println!();
    if let Some(d) = &st.daemon {
        for i in &d.interfaces {
            println!(
                "interface {:<12} {:<5} {:<9} {}",
                i.name, i.attach, i.state, i.why
            );
        }
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
}
