//! The IPv6 part of BENCHMARKS.md: the IPv6 configurations' own results
//! table (forwarder-tc6, kernel6, ip6tables: a column each, beside and not
//! inside the IPv4 table, which keeps that one readable) and forwarder-tc6
//! relative to its IPv6 baselines.
use std::fmt::Write as _;

use super::markdown::{is_ipv6, metric_table};
use crate::bench::{
    configs::{BASELINES6, FORWARDER_TC6},
    results::{config_stat, Better, Results, METRICS},
};

/// forwarder-tc6's median over an IPv6 baseline's, for one metric.
fn ratio6(r: &Results, metric: &str, base: &str) -> Option<f64> {
    let f = config_stat(&r.runs, FORWARDER_TC6, metric)?;
    let b = config_stat(&r.runs, base, metric)?;
    (b.median > 0.0).then(|| f.median / b.median)
}

/// The section, when any IPv6 configuration ran (`cfgs`: every
/// configuration that ran, in run order).
pub(super) fn section(w: &mut String, r: &Results, cfgs: &[String]) {
    let cfgs6: Vec<String> = cfgs.iter().filter(|c| is_ipv6(c)).cloned().collect();
    if cfgs6.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## IPv6\n\nThe same topology with an IPv6 prefix on each link (client fd77:1::2, router fd77:1::1 and fd77:2::1, server fd77:2::2) and the same measurements, except the RTT (the sockperf server listens on IPv4 only). The path check: the server must see the client itself for `kernel6`, the router's fd77:2::1 otherwise.\n"
    );
    metric_table(w, r, &cfgs6);
    let bases: Vec<&str> = BASELINES6
        .iter()
        .copied()
        .filter(|b| cfgs6.iter().any(|c| c == b))
        .collect();
    if !cfgs6.iter().any(|c| c == FORWARDER_TC6) || bases.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "Ratio of medians, {FORWARDER_TC6} / baseline:\n\n| metric | {} |\n|---|{}",
        bases
            .iter()
            .map(|b| format!("vs {b}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(bases.len())
    );
    for mt in METRICS {
        let cells: Vec<String> = bases
            .iter()
            .map(|b| ratio6(r, mt.key, b).map_or("-".into(), |x| format!("{x:.2}x")))
            .collect();
        if cells.iter().all(|c| c == "-") {
            continue;
        }
        let arrow = if mt.better == Better::Lower {
            " (lower is better)"
        } else {
            ""
        };
        let _ = writeln!(w, "| {}{arrow} | {} |", mt.label, cells.join(" | "));
    }
    let _ = writeln!(w);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::{RunRecord, TCP1};

    fn run(config: &str, tcp1: f64) -> RunRecord {
        let mut r = RunRecord {
            config: config.into(),
            run: 1,
            ..Default::default()
        };
        r.metrics.insert(TCP1.into(), tcp1);
        r
    }

    /// IPv6 configurations get their own table and ratios; the IPv4 ones
    /// stay out of it.
    #[test]
    fn the_ipv6_section_has_its_own_table_and_ratios() {
        let r = Results {
            runs: vec![
                run("kernel", 10.0),
                run("kernel6", 8.0),
                run("ip6tables", 4.0),
                run(FORWARDER_TC6, 6.0),
            ],
            ..Default::default()
        };
        let cfgs: Vec<String> = r.runs.iter().map(|x| x.config.clone()).collect();
        let mut w = String::new();
        section(&mut w, &r, &cfgs);
        assert!(w.starts_with("## IPv6"), "{w}");
        assert!(
            w.contains("| metric | kernel6 | ip6tables | forwarder-tc6 |"),
            "{w}"
        );
        assert!(!w.contains("| kernel |"), "{w}");
        assert!(w.contains("| vs kernel6 | vs ip6tables |"), "{w}");
        assert!(w.contains("0.75x | 1.50x"), "{w}");
        let mut none = String::new();
        section(&mut none, &r, &["kernel".to_string()]);
        assert!(none.is_empty());
    }
}
