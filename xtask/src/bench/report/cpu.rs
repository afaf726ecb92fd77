//! "Where the CPU goes per new connection": the parts of the sampled wrk
//! runs (`measure::conn_profile`) as CPU µs per connection, one column per
//! IPv4 configuration, medians over its runs.
use std::fmt::Write as _;

use crate::bench::{
    measure::{CPU_CONN_PREFIX, FREQ_HZ, PARTS},
    results::{series, stat, Results, RunRecord},
};

/// Parts the router adds to a connection (what differs between the
/// configurations); `route_in` is left out: it is the endpoints' too.
const ROUTER_PARTS: &[&str] = &["bpf", "redirect", "netfilter", "forward", "relay", "daemon"];

fn key(part: &str) -> String {
    format!("{CPU_CONN_PREFIX}{part}")
}

/// Per-run sum of `parts`, over the valid runs that were profiled.
fn sums(r: &Results, config: &str, parts: &[&str]) -> Vec<f64> {
    let mut runs: Vec<&RunRecord> = r
        .runs
        .iter()
        .filter(|x| x.config == config && x.valid())
        .collect();
    runs.sort_by_key(|x| x.run);
    runs.iter()
        .filter(|x| parts.iter().all(|p| x.metrics.contains_key(&key(p))))
        .map(|x| parts.iter().map(|p| x.metrics[&key(p)]).sum())
        .collect()
}

fn us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

pub(super) fn section(w: &mut String, r: &Results, cfgs: &[String]) {
    let profiled: Vec<&String> = cfgs
        .iter()
        .filter(|c| !series(&r.runs, c, &key("endpoints")).is_empty())
        .collect();
    if profiled.is_empty() {
        return;
    }
    let secs = r.meta.durations.get("profile").copied().unwrap_or(0);
    let _ = writeln!(
        w,
        "## Where the CPU goes per new connection\n\nAfter its measured runs, every run of an IPv4 configuration makes one more wrk run (same command, {} s) while `perf record -a -g -e cpu-clock -F {FREQ_HZ}` samples the whole machine for {secs} s in its middle (a software clock: this VM has no PMU). Each sample goes to the part named by the innermost frame of its call chain that the part recognises (a netfilter hook inside `ip_forward` is netfilter's; the map helpers a BPF program calls are the program's); the rest is the endpoints' work (the same in every configuration) or, by process name, work that is not the benchmark's. CPU µs per connection = samples / {FREQ_HZ} Hz / connections completed in the window; client, router and server share the machine's CPUs, so the column adds up to the whole machine's CPU per connection (idle included). Median over the runs.\n",
        secs + 2
    );
    let _ = writeln!(
        w,
        "| part [CPU µs per connection] | {} |",
        profiled
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(w, "|---|{}", "---|".repeat(profiled.len()));
    for (part, label, _) in PARTS {
        let cells: Vec<Option<f64>> = profiled
            .iter()
            .map(|c| stat(&series(&r.runs, c, &key(part))).map(|s| s.median))
            .collect();
        if cells.iter().all(|v| v.unwrap_or(0.0) < 0.05) {
            continue;
        }
        let _ = writeln!(
            w,
            "| {label} | {} |",
            cells.into_iter().map(us).collect::<Vec<_>>().join(" | ")
        );
    }
    let all: Vec<&str> = PARTS.iter().map(|p| p.0).collect();
    for (label, parts) in [
        (
            "**the router's work** (the rows above that differ between configurations: BPF, redirect, netfilter, forwarding, relay, daemon)",
            ROUTER_PARTS,
        ),
        ("**whole machine**", all.as_slice()),
    ] {
        let _ = writeln!(
            w,
            "| {label} | {} |",
            profiled
                .iter()
                .map(|c| us(stat(&sums(r, c, parts)).map(|s| s.median)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let rates: Vec<String> = profiled
        .iter()
        .map(|c| {
            let v: Vec<f64> = r
                .runs
                .iter()
                .filter(|x| &x.config == *c && x.valid())
                .filter_map(|x| x.info.get("cpu_profile")?["conn_per_s"].as_f64())
                .collect();
            stat(&v).map_or("-".into(), |s| super::format::thousands(s.median))
        })
        .collect();
    let _ = writeln!(
        w,
        "| conn/s during the sampled runs | {} |\n\nHow to read it: with both CPUs busy, a configuration's connection rate is the machine's CPUs divided by its \"whole machine\" figure, so the difference between two columns' router rows is what the router's work costs each connection; [PERFORMANCE-NOTES.md](PERFORMANCE-NOTES.md) breaks the BPF part down further.\n",
        rates.join(" | ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &str, n: usize, parts: &[(&str, f64)]) -> RunRecord {
        let mut rec = RunRecord {
            config: config.into(),
            run: n,
            ..Default::default()
        };
        for (p, v) in parts {
            rec.metrics.insert(key(p), *v);
        }
        rec.info.insert(
            "cpu_profile".into(),
            serde_json::json!({ "conn_per_s": 25_000.0, "samples": 6_000 }),
        );
        rec
    }

    #[test]
    fn the_table_has_the_parts_measured_and_the_router_sum() {
        let zero: Vec<(&str, f64)> = PARTS.iter().map(|p| (p.0, 0.0)).collect();
        let with = |over: &[(&str, f64)]| -> Vec<(&str, f64)> {
            zero.iter()
                .map(|(k, v)| {
                    (
                        *k,
                        over.iter().find(|(o, _)| o == k).map_or(*v, |(_, x)| *x),
                    )
                })
                .collect()
        };
        let mut r = Results::default();
        r.meta.durations.insert("profile".into(), 3);
        for n in 1..=3 {
            r.runs.push(run(
                "kernel",
                n,
                &with(&[("forward", 2.0), ("route_in", 1.0), ("endpoints", 70.0)]),
            ));
            r.runs.push(run(
                "forwarder-tc",
                n,
                &with(&[
                    ("bpf", 8.0 + n as f64),
                    ("redirect", 2.0),
                    ("endpoints", 70.0),
                    ("daemon", 0.5),
                ]),
            ));
        }
        let cfgs = vec!["kernel".to_string(), "forwarder-tc".to_string()];
        let mut w = String::new();
        section(&mut w, &r, &cfgs);
        assert!(w.contains("| part [CPU µs per connection] | kernel | forwarder-tc |"));
        // Median of 9, 10, 11.
        assert!(w.contains("| forwarder BPF programs"), "{w}");
        assert!(w.contains(" | 0.0 | 10.0 |"), "{w}");
        // No sample in any configuration: no row.
        assert!(!w.contains("netfilter hooks"), "{w}");
        // Router: kernel 2 (forwarding), forwarder 10 + 2 + 0.5.
        assert!(w.contains("| 2.0 | 12.5 |"), "{w}");
        // Whole machine: 73 and 82.5.
        assert!(w.contains("| **whole machine** | 73.0 | 82.5 |"), "{w}");
        assert!(w.contains("| conn/s during the sampled runs | 25,000 | 25,000 |"));
    }

    #[test]
    fn no_profiled_run_no_section() {
        let mut w = String::new();
        section(&mut w, &Results::default(), &["kernel".to_string()]);
        assert!(w.is_empty());
    }
}
