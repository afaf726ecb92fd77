//! What a running forwarder counted, from `forwarder status --json`:
//! packets per forward (a forward that counted nothing voids the run's
//! metrics through it) and the summary kept in the run record.
use anyhow::{bail, Context, Result};
use forwarder_tests::{kernel_memory::held_map_bytes, Daemon};
use serde_json::Value;

/// Packets each forward of a running daemon counted, plus the status
/// summary kept in the run record.
pub fn forwarder_counts(daemon: &Daemon) -> Result<(Vec<(String, u64)>, Value)> {
    let st = daemon.status_json()?;
    let rules = st["rules"].as_array().context("status without rules")?;
    if rules.is_empty() {
        bail!("status lists no rules: {st}");
    }
    // The counters carry the rule's name (from the pinned name map) even
    // when the daemon's own view of the rule is missing.
    let name = |r: &Value| {
        r["counters"]["name"]
            .as_str()
            .or(r["name"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let counts = rules
        .iter()
        .map(|r| (name(r), r["counters"]["packets"].as_u64().unwrap_or(0)))
        .collect();
    // What the XDP hooks did, summed over interfaces (all zero without XDP).
    let xdp = |reason: &str| -> u64 {
        st["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["hooks"].as_array().cloned().unwrap_or_default())
            .filter(|h| h["hook"] == "xdp")
            .flat_map(|h| h["reasons"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["reason"] == reason)
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    };
    let summary = serde_json::json!({
        "xdp": {"fwd_redirect": xdp("fwd_redirect"), "pass_to_tc": xdp("pass_to_tc")},
        "rules": rules.iter().map(|r| serde_json::json!({
            "name": name(r),
            "packets": r["counters"]["packets"],
            "new_flows": r["counters"]["new_flows"],
            "drops": r["counters"]["drops"],
        })).collect::<Vec<_>>(),
        "conntrack": st["conntrack"],
        // What the daemon's BPF maps take, as the kernel accounts it.
        "kernel_map_bytes": daemon.pid().and_then(|pid| held_map_bytes(pid).ok()),
    });
    Ok((counts, summary))
}
