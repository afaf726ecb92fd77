//! `forwarder status`: reads the pinned maps directly (works while the daemon
//! is down or busy) plus the daemon's status file.
use std::{path::Path, process::ExitCode};

use super::exit;
use crate::observe::{pinned, running, status};
use anyhow::Result;
use serde::Serialize;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 shown (or ready); 1 an error (or --ready: the daemon runs but its \
                  file is not applied); 3 nothing to show: no daemon and nothing pinned (--ready: \
                  no daemon)."
)]
pub struct StatusArgs {
    /// Machine-readable output (errors too).
    #[arg(long)]
    pub json: bool,
    /// Readiness check (Kubernetes readinessProbe, scripts): exit 0 only when
    /// the daemon runs and the rules file it watches is applied (the last
    /// load succeeded); else say why and exit 1 (3 when no daemon runs).
    /// Reads only the status file.
    #[arg(long, conflicts_with = "json")]
    ready: bool,
}

/// Why the daemon is not ready, or `None` when it is: running, and the
/// last load of its rules file applied. A rejected edit (the old rules keep
/// forwarding) is not ready: the file in place is not what is in force.
pub fn not_ready(daemon: Option<&status::DaemonState>, running: bool) -> Option<String> {
    let Some(d) = daemon.filter(|_| running) else {
        return Some("the daemon is not running (no live process behind the status file)".into());
    };
    match &d.last_load {
        None => Some("the daemon has not loaded its rules yet".into()),
        Some(l) if !l.applied => Some(format!(
            "the last load ({}) was rejected: {}",
            l.trigger, l.summary
        )),
        Some(_) => d.rules_error.as_ref().map(|e| {
            format!(
                "the rules file is rejected: {}",
                e.lines().next().unwrap_or("")
            )
        }),
    }
}

#[derive(Serialize)]
struct RuleView {
    /// The forward as the daemon applied it (absent when no daemon runs).
    #[serde(flatten)]
    rule: Option<status::RuleStatus>,
    counters: pinned::RuleCount,
}

#[derive(Serialize)]
struct Status {
    /// Whether the daemon named in the status file is running.
    daemon_running: bool,
    /// The daemon's resident memory (VmRSS), when it runs.
    daemon_rss_bytes: Option<u64>,
    daemon: Option<status::DaemonState>,
    rules: Vec<RuleView>,
    conntrack: pinned::TableFill,
    /// Backends `snat = "auto"` switched to SNAT (their replies bypassed
    /// this host).
    auto_snat_learned: Vec<pinned::Learned>,
    interfaces: Vec<pinned::IfaceCounters>,
}

pub fn status(pin_dir: &Path, run_dir: &Path, args: StatusArgs) -> Result<ExitCode> {
    let daemon = status::read(run_dir).ok();
    let pid = running::running_pid(run_dir);
    let daemon_running = pid.is_some();
    if args.ready {
        return Ok(match not_ready(daemon.as_ref(), daemon_running) {
            None => {
                let d = daemon.as_ref().and_then(|d| d.last_load.as_ref());
                println!("ready: {}", d.map_or("", |l| l.summary.as_str()));
                ExitCode::SUCCESS
            }
            Some(why) => {
                println!("not ready: {why}");
                ExitCode::from(if daemon_running {
                    exit::FAILURE
                } else {
                    exit::NOT_RUNNING
                })
            }
        });
    }
    super::pins::require(pin_dir, Some(run_dir))?;
    let (counts, conntrack) = pinned::read_rules_pinned(pin_dir)?;
    let by_id = |id: u32| {
        daemon
            .as_ref()
            .and_then(|d| d.rules.iter().find(|r| r.id == id).cloned())
    };
    let st = Status {
        daemon_running,
        daemon_rss_bytes: pid.and_then(running::rss_bytes),
        rules: counts
            .into_iter()
            .map(|c| RuleView {
                rule: by_id(c.id),
                counters: c,
            })
            .collect(),
        conntrack,
        auto_snat_learned: pinned::read_learned(pin_dir).unwrap_or_default(),
        interfaces: {
            // Names as the daemon saw them: `status` may run in another
            // network namespace, where the same ifindex is another device.
            let mut v = pinned::read_pinned(pin_dir)?;
            if let Some(d) = &daemon {
                for i in &mut v {
                    if let Some(s) = d.interfaces.iter().find(|s| s.ifindex == Some(i.ifindex)) {
                        i.name = Some(s.name.clone());
                    }
                }
            }
            v
        },
        daemon,
    };
    if args.json {
        exit::print_json(&st);
        return Ok(ExitCode::SUCCESS);
    }
    print_text(&st);
    Ok(ExitCode::SUCCESS)
}

fn print_text(st: &Status) {
    match (&st.daemon, st.daemon_running) {
        (Some(d), true) => {
            println!(
                "daemon: running, pid {}, version {}, memory {} (RSS), rules {}",
                d.pid,
                d.version,
                st.daemon_rss_bytes.map_or("?".into(), rules::memory::human),
                d.rules_file
                    .as_ref()
                    .map_or("-".into(), |p| p.display().to_string())
            );
            if let Some(l) = &d.last_load {
                println!(
                    "last load: {} ({}): {}",
                    if l.applied { "applied" } else { "REJECTED" },
                    l.trigger,
                    l.summary
                );
            }
            if let Some(e) = &d.rules_error {
                if d.last_load.as_ref().is_some_and(|l| l.maps_mixed) {
                    println!(
                        "LAST RELOAD FAILED, ROLLBACK FAILED (the maps hold a mix until the \
                         daemon's retry):\n{e}"
                    );
                } else {
                    println!("LAST RELOAD REJECTED (running configuration unchanged):\n{e}");
                }
            }
            if let Some(a) = &d.adopted {
                println!("{a}");
            }
            if let Some(m) = &d.metrics {
                println!("metrics: http://{m}/metrics");
            }
            if let Some(w) = &d.rules_watch {
                println!("rules file watched: {w}");
            }
            if !d.other_nodes.is_empty() {
                println!(
                    "node {}: forwards for other nodes, not applied here: {}",
                    d.node.as_deref().unwrap_or("?"),
                    d.other_nodes.join(", ")
                );
            }
            for w in &d.warnings {
                println!("warning: {w}");
            }
        }
        _ => println!(
            "daemon: not running; the pinned dataplane below keeps forwarding \
             (start the daemon to adopt it, or `forwarder down` to remove it)"
        ),
    }
    println!(
        "conntrack: {} flows ({} of {} entries)",
        st.conntrack.flows, st.conntrack.entries, st.conntrack.capacity_entries
    );
    println!();
    println!(
        "{:<16} {:<11} {:<15} {:<5} {:<11} {:<21} {:<14} {:>6} {:>9} {:>10} {:>12} {:>6}",
        "RULE",
        "IN",
        "LISTEN",
        "PROTO",
        "PORTS",
        "TARGET",
        "SNAT",
        "FLOWS",
        "CREATED",
        "PACKETS",
        "BYTES",
        "DROPS"
    );
    for r in &st.rules {
        let c = &r.counters;
        let drops: u64 = c.drops.values().sum();
        let (iface, listen, proto, ports, target, snat) = match &r.rule {
            Some(x) => (
                x.iface.as_str(),
                x.listen.as_str(),
                x.proto.as_str(),
                x.ports.as_str(),
                x.target.as_str(),
                x.snat.as_str(),
            ),
            None => ("?", "?", "?", "?", "?", "?"),
        };
        println!(
            "{:<16} {:<11} {:<15} {:<5} {:<11} {:<21} {:<14} {:>6} {:>9} {:>10} {:>12} {:>6}",
            c.name,
            iface,
            listen,
            proto,
            ports,
            target,
            snat,
            c.active_flows,
            c.new_flows,
            c.packets,
            c.bytes,
            drops
        );
        if let Some(x) = &r.rule {
            println!("    {}", x.decision);
            if let Some(m) = x.mss {
                println!(
                    "    MSS clamp {m} ({} SYN/SYN-ACK options lowered)",
                    c.mss_clamped
                );
            }
            if let Some(n) = &x.resolution {
                println!("    {}", name_line(n, status::now_unix()));
            }
            if x.resolution.as_ref().is_some_and(|n| n.paused.is_some()) {
                // The decision line says why: the name, not the interface.
            } else if x.listeners == 0 && x.listen == "interface" {
                println!("    NOT LISTENING: the interface is missing or has no address");
            } else if x.listeners == 0 {
                println!(
                    "    NOT LISTENING: {} is missing, or {} is not assigned to an interface \
                     of this node (a VIP held by another node?)",
                    x.iface, x.listen
                );
            }
        }
        if c.new_flows > 0 {
            println!(
                "    flows: {} with SNAT, {} with the client address; {} through the stack, {} redirected",
                c.snat_flows,
                c.new_flows - c.snat_flows,
                c.stack_flows,
                c.new_flows - c.stack_flows
            );
        }
        for (name, n) in c.drops.iter().filter(|(_, n)| **n > 0) {
            println!("    drop {name}: {n}");
        }
    }
    for l in &st.auto_snat_learned {
        let rule = st
            .rules
            .iter()
            .find(|r| r.counters.id == l.rule_id)
            .map_or("?".to_string(), |r| r.counters.name.clone());
        println!(
            "snat auto: rule {rule}: backend {} answered around this host {}s ago: new flows to it are SNATed",
            l.backend, l.age_s
        );
    }
    println!();
    if let Some(d) = &st.daemon {
        for i in &d.interfaces {
            println!(
                "interface {:<12} {:<7} {:<20} {}{}{}",
                i.name,
                i.attach,
                i.state,
                i.why,
                if i.l3 { ", L3 (no link header)" } else { "" },
                if i.mtu > 0 {
                    format!(", mtu {}", i.mtu)
                } else {
                    String::new()
                }
            );
            if !i.mode.is_empty() {
                println!("    {}", i.mode);
            }
        }
    }
    for i in &st.interfaces {
        println!(
            "interface {} (ifindex {}{}):",
            i.name.as_deref().unwrap_or("?"),
            i.ifindex,
            if i.l3 { ", L3" } else { "" }
        );
        for h in &i.hooks {
            let (p, b) = h.total();
            if p == 0 {
                continue;
            }
            println!("  {:<10} {p} packets, {b} bytes", h.hook);
            for r in h.reasons.iter().filter(|r| r.packets > 0) {
                println!(
                    "    {:<18} {:>12} pkts {:>14} bytes",
                    r.reason, r.packets, r.bytes
                );
            }
        }
    }
}

/// One line about a forward's DNS-name target at `now` (Unix seconds):
/// what it resolves to and since when, or why the forward is paused.
pub fn name_line(n: &status::NameStatus, now: u64) -> String {
    let next = n.next_unix.saturating_sub(now);
    let ago = |t: Option<u64>| t.map_or("?".into(), |t| format!("{}s ago", now.saturating_sub(t)));
    let answers = if n.answers.len() > 1 {
        format!(" of {}", n.answers.join(", "))
    } else {
        String::new()
    };
    let addr = n.addr.as_deref().unwrap_or("-");
    let ttl = n.ttl.map_or(String::new(), |t| format!(", TTL {t}s"));
    match (&n.paused, n.state.as_str()) {
        (Some(why), _) => format!(
            "PAUSED: {why}; retrying in {next}s ({} failed lookups)",
            n.failures
        ),
        (None, "stale") => format!(
            "target {}: {addr}{answers}, STALE: resolved {}, re-resolving fails ({}): kept, retrying in {next}s",
            n.name,
            ago(n.resolved_unix),
            n.error.as_deref().unwrap_or("?")
        ),
        (None, "adopted") => format!(
            "target {}: {addr}, ADOPTED: where the running dataplane forwards, not resolved yet \
             (asking)",
            n.name
        ),
        (None, _) => format!(
            "target {}: {addr}{answers} (resolved {}{ttl}, next in {next}s; changed {} times)",
            n.name,
            ago(n.resolved_unix),
            n.changes
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::{DaemonState, LoadResult};

    fn loaded(applied: bool, error: Option<&str>) -> DaemonState {
        DaemonState {
            last_load: Some(LoadResult {
                trigger: "file changed".into(),
                applied,
                summary: if applied {
                    "2 forwards".into()
                } else {
                    "bad port".into()
                },
                ..Default::default()
            }),
            rules_error: error.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn rss_is_the_kernels_resident_set() {
        // statm's second field is resident pages: the same figure.
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let rss = running::rss_bytes(std::process::id()).unwrap();
        let statm_bytes = pages * page;
        assert!(
            rss.abs_diff(statm_bytes) < 4 << 20,
            "VmRSS {rss} vs statm {statm_bytes}"
        );
        assert_eq!(running::rss_bytes(u32::MAX), None);
    }

    #[test]
    fn ready_means_running_and_applied() {
        assert_eq!(not_ready(Some(&loaded(true, None)), true), None);
        let dead = not_ready(Some(&loaded(true, None)), false).unwrap();
        assert!(dead.contains("not running"), "{dead}");
        assert!(not_ready(None, false).is_some());
        let fresh = DaemonState::default();
        assert!(not_ready(Some(&fresh), true)
            .unwrap()
            .contains("not loaded"));
        let rejected = not_ready(Some(&loaded(false, Some("rules.toml:4:8: error"))), true);
        assert_eq!(
            rejected.as_deref(),
            Some("the last load (file changed) was rejected: bad port")
        );
        // A later netlink reconcile does not make a rejected file ready.
        let still = not_ready(
            Some(&loaded(true, Some("rules.toml:4:8: error: x\nhelp"))),
            true,
        );
        assert_eq!(
            still.as_deref(),
            Some("the rules file is rejected: rules.toml:4:8: error: x")
        );
    }
}
