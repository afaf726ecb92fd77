//! The Prometheus endpoint (`[global] metrics = "127.0.0.1:9750"`, off by
//! default). Each scrape reads the pinned counters, like `forwarder
//! status`, and encodes them in the OpenMetrics text format with
//! prometheus-client. Every name, type, unit and label is listed in
//! docs/metrics.md; packaging/grafana/forwarder.json charts them all, and
//! tests/tests/metrics_dashboard_e2e.rs holds both to what a scrape serves.
//! Counters are exposed with `_total` (prometheus-client appends it), byte
//! figures carry the unit `bytes` in their name.
//!
//! The one fact a reader gets wrong: a scrape is not free. Counting live
//! flows walks the whole flow table, so that count is kept for
//! `FLOW_COUNT_MAX_AGE` and shared by every scrape in between; at most
//! `MAX_CONNECTIONS` connections are served at once, each must send its
//! request headers within `HEADER_TIMEOUT` and is closed after
//! `CONNECTION_TIMEOUT`; a failing accept (out of file descriptors) backs
//! off instead of spinning. Scrapes from a hostile or broken client cost a
//! bounded, small amount.
//!
//! This file turns the pinned counters and the status file into the
//! OpenMetrics text; `endpoint` serves it over HTTP.

mod endpoint;

use std::{
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::{Registry, Unit},
};

pub use endpoint::{
    serve, Server, CONNECTION_TIMEOUT, CONTENT_TYPE, HEADER_TIMEOUT, MAX_CONNECTIONS,
};

use crate::observe::{pinned, status};

/// How long a count of live flows serves scrapes before the table is
/// walked again.
pub const FLOW_COUNT_MAX_AGE: Duration = Duration::from_secs(5);

/// The last count of live flows, shared by scrapes.
#[derive(Default)]
pub struct FlowCache {
    last: Mutex<Option<(Instant, pinned::FlowCounts)>>,
}

impl FlowCache {
    /// The counts, walking the table only when the last count is older than
    /// `FLOW_COUNT_MAX_AGE` (one walk at a time: concurrent scrapes wait
    /// for it and share it).
    pub fn get(&self, pin_dir: &Path) -> Result<pinned::FlowCounts> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, counts)) = last.as_ref() {
            if at.elapsed() < FLOW_COUNT_MAX_AGE {
                return Ok(counts.clone());
            }
        }
        let counts = pinned::count_flows(pin_dir)?;
        *last = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }
}

/// `forwarder_config_ok`: the last load of the rules file applied (a file
/// rejected whole, or writes that failed and were rolled back, give 0).
pub fn config_ok(st: Option<&status::DaemonState>) -> bool {
    st.is_some_and(|s| s.rules_error.is_none() && s.last_load.as_ref().is_some_and(|l| l.applied))
}

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
struct NameLabels {
    rule: String,
    name: String,
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

/// A counter family counting bytes: `NAME_bytes_total`, with a UNIT line.
fn bytes_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    reg.register_with_unit(name, help, Unit::Bytes, f.clone());
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

/// The whole exposition for the dataplane pinned in `pin_dir`, with live
/// flows as `flows` counted them.
pub fn render(pin_dir: &Path, run_dir: &Path, flows: &pinned::FlowCounts) -> Result<String> {
    let mut reg = Registry::with_prefix("forwarder");
    let rules = pinned::read_rule_counters(pin_dir, flows)?;
    let fill = &flows.fill;
    let ifaces = pinned::read_pinned(pin_dir)?;

    let packets = counter_family::<RuleLabels>(
        &mut reg,
        "rule_packets",
        "Packets translated for a forward, both directions",
    );
    let bytes = bytes_family::<RuleLabels>(
        &mut reg,
        "rule",
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
    let ibt = bytes_family::<IfaceLabels>(
        &mut reg,
        "interface",
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
    up.set(config_ok(st.as_ref()) as i64);
    reg.register(
        "config_ok",
        "1 when the last load of the rules file applied, 0 when it was rejected or its writes \
         failed (and were rolled back)",
        up,
    );
    let generation = Gauge::<i64>::default();
    generation.set(st.as_ref().map_or(0, |s| s.generation as i64));
    reg.register(
        "config_generation",
        "Load attempts of the rules file since the daemon started",
        generation,
    );

    reg.register(
        "build",
        "The running daemon's version and the pinned-map layout it speaks (value 1)",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("abi_version", forwarder_common::ABI_VERSION.to_string()),
        ]),
    );
    let rss = Gauge::<i64>::default();
    rss.set(crate::observe::running::rss_bytes(std::process::id()).unwrap_or(0) as i64);
    reg.register_with_unit(
        "daemon_resident_memory",
        "The daemon's resident memory (VmRSS); the kernel maps are not in it",
        Unit::Bytes,
        rss,
    );
    name_targets(&mut reg, st.as_ref());

    let mut out = String::new();
    encode(&mut out, &reg).context("encoding metrics")?;
    Ok(out)
}

/// The forwards' DNS-name targets, as the daemon's status file reports
/// them: which forwards are paused for want of a usable address, which
/// names keep a stale one, and how the lookups fared since the daemon
/// started (the resolver lives in the daemon, not in the pinned maps).
fn name_targets(reg: &mut Registry, st: Option<&status::DaemonState>) {
    let paused = gauge_family::<RuleLabels>(
        reg,
        "rule_paused",
        "1 while a forward has no usable target address (its DNS name does not resolve, or \
         resolves to an address that cannot be a target): its port is refused like a closed one",
    );
    let stale = gauge_family::<NameLabels>(
        reg,
        "target_stale",
        "1 while looking up a forward's target name fails and its last address is kept",
    );
    let failures = counter_family::<NameLabels>(
        reg,
        "target_lookup_failures",
        "Failed lookups of a forward's target name since the daemon started",
    );
    let changes = counter_family::<NameLabels>(
        reg,
        "target_address_changes",
        "Times the address in force for a forward's target name changed or was lost since the \
         daemon started",
    );
    for r in st.map_or(&[][..], |s| &s.rules) {
        let n = r.resolution.as_ref();
        paused
            .get_or_create(&RuleLabels {
                rule: r.name.clone(),
            })
            .set(n.is_some_and(|n| n.paused.is_some()) as i64);
        let Some(n) = n else { continue };
        let l = NameLabels {
            rule: r.name.clone(),
            name: n.name.clone(),
        };
        stale.get_or_create(&l).set((n.state == "stale") as i64);
        failures.get_or_create(&l).inc_by(n.failures);
        changes.get_or_create(&l).inc_by(n.changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use status::{DaemonState, LoadResult};

    fn state(applied: bool, rules_error: Option<&str>) -> DaemonState {
        DaemonState {
            last_load: Some(LoadResult {
                applied,
                ..Default::default()
            }),
            rules_error: rules_error.map(String::from),
            ..Default::default()
        }
    }

    fn encoded(st: Option<&DaemonState>) -> String {
        let mut reg = Registry::with_prefix("forwarder");
        name_targets(&mut reg, st);
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        out
    }

    #[test]
    fn name_targets_show_paused_forwards_stale_names_and_lookups() {
        let by_name = |name: &str, state: &str, paused: bool| status::RuleStatus {
            name: name.into(),
            resolution: Some(status::NameStatus {
                name: format!("{name}.svc.cluster.local"),
                state: state.into(),
                paused: paused.then(|| "does not resolve (NXDOMAIN)".into()),
                failures: 3,
                changes: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let st = DaemonState {
            rules: vec![
                status::RuleStatus {
                    name: "fixed".into(),
                    ..Default::default()
                },
                by_name("gone", "paused", true),
                by_name("dns-down", "stale", false),
                // Resolves fine to an address no target may be.
                by_name("loopy", "resolved", true),
            ],
            ..Default::default()
        };
        let out = encoded(Some(&st));
        for line in [
            r#"forwarder_rule_paused{rule="fixed"} 0"#,
            r#"forwarder_rule_paused{rule="gone"} 1"#,
            r#"forwarder_rule_paused{rule="dns-down"} 0"#,
            r#"forwarder_rule_paused{rule="loopy"} 1"#,
            r#"forwarder_target_stale{rule="dns-down",name="dns-down.svc.cluster.local"} 1"#,
            r#"forwarder_target_stale{rule="gone",name="gone.svc.cluster.local"} 0"#,
            r#"forwarder_target_lookup_failures_total{rule="gone",name="gone.svc.cluster.local"} 3"#,
            r#"forwarder_target_address_changes_total{rule="loopy",name="loopy.svc.cluster.local"} 2"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        // A written address has no name to report.
        assert!(!out.contains(r#"rule="fixed",name"#), "{out}");
        // No daemon has reported yet: the families, without samples.
        assert!(!encoded(None).contains("} "));
    }

    #[test]
    fn config_ok_only_when_the_last_load_applied() {
        assert!(config_ok(Some(&state(true, None))));
        // Writes that failed and were rolled back: the file is valid, yet
        // not in force.
        assert!(!config_ok(Some(&state(false, None))));
        assert!(!config_ok(Some(&state(false, Some("line 3: bad port")))));
        assert!(!config_ok(None), "no daemon has reported");
        assert!(
            !config_ok(Some(&DaemonState::default())),
            "nothing loaded yet"
        );
    }
}
