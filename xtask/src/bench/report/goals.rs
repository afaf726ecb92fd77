//! The report's goals table (issue #19's targets, which tightened issue
//! #7's): each goal judged on medians of `Results` as met, not met, or not
//! measured with the reason. A goal whose runs are missing is "not
//! measured", never "met".
use super::{
    format::{fmt_val, short_n, thousands},
    ratio,
};
use crate::bench::{
    configs::FORWARDER_TC,
    results::{
        config_stat, metric, series, stat, Results, Stat, BPF_PKT, CONN, DAEMON_CPU, DAEMON_RSS,
        MAP_BYTES_PER_FLOW, RTT50, TCP1, TCP4, UDP_DELIVERED,
    },
    scale,
};

/// A run below this share of its configuration's median counts as a collapse.
pub(super) const COLLAPSE: f64 = 0.5;

pub(super) enum Verdict {
    Met,
    NotMet,
    NotMeasured(String),
}

pub(super) struct Goal {
    pub(super) goal: String,
    pub(super) measured: String,
    pub(super) verdict: Verdict,
}

fn ratio_goal(
    r: &Results,
    key: &str,
    base: &str,
    min: Option<f64>,
    max: Option<f64>,
    goal: &str,
) -> Goal {
    let goal = goal.to_string();
    match ratio(r, key, base) {
        None => Goal {
            goal,
            measured: "-".into(),
            verdict: Verdict::NotMeasured(format!(
                "no valid {key} runs of forwarder-tc and {base}"
            )),
        },
        Some(x) => {
            let f = config_stat(&r.runs, FORWARDER_TC, key).unwrap();
            let b = config_stat(&r.runs, base, key).unwrap();
            let ok = min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m);
            Goal {
                goal,
                measured: format!(
                    "{x:.2}x ({} vs {} {})",
                    fmt_val(key, f.median),
                    fmt_val(key, b.median),
                    metric(key).map_or("", |m| m.unit)
                ),
                verdict: if ok { Verdict::Met } else { Verdict::NotMet },
            }
        }
    }
}

fn micro_num(r: &Results, path: &[&str]) -> Option<f64> {
    let mut v = r.micro.as_ref()?.result.as_ref()?;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

pub(super) fn scale_stat(r: &Results, size: u64, key: &str) -> Option<Stat> {
    config_stat(&r.scale, &scale::config_name(size), key)
}

/// A goal on one number: met when `ok` says so, "not measured" with `why`
/// when there is no number.
fn value_goal(goal: &str, v: Option<(f64, String)>, ok: impl Fn(f64) -> bool, why: &str) -> Goal {
    match v {
        Some((x, measured)) => Goal {
            goal: goal.into(),
            measured,
            verdict: if ok(x) { Verdict::Met } else { Verdict::NotMet },
        },
        None => Goal {
            goal: goal.into(),
            measured: "-".into(),
            verdict: Verdict::NotMeasured(why.into()),
        },
    }
}

pub(super) fn goals(r: &Results) -> Vec<Goal> {
    let mut g = Vec::new();
    for (key, what) in [
        (TCP1, "TCP throughput (1 stream)"),
        (TCP4, "TCP throughput (4 streams)"),
        (CONN, "New-connection rate"),
        (UDP_DELIVERED, "64-byte UDP packets delivered"),
    ] {
        g.push(ratio_goal(
            r,
            key,
            "kernel",
            Some(1.0),
            None,
            &format!("{what} >= 1.0x kernel forwarding"),
        ));
        g.push(ratio_goal(
            r,
            key,
            "iptables",
            Some(1.1),
            None,
            &format!("{what} >= 1.1x iptables DNAT+SNAT"),
        ));
    }
    g.push(ratio_goal(
        r,
        TCP1,
        "socat",
        Some(5.0),
        None,
        "TCP throughput (1 stream) >= 5x socat",
    ));
    let conn = series(&r.runs, FORWARDER_TC, CONN);
    g.push(match stat(&conn) {
        Some(s) if s.n >= 2 => {
            let worst = s.min / s.median;
            Goal {
                goal: format!("No collapse of the new-connection rate across repeated runs (every run >= {COLLAPSE}x the median)"),
                measured: format!(
                    "worst run {worst:.2}x the median (runs in order: {})",
                    conn.iter().map(|v| thousands(*v)).collect::<Vec<_>>().join(", ")
                ),
                verdict: if worst >= COLLAPSE { Verdict::Met } else { Verdict::NotMet },
            }
        }
        _ => Goal {
            goal: "No collapse of the new-connection rate across repeated runs".into(),
            measured: "-".into(),
            verdict: Verdict::NotMeasured("needs at least 2 valid forwarder-tc runs".into()),
        },
    });
    g.push(ratio_goal(
        r,
        RTT50,
        "iptables",
        None,
        Some(1.0),
        "Latency p50 <= iptables p50",
    ));
    let micro_missing = || {
        r.micro
            .as_ref()
            .and_then(|m| m.error.clone())
            .unwrap_or_else(|| "micro-benchmarks not run".into())
    };
    g.push(value_goal(
        "<= 100 ns BPF time per established, NATed, redirected packet under real traffic (`bpf_ns_per_pkt`)",
        config_stat(&r.runs, FORWARDER_TC, BPF_PKT)
            .map(|s| (s.median, format!("{:.0} ns (forwarder-tc, UDP run)", s.median))),
        |x| x <= 100.0,
        "no forwarder-tc UDP runs with BPF statistics",
    ));
    g.push(value_goal(
        "<= 60 ns per program run in the test_run micro-benchmark (`nat`)",
        micro_num(r, &["nat", "median"]).map(|n| {
            let base = micro_num(r, &["no_nat", "median"]).unwrap_or(0.0);
            (n, format!("{n:.0} ns median (no-NAT forward {base:.0} ns)"))
        }),
        |x| x <= 60.0,
        &micro_missing(),
    ));
    // Mean: the tail of slow creations counts.
    g.push(value_goal(
        "Flow creation <= 500 ns",
        micro_num(r, &["create", "mean"]).map(|c| {
            let median = micro_num(r, &["create", "median"]).unwrap_or(0.0);
            (c, format!("{c:.0} ns mean (median {median:.0} ns; first packet of a new flow, whole program run)"))
        }),
        |x| x <= 500.0,
        &micro_missing(),
    ));
    let (small, big) = (scale::SIZES[0], *scale::SIZES.last().unwrap());
    g.push(value_goal(
        &format!("Sweeper <= 5% of one CPU at {} flows", short_n(big)),
        scale_stat(r, big, DAEMON_CPU).map(|s| {
            (
                s.median,
                format!(
                    "{:.1}% (daemon process CPU over the measurement window)",
                    s.median
                ),
            )
        }),
        |x| x <= 5.0,
        "no valid scale runs at the largest size",
    ));
    let rss: Vec<String> = scale::SIZES
        .iter()
        .filter_map(|&n| {
            scale_stat(r, n, DAEMON_RSS).map(|s| format!("{}: {:.0} MiB", short_n(n), s.median))
        })
        .collect();
    let map_bytes = scale_stat(r, big, MAP_BYTES_PER_FLOW).map(|s| s.median);
    g.push(value_goal(
        "Memory per flow stated: kernel map bytes per flow, daemon RSS at each table size",
        match map_bytes {
            Some(b) if rss.len() == scale::SIZES.len() => Some((
                b,
                format!(
                    "{b:.0} B of kernel maps per flow of capacity; daemon RSS {}",
                    rss.join(", ")
                ),
            )),
            _ => None,
        },
        |_| true,
        "no memory figures in the scale runs",
    ));
    for (key, what, min, max) in [
        (TCP1, "throughput (1 stream)", Some(0.95), None),
        (RTT50, "latency (RTT p50)", None, Some(1.05)),
    ] {
        let goal = format!(
            "{} -> {} flows in the table: {what} within 5%",
            short_n(small),
            short_n(big)
        );
        g.push(match (scale_stat(r, small, key), scale_stat(r, big, key)) {
            (Some(a), Some(b)) if a.median > 0.0 => {
                let x = b.median / a.median;
                let ok = min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m);
                Goal {
                    goal,
                    measured: format!(
                        "{x:.2}x ({} -> {} {})",
                        fmt_val(key, a.median),
                        fmt_val(key, b.median),
                        metric(key).map_or("", |m| m.unit)
                    ),
                    verdict: if ok { Verdict::Met } else { Verdict::NotMet },
                }
            }
            _ => Goal {
                goal,
                measured: "-".into(),
                verdict: Verdict::NotMeasured("no valid scale runs at both sizes".into()),
            },
        });
    }
    g
}
