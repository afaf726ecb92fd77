//! The metric names are a contract: docs/metrics.md lists every one a
//! scrape serves (and nothing else), the Grafana dashboard in packaging/
//! charts only names that are served, and `forwarder_build_info` names the
//! running version. Checked against a real daemon's /metrics after real
//! traffic, so the per-forward and per-interface series exist.
//!
//! ```text
//!  lan ns 192.168.1.10 ── lan0 192.168.1.55 host (forwarder, metrics 127.0.0.1:9750) vm0 ── vm :80
//! ```
use std::{collections::BTreeSet, path::Path};

use anyhow::{ensure, Context, Result};
use forwarder_tests::{lanvm::LanVm, require_root, Daemon};

const RULES: &str = r#"
[global]
metrics = "127.0.0.1:9750"

[[forward]]
name = "web"
in = "lan0"
listen = "192.168.1.55"
port = 8080
to = "192.168.100.80:80"
snat = "masquerade"
"#;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Sample names a scrape serves, from its `# TYPE` lines (so families
/// without samples count too): counters as `NAME_total`, infos as
/// `NAME_info`, gauges as they are.
fn served(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut w = l.split_whitespace();
            let (name, kind) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            match kind {
                "counter" => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_string(),
            }
        })
        .collect()
}

/// The names in the first column of docs/metrics.md's table.
fn documented() -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(repo("docs/metrics.md"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("forwarder_"))
        .map(str::to_string)
        .collect())
}

/// Every `forwarder_*` name in the dashboard's queries, and the number of
/// panels with queries.
fn charted() -> Result<(BTreeSet<String>, usize)> {
    let path = repo("packaging/grafana/forwarder.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let mut names = BTreeSet::new();
    let mut panels = 0;
    for p in v["panels"].as_array().context("panels")? {
        let Some(targets) = p["targets"].as_array() else {
            continue;
        };
        panels += 1;
        for t in targets {
            let expr = t["expr"].as_str().context("a target without expr")?;
            let mut rest = expr;
            while let Some(i) = rest.find("forwarder_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    Ok((names, panels))
}

#[test]
fn documented_charted_and_served_metric_names_agree() -> Result<()> {
    if !require_root("documented_charted_and_served_metric_names_agree") {
        return Ok(());
    }
    let t = LanVm::build("metrics", &[80])?;
    let path = t.rules_path();
    std::fs::write(&path, RULES)?;
    let _d = Daemon::start(&t.host, &["--rules", path.to_str().unwrap()])?;
    ensure!(t.wait_forwarding(8080, 80), "the forward works");
    let scrape = t
        .host
        .output(&["curl", "-sf", "http://127.0.0.1:9750/metrics"])?;
    eprintln!("{scrape}");
    let served = served(&scrape);
    ensure!(served.len() >= 15, "a scrape with names: {served:?}");
    for n in &served {
        ensure!(
            n.starts_with("forwarder_"),
            "{n}: every metric is the forwarder's"
        );
        let counter = scrape.contains(&format!("# TYPE {} counter", n.trim_end_matches("_total")));
        ensure!(
            counter == n.ends_with("_total"),
            "{n}: counters and only counters end in _total"
        );
        let bytes = n.contains("bytes");
        ensure!(
            !bytes || scrape.contains(&format!("# UNIT {} bytes", n.trim_end_matches("_total"))),
            "{n}: a byte figure declares its unit"
        );
    }
    let documented = documented()?;
    ensure!(
        documented == served,
        "docs/metrics.md and /metrics differ: only documented {:?}, only served {:?}",
        documented.difference(&served).collect::<Vec<_>>(),
        served.difference(&documented).collect::<Vec<_>>()
    );
    let (charted, panels) = charted()?;
    ensure!(panels >= 6, "a dashboard with panels: {panels}");
    let unknown: Vec<_> = charted.difference(&served).collect();
    ensure!(
        unknown.is_empty(),
        "the dashboard queries names never served: {unknown:?}"
    );
    let uncharted: Vec<_> = served.difference(&charted).collect();
    ensure!(
        uncharted.is_empty(),
        "served but on no panel: {uncharted:?}"
    );
    let build = format!(
        "forwarder_build_info{{version=\"{}\",abi_version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        forwarder_common::ABI_VERSION
    );
    ensure!(scrape.contains(&build), "{build} in the scrape");
    ensure!(
        scrape.contains("forwarder_rule_bytes_total{rule=\"web\"}"),
        "the forward's bytes"
    );
    Ok(())
}
