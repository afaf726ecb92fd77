//! The progress line printed after every run: position, elapsed time, an
//! estimate of the time left, the run's headline numbers and its failures.
use std::time::Instant;

use super::results::{self, RunRecord};

pub(super) fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub(super) fn progress(done: usize, total: usize, runs: usize, rec: &RunRecord, t0: Instant) {
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
