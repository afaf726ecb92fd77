//! The measurements: real tools run in the client namespace against the
//! server through whatever the router does, their output parsed, and the
//! CPU accounting around the small-packet test. Command lines are built by
//! one function each, used both to run and to document them.
use std::{
    collections::BTreeMap,
    io::Read,
    path::Path,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use forwarder_tests::{netns::Netns, process::command_in};
use serde_json::Value;

use super::topology::{pinned, CLIENT_CPU, PORT_HTTP, PORT_IPERF, PORT_SOCKPERF, RTT_CPU};

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
        scale_tcp: 10,
    };
    pub const QUICK: Durations = Durations {
        tcp1: 2,
        tcp4: 1,
        wrk: 2,
        rtt: 1,
        udp: 1,
        bpf: 1,
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
            ("scale_tcp", self.scale_tcp),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// wrk's concurrency: enough open connections to keep one client thread
/// busy, few enough that the 2-vCPU machine is not just context switching.
const WRK_CONNS: u32 = 32;
/// Small-packet test: UDP payload bytes (IPv4 packet: 92 bytes).
pub const UDP_PAYLOAD: u32 = 64;

/// Runs `argv` in `ns` with a deadline, stopping early when the benchmark
/// is interrupted. Output is collected by threads so a chatty tool can
/// never block on a full pipe.
pub fn exec(ns: Option<&str>, argv: &[&str], timeout: Duration) -> Result<Output> {
    let mut child = command_in(ns, argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {argv:?}"))?;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if super::interrupted() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = (t_out.join(), t_err.join());
            if super::interrupted() {
                bail!("interrupted");
            }
            bail!("{argv:?} timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// `exec` in `ns` that also fails on a non-zero exit.
fn exec_ok(ns: &Netns, argv: &[String], secs: u32) -> Result<String> {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = exec(Some(&ns.name), &args, Duration::from_secs(secs as u64 + 20))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        // The tool, not the `taskset -c N` in front of it.
        let tool = if argv[0] == "taskset" {
            &argv[3]
        } else {
            &argv[0]
        };
        bail!(
            "{tool} failed ({}): {}{}",
            out.status,
            tail(&stdout),
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(stdout)
}

/// The last few lines of a tool's output, for error messages.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(6)..].join("\n")
}

pub fn iperf_tcp_argv(target: &str, streams: u32, secs: u32) -> Vec<String> {
    pinned(
        CLIENT_CPU,
        &[
            "iperf3",
            "-c",
            target,
            "-p",
            &PORT_IPERF.to_string(),
            "-t",
            &secs.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
        ],
    )
}

pub fn iperf_udp_argv(target: &str, secs: u32) -> Vec<String> {
    pinned(
        CLIENT_CPU,
        &[
            "iperf3",
            "-c",
            target,
            "-p",
            &PORT_IPERF.to_string(),
            "-u",
            "-l",
            &UDP_PAYLOAD.to_string(),
            "-b",
            "0",
            "-t",
            &secs.to_string(),
            "-J",
        ],
    )
}

pub fn wrk_argv(target: &str, secs: u32) -> Vec<String> {
    pinned(
        CLIENT_CPU,
        &[
            "wrk",
            "-t1",
            &format!("-c{WRK_CONNS}"),
            &format!("-d{secs}s"),
            "--timeout",
            "2s",
            "-H",
            "Connection: close",
            &format!("http://{target}:{PORT_HTTP}/"),
        ],
    )
}

pub fn sockperf_argv(target: &str, secs: u32) -> Vec<String> {
    pinned(
        RTT_CPU,
        &[
            "sockperf",
            "ping-pong",
            "--tcp",
            "-i",
            target,
            "-p",
            &PORT_SOCKPERF.to_string(),
            "-t",
            &secs.to_string(),
            "-m",
            "64",
            "--full-rtt",
        ],
    )
}

/// The client command lines with TARGET standing for the address the
/// configuration makes the client connect to.
pub fn client_commands(d: &Durations) -> Vec<(String, String)> {
    let t = "TARGET";
    vec![
        (
            "TCP throughput, 1 stream".into(),
            iperf_tcp_argv(t, 1, d.tcp1).join(" "),
        ),
        (
            "TCP throughput, 4 streams".into(),
            iperf_tcp_argv(t, 4, d.tcp4).join(" "),
        ),
        ("new connections".into(), shell_words(&wrk_argv(t, d.wrk))),
        (
            "request/response RTT".into(),
            sockperf_argv(t, d.rtt).join(" "),
        ),
        (
            "small-packet UDP".into(),
            iperf_udp_argv(t, d.udp).join(" "),
        ),
        (
            "BPF time per forwarded packet (forwarder configurations, separate burst)".into(),
            iperf_udp_argv(t, d.bpf).join(" "),
        ),
    ]
}

fn shell_words(v: &[String]) -> String {
    v.iter()
        .map(|w| {
            if w.contains(' ') {
                format!("'{w}'")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn iperf_json(out: &str) -> Result<Value> {
    let v: Value =
        serde_json::from_str(out).with_context(|| format!("iperf3 JSON: {}", tail(out)))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

/// TCP goodput at the receiver, Gbit/s.
pub fn tcp(client: &Netns, target: &str, streams: u32, secs: u32) -> Result<f64> {
    let out = exec_ok(client, &iperf_tcp_argv(target, streams, secs), secs)?;
    let v = iperf_json(&out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received")?;
    ensure!(bps > 0.0, "iperf3 received nothing");
    Ok(bps / 1e9)
}

pub struct Wrk {
    pub per_s: f64,
    pub requests: u64,
    /// wrk's "Socket errors" and "Non-2xx" lines, verbatim.
    pub errors: Vec<String>,
}

pub fn parse_wrk(out: &str) -> Result<Wrk> {
    let per_s = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk output: {}", tail(out)))?;
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let errors = out
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(|l| l.trim().to_string())
        .collect();
    Ok(Wrk {
        per_s,
        requests,
        errors,
    })
}

/// New connections per second: every request is its own connection.
pub fn wrk(client: &Netns, target: &str, secs: u32) -> Result<Wrk> {
    let out = exec_ok(client, &wrk_argv(target, secs), secs)?;
    let w = parse_wrk(&out)?;
    ensure!(w.requests > 0, "wrk completed no request: {}", tail(&out));
    Ok(w)
}

/// (p50, p99) round-trip time in µs from sockperf's percentile lines.
pub fn parse_sockperf(out: &str) -> Result<(f64, f64)> {
    let pct = |p: &str| -> Result<f64> {
        let needle = format!("percentile {p} =");
        out.lines()
            .find_map(|l| l.split(&needle).nth(1))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {p} percentile in sockperf output: {}", tail(out)))
    };
    Ok((pct("50.000")?, pct("99.000")?))
}

pub fn rtt(client: &Netns, target: &str, secs: u32) -> Result<(f64, f64)> {
    let out = exec_ok(client, &sockperf_argv(target, secs), secs)?;
    parse_sockperf(&out)
}

/// The aggregate `cpu` line of /proc/stat, in ticks: user nice system idle
/// iowait irq softirq steal.
fn proc_stat_cpu() -> Result<Vec<u64>> {
    let s = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = s
        .lines()
        .next()
        .context("empty /proc/stat")?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    ensure!(cpu.len() >= 8, "unexpected /proc/stat");
    Ok(cpu)
}

/// CPU time (ns) spent so far in softirq on all CPUs, stolen by the
/// hypervisor, and in total, from /proc/stat (USER_HZ ticks).
pub fn proc_stat_ns() -> Result<(u64, u64, u64)> {
    let cpu = proc_stat_cpu()?;
    let ns = 1_000_000_000 / clk_tck();
    let total: u64 = cpu.iter().take(8).sum();
    Ok((cpu[6] * ns, cpu[7] * ns, total * ns))
}

/// Share of the machine's CPU time that was not idle over `window`.
pub fn busy_pct(window: std::time::Duration) -> Result<f64> {
    // (total, idle + iowait) ticks.
    let read = || -> Result<(u64, u64)> {
        let cpu = proc_stat_cpu()?;
        Ok((cpu.iter().take(8).sum(), cpu[3] + cpu[4]))
    };
    let (t0, i0) = read()?;
    std::thread::sleep(window);
    let (t1, i1) = read()?;
    let total = t1.saturating_sub(t0).max(1);
    Ok(100.0 * (total - i1.saturating_sub(i0).min(total)) as f64 / total as f64)
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// CPU time (ns) of every process in `ns`, including their reaped children.
pub fn ns_proc_cpu_ns(ns: &Netns) -> u64 {
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let tick = 1_000_000_000 / clk_tck();
    pids.split_whitespace()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            // Fields after "(comm)": state is field 3, utime..cstime 14..17.
            let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|v| v.parse().ok())
                .collect();
            f.iter().sum::<u64>() * tick
        })
        .sum()
}

pub struct Udp {
    pub sent_pps: f64,
    pub delivered_pps: f64,
    pub sent: u64,
    pub delivered: u64,
    pub softirq_ns_per_pkt: f64,
    pub router_proc_ns_per_pkt: f64,
}

/// (sent packets, delivered packets, seconds) from iperf3 -u JSON.
pub fn parse_iperf_udp(v: &Value) -> Result<(u64, u64, f64)> {
    let sent = v["end"]["sum_sent"]["packets"]
        .as_u64()
        .context("no end.sum_sent.packets")?;
    let r = &v["end"]["sum_received"];
    let total = r["packets"].as_u64().context("no end.sum_received")?;
    let lost = r["lost_packets"].as_u64().unwrap_or(0);
    let secs = r["seconds"].as_f64().context("no seconds")?;
    Ok((sent, total.saturating_sub(lost), secs))
}

/// Small packets as fast as one iperf3 client sends them; what arrives at
/// the server, and what it cost: softirq time on the whole machine (client
/// and server kernels included: namespaces share the CPUs, softirq time is
/// not attributable per namespace) and CPU of the router's processes (socat,
/// the forwarder daemon), both per delivered packet.
pub fn udp(client: &Netns, router: &Netns, target: &str, secs: u32) -> Result<Udp> {
    let (si0, _, _) = proc_stat_ns()?;
    let rp0 = ns_proc_cpu_ns(router);
    let out = exec_ok(client, &iperf_udp_argv(target, secs), secs)?;
    let (si1, _, _) = proc_stat_ns()?;
    let rp1 = ns_proc_cpu_ns(router);
    let v = iperf_json(&out)?;
    let (sent, delivered, rsecs) = parse_iperf_udp(&v)?;
    ensure!(delivered > 0, "no UDP packet reached the server");
    let per = |ns: u64| ns as f64 / delivered as f64;
    Ok(Udp {
        sent_pps: sent as f64 / secs as f64,
        delivered_pps: delivered as f64 / rsecs,
        sent,
        delivered,
        softirq_ns_per_pkt: per(si1.saturating_sub(si0)),
        router_proc_ns_per_pkt: per(rp1.saturating_sub(rp0)),
    })
}

/// BPF run-time statistics are on while this lives (BPF_ENABLE_STATS: the
/// switch behind kernel.bpf_stats_enabled, released when the fd closes, so
/// a crashed benchmark cannot leave it on).
pub struct BpfStats {
    fd: i32,
}

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        let attr = [BPF_STATS_RUN_TIME, 0, 0, 0];
        // SAFETY: bpf(2) with a zeroed attr whose first word is the type.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        ensure!(
            fd >= 0,
            "BPF_ENABLE_STATS: {}",
            std::io::Error::last_os_error()
        );
        Ok(BpfStats { fd: fd as i32 })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        // SAFETY: closing the fd we own.
        unsafe { libc::close(self.fd) };
    }
}

/// Per program (by id): name, run_time_ns, run_cnt, for the programs that
/// use the flow map pinned in `pin_dir`: exactly the forwarder instance
/// under test, whatever its programs are called and wherever they are
/// attached (other BPF users on the machine, even other forwarders, are
/// not counted).
pub fn bpf_prog_stats(pin_dir: &Path) -> Result<BTreeMap<u64, (String, u64, u64)>> {
    let flows = pin_dir.join("FWD_FLOWS");
    let out = exec(
        None,
        &[
            "bpftool",
            "-j",
            "map",
            "show",
            "pinned",
            flows.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    )?;
    let m: Value = serde_json::from_slice(&out.stdout).context("bpftool map show")?;
    let map_id = m["id"].as_u64().context("pinned flow map has no id")?;
    let out = exec(
        None,
        &["bpftool", "-j", "prog", "show"],
        Duration::from_secs(10),
    )?;
    let progs: Value = serde_json::from_slice(&out.stdout).context("bpftool prog show")?;
    let mut found = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let uses = p["map_ids"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i.as_u64() == Some(map_id)));
        if let (true, Some(id)) = (uses, p["id"].as_u64()) {
            found.insert(
                id,
                (
                    p["name"].as_str().unwrap_or("?").to_string(),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                    p["run_cnt"].as_u64().unwrap_or(0),
                ),
            );
        }
    }
    ensure!(
        !found.is_empty(),
        "no BPF program uses flow map id {map_id}"
    );
    Ok(found)
}

pub struct BpfCost {
    /// All of the forwarder's BPF time divided by the packets it forwarded.
    pub ns_per_pkt: f64,
    pub packets: u64,
    /// "name: N ns/run x runs" per program.
    pub programs: Vec<String>,
}

/// The forwarder's BPF time per forwarded packet during a small-packet
/// burst, with statistics on only for that burst (they add two clock reads
/// to every BPF program run on the machine). A forwarded packet runs
/// several programs (TC ingress on the way in, TC egress on the way out;
/// later XDP first): their time is summed, and the packet count is the
/// run count of the program that saw the most runs (the first hook every
/// client packet passes).
pub fn bpf_cost(client: &Netns, target: &str, pin_dir: &Path, secs: u32) -> Result<BpfCost> {
    let stats = BpfStats::enable()?;
    let before = bpf_prog_stats(pin_dir)?;
    exec_ok(client, &iperf_udp_argv(target, secs), secs)?;
    let after = bpf_prog_stats(pin_dir)?;
    drop(stats);
    let (mut time, mut packets, mut programs) = (0, 0, Vec::new());
    for (id, (name, t1, c1)) in &after {
        let (t0, c0) = before.get(id).map_or((0, 0), |(_, t, c)| (*t, *c));
        let (dt, dc) = (t1.saturating_sub(t0), c1.saturating_sub(c0));
        time += dt;
        packets = packets.max(dc);
        if dc > 0 {
            programs.push(format!(
                "{name}: {:.0} ns/run x {dc} runs",
                dt as f64 / dc as f64
            ));
        }
    }
    ensure!(
        packets > 0,
        "the forwarder's programs did not run during the burst"
    );
    Ok(BpfCost {
        ns_per_pkt: time as f64 / packets as f64,
        packets,
        programs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output() {
        let out = "Running 3s test @ http://10.77.2.2/\n  1 threads and 32 connections\n  97682 requests in 3.00s, 21.61MB read\n  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec:  32550.19\nTransfer/sec:      7.20MB\n";
        let w = parse_wrk(out).unwrap();
        assert_eq!(w.per_s, 32550.19);
        assert_eq!(w.requests, 97682);
        assert_eq!(w.errors.len(), 1);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn sockperf_output() {
        let out = "sockperf: ---> percentile 99.000 =   52.896\nsockperf: ---> percentile 90.000 =   39.278\nsockperf: ---> percentile 50.000 =   35.756\n";
        assert_eq!(parse_sockperf(out).unwrap(), (35.756, 52.896));
    }

    #[test]
    fn iperf_udp_counts() {
        let v: Value = serde_json::from_str(
            r#"{"end":{"sum_sent":{"packets":100},"sum_received":{"packets":100,"lost_packets":30,"seconds":2.0}}}"#,
        )
        .unwrap();
        assert_eq!(parse_iperf_udp(&v).unwrap(), (100, 70, 2.0));
    }
}
