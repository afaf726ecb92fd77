//! What a benchmark run produces: every raw run (serialised whole to
//! `results.json`), and the statistics the report derives from it. The
//! report is generated only from this data, so `--render-from` can
//! regenerate it from a saved file.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which direction is better for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One measured quantity: JSON key, table label, unit, direction.
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub better: Better,
}

const fn m(key: &'static str, label: &'static str, unit: &'static str, better: Better) -> Metric {
    Metric {
        key,
        label,
        unit,
        better,
    }
}

pub const TCP1: &str = "tcp1_gbps";
pub const TCP4: &str = "tcp4_gbps";
pub const CONN: &str = "conn_per_s";
pub const RTT50: &str = "rtt_p50_us";
pub const RTT99: &str = "rtt_p99_us";
pub const UDP_SENT: &str = "udp_sent_pps";
pub const UDP_DELIVERED: &str = "udp_delivered_pps";
pub const SOFTIRQ: &str = "softirq_ns_per_pkt";
pub const ROUTER_PROC: &str = "router_proc_ns_per_pkt";
pub const BPF_PKT: &str = "bpf_ns_per_pkt";
/// The sampled extra wrk run (`measure::conn_profile`): its error key; its
/// figures are `measure::CPU_CONN_PREFIX` + part, CPU µs per connection.
pub const CPU_PROFILE: &str = "cpu_profile";
/// Scale runs only.
/// CPU of the router's processes (the daemon) over the measurement window,
/// in % of one CPU.
pub const DAEMON_CPU: &str = "daemon_cpu_pct";
pub const FILL_SECS: &str = "fill_s";
/// Resident memory of the router's processes (the daemon) after the fill,
/// MiB.
pub const DAEMON_RSS: &str = "daemon_rss_mib";
/// Kernel memory of the flow table and the eviction queue (`bpftool`'s
/// `bytes_memlock`, preallocated for the whole capacity) per flow of
/// capacity (`conntrack_max`), bytes.
pub const MAP_BYTES_PER_FLOW: &str = "map_bytes_per_flow";

/// The end-to-end metrics, in report order.
pub const METRICS: &[Metric] = &[
    m(TCP1, "TCP throughput, 1 stream", "Gbit/s", Better::Higher),
    m(TCP4, "TCP throughput, 4 streams", "Gbit/s", Better::Higher),
    m(
        CONN,
        "New connections (HTTP, Connection: close)",
        "conn/s",
        Better::Higher,
    ),
    m(RTT50, "TCP request/response RTT p50", "µs", Better::Lower),
    m(RTT99, "TCP request/response RTT p99", "µs", Better::Lower),
    m(
        UDP_SENT,
        "UDP 64-byte payload: sent by client",
        "pkt/s",
        Better::Higher,
    ),
    m(
        UDP_DELIVERED,
        "UDP 64-byte payload: delivered to server",
        "pkt/s",
        Better::Higher,
    ),
    m(
        SOFTIRQ,
        "UDP: softirq CPU per delivered packet (whole machine)",
        "ns",
        Better::Lower,
    ),
    m(
        ROUTER_PROC,
        "UDP: router-namespace process CPU per delivered packet",
        "ns",
        Better::Lower,
    ),
    m(
        BPF_PKT,
        "UDP: forwarder BPF time per forwarded packet (all its programs)",
        "ns",
        Better::Lower,
    ),
];

pub fn metric(key: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.key == key)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub configs: Vec<ConfigInfo>,
    pub runs: Vec<RunRecord>,
    pub scale: Vec<RunRecord>,
    pub micro: Option<Micro>,
    /// SYN-flood runs (`synflood`), by configuration.
    #[serde(default)]
    pub synflood: Vec<RunRecord>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub date_utc: String,
    /// The command line as invoked.
    pub command: String,
    pub quick: bool,
    pub runs_per_config: usize,
    pub scale_runs: usize,
    pub scale_sizes: Vec<u64>,
    pub durations: BTreeMap<String, u32>,
    pub machine: BTreeMap<String, String>,
    pub tools: BTreeMap<String, String>,
    pub git: String,
    /// /proc/loadavg before the first and after the last run.
    pub load_before: String,
    pub load_after: String,
    /// Share of CPU time busy in the seconds just before the first run,
    /// after the build: other work on the machine (the load average would
    /// still count the benchmark's own build).
    #[serde(default)]
    pub busy_before_pct: Option<f64>,
    /// Share of CPU time stolen by the hypervisor during the whole run.
    pub steal_pct: f64,
    pub note: Option<String>,
    pub wall_secs: f64,
    /// How each measurement is taken (client/server command lines).
    pub commands: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConfigInfo {
    pub name: String,
    pub about: String,
    /// Set when the configuration was not run, with the reason.
    pub skipped: Option<String>,
    /// Router-side setup, as commands or the rules file.
    pub setup: Vec<String>,
}

/// One run of one configuration (or, in `scale`, of one table size: the
/// config is then `forwarder-tc/<flows>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRecord {
    pub config: String,
    /// Flow entries pre-filled (scale runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<u64>,
    /// 1-based run number within its configuration.
    pub run: usize,
    /// Seconds since the benchmark started.
    pub started_s: f64,
    pub secs: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Failed steps: "setup", "path" or "fill" make the whole run invalid;
    /// a measurement's name drops just that measurement.
    pub errors: BTreeMap<String, String>,
    /// Extra facts: UDP counts, wrk errors, forwarder counters, ...
    pub info: BTreeMap<String, serde_json::Value>,
}

impl RunRecord {
    /// Whether the run as a whole counts (its setup and path check passed).
    pub fn valid(&self) -> bool {
        !["setup", "path", "fill"]
            .iter()
            .any(|k| self.errors.contains_key(*k))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Micro {
    pub command: String,
    /// bench_prog's JSON output.
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// Median and range of one metric over the valid runs that have it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stat(values: &[f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// The values of `metric` over the valid runs of `config`, in run order.
pub fn series(runs: &[RunRecord], config: &str, metric: &str) -> Vec<f64> {
    let mut r: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.config == config && r.valid())
        .collect();
    r.sort_by_key(|r| r.run);
    r.iter()
        .filter_map(|r| r.metrics.get(metric).copied())
        .collect()
}

pub fn config_stat(runs: &[RunRecord], config: &str, metric: &str) -> Option<Stat> {
    stat(&series(runs, config, metric))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even() {
        assert_eq!(stat(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        let s = stat(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 4.0, 4));
        assert!(stat(&[]).is_none());
    }

    #[test]
    fn invalid_runs_do_not_count() {
        let mut ok = RunRecord {
            config: "a".into(),
            run: 1,
            ..Default::default()
        };
        ok.metrics.insert(TCP1.into(), 10.0);
        let mut bad = ok.clone();
        bad.run = 2;
        bad.metrics.insert(TCP1.into(), 99.0);
        bad.errors
            .insert("path".into(), "server saw the client".into());
        assert_eq!(series(&[bad, ok], "a", TCP1), vec![10.0]);
    }
}
