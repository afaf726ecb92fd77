//! BENCHMARKS.md, results.json and ratios.svg, generated from `Results`
//! alone (so `--render-from` reproduces them). Nothing here measures.
//! `markdown` writes the document, `goals` judges the targets, `sections`
//! holds the later sections, `format` the number formats.
use std::path::Path;

use anyhow::{Context, Result};

use super::{
    configs::FORWARDER_TC,
    results::{config_stat, Results, CONN, RTT50, RTT99, TCP1, TCP4, UDP_DELIVERED},
    svg,
};

mod cpu;
mod format;
mod goals;
mod ipv6;
mod markdown;
mod sections;

use markdown::markdown;

pub const BASELINES: &[&str] = &["kernel", "iptables", "nftables", "socat"];
pub fn write_all(r: &Results, out: &Path) -> Result<()> {
    let bench = out.join("bench");
    std::fs::create_dir_all(&bench).with_context(|| format!("creating {}", bench.display()))?;
    std::fs::write(
        bench.join("results.json"),
        serde_json::to_string_pretty(r)? + "\n",
    )?;
    std::fs::write(bench.join("ratios.svg"), chart(r))?;
    std::fs::write(out.join("BENCHMARKS.md"), markdown(r))?;
    Ok(())
}

/// forwarder-tc's median over a baseline's, for one metric.
fn ratio(r: &Results, metric: &str, base: &str) -> Option<f64> {
    let f = config_stat(&r.runs, FORWARDER_TC, metric)?;
    let b = config_stat(&r.runs, base, metric)?;
    (b.median > 0.0).then(|| f.median / b.median)
}

/// The metrics in the chart: (key, label with line breaks).
const CHART: &[(&str, &str)] = &[
    (TCP1, "TCP\n1 stream"),
    (TCP4, "TCP\n4 streams"),
    (CONN, "new\nconnections/s"),
    (RTT50, "RTT p50\n(lower is better)"),
    (RTT99, "RTT p99\n(lower is better)"),
    (UDP_DELIVERED, "UDP 64 B\ndelivered pkt/s"),
];

fn chart(r: &Results) -> String {
    let bases: Vec<&str> = BASELINES
        .iter()
        .copied()
        .filter(|b| r.runs.iter().any(|x| x.config == *b))
        .collect();
    let groups: Vec<svg::Group> = CHART
        .iter()
        .map(|(k, label)| svg::Group {
            label: label.to_string(),
            values: bases.iter().map(|b| ratio(r, k, b)).collect(),
        })
        .collect();
    let names: Vec<String> = bases.iter().map(|b| format!("vs {b}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    svg::ratio_chart(
        "forwarder-tc relative to each baseline (ratio of medians)",
        &format!(
            "{} run(s) per configuration, {}; log scale, 1x = parity",
            r.meta.runs_per_config, r.meta.date_utc
        ),
        &names,
        &groups,
    )
}

#[cfg(test)]
mod tests {
    use super::{
        goals::{goals, Verdict},
        *,
    };
    use crate::bench::results::{Micro, RunRecord};

    fn run(config: &str, n: usize, vals: &[(&str, f64)]) -> RunRecord {
        RunRecord {
            config: config.into(),
            run: n,
            metrics: vals.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn goals_and_markdown_from_synthetic_results() {
        let mut r = Results::default();
        r.meta.runs_per_config = 2;
        for i in 1..=2 {
            r.runs
                .push(run("kernel", i, &[(TCP1, 10.0), (CONN, 9000.0)]));
            r.runs.push(run(
                "iptables",
                i,
                &[(TCP1, 9.0), (CONN, 6000.0), (RTT50, 40.0)],
            ));
            r.runs.push(run("socat", i, &[(TCP1, 2.0), (CONN, 1500.0)]));
            r.runs.push(run(
                FORWARDER_TC,
                i,
                &[(TCP1, 9.5), (CONN, 8000.0), (RTT50, 38.0)],
            ));
        }
        r.micro = Some(Micro {
            command: "bench_prog".into(),
            result: Some(
                serde_json::json!({"nat_cost": 46, "nat": {"median": 206}, "no_nat": {"median": 160}, "create": {"median": 747, "mean": 800}}),
            ),
            error: None,
        });
        let g = goals(&r);
        let find = |s: &str| g.iter().find(|x| x.goal.contains(s)).unwrap();
        assert!(matches!(
            find("TCP throughput (1 stream) >= 1.0x kernel").verdict,
            Verdict::NotMet
        ));
        assert!(matches!(
            find("TCP throughput (1 stream) >= 1.1x iptables").verdict,
            Verdict::NotMet
        ));
        assert!(matches!(
            find("1 stream) >= 5x socat").verdict,
            Verdict::NotMet
        ));
        assert!(matches!(
            find("4 streams) >= 1.0x").verdict,
            Verdict::NotMeasured(_)
        ));
        assert!(matches!(
            find("New-connection rate >= 1.1x iptables").verdict,
            Verdict::Met
        ));
        assert!(matches!(find("No collapse").verdict, Verdict::Met));
        assert!(matches!(find("p50 <= iptables").verdict, Verdict::Met));
        assert!(matches!(find("60 ns").verdict, Verdict::NotMet));
        assert!(matches!(find("500 ns").verdict, Verdict::NotMet));
        assert!(matches!(
            find("bpf_ns_per_pkt").verdict,
            Verdict::NotMeasured(_)
        ));
        assert!(matches!(find("Sweeper").verdict, Verdict::NotMeasured(_)));
        assert!(matches!(find("within 5%").verdict, Verdict::NotMeasured(_)));
        let md = markdown(&r);
        assert!(md.contains("| TCP throughput, 1 stream [Gbit/s] | 10.00 (10.00-10.00) |"));
        assert!(md.contains("0.95x"));
        let svg = chart(&r);
        assert!(svg.contains("vs socat"));
        assert!(!md.contains("Kernel memory at the default settings"));
    }

    #[test]
    fn default_memory_is_stated_with_its_target() {
        let mut r = Results::default();
        for (i, bytes) in [(1, 40_007_672u64), (2, 40_007_800), (3, 40_100_000)] {
            let mut x = run(FORWARDER_TC, i, &[(TCP1, 9.5)]);
            x.info.insert(
                "forwarder".into(),
                serde_json::json!({
                    "rules": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                    "conntrack": {"capacity_entries": 131072},
                    "kernel_map_bytes": bytes,
                }),
            );
            r.runs.push(x);
        }
        let md = markdown(&r);
        assert!(
            md.contains("(3 forwards, every setting at its default: `conntrack_max = 65,536`) holds **38.2 MiB**"),
            "{md}"
        );
        assert!(md.contains("median 40,007,800 B (min-max 40,007,672-40,100,000 B) over 3 run(s)"));
        assert!(md.contains("under 40 MiB: **met**"));
    }
}
