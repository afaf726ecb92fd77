//! The Prometheus endpoint (`[global] metrics = "127.0.0.1:9750"`, off by
//! default). Each scrape reads the pinned maps, like `forwarder status`,
//! and encodes them in the OpenMetrics text format with prometheus-client.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::observe::{pinned, status};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleDropLabels {
    rule: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceLabels {
    interface: String,
    hook: String,
    reason: String,
}

fn counter_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

/// The whole exposition for the dataplane pinned in `pin_dir`.
pub fn render(pin_dir: &Path, run_dir: &Path) -> Result<String> {
    let mut reg = Registry::with_prefix("forwarder");
    let (rules, fill) = pinned::read_rules_pinned(pin_dir)?;
    let ifaces = pinned::read_pinned(pin_dir)?;

    let packets = counter_family::<RuleLabels>(
        &mut reg,
        "rule_packets",
        "Packets translated for a forward, both directions",
    );
    let bytes = counter_family::<RuleLabels>(
        &mut reg,
        "rule_bytes",
        "Bytes translated for a forward, both directions",
    );
    let new_flows = counter_family::<RuleLabels>(&mut reg, "rule_flows_created", "Flows created");
    let snat_flows = counter_family::<RuleLabels>(
        &mut reg,
        "rule_flows_snat",
        "Flows created with the source rewritten",
    );
    let stack_flows = counter_family::<RuleLabels>(
        &mut reg,
        "rule_flows_via_stack",
        "Flows created that travel through the kernel stack instead of a redirect",
    );
    let mss = counter_family::<RuleLabels>(
        &mut reg,
        "rule_mss_clamped",
        "SYN/SYN-ACK packets whose MSS was lowered",
    );
    let drops = counter_family::<RuleDropLabels>(
        &mut reg,
        "rule_drops",
        "Packets of a forward refused, by reason",
    );
    let active = gauge_family::<RuleLabels>(&mut reg, "rule_active_flows", "Flows tracked now");
    for r in &rules {
        let l = RuleLabels {
            rule: r.name.clone(),
        };
        packets.get_or_create(&l).inc_by(r.packets);
        bytes.get_or_create(&l).inc_by(r.bytes);
        new_flows.get_or_create(&l).inc_by(r.new_flows);
        snat_flows.get_or_create(&l).inc_by(r.snat_flows);
        stack_flows.get_or_create(&l).inc_by(r.stack_flows);
        mss.get_or_create(&l).inc_by(r.mss_clamped);
        active.get_or_create(&l).set(r.active_flows as i64);
        for (reason, n) in &r.drops {
            drops
                .get_or_create(&RuleDropLabels {
                    rule: r.name.clone(),
                    reason: reason.to_string(),
                })
                .inc_by(*n);
        }
    }

    let ipk = counter_family::<IfaceLabels>(
        &mut reg,
        "interface_packets",
        "Packets seen on an attached interface, by hook and what was done",
    );
    let ibt = counter_family::<IfaceLabels>(
        &mut reg,
        "interface_bytes",
        "Bytes seen on an attached interface, by hook and what was done",
    );
    for i in &ifaces {
        let name = i
            .name
            .clone()
            .unwrap_or_else(|| format!("ifindex{}", i.ifindex));
        for h in &i.hooks {
            for r in h.reasons.iter().filter(|r| r.packets > 0) {
                let l = IfaceLabels {
                    interface: name.clone(),
                    hook: h.hook.to_string(),
                    reason: r.reason.to_string(),
                };
                ipk.get_or_create(&l).inc_by(r.packets);
                ibt.get_or_create(&l).inc_by(r.bytes);
            }
        }
    }

    let flows = Gauge::<i64>::default();
    flows.set(fill.flows as i64);
    reg.register("conntrack_flows", "Flows tracked", flows);
    let entries = Gauge::<i64>::default();
    entries.set(fill.entries as i64);
    reg.register(
        "conntrack_entries",
        "Flow-table entries in use (two per flow)",
        entries,
    );
    let cap = Gauge::<i64>::default();
    cap.set(fill.capacity_entries as i64);
    reg.register("conntrack_capacity_entries", "Flow-table size", cap);

    let st = status::read(run_dir).ok();
    let up = Gauge::<i64>::default();
    up.set(st.as_ref().map_or(0, |s| s.rules_error.is_none() as i64));
    reg.register(
        "config_ok",
        "1 when the rules file in force is the file on disk, 0 when the last load was rejected",
        up,
    );
    let generation = Gauge::<i64>::default();
    generation.set(st.as_ref().map_or(0, |s| s.generation as i64));
    reg.register(
        "config_generation",
        "Load attempts of the rules file since the daemon started",
        generation,
    );

    let mut out = String::new();
    encode(&mut out, &reg).context("encoding metrics")?;
    Ok(out)
}

pub struct Server {
    pub addr: SocketAddr,
}

/// Binds `addr` and serves `/metrics` until the process ends.
pub async fn serve(addr: SocketAddr, pin_dir: PathBuf, run_dir: PathBuf) -> Result<Server> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let addr = listener.local_addr()?;
    info!(%addr, "metrics endpoint: http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!("metrics endpoint: accept failed: {e}");
                    continue;
                }
            };
            let (pin_dir, run_dir) = (pin_dir.clone(), run_dir.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (pin_dir, run_dir) = (pin_dir.clone(), run_dir.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(respond(req, pin_dir, run_dir).await)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Server { addr })
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    pin_dir: PathBuf,
    run_dir: PathBuf,
) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    match req.uri().path() {
        "/metrics" => {
            // Walking the flow table is blocking map syscalls: keep it off
            // the event loop.
            match tokio::task::spawn_blocking(move || render(&pin_dir, &run_dir)).await {
                Ok(Ok(body)) => reply(StatusCode::OK, CONTENT_TYPE, body),
                Ok(Err(e)) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e:#}\n"),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "forwarder: metrics at /metrics\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
