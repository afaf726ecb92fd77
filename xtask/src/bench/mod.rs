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
//!
//! `plan` decides what runs, `config_run` runs one configuration once,
//! `scale` and `micro` the other parts, `report` writes the results,
//! `progress` prints a line per run, `interrupt` stops cleanly on signals.
use std::{path::PathBuf, time::Instant};

use anyhow::{ensure, Context, Result};

mod config_run;
mod configs;
mod interrupt;
mod machine;
mod measure;
mod micro;
mod plan;
mod progress;
mod report;
mod results;
mod scale;
mod svg;
mod synflood;
mod topology;

pub use config_run::void_uncounted;
use config_run::{new_record, run_config};
use configs::CONFIGS;
pub use interrupt::check_interrupt;
use interrupt::install_signal_handlers;
use plan::Plan;
use progress::{fmt_secs, progress};
use results::Results;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Short validation run: 2 runs per configuration, 1-2 s measurements,
    /// one scale run per size (under 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Comma-separated parts to run: kernel, iptables, nftables, socat,
    /// forwarder-tc, forwarder-xdp, kernel6, ip6tables, forwarder-tc6,
    /// scale, micro, synflood. Default: all.
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
        "--bin",
        "synflood",
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
    if plan.synflood {
        parts.push(format!("SYN flood {:?} x {}", synflood::CONFIGS, plan.runs));
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
    if plan.synflood {
        for round in 1..=plan.runs {
            for c in synflood::CONFIGS {
                let name = format!("{}: {c}", synflood::SYNFLOOD);
                eprintln!("bench: {name}, run {round}/{}...", plan.runs);
                let mut rec = new_record(c, round, t0);
                let t = Instant::now();
                synflood::run(c, &mut rec, &plan.d, &bin.join("synflood"));
                check_interrupt()?;
                rec.secs = t.elapsed().as_secs_f64();
                eprintln!("bench: {name}: {:?} {:?}", rec.metrics, rec.errors);
                res.synflood.push(rec);
            }
        }
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
