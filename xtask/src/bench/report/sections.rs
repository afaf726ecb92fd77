//! The report's later sections, each written from one part of `Results`:
//! flow-table scale, micro-benchmarks, failures and skipped
//! configurations, and how it was measured (topology, commands, setups).
use std::{fmt::Write as _, path::Path};

use super::{
    format::{cell, one_line, short_n, thousands},
    goals::scale_stat,
};
use crate::bench::{
    results::{
        self, Results, RunRecord, Stat, BPF_PKT, DAEMON_CPU, DAEMON_RSS, FILL_SECS,
        MAP_BYTES_PER_FLOW, ROUTER_PROC, RTT50, RTT99, SOFTIRQ, TCP1,
    },
    scale,
};

pub(super) fn scale_section(w: &mut String, r: &Results) {
    if r.scale.is_empty() {
        return;
    }
    let scale_tcp = r.meta.durations.get("scale_tcp").copied().unwrap_or(0);
    let _ = writeln!(
        w,
        "## Flow-table scale (forwarder-tc)\n\nThe same single-stream throughput and RTT with synthetic established flows pre-filled into the pinned `FWD_FLOWS` (`bench_fill`: both directions per flow, clients in 198.18.0.0/16 and backends in 198.19.0.0/16 so they never match benchmark traffic). Every size runs with the same table capacity (`conntrack_max = {}`) and 24 h timeouts; a run only counts if all synthetic flows are still in the table afterwards. The daemon's sweeper runs as in production: one bounded step per second ({} entries read, the table walked incrementally), over a throughput test of {} s; \"daemon CPU\" is the router namespace's process CPU (the daemon: its sweeper) over the measurement window, in % of one CPU, a cost the table size puts on the host, and \"daemon RSS\" its resident memory afterwards. Median (min-max) over {} run(s).\n",
        scale::CONNTRACK_MAX,
        forwarder_common::SWEEP_STEP_ENTRIES,
        scale_tcp,
        r.meta.scale_runs
    );
    let _ = writeln!(
        w,
        "Fill: `{}`. Rules file `[global]`:\n\n```toml\n{}```\n",
        scale::fill_argv(
            Path::new("target/release/bench_fill"),
            Path::new("PIN_DIR"),
            "N"
        )
        .join(" "),
        scale::global()
    );
    let _ = writeln!(w, "| flows in table | TCP 1 stream [Gbit/s] | RTT p50 [µs] | RTT p99 [µs] | daemon CPU [% of a CPU] | daemon RSS [MiB] | fill time [s] | throughput vs {} | RTT p50 vs {} |", short_n(scale::SIZES[0]), short_n(scale::SIZES[0]));
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|");
    let runs = r.meta.scale_runs;
    for &n in scale::SIZES {
        let st = |k: &str| scale_stat(r, n, k);
        let rel = |k: &str| match (scale_stat(r, scale::SIZES[0], k), st(k)) {
            (Some(a), Some(b)) if a.median > 0.0 => format!("{:.2}x", b.median / a.median),
            _ => "-".into(),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            thousands(n as f64),
            cell(TCP1, st(TCP1), runs),
            cell(RTT50, st(RTT50), runs),
            cell(RTT99, st(RTT99), runs),
            cell(DAEMON_CPU, st(DAEMON_CPU), runs),
            cell(DAEMON_RSS, st(DAEMON_RSS), runs),
            cell(FILL_SECS, st(FILL_SECS), runs),
            rel(TCP1),
            rel(RTT50)
        );
    }
    let _ = writeln!(w);
    let big = *scale::SIZES.last().unwrap();
    if let Some(b) = scale_stat(r, big, MAP_BYTES_PER_FLOW) {
        let _ = writeln!(
            w,
            "### Memory\n\nKernel maps: **{:.0} bytes per flow** of capacity (the flow table, two preallocated entries per flow, and the eviction queue, one key per flow; `bpftool`'s `bytes_memlock` divided by `conntrack_max`). Both are allocated whole when the daemon loads, so this is what `conntrack_max` costs whether the flows exist or not: {:.0} MiB for the `conntrack_max = {}` above. Daemon RSS at each table size is in the table: the sweeper reads {} entries at a time, so the daemon's memory does not grow with the table.\n",
            b.median,
            b.median * scale::CONNTRACK_MAX as f64 / (1024.0 * 1024.0),
            scale::CONNTRACK_MAX,
            forwarder_common::SWEEP_STEP_ENTRIES
        );
    }
}

/// Issue 20's target: a handful of forwards with default settings under
/// 40 MiB of kernel memory.
const DEFAULT_MEMORY_TARGET_MIB: f64 = 40.0;

/// The kernel memory of the main runs' forwarder-tc daemon, whose rules
/// leave every setting at its default.
pub(super) fn default_memory_section(w: &mut String, r: &Results) {
    let runs: Vec<&RunRecord> = r
        .runs
        .iter()
        .filter(|x| x.config == "forwarder-tc" && x.valid())
        .collect();
    let bytes: Vec<f64> = runs
        .iter()
        .filter_map(|x| x.info.get("forwarder")?["kernel_map_bytes"].as_f64())
        .collect();
    let Some(mem) = results::stat(&bytes) else {
        return;
    };
    let forwarder = &runs[0].info["forwarder"];
    let forwards = forwarder["rules"].as_array().map_or(0, Vec::len);
    let flows = forwarder["conntrack"]["capacity_entries"]
        .as_u64()
        .unwrap_or(0)
        / u64::from(forwarder_common::ENTRIES_PER_FLOW);
    let mib = mem.median / f64::from(1 << 20);
    let _ = writeln!(
        w,
        "### Kernel memory at the default settings

The main runs' forwarder-tc daemon ({forwards} forwards, every setting at its default: `conntrack_max = {}`) holds **{mib:.1} MiB** of kernel memory in its BPF maps ({} over {} run(s); the kernel's `memlock` accounting in /proc/PID/fdinfo of every map the daemon holds, pinned or not). Per-CPU maps grow with the host's CPU count (see the machine table). Target for a handful of default forwards: under {DEFAULT_MEMORY_TARGET_MIB:.0} MiB: **{}**.\n",
        thousands(flows as f64),
        cell_bytes(&mem),
        mem.n,
        if mib < DEFAULT_MEMORY_TARGET_MIB { "met" } else { "not met" }
    );
}

/// Median (min-max) in bytes.
fn cell_bytes(s: &Stat) -> String {
    format!(
        "median {} B (min-max {}-{} B)",
        thousands(s.median),
        thousands(s.min),
        thousands(s.max)
    )
}

pub(super) fn micro_section(w: &mut String, r: &Results) {
    let Some(m) = &r.micro else { return };
    let _ = writeln!(
        w,
        "## Micro-benchmarks of the TC program (BPF_PROG_TEST_RUN)\n"
    );
    let _ = writeln!(w, "`{}` (tools crate): loads the dataplane with private maps in a namespace of its own (two veth pairs, forwarding on, so the program's FIB lookup succeeds), registers the interfaces, inserts flows and a listener directly into the maps, and times the program with BPF_PROG_TEST_RUN. Values are kernel-measured ns per program run. Counters prove every timed run took the intended path (translated and redirected; flows created).\n", m.command);
    let Some(v) = &m.result else {
        let _ = writeln!(
            w,
            "**Failed**: {}\n",
            m.error.as_deref().unwrap_or("unknown error")
        );
        return;
    };
    let _ = writeln!(
        w,
        "| case | median [ns] | mean [ns] | p10-p90 [ns] | samples | what runs |\n|---|---|---|---|---|---|"
    );
    let repeat = v["repeat"].as_u64().unwrap_or(0);
    // (case, repeated runs per call?, what runs)
    let rows = [
        ("nat", true, "established DNAT+SNAT flow, port kept (both addresses and the source port rewritten), FIB, TTL, redirect"),
        ("nat_port_map", true, "the same with the destination port mapped too (four fields rewritten)"),
        ("no_nat", true, "established flow whose translation is the identity (no rewrite), FIB, TTL, redirect: the no-NAT forward"),
        ("floor", true, "packet on an interface the forwarder does not handle (one map lookup): entering the program at all"),
        ("egress", true, "the egress program on the outgoing interface, which every redirected packet also passes, where no stack-path flow can reply (as on this benchmark's router): returns at once"),
        ("egress_nat", true, "the same on an interface where stack-path flows reply (`IfaceFlags::EGRESS_NAT`): parse, lookup, no flow of its own, passed on"),
        ("create", false, "first packet (SYN) of a new flow: listener match, SNAT port allocation, both entries inserted, NAT, FIB, redirect"),
        ("nat_single", false, "the `nat` case measured like `create`, for comparison (both include the kernel's timer reads)"),
    ];
    for (k, repeated, what) in rows {
        let c = &v[k];
        if c.is_null() {
            continue;
        }
        let per_call = if repeated { repeat } else { 1 };
        let _ = writeln!(
            w,
            "| `{k}` | {} | {:.0} | {}-{} | {} | {what}; repeat = {per_call} per call |",
            c["median"],
            c["mean"].as_f64().unwrap_or(0.0),
            c["p10"],
            c["p90"],
            c["samples"]
        );
    }
    let _ = writeln!(
        w,
        "\nNAT cost over the no-NAT forward: **{} ns** per packet (port mapped: {} ns). Flow creation over an established packet, both at repeat = 1: **{} ns**.\n",
        v["nat_cost"], v["nat_port_map_cost"], v["create_cost"]
    );
    if let (Some(n), Some(e)) = (v["nat"]["median"].as_f64(), v["egress"]["median"].as_f64()) {
        let _ = writeln!(
            w,
            "A NATed, redirected packet of an established flow passes both TC programs: {n:.0} + {e:.0} = **{:.0} ns** of BPF time on this benchmark's router (compare the end-to-end `bpf_ns_per_pkt`, which adds the cost of BPF statistics and of cache misses under real traffic).\n",
            n + e
        );
    }
    let _ = writeln!(w, "BPF_PROG_TEST_RUN runs the program `repeat` times on one skb, so rewrites accumulate: the `no_nat` flow stays on its path by itself (only the TTL moves; it starts at 255), and the `nat` case uses two entries that translate into each other so every run is a full rewrite of an established flow. A first packet can only be first once, hence repeat = 1 for `create`.\n");
}

pub(super) fn failures_section(w: &mut String, r: &Results) {
    let skipped: Vec<_> = r
        .configs
        .iter()
        .filter_map(|c| c.skipped.as_ref().map(|s| (c, s)))
        .collect();
    let failed: Vec<&RunRecord> = r
        .runs
        .iter()
        .chain(&r.scale)
        .filter(|x| !x.errors.is_empty())
        .collect();
    let micro_err = r.micro.as_ref().and_then(|m| m.error.as_ref());
    let _ = writeln!(w, "## Failures and skipped configurations\n");
    if skipped.is_empty() && failed.is_empty() && micro_err.is_none() {
        let _ = writeln!(
            w,
            "None: every run of every configuration completed and passed its checks.\n"
        );
        return;
    }
    for (c, why) in skipped {
        let _ = writeln!(w, "- **{}** skipped: {}", c.name, one_line(why));
    }
    for x in failed {
        let state = if x.valid() {
            "measurement failed"
        } else {
            "run invalid, excluded"
        };
        for (k, e) in &x.errors {
            let _ = writeln!(
                w,
                "- {} run {} ({state}) `{k}`: {}",
                x.config,
                x.run,
                one_line(e)
            );
        }
    }
    if let Some(e) = micro_err {
        let _ = writeln!(w, "- micro-benchmarks: {}", one_line(e));
    }
    let _ = writeln!(w);
}

pub(super) fn method_section(w: &mut String, r: &Results) {
    let m = &r.meta;
    let _ = writeln!(w, "## How it was measured\n");
    let _ = writeln!(
        w,
        "Topology, built afresh for every run (namespaces named `fwt-<pid>-...`, deleted after the run; leftovers of dead runs are swept at start):\n\n```text\nclient 10.77.1.2 (c0) -- (r0) 10.77.1.1 [router] 10.77.2.1 (r1) -- (s0) 10.77.2.2 server\n```\n\nThe client routes 10.77.2.0/24 via the router; the server's default route is the router. veth defaults (GSO/GRO/TSO on). Durations (s): {}.\n",
        m.durations.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(w, "Commands (TARGET is 10.77.2.2 for `kernel`, 10.77.1.1 otherwise; client commands run in the client namespace, servers in the server namespace):\n");
    for (what, c) in &m.commands {
        let _ = writeln!(w, "- {what}: `{c}`");
    }
    let _ = writeln!(w, "\nCPU placement: the client's tools run on CPU 0 and the throughput servers (iperf3, nginx) on CPU 1, as if they were separate machines; left to the scheduler, runs flip between sharing a CPU and not and the spread swamps the differences between configurations. Both sockperf ends run on CPU 0, so the RTT holds no cross-CPU wake-up (tens of µs on a VM) and what remains is the processing along the path, which is what differs between configurations. The router's work (softirq, socat, the forwarder daemon) is not pinned.");
    let _ = writeln!(w, "\nRouter setup per configuration:\n");
    for c in &r.configs {
        let _ = writeln!(w, "**{}**: {}\n", c.name, c.about);
        let _ = writeln!(w, "```text\n{}\n```\n", c.setup.join("\n").trim_end());
    }
    let _ = writeln!(w, "What the numbers are:\n");
    let _ = writeln!(
        w,
        "- TCP throughput: iperf3's receiver-side goodput (`end.sum_received`)."
    );
    let _ = writeln!(w, "- New connections: wrk's requests/s with `Connection: close`, so every request is a new TCP connection through the NAT (nginx closes after each response).");
    let _ = writeln!(w, "- RTT: sockperf ping-pong over one TCP connection, 64-byte messages, full round trip (`--full-rtt`), p50 and p99 after sockperf's warm-up.");
    let _ = writeln!(w, "- UDP: one iperf3 client sending 64-byte payloads (92-byte IPv4 packets) as fast as it can (`-b 0`); sent = client's count, delivered = server's count minus lost, per second.");
    let _ = writeln!(w, "- `{SOFTIRQ}`: softirq time of the whole machine (`/proc/stat`, all CPUs) during the UDP test divided by delivered packets. It includes the client's and server's kernel work, which is the same for every configuration, so differences between configurations are the router's. Namespaces share CPUs and softirq time cannot be attributed per namespace, so this is the closest per-run number for the kernel-side configurations.");
    let _ = writeln!(w, "- `{ROUTER_PROC}`: user+system CPU of the processes in the router namespace (socat and its forks; the forwarder daemon) during the UDP test, per delivered packet. Zero for the pure-kernel configurations, whose work is all softirq.");
    let _ = writeln!(w, "- `{BPF_PKT}`: forwarder only. In a separate UDP burst right after the UDP test, BPF run-time statistics are switched on (BPF_ENABLE_STATS, the switch behind `kernel.bpf_stats_enabled=1`, held only for the burst) and the `run_time_ns` deltas from `bpftool prog show` of every program that uses this daemon's pinned flow map (TC ingress and egress today) are summed and divided by the run count of the program that ran most often (the first hook each client packet passes): BPF ns per forwarded packet, not counting the kernel's own work around it. The per-program split is in `results.json` (`bpf_programs`).");
    let _ = writeln!(
        w,
        "- `{RTT99}` and all medians are over runs; each run contributes one number per metric."
    );
}
