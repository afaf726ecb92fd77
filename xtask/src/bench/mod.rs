//! `cargo xtask bench`: the forwarder against kernel forwarding, iptables,
//! nftables and socat with real tools and real traffic, in namespaces built
//! afresh for every run; plus flow-table scale and BPF_PROG_TEST_RUN
//! micro-benchmarks. Writes `BENCHMARKS.md`, `bench/results.json` (every raw
//! run) and `bench/ratios.svg` under the output directory.
//!
//! The machine is small and shared (client, router and server share two
//! vCPUs), so configurations run interleaved (A B C ... A B C ...), each
//! several times, and the report gives medians with their range.
//!
//! xtask never links the forwarder crate (its build needs the eBPF object
//! that xtask builds): the daemon is driven by its CLI and rules file, the
//! kernel-side micro-benchmarks and the table fill are helper binaries of
//! the tools crate (forwarder-tools).
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};

mod configs;
mod machine;
mod measure;
mod micro;
mod report;
mod results;
mod scale;
mod svg;
mod topology;

use configs::{Config, CONFIGS, FORWARDS};
use measure::Durations;
use results::{Results, RunRecord};
use topology::{Servers, Topo};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Short validation run: 2 runs per configuration, 1-2 s measurements,
    /// one scale run per size (under 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Comma-separated parts to run: kernel, iptables, nftables, socat,
    /// forwarder-tc, forwarder-xdp, scale, micro. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Output directory for BENCHMARKS.md and bench/{results.json,ratios.svg}.
    /// Default: docs/ for a full run, target/bench/ with --quick, --only,
    /// --runs or --scale-runs (partial results never overwrite the published
    /// ones).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs per configuration (default 5; 2 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Runs per flow-table size (default 3; 1 with --quick).
    #[arg(long)]
    scale_runs: Option<usize>,
    /// A note printed at the top of the report (e.g. "shared machine").
    #[arg(long)]
    note: Option<String>,
    /// Regenerate the report from a saved results.json; measures nothing.
    #[arg(long)]
    render_from: Option<PathBuf>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Set by SIGINT/SIGTERM/SIGHUP: the benchmark stops at the next step and
/// unwinds, so every guard (namespaces, processes, bpffs) cleans up.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

const SCALE: &str = "scale";
const MICRO: &str = "micro";

/// What to run, after --only and the XDP support check.
struct Plan {
    configs: Vec<&'static Config>,
    skipped: Vec<(&'static Config, String)>,
    scale: bool,
    micro: bool,
    runs: usize,
    scale_runs: usize,
    d: Durations,
}

impl Plan {
    fn new(args: &BenchArgs, forwarder_bin: &Path) -> Result<Plan> {
        let valid: Vec<&str> = CONFIGS
            .iter()
            .map(|c| c.name)
            .chain([SCALE, MICRO])
            .collect();
        for o in &args.only {
            ensure!(
                valid.contains(&o.as_str()),
                "--only: unknown part {o:?}; valid: {}",
                valid.join(", ")
            );
        }
        let want = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
        let (mut configs, mut skipped) = (Vec::new(), Vec::new());
        for c in CONFIGS.iter().filter(|c| want(c.name)) {
            match c.unsupported(forwarder_bin) {
                Some(why) => skipped.push((c, why)),
                None => configs.push(c),
            }
        }
        let runs = args.runs.unwrap_or(if args.quick { 2 } else { 5 });
        ensure!(runs > 0, "--runs must be at least 1");
        Ok(Plan {
            configs,
            skipped,
            scale: want(SCALE),
            micro: want(MICRO),
            runs,
            // Each scale run needs a window of one sweep interval: three
            // per size keep a full run inside its time bound.
            scale_runs: args.scale_runs.unwrap_or(if args.quick { 1 } else { 3 }),
            d: if args.quick {
                Durations::QUICK
            } else {
                Durations::DEFAULT
            },
        })
    }

    /// Rough wall time: measurement seconds plus ~3 s per run for the
    /// namespaces, servers and router setup (~5 s for a scale run: fill,
    /// table walk).
    fn estimate_secs(&self) -> u32 {
        let d = &self.d;
        let per = d.tcp1 + d.tcp4 + d.wrk + d.rtt + d.udp + 3;
        let main: u32 = self
            .configs
            .iter()
            .map(|c| per + if c.is_forwarder() { d.bpf } else { 0 })
            .sum::<u32>()
            * self.runs as u32;
        let scale = if self.scale {
            (d.scale_tcp + d.rtt + 5) * scale::SIZES.len() as u32 * self.scale_runs as u32
        } else {
            0
        };
        main + scale + if self.micro { 15 } else { 0 }
    }
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let root = crate::root();
    let partial =
        args.quick || !args.only.is_empty() || args.runs.is_some() || args.scale_runs.is_some();
    let out = args.out.clone().unwrap_or_else(|| {
        if partial {
            root.join("target/bench")
        } else {
            root.join("docs")
        }
    });
    if let Some(from) = &args.render_from {
        let r: Results = serde_json::from_slice(
            &std::fs::read(from).with_context(|| format!("reading {}", from.display()))?,
        )?;
        return report::write_all(&r, &out);
    }
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "cargo xtask bench needs root (network namespaces, BPF)"
    );
    crate::setup::install()?;
    crate::build_ebpf()?;
    crate::run(crate::cargo().current_dir(&root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "forwarder",
        "-p",
        "forwarder-tools",
        "--bin",
        "forwarder",
        "--bin",
        "bench_fill",
        "--bin",
        "bench_prog",
    ]))?;
    let bin = root.join("target/release");
    let forwarder_bin = bin.join("forwarder");
    // The tests crate's Daemon guard starts this binary.
    std::env::set_var("FORWARDER_BIN", &forwarder_bin);

    forwarder_tests::netns::sweep();
    install_signal_handlers();
    let plan = Plan::new(&args, &forwarder_bin)?;
    for (c, why) in &plan.skipped {
        eprintln!("bench: SKIPPING {}: {why}", c.name);
    }
    let mut parts = Vec::new();
    if !plan.configs.is_empty() {
        let names: Vec<&str> = plan.configs.iter().map(|c| c.name).collect();
        parts.push(format!("{} x {} runs", names.join(", "), plan.runs));
    }
    if plan.scale {
        parts.push(format!(
            "flow-table scale {:?} x {}",
            scale::SIZES,
            plan.scale_runs
        ));
    }
    if plan.micro {
        parts.push("micro-benchmarks".into());
    }
    eprintln!(
        "bench: {}; estimated {}",
        parts.join("; "),
        fmt_secs(plan.estimate_secs() as f64)
    );

    let t0 = Instant::now();
    let (_, steal0, total0) = measure::proc_stat_ns()?;
    let mut res = Results {
        meta: results::Meta {
            date_utc: machine::date_utc(),
            command: std::iter::once("cargo xtask".to_string())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" "),
            quick: args.quick,
            runs_per_config: plan.runs,
            scale_runs: if plan.scale { plan.scale_runs } else { 0 },
            scale_sizes: scale::SIZES.to_vec(),
            durations: plan.d.as_map(),
            machine: machine::machine(),
            tools: machine::tools(forwarder_bin.to_str().unwrap()),
            git: machine::git(&root),
            load_before: machine::loadavg(),
            busy_before_pct: measure::busy_pct(std::time::Duration::from_secs(3)).ok(),
            note: args.note.clone(),
            commands: topology::server_commands()
                .into_iter()
                .chain(measure::client_commands(&plan.d))
                .collect(),
            ..Default::default()
        },
        configs: CONFIGS
            .iter()
            .map(|c| results::ConfigInfo {
                name: c.name.into(),
                about: c.about.into(),
                skipped: plan
                    .skipped
                    .iter()
                    .find(|(s, _)| s.name == c.name)
                    .map(|(_, w)| w.clone()),
                setup: c.setup_text(),
            })
            .filter(|i| plan.configs.iter().any(|c| c.name == i.name) || i.skipped.is_some())
            .collect(),
        ..Default::default()
    };

    let total = plan.configs.len() * plan.runs
        + if plan.scale {
            scale::SIZES.len() * plan.scale_runs
        } else {
            0
        };
    let mut done = 0;
    for round in 1..=plan.runs {
        for cfg in &plan.configs {
            done += 1;
            let rec = run_config(cfg, round, &plan.d, t0)?;
            progress(done, total, plan.runs, &rec, t0);
            res.runs.push(rec);
            check_interrupt()?;
        }
    }
    if plan.scale {
        for round in 1..=plan.scale_runs {
            // Rotate the order each round so no size always runs right
            // after the teardown of the biggest table.
            let n = scale::SIZES.len();
            for i in 0..n {
                let size = scale::SIZES[(i + round - 1) % n];
                done += 1;
                let mut rec = new_record(&scale::config_name(size), round, t0);
                rec.flows = Some(size);
                let t = Instant::now();
                if let Err(e) = scale::run(size, &mut rec, &plan.d, &bin.join("bench_fill")) {
                    check_interrupt()?;
                    rec.errors.insert("setup".into(), format!("{e:#}"));
                }
                rec.secs = t.elapsed().as_secs_f64();
                progress(done, total, plan.scale_runs, &rec, t0);
                res.scale.push(rec);
                check_interrupt()?;
            }
        }
    }
    if plan.micro {
        eprintln!("bench: micro-benchmarks (BPF_PROG_TEST_RUN)...");
        let m = micro::run(&root, &bin.join("bench_prog"), args.quick);
        check_interrupt()?;
        match (&m.result, &m.error) {
            (Some(v), _) => eprintln!(
                "bench: micro: nat {} ns, no-NAT {} ns (NAT cost {} ns), create {} ns",
                v["nat"]["median"], v["no_nat"]["median"], v["nat_cost"], v["create"]["median"]
            ),
            (None, Some(e)) => eprintln!("bench: micro FAILED: {e}"),
            _ => {}
        }
        res.micro = Some(m);
    }

    let (_, steal1, total1) = measure::proc_stat_ns()?;
    res.meta.steal_pct =
        100.0 * steal1.saturating_sub(steal0) as f64 / total1.saturating_sub(total0).max(1) as f64;
    res.meta.load_after = machine::loadavg();
    res.meta.wall_secs = t0.elapsed().as_secs_f64();
    report::write_all(&res, &out)?;
    eprintln!(
        "bench: done in {}; wrote {}",
        fmt_secs(res.meta.wall_secs),
        out.join("BENCHMARKS.md").display()
    );
    Ok(())
}

fn new_record(config: &str, run: usize, t0: Instant) -> RunRecord {
    RunRecord {
        config: config.into(),
        run,
        started_s: t0.elapsed().as_secs_f64(),
        ..Default::default()
    }
}

/// One run of one configuration on a fresh topology. Only an interrupt is
/// an Err; every failure is recorded in the run.
fn run_config(cfg: &Config, round: usize, d: &Durations, t0: Instant) -> Result<RunRecord> {
    let mut rec = new_record(cfg.name, round, t0);
    let t = Instant::now();
    if let Err(e) = run_config_inner(cfg, d, &mut rec) {
        check_interrupt()?;
        rec.errors.insert("setup".into(), format!("{e:#}"));
    }
    rec.secs = t.elapsed().as_secs_f64();
    Ok(rec)
}

/// Records a measurement's value(s) or its error under `key`.
fn record<T>(rec: &mut RunRecord, key: &str, r: Result<T>, put: impl FnOnce(&mut RunRecord, T)) {
    match r {
        Ok(v) => put(rec, v),
        Err(e) => {
            rec.errors.insert(key.into(), format!("{e:#}"));
        }
    }
}

fn run_config_inner(cfg: &Config, d: &Durations, rec: &mut RunRecord) -> Result<()> {
    use results::*;
    let topo = Topo::build()?;
    let _servers = Servers::start(&topo.server)?;
    let router = cfg.setup(&topo, None)?;
    if let Err(e) = cfg.check_path(&topo) {
        rec.errors.insert("path".into(), format!("{e:#}"));
        return Ok(());
    }
    let (c, t) = (&topo.client, cfg.target());
    record(rec, TCP1, measure::tcp(c, t, 1, d.tcp1), |r, v| {
        r.metrics.insert(TCP1.into(), v);
    });
    check_interrupt()?;
    record(rec, TCP4, measure::tcp(c, t, 4, d.tcp4), |r, v| {
        r.metrics.insert(TCP4.into(), v);
    });
    check_interrupt()?;
    record(rec, CONN, measure::wrk(c, t, d.wrk), |r, w| {
        r.metrics.insert(CONN.into(), w.per_s);
        r.info.insert("wrk_requests".into(), w.requests.into());
        if !w.errors.is_empty() {
            r.info
                .insert("wrk_errors".into(), w.errors.join("; ").into());
        }
    });
    check_interrupt()?;
    record(rec, RTT50, measure::rtt(c, t, d.rtt), |r, (p50, p99)| {
        r.metrics.insert(RTT50.into(), p50);
        r.metrics.insert(RTT99.into(), p99);
    });
    check_interrupt()?;
    record(
        rec,
        UDP_DELIVERED,
        measure::udp(c, &topo.router, t, d.udp),
        |r, u| {
            r.metrics.insert(UDP_SENT.into(), u.sent_pps);
            r.metrics.insert(UDP_DELIVERED.into(), u.delivered_pps);
            r.metrics.insert(SOFTIRQ.into(), u.softirq_ns_per_pkt);
            r.metrics
                .insert(ROUTER_PROC.into(), u.router_proc_ns_per_pkt);
            r.info.insert(
                "udp_packets".into(),
                serde_json::json!([u.sent, u.delivered]),
            );
        },
    );
    check_interrupt()?;
    if let Some(daemon) = router.daemon() {
        record(
            rec,
            BPF_PKT,
            measure::bpf_cost(c, t, &daemon.pin_dir, d.bpf),
            |r, b| {
                r.metrics.insert(BPF_PKT.into(), b.ns_per_pkt);
                r.info.insert("bpf_packets".into(), b.packets.into());
                r.info.insert("bpf_programs".into(), b.programs.into());
            },
        );
        // The forwarder must have carried the traffic: a forward that
        // counted nothing voids the metrics measured through it.
        match configs::forwarder_counts(daemon) {
            Ok((counts, summary)) => {
                rec.info.insert("forwarder".into(), summary);
                void_uncounted(rec, &counts);
            }
            Err(e) => {
                rec.errors
                    .insert("path".into(), format!("forwarder status: {e:#}"));
            }
        }
    }
    Ok(())
}

/// Drops the metrics of every forward whose packet counter is zero and
/// records why.
pub fn void_uncounted(rec: &mut RunRecord, counts: &[(String, u64)]) {
    for (name, _, _, metrics) in FORWARDS {
        let packets = counts
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, p)| *p);
        if packets == 0 {
            let voided: Vec<&str> = metrics
                .iter()
                .copied()
                .filter(|m| rec.metrics.remove(*m).is_some())
                .collect();
            if !voided.is_empty() {
                rec.errors.insert(
                    format!("forwarder:{name}"),
                    format!(
                        "forward {name:?} counted 0 packets in `forwarder status`: the traffic bypassed the forwarder; discarded {}",
                        voided.join(", ")
                    ),
                );
            }
        }
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn progress(done: usize, total: usize, runs: usize, rec: &RunRecord, t0: Instant) {
    let el = t0.elapsed().as_secs_f64();
    let eta = el / done as f64 * (total - done) as f64;
    let m = |k: &str| rec.metrics.get(k).copied();
    let mut parts = Vec::new();
    let f = |v: Option<f64>, fmt: &dyn Fn(f64) -> String| v.map(fmt);
    use results::*;
    parts.extend(f(m(TCP1), &|v| format!("tcp1 {v:.2} Gbit/s")));
    parts.extend(f(m(TCP4), &|v| format!("tcp4 {v:.2}")));
    parts.extend(f(m(CONN), &|v| format!("conn {v:.0}/s")));
    parts.extend(f(m(RTT50), &|v| format!("rtt p50 {v:.1} µs")));
    parts.extend(f(m(RTT99), &|v| format!("p99 {v:.1}")));
    parts.extend(f(m(UDP_DELIVERED), &|v| {
        format!(
            "udp {:.0}k of {:.0}k pps",
            v / 1e3,
            m(UDP_SENT).unwrap_or(0.0) / 1e3
        )
    }));
    parts.extend(f(m(BPF_PKT), &|v| format!("bpf {v:.0} ns/pkt")));
    parts.extend(f(m(DAEMON_CPU), &|v| format!("daemon cpu {v:.0}%")));
    parts.extend(f(m(FILL_SECS), &|v| format!("fill {v:.1} s")));
    eprintln!(
        "[{done:>2}/{total} {} eta {}] {} run {}/{runs} ({:.0} s): {}",
        fmt_secs(el),
        fmt_secs(eta),
        rec.config,
        rec.run,
        rec.secs,
        parts.join(", ")
    );
    for (k, e) in &rec.errors {
        eprintln!("      FAILED {k}: {e}");
    }
}
