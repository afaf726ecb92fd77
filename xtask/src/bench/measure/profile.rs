//! Where the CPU goes per new connection: one extra wrk run (not the
//! measured one: sampling costs CPU) under `perf record -a -g -e cpu-clock`
//! (a software clock, so it works in VMs without a PMU, like this
//! benchmark's). Each sample goes to the part of the path named by the
//! innermost frame of its call chain that one of `PARTS` recognises, so a
//! netfilter hook called from `ip_forward` counts as netfilter, and the map
//! helpers a BPF program calls count as the program's. Samples no part
//! recognises are the endpoints' work (wrk, nginx, both TCP stacks), the
//! same in every configuration, or idle.
//!
//! The figures are CPU µs per connection: samples / frequency over the
//! connections wrk completed in the sampled window. Client, router and
//! server share the machine's CPUs, so the parts add up to the whole
//! machine's CPU per connection.
use std::{collections::BTreeMap, time::Duration};

use anyhow::{ensure, Context, Result};
use forwarder_tests::netns::Netns;

use super::{exec::exec, tail, traffic::wrk};

/// Sampling frequency per CPU, Hz: ~3,000 samples per CPU in a 3 s window,
/// coarse enough that perf itself stays under 1 % of a CPU.
pub const FREQ_HZ: u32 = 999;

/// (metric key, label, frames that mark it). The keys are stored per run
/// as `CPU_CONN_PREFIX` + key.
pub const PARTS: &[(&str, &str, &[&str])] = &[
    (
        "bpf",
        "forwarder BPF programs (and the map and kernel helpers they call)",
        &[],
    ),
    (
        "redirect",
        "forwarder redirect: handing the packet to the next interface (`skb_do_redirect`, `xdp_do_redirect`)",
        &["skb_do_redirect", "xdp_do_redirect", "xdp_do_flush"],
    ),
    (
        "netfilter",
        "netfilter hooks: conntrack, NAT, rule evaluation (`nf_hook_slow` and below)",
        &[
            "nf_hook_slow",
            "nf_conntrack_in",
            "nf_nat_inet_fn",
            "ipt_do_table",
            "nft_do_chain",
        ],
    ),
    (
        "forward",
        "kernel forwarding: `ip_forward` and the forwarded packet's transmit to the next interface",
        &["ip_forward", "ip_forward_finish"],
    ),
    (
        "route_in",
        "input route lookup of every received IP packet, the endpoints' too (`ip_route_input_noref`)",
        &["ip_route_input_noref", "ip_route_input_slow"],
    ),
    ("relay", "relay process (socat)", &[]),
    ("daemon", "forwarder daemon process", &[]),
    (
        "endpoints",
        "everything else of the benchmark: wrk, nginx, both TCP stacks, kernel threads",
        &[],
    ),
    (
        "other",
        "other processes (not the benchmark's; `perf` itself)",
        &[],
    ),
    ("idle", "idle", &[]),
];

/// Prefix of the per-part metric keys in a run record.
pub const CPU_CONN_PREFIX: &str = "cpu_conn_us_";

/// The part one sample belongs to. `frames` run from the innermost
/// (sampled) function outwards, as `perf script` prints them.
pub fn classify(comm: &str, frames: &[&str]) -> &'static str {
    for (i, f) in frames.iter().enumerate() {
        if f.starts_with("bpf_prog_") && f.contains("_fwd_") {
            return "bpf";
        }
        // A forwarded packet's transmit: `ip_rcv_finish` hands it to
        // `ip_forward` and that to `ip_output` as tail calls, so the chain
        // reads `ip_output` right under the receive path (a local sender's
        // `ip_output` sits under `__ip_queue_xmit`).
        if *f == "ip_output"
            && frames
                .get(i + 1)
                .is_some_and(|g| g.starts_with("__netif_receive_skb"))
        {
            return "forward";
        }
        if let Some((key, _, _)) = PARTS.iter().find(|(_, _, marks)| marks.contains(f)) {
            return key;
        }
    }
    match comm {
        "socat" => "relay",
        "forwarder" => "daemon",
        // The idle task's own halt, not an interrupt it took (whose
        // frames sit on top of the halt).
        c if c.starts_with("swapper")
            && frames
                .first()
                .is_some_and(|f| f.contains("idle") || f.contains("safe_halt")) =>
        {
            "idle"
        }
        "wrk" | "nginx" => "endpoints",
        c if c.starts_with("swapper")
            || c.starts_with("ksoftirqd")
            || c.starts_with("kworker")
            || c.starts_with("migration")
            || c.starts_with("rcu") =>
        {
            "endpoints"
        }
        _ => "other",
    }
}

/// Sample counts per part from `perf script -F comm,sym` output: a line
/// with the command, then one indented line per frame ("<ip> <symbol>"),
/// a blank line between samples.
pub fn count_samples(script: &str) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let mut comm: Option<&str> = None;
    let mut frames: Vec<&str> = Vec::new();
    let mut flush = |comm: &mut Option<&str>, frames: &mut Vec<&str>| {
        if let Some(c) = comm.take() {
            *counts.entry(classify(c, frames)).or_insert(0) += 1;
        }
        frames.clear();
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            flush(&mut comm, &mut frames);
        } else if line.starts_with(char::is_whitespace) && comm.is_some() {
            // "\tffffffff8152fb20 lookup_nulls_elem_raw" (symbol may be
            // followed by "+0x..": perf prints offsets with some options).
            if let Some(sym) = line.split_whitespace().nth(1) {
                frames.push(sym.split('+').next().unwrap_or(sym));
            }
        } else {
            flush(&mut comm, &mut frames);
            comm = line.split_whitespace().next();
        }
    }
    flush(&mut comm, &mut frames);
    counts
}

/// Whether the samples name kernel functions at all: every workload here
/// makes system calls, so a resolved profile has `do_syscall_64`.
pub fn kernel_symbols_resolved(script: &str) -> bool {
    script.contains(" do_syscall_64")
}

pub struct ConnProfile {
    /// Connections per second wrk completed during the profiled run.
    pub conn_per_s: f64,
    pub samples: u64,
    /// CPU µs per connection, by part key.
    pub us_per_conn: BTreeMap<&'static str, f64>,
}

/// µs per connection from sample counts over `secs` of sampling at
/// `conn_per_s` connections per second.
pub fn per_conn(
    counts: &BTreeMap<&'static str, u64>,
    secs: u32,
    conn_per_s: f64,
) -> BTreeMap<&'static str, f64> {
    let conns = conn_per_s * secs as f64;
    // Every part, with 0 where it had no sample: a missing part would
    // leave that run out of the part's median.
    PARTS
        .iter()
        .map(|(k, _, _)| {
            let n = counts.get(k).copied().unwrap_or(0);
            (*k, n as f64 / FREQ_HZ as f64 / conns * 1e6)
        })
        .collect()
}

/// One wrk run of `secs` + 2 s with `perf record` sampling the whole
/// machine for the middle `secs` seconds.
pub fn conn_profile(client: &Netns, target: &str, secs: u32) -> Result<ConnProfile> {
    // Without JIT symbols a BPF program's samples land on its caller
    // (`__netif_receive_skb_core`) and the table would call them the
    // endpoints'.
    let kallsyms =
        std::fs::read_to_string("/proc/sys/net/core/bpf_jit_kallsyms").unwrap_or_default();
    ensure!(
        kallsyms.trim() == "1",
        "net.core.bpf_jit_kallsyms is {:?}, not 1: BPF programs would have no symbols and their time would be counted as their callers'",
        kallsyms.trim()
    );
    let data = std::env::temp_dir().join(format!("fwt-bench-perf-{}.data", std::process::id()));
    let data_s = data.to_string_lossy().into_owned();
    let freq = FREQ_HZ.to_string();
    let secs_s = secs.to_string();
    let (rec, w) = std::thread::scope(|scope| {
        let load = scope.spawn(|| wrk(client, target, secs + 2));
        std::thread::sleep(Duration::from_secs(1));
        let rec = exec(
            None,
            &[
                "perf",
                "record",
                "-a",
                "-g",
                "-e",
                "cpu-clock",
                "-F",
                &freq,
                "-o",
                &data_s,
                "--",
                "sleep",
                &secs_s,
            ],
            Duration::from_secs(secs as u64 + 30),
        );
        let w = load
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("wrk thread panicked")));
        (rec, w)
    });
    let result = (|| {
        let rec = rec?;
        ensure!(
            rec.status.success(),
            "perf record failed: {}",
            tail(&String::from_utf8_lossy(&rec.stderr))
        );
        let w = w?;
        let out = exec(
            None,
            &["perf", "script", "-i", &data_s, "-F", "comm,ip,sym"],
            Duration::from_secs(120),
        )?;
        ensure!(
            out.status.success(),
            "perf script failed: {}",
            tail(&String::from_utf8_lossy(&out.stderr))
        );
        let script = String::from_utf8_lossy(&out.stdout);
        ensure!(
            kernel_symbols_resolved(&script),
            "perf resolved no kernel symbol (kernel.kptr_restrict?): every sample would be the endpoints'"
        );
        let counts = count_samples(&script);
        let samples: u64 = counts.values().sum();
        ensure!(samples > 0, "perf recorded no samples");
        Ok(ConnProfile {
            conn_per_s: w.per_s,
            samples,
            us_per_conn: per_conn(&counts, secs, w.per_s),
        })
    })();
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(format!("{data_s}.old"));
    result.context("profiling new connections")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "wrk \n\tffffffff8152fb20 lookup_nulls_elem_raw\n\tffffffffa0001234 bpf_prog_5e431513dd3b100f_fwd_ingress\n\tffffffff81eb1000 __netif_receive_skb_core.constprop.0\n\tffffffff81eb2000 ip_finish_output2\n\nnginx \n\tffffffff81000000 nf_conntrack_tcp_packet\n\tffffffff81000100 nf_hook_slow\n\tffffffff81000200 ip_forward\n\nnginx \n\tffffffff81000010 veth_xmit\n\tffffffff81000020 __dev_queue_xmit\n\tffffffff81000030 ip_output\n\tffffffff81000040 __netif_receive_skb_one_core\n\nwrk \n\tffffffff81000010 veth_xmit\n\tffffffff81000030 ip_output\n\tffffffff81000050 __ip_queue_xmit\n\tffffffff81000060 __tcp_transmit_skb\n\nnginx \n\tffffffff81000300 fib_table_lookup\n\tffffffff81000400 ip_route_input_slow\n\tffffffff81000500 ip_rcv\n\nswapper \n\tffffffff81000600 pv_native_safe_halt\n\nswapper \n\tffffffff81000700 veth_xmit\n\tffffffff81000750 __dev_queue_xmit\n\tffffffff81000800 skb_do_redirect\n\tffffffff81eb1000 __netif_receive_skb_core.constprop.0\n\nswapper \n\tffffffff81000650 tcp_v4_rcv\n\tffffffff81000660 net_rx_action\n\tffffffff81000600 pv_native_safe_halt\n\tffffffff81000610 do_idle\n\nsocat \n\tffffffff81000900 do_syscall_64\n\nwrk \n\t          10a7fb __libc_connect\n\nrustc \n\tffffffff81000a00 clear_page_erms\n\nperf \n\tffffffff81000b00 do_syscall_64\n";

    #[test]
    fn each_sample_goes_to_its_innermost_recognised_frame() {
        let c = count_samples(SCRIPT);
        // The helper under the BPF program is the program's.
        assert_eq!(c.get("bpf"), Some(&1));
        // A hook inside ip_forward is netfilter's, not forwarding's.
        assert_eq!(c.get("netfilter"), Some(&1));
        // The forward's transmit, whose ip_forward frame tail calls left
        // out; a local sender's transmit is the endpoints'.
        assert_eq!(c.get("forward"), Some(&1));
        assert_eq!(c.get("route_in"), Some(&1));
        assert_eq!(c.get("idle"), Some(&1));
        // The transmit the redirect calls after the program returned.
        assert_eq!(c.get("redirect"), Some(&1));
        assert_eq!(c.get("relay"), Some(&1));
        // wrk's own code, and an interrupt the idle task took.
        assert_eq!(c.get("endpoints"), Some(&3));
        // A build running beside the benchmark, and the sampler.
        assert_eq!(c.get("other"), Some(&2));
        assert_eq!(c.values().sum::<u64>(), 12);
    }

    #[test]
    fn unresolved_kernel_symbols_are_noticed() {
        assert!(kernel_symbols_resolved(SCRIPT));
        assert!(!kernel_symbols_resolved(
            "wrk \n\tffffffff81000900 [unknown]\n\tffffffff81000a00 [unknown]\n"
        ));
    }

    #[test]
    fn per_connection_figures() {
        let mut counts = BTreeMap::new();
        counts.insert("bpf", FREQ_HZ as u64);
        // 1 CPU-second over 2 s at 50,000 conn/s: 10 µs per connection.
        let us = per_conn(&counts, 2, 50_000.0);
        assert!((us["bpf"] - 10.0).abs() < 1e-9, "{us:?}");
        assert_eq!(us["netfilter"], 0.0);
        assert_eq!(us.len(), PARTS.len());
    }

    #[test]
    fn every_part_key_is_unique() {
        let mut keys: Vec<&str> = PARTS.iter().map(|p| p.0).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), PARTS.len());
    }
}
