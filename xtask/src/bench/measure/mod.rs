//! The measurements: real tools run in the client namespace against the
//! server through whatever the router does, their output parsed, and the
//! CPU accounting around the small-packet test. Command lines are built by
//! one function each, used both to run and to document them.
//!
//! `traffic` runs the tools, `commands` builds their command lines, `exec`
//! runs a process with a deadline, `cpu` reads /proc, `bpf` the BPF
//! run-time statistics; the durations of each measurement are here.
mod bpf;
mod commands;
mod cpu;
mod exec;
mod profile;
mod traffic;

pub use bpf::bpf_cost;
pub use commands::client_commands;
pub use cpu::{busy_pct, ns_proc_cpu_ns, ns_proc_rss_kib, proc_stat_ns};
pub use exec::{exec, tail};
pub use profile::{conn_profile, CPU_CONN_PREFIX, FREQ_HZ, PARTS};
pub use traffic::{rtt, tcp, udp, wrk};

/// Seconds each measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Durations {
    pub tcp1: u32,
    pub tcp4: u32,
    pub wrk: u32,
    pub rtt: u32,
    pub udp: u32,
    /// The extra small-packet burst with BPF run-time statistics on.
    pub bpf: u32,
    /// The extra wrk run sampled by `perf` (see `profile`), sampled for
    /// this long (wrk runs 2 s longer).
    pub profile: u32,
    /// Flow-table scale: single-stream TCP. At least the daemon's sweep
    /// interval (10 s with the scale runs' timeouts) in a full run, so every
    /// run's window holds one sweep of the table, as production would.
    pub scale_tcp: u32,
}

impl Durations {
    pub const DEFAULT: Durations = Durations {
        tcp1: 5,
        tcp4: 3,
        wrk: 3,
        rtt: 3,
        udp: 3,
        bpf: 2,
        profile: 3,
        scale_tcp: 10,
    };
    pub const QUICK: Durations = Durations {
        tcp1: 2,
        tcp4: 1,
        wrk: 2,
        rtt: 1,
        udp: 1,
        bpf: 1,
        profile: 1,
        scale_tcp: 2,
    };

    pub fn as_map(&self) -> std::collections::BTreeMap<String, u32> {
        [
            ("tcp1", self.tcp1),
            ("tcp4", self.tcp4),
            ("wrk", self.wrk),
            ("rtt", self.rtt),
            ("udp", self.udp),
            ("bpf", self.bpf),
            ("profile", self.profile),
            ("scale_tcp", self.scale_tcp),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
