//! Flow-table scale: forwarder-tc's single-stream throughput and RTT with
//! 1k, 100k and 1M established flows already in its table. The table has
//! the same capacity in every run (only the fill differs), the synthetic
//! flows come from `bench_fill`, and a run only counts if they are all
//! still there afterwards (the sweeper must not have removed any).
use std::{path::Path, time::Duration};

use anyhow::{ensure, Context, Result};

use super::{
    configs::{self, FORWARDER_TC},
    measure::{self, exec, Durations},
    results::{
        RunRecord, DAEMON_CPU, DAEMON_RSS, FILL_SECS, MAP_BYTES_PER_FLOW, RTT50, RTT99, TCP1,
    },
    topology::{Servers, Topo, ROUTER_IN, ROUTER_OUT},
};

pub const SIZES: &[u64] = &[1_000, 100_000, 1_000_000];
/// Room for the largest fill plus the benchmark's own flows.
pub const CONNTRACK_MAX: u64 = 1_100_000;

/// `[global]` body of the scale runs' rules file: one capacity for all
/// sizes, and idle timeouts far beyond a run so the sweeper keeps every
/// synthetic flow (it still walks the table every 10 s, as in production).
pub fn global() -> String {
    let mut s = format!("conntrack_max = {CONNTRACK_MAX}\n\n[global.timeouts]\n");
    for k in [
        "tcp_syn_sent",
        "tcp_established",
        "tcp_fin_wait",
        "tcp_time_wait",
        "tcp_close",
        "udp",
        "udp_stream",
        "icmp",
    ] {
        s += &format!("{k} = \"24h\"\n");
    }
    s
}

pub fn config_name(size: u64) -> String {
    format!("{FORWARDER_TC}/{size}")
}

pub fn fill_argv(bin: &Path, pin_dir: &Path, flows: &str) -> Vec<String> {
    vec![
        bin.display().to_string(),
        "--pin-dir".into(),
        pin_dir.display().to_string(),
        "--flows".into(),
        flows.to_string(),
        "--listen".into(),
        ROUTER_IN.into(),
        "--snat".into(),
        ROUTER_OUT.into(),
    ]
}

/// `bpftool map show` of a pinned map: (bytes_memlock, max_entries).
fn map_memory(pin: &Path) -> Result<(u64, u64)> {
    let path = pin.display().to_string();
    let out = exec(
        None,
        &["bpftool", "-j", "map", "show", "pinned", &path],
        Duration::from_secs(30),
    )?;
    ensure!(
        out.status.success(),
        "bpftool map show pinned {path} failed"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let num = |k: &str| {
        v[k].as_u64()
            .or_else(|| v[k].as_str()?.parse().ok())
            .with_context(|| format!("no {k} for {path}"))
    };
    Ok((num("bytes_memlock")?, num("max_entries")?))
}

/// Kernel bytes per flow of capacity: the flow table (two entries per
/// flow) and the eviction queue (one key per flow), both preallocated.
fn map_bytes_per_flow(pin_dir: &Path) -> Result<f64> {
    let (flows, entries) = map_memory(&pin_dir.join(forwarder_common::MAP_FLOWS))?;
    let (queue, _) = map_memory(&pin_dir.join(forwarder_common::MAP_CT_EVICT))?;
    let capacity = entries / u64::from(forwarder_common::ENTRIES_PER_FLOW);
    ensure!(capacity > 0, "empty flow table");
    Ok((flows + queue) as f64 / capacity as f64)
}

/// One run at one table size. Failures land in the record's errors.
pub fn run(size: u64, rec: &mut RunRecord, d: &Durations, fill_bin: &Path) -> Result<()> {
    let cfg = configs::by_name(FORWARDER_TC).context("forwarder-tc config")?;
    let topo = Topo::build()?;
    let _servers = Servers::start(&topo.server)?;
    let router = cfg.setup(&topo, Some(&global()))?;
    let daemon = router.daemon().context("no daemon")?;

    let argv = fill_argv(fill_bin, &daemon.pin_dir, &size.to_string());
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = exec(None, &args, Duration::from_secs(300))?;
    ensure!(
        out.status.success(),
        "bench_fill failed: {}",
        measure::tail(&String::from_utf8_lossy(&out.stderr))
    );
    let fill: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    rec.metrics
        .insert(FILL_SECS.into(), fill["secs"].as_f64().unwrap_or(0.0));
    rec.info.insert("fill".into(), fill);

    if let Err(e) = cfg.check_path(&topo) {
        rec.errors.insert("path".into(), format!("{e:#}"));
        return Ok(());
    }
    let cpu0 = measure::ns_proc_cpu_ns(&topo.router);
    let window = std::time::Instant::now();
    let target = cfg.target();
    match measure::tcp(&topo.client, target, 1, d.scale_tcp) {
        Ok(v) => {
            rec.metrics.insert(TCP1.into(), v);
        }
        Err(e) => {
            rec.errors.insert(TCP1.into(), format!("{e:#}"));
        }
    }
    super::check_interrupt()?;
    match measure::rtt(&topo.client, target, d.rtt) {
        Ok((p50, p99)) => {
            rec.metrics.insert(RTT50.into(), p50);
            rec.metrics.insert(RTT99.into(), p99);
        }
        Err(e) => {
            rec.errors.insert(RTT50.into(), format!("{e:#}"));
        }
    }
    let cpu1 = measure::ns_proc_cpu_ns(&topo.router);
    let busy = cpu1.saturating_sub(cpu0) as f64 / 1e9;
    rec.metrics.insert(
        DAEMON_CPU.into(),
        100.0 * busy / window.elapsed().as_secs_f64(),
    );
    // After the window, so the sweeper has walked part of the table.
    rec.metrics.insert(
        DAEMON_RSS.into(),
        measure::ns_proc_rss_kib(&topo.router) as f64 / 1024.0,
    );
    match map_bytes_per_flow(&daemon.pin_dir) {
        Ok(b) => {
            rec.metrics.insert(MAP_BYTES_PER_FLOW.into(), b);
        }
        Err(e) => {
            rec.errors
                .insert(MAP_BYTES_PER_FLOW.into(), format!("{e:#}"));
        }
    }

    // Afterwards: every synthetic flow still present, traffic counted.
    let (counts, summary) = configs::forwarder_counts(daemon)?;
    let flows = summary["conntrack"]["flows"].as_u64().unwrap_or(0);
    rec.info.insert("forwarder".into(), summary);
    if flows < size {
        rec.errors.insert(
            "fill".into(),
            format!("only {flows} flows in the table after the run, {size} were filled: the measurement did not see the claimed table size"),
        );
    }
    super::void_uncounted(rec, &counts);
    Ok(())
}
