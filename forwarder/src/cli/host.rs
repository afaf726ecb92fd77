//! What `forwarder check` reads of the host it runs on, read-only: the
//! interfaces and their IPv4 addresses (rtnetlink, as the daemon reads
//! them), its listening sockets (/proc/net/{tcp,udp}{,6}), and the
//! netfilter chains that filter forwarded packets
//! (`iptables-save` and `nft -j list ruleset` output, as `forwarder import
//! --from-running` reads them). The judging is `rules::host`, pure.
//!
//! The one fact a reader gets wrong: none of this needs root except the
//! firewall listing; without root `check` still checks the addresses and
//! says the FORWARD rules were not read.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use rules::HostFacts;

use crate::daemon::facts;

/// Interfaces by name with their IPv4 addresses.
fn interfaces() -> Result<BTreeMap<String, Vec<std::net::Ipv4Addr>>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let handle = facts::connect()?;
        let links = facts::links(&handle).await?;
        let addrs = facts::v4_addrs(&handle).await?;
        Ok(links
            .into_values()
            .map(|l| {
                let a = addrs.get(&l.ifindex).cloned().unwrap_or_default();
                (l.name, a)
            })
            .collect())
    })
}

/// A read-only listing: its output, why it failed (its first line of
/// stderr), or `None` when the program is not installed.
fn listing(args: &[&str]) -> Option<Result<String, String>> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Some(Ok(stdout));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed");
    Some(Err(format!("{}: {}", args[0], first.trim())))
}

/// The chains that filter forwarded packets, or why they could not be read.
fn forward_filter() -> Result<Vec<String>, String> {
    let iptables = listing(&["iptables-save"]);
    let nft = listing(&["nft", "-j", "list", "ruleset"]);
    let mut why = Vec::new();
    let mut read = |l: Option<Result<String, String>>| match l {
        Some(Ok(text)) => Some(text),
        Some(Err(e)) => {
            why.push(e);
            None
        }
        None => None,
    };
    let (save, json) = (read(iptables), read(nft));
    if save.is_none() && json.is_none() {
        return Err(if why.is_empty() {
            "neither iptables-save nor nft is installed".into()
        } else {
            why.join("; ")
        });
    }
    Ok(rules::host::forward_filtering(
        save.as_deref().unwrap_or(""),
        json.as_deref().unwrap_or(""),
    ))
}

/// This host's listening TCP and unconnected UDP sockets (of this network
/// namespace: /proc/net is the reader's).
fn sockets() -> Vec<rules::local_sockets::LocalSocket> {
    use rules::{local_sockets::parse, model::L4};
    let table =
        |name: &str| std::fs::read_to_string(format!("/proc/net/{name}")).unwrap_or_default();
    [
        ("tcp", L4::Tcp, false),
        ("tcp6", L4::Tcp, true),
        ("udp", L4::Udp, false),
        ("udp6", L4::Udp, true),
    ]
    .into_iter()
    .flat_map(|(name, proto, v6)| parse(&table(name), proto, v6))
    .collect()
}

/// This host as `check` sees it; `node` is its name for `nodes = [...]`.
pub fn read(node: &str) -> Result<HostFacts> {
    Ok(HostFacts {
        ifaces: interfaces().context("reading this host's interfaces")?,
        node: node.to_string(),
        forward_filter: forward_filter(),
        sockets: sockets(),
    })
}
