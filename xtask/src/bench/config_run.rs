//! One run of one configuration: a fresh topology and servers, the router
//! set up, the path checked, then every measurement recorded (a failed
//! measurement is recorded as an error, not raised). Forwarder runs also
//! void the metrics of any forward the daemon did not count.
use std::time::Instant;

use anyhow::Result;

use super::{
    check_interrupt,
    configs::{self, Config, FORWARDS},
    measure::{self, Durations},
    results::{self, RunRecord},
    topology::{Servers, Topo},
};

pub(super) fn new_record(config: &str, run: usize, t0: Instant) -> RunRecord {
    RunRecord {
        config: config.into(),
        run,
        started_s: t0.elapsed().as_secs_f64(),
        ..Default::default()
    }
}

/// One run of one configuration on a fresh topology. Only an interrupt is
/// an Err; every failure is recorded in the run.
pub(super) fn run_config(
    cfg: &Config,
    round: usize,
    d: &Durations,
    t0: Instant,
) -> Result<RunRecord> {
    let mut rec = new_record(cfg.name, round, t0);
    let t = Instant::now();
    if let Err(e) = run_config_inner(cfg, d, &mut rec) {
        check_interrupt()?;
        rec.errors.insert("setup".into(), format!("{e:#}"));
    }
    rec.secs = t.elapsed().as_secs_f64();
    Ok(rec)
}

/// Records a measurement's value(s) or its error under `key`.
fn record<T>(rec: &mut RunRecord, key: &str, r: Result<T>, put: impl FnOnce(&mut RunRecord, T)) {
    match r {
        Ok(v) => put(rec, v),
        Err(e) => {
            rec.errors.insert(key.into(), format!("{e:#}"));
        }
    }
}

fn run_config_inner(cfg: &Config, d: &Durations, rec: &mut RunRecord) -> Result<()> {
    use results::*;
    let topo = Topo::build()?;
    if cfg.is_ipv6() {
        configs::ipv6::add_ipv6(&topo)?;
    }
    let _servers = Servers::start(&topo.server)?;
    let router = cfg.setup(&topo, None)?;
    if let Err(e) = cfg.check_path(&topo) {
        rec.errors.insert("path".into(), format!("{e:#}"));
        return Ok(());
    }
    let (c, t) = (&topo.client, cfg.target());
    record(rec, TCP1, measure::tcp(c, t, 1, d.tcp1), |r, v| {
        r.metrics.insert(TCP1.into(), v);
    });
    check_interrupt()?;
    record(rec, TCP4, measure::tcp(c, t, 4, d.tcp4), |r, v| {
        r.metrics.insert(TCP4.into(), v);
    });
    check_interrupt()?;
    record(rec, CONN, measure::wrk(c, t, d.wrk), |r, w| {
        r.metrics.insert(CONN.into(), w.per_s);
        r.info.insert("wrk_requests".into(), w.requests.into());
        if !w.errors.is_empty() {
            r.info
                .insert("wrk_errors".into(), w.errors.join("; ").into());
        }
    });
    check_interrupt()?;
    // Where the CPU of a new connection goes: an extra wrk run, sampled
    // (IPv4: the configurations the kernel-ratio goals compare).
    if !cfg.is_ipv6() {
        record(
            rec,
            CPU_PROFILE,
            measure::conn_profile(c, t, d.profile),
            |r, p| {
                for (part, us) in p.us_per_conn {
                    r.metrics
                        .insert(format!("{}{part}", measure::CPU_CONN_PREFIX), us);
                }
                r.info.insert(
                    CPU_PROFILE.into(),
                    serde_json::json!({ "conn_per_s": p.conn_per_s, "samples": p.samples }),
                );
            },
        );
        check_interrupt()?;
    }
    // (Not over IPv6: the sockperf server listens on IPv4 only.)
    if !cfg.is_ipv6() {
        record(rec, RTT50, measure::rtt(c, t, d.rtt), |r, (p50, p99)| {
            r.metrics.insert(RTT50.into(), p50);
            r.metrics.insert(RTT99.into(), p99);
        });
        check_interrupt()?;
    }
    record(
        rec,
        UDP_DELIVERED,
        measure::udp(c, &topo.router, t, d.udp),
        |r, u| {
            r.metrics.insert(UDP_SENT.into(), u.sent_pps);
            r.metrics.insert(UDP_DELIVERED.into(), u.delivered_pps);
            r.metrics.insert(SOFTIRQ.into(), u.softirq_ns_per_pkt);
            r.metrics
                .insert(ROUTER_PROC.into(), u.router_proc_ns_per_pkt);
            r.info.insert(
                "udp_packets".into(),
                serde_json::json!([u.sent, u.delivered]),
            );
        },
    );
    check_interrupt()?;
    if let Some(daemon) = router.daemon() {
        record(
            rec,
            BPF_PKT,
            measure::bpf_cost(c, t, &daemon.pin_dir, d.bpf),
            |r, b| {
                r.metrics.insert(BPF_PKT.into(), b.ns_per_pkt);
                r.info.insert("bpf_packets".into(), b.packets.into());
                r.info.insert("bpf_programs".into(), b.programs.into());
            },
        );
        // The forwarder must have carried the traffic: a forward that
        // counted nothing voids the metrics measured through it.
        match configs::forwarder_counts(daemon) {
            Ok((counts, summary)) => {
                rec.info.insert("forwarder".into(), summary);
                void_uncounted(rec, &counts);
            }
            Err(e) => {
                rec.errors
                    .insert("path".into(), format!("forwarder status: {e:#}"));
            }
        }
    }
    Ok(())
}

/// Drops the metrics of every forward whose packet counter is zero and
/// records why.
pub fn void_uncounted(rec: &mut RunRecord, counts: &[(String, u64)]) {
    for (name, _, _, metrics) in FORWARDS {
        let packets = counts
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, p)| *p);
        if packets == 0 {
            let voided: Vec<&str> = metrics
                .iter()
                .copied()
                .filter(|m| rec.metrics.remove(*m).is_some())
                .collect();
            if !voided.is_empty() {
                rec.errors.insert(
                    format!("forwarder:{name}"),
                    format!(
                        "forward {name:?} counted 0 packets in `forwarder status`: the traffic bypassed the forwarder; discarded {}",
                        voided.join(", ")
                    ),
                );
            }
        }
    }
}
