//! The traffic measurements: iperf3 (TCP goodput, small-packet UDP), wrk
//! (new connections) and sockperf (RTT) run in the client namespace
//! against the server through whatever the router does, and their output
//! parsed. The UDP test also takes the CPU accounting around it.
use anyhow::{bail, ensure, Context, Result};
use forwarder_tests::netns::Netns;
use serde_json::Value;

use super::{
    commands::{iperf_tcp_argv, iperf_udp_argv, sockperf_argv, wrk_argv},
    cpu::{ns_proc_cpu_ns, proc_stat_ns},
    exec::{exec_ok, tail},
};

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
