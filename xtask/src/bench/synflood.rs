//! SYN flood: what a flood of spoofed SYNs leaves legitimate clients. The
//! client namespace sends SYNs to the HTTP forward from random addresses of
//! 10.99.0.0/16 (the tests crate's `synflood`), paced at 50,000 SYN/s and
//! then as fast as one CPU sends them, long enough to fill the router's
//! connection table (the forwarder's and netfilter's both hold 262,144
//! flows by default), then wrk measures new HTTP connections per second
//! through the same forward while the flood goes on. The forwarder with
//! its default rules against iptables DNAT+SNAT (netfilter's conntrack,
//! early drop) under the same flood. The spoofed prefix is routed back to
//! the client namespace, which drops the answers.
use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context, Result};
use forwarder_tests::process::wait_for;

use super::{
    configs::{by_name, FORWARDER_TC},
    measure::{self, Durations},
    results::{config_stat, series, Results, RunRecord, CONN},
    topology::{pinned, Servers, Topo, CLIENT, PORT_HTTP},
};

/// The part's name for `--only`.
pub const SYNFLOOD: &str = "synflood";
/// The configurations compared, in run order.
pub const CONFIGS: &[&str] = &["iptables", FORWARDER_TC];
/// The flood rates, SYN/s (None: as fast as the sender goes), with the
/// suffix of their metrics.
pub const RATES: &[(Option<u64>, &str)] = &[(Some(50_000), "50k"), (None, "max")];
/// Where the spoofed SYNs come from.
const SPOOFED: &str = "10.99.0.0/16";
/// Metrics of a flood run, per rate: `syn_pps_<suffix>`,
/// `flood_conn_per_s_<suffix>`.
fn syn_pps(suffix: &str) -> String {
    format!("syn_pps_{suffix}")
}

fn flood_conn(suffix: &str) -> String {
    format!("flood_conn_per_s_{suffix}")
}

/// The longest the flood runs alone before wrk starts, waiting for the
/// table to fill (262,144 flows take 5 s at 50,000 SYN/s; a slower sender,
/// longer).
fn max_warmup_secs(d: &Durations) -> u32 {
    // --quick (2 s of wrk) only checks the harness.
    if d.wrk <= 2 {
        3
    } else {
        40
    }
}

/// The table counts as full from this share of its capacity on.
const FULL: f64 = 0.95;

pub fn estimate_secs(d: &Durations, runs: usize) -> u32 {
    (max_warmup_secs(d) / 2 + d.wrk + 8) * (RATES.len() * CONFIGS.len() * runs) as u32
}

/// (flows, capacity) of the router's connection table.
fn table_fill(topo: &Topo, daemon: Option<&forwarder_tests::Daemon>) -> Option<(u64, u64)> {
    match daemon {
        Some(d) => {
            let st = d.status_json().ok()?;
            let c = &st["conntrack"];
            Some((c["flows"].as_u64()?, c["capacity_entries"].as_u64()? / 2))
        }
        None => {
            let read = |f: &str| -> Option<u64> {
                topo.router
                    .output(&["cat", &format!("/proc/sys/net/netfilter/{f}")])
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
        }
    }
}

/// One flood run of `config` on a fresh topology per rate; failures are
/// recorded in the run.
pub fn run(config: &str, rec: &mut RunRecord, d: &Durations, flood_bin: &Path) {
    for (rate, suffix) in RATES {
        if let Err(e) = run_rate(config, *rate, suffix, rec, d, flood_bin) {
            rec.errors
                .insert(format!("setup_{suffix}"), format!("{e:#}"));
        }
    }
}

fn run_rate(
    config: &str,
    rate: Option<u64>,
    suffix: &str,
    rec: &mut RunRecord,
    d: &Durations,
    flood_bin: &Path,
) -> Result<()> {
    let cfg = by_name(config).context("unknown configuration")?;
    let topo = Topo::build()?;
    let _servers = Servers::start(&topo.server)?;
    let router = cfg.setup(&topo, None)?;
    topo.router.ip(&["route", "add", SPOOFED, "via", CLIENT])?;
    let target = cfg.target();
    let secs = (max_warmup_secs(d) + d.wrk + 5).to_string();
    let to = format!("{target}:{PORT_HTTP}");
    let rate = rate.map(|r| r.to_string());
    let mut args = vec!["--to", &to, "--from", SPOOFED, "--secs", &secs];
    if let Some(r) = &rate {
        args.extend(["--rate", r]);
    }
    let flood = flood_bin.to_str().context("path")?;
    // The client's CPU is wrk's: the flood runs on the other one.
    let argv = pinned(
        super::topology::server_cpu(),
        &std::iter::once(flood).chain(args).collect::<Vec<_>>(),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut flood = topo.client.spawn(&argv)?;
    let t0 = std::time::Instant::now();
    let full = wait_for(Duration::from_secs(max_warmup_secs(d).into()), || {
        let (n, cap) = table_fill(&topo, router.daemon())?;
        (n as f64 >= FULL * cap as f64).then_some(n)
    });
    rec.info.insert(
        format!("table_full_after_s_{suffix}"),
        full.map(|_| t0.elapsed().as_secs_f64()).into(),
    );
    match measure::wrk(&topo.client, target, d.wrk) {
        Ok(w) => {
            rec.metrics.insert(flood_conn(suffix), w.per_s);
            rec.info
                .insert(format!("wrk_requests_{suffix}"), w.requests.into());
            if !w.errors.is_empty() {
                rec.info
                    .insert(format!("wrk_errors_{suffix}"), w.errors.join("; ").into());
            }
        }
        Err(e) => {
            rec.errors.insert(flood_conn(suffix), format!("{e:#}"));
        }
    }
    if let Some((n, cap)) = table_fill(&topo, router.daemon()) {
        rec.info.insert(
            format!("table_at_end_{suffix}"),
            serde_json::json!([n, cap]),
        );
    }
    // The flood's own count, up to now.
    flood.stop();
    let done = flood.child.try_wait().ok().flatten();
    let out = flood.log();
    let sent: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("synflood printed no JSON (exit {done:?}): {out}"))?;
    if let Some(pps) = sent["pps"].as_f64() {
        rec.metrics.insert(syn_pps(suffix), pps);
    }
    rec.info
        .insert(format!("syn_sent_{suffix}"), sent["sent"].clone());
    // What the forwarder evicted and refused.
    if let Some(daemon) = router.daemon() {
        if let Ok(c) = daemon.rule_counters("http") {
            rec.info
                .insert(format!("http_drops_{suffix}"), c["drops"].clone());
        }
    }
    Ok(())
}

/// The report's section: SYNs sent, legitimate connections per second
/// during the flood, and without it (the main runs, when present).
pub fn section(w: &mut String, r: &Results) {
    if r.synflood.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## SYN flood\n\nA flood of spoofed SYNs (`synflood`, random sources in {SPOOFED}) to the HTTP forward, first alone until the router's connection table is full (at most 40 s: with SNAT the range of source ports towards the one backend runs out first, 31,744 ports for the forwarder's default range, 64,512 for netfilter's), then together with wrk's new connections (`Connection: close`) through the same forward; once paced at 50,000 SYN/s, once as fast as the sender goes (on the CPU the client tools do not use). \"SYN/s sent\" is the flood's own count; \"conn/s during the flood\" is what legitimate clients still completed; \"without\" is the same wrk measurement from the main runs. The forwarder runs its default rules (262,144 flows; a flow that never completed its handshake gives up its entry and its SNAT port to a new one); iptables is netfilter's conntrack (262,144 flows here; early drop of unassured entries when the table is full, but a SNAT port held by one is not taken back). Median (min-max) over the runs.\n"
    );
    let _ = writeln!(
        w,
        "| configuration | flood | SYN/s sent | flows at the end (of capacity) | conn/s during the flood | conn/s without | errors |\n|---|---|---|---|---|---|---|"
    );
    let fmt = |s: Option<super::results::Stat>| {
        s.map_or("-".to_string(), |s| {
            format!("{:.0} ({:.0}-{:.0})", s.median, s.min, s.max)
        })
    };
    for (rate, suffix) in RATES {
        for c in CONFIGS {
            let errors: Vec<String> = r
                .synflood
                .iter()
                .filter(|x| x.config == *c)
                .flat_map(|x| {
                    x.errors
                        .iter()
                        .filter(|(k, _)| k.ends_with(suffix))
                        .map(|(_, v)| v.clone())
                        .chain(
                            x.info
                                .get(&format!("wrk_errors_{suffix}"))
                                .map(|e| e.to_string()),
                        )
                        .collect::<Vec<_>>()
                })
                .collect();
            let full: Vec<String> = r
                .synflood
                .iter()
                .filter(|x| x.config == *c)
                .filter_map(|x| {
                    let v = x.info.get(&format!("table_at_end_{suffix}"))?;
                    Some(format!("{} ({})", v[0].as_u64()?, v[1].as_u64()?))
                })
                .collect();
            let _ = writeln!(
                w,
                "| {c} | {} | {} | {} | {} | {} | {} |",
                rate.map_or("as fast as it goes".to_string(), |r| format!("{r} SYN/s")),
                fmt(config_stat(&r.synflood, c, &syn_pps(suffix))),
                full.join(", "),
                fmt(config_stat(&r.synflood, c, &flood_conn(suffix))),
                fmt(config_stat(&r.runs, c, CONN)),
                if errors.is_empty() {
                    "none".to_string()
                } else {
                    errors.join("; ")
                }
            );
        }
    }
    let n = series(&r.synflood, FORWARDER_TC, &flood_conn("max")).len();
    let _ = writeln!(w, "\n({n} forwarder run(s) as fast as it goes.)\n");
}
