//! `forwarder conntrack list|flush`: the live flow table, read from (and
//! edited in) the pinned map directly, like `conntrack -L` / `-D`.
use std::{path::Path, process::ExitCode};

use crate::{daemon::sweeper, observe::pinned};
use anyhow::{bail, Result};
use clap::Subcommand;
use forwarder_common::{FlowEntry, FlowFlags, FlowKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use serde::Serialize;

const EXIT_STATUS: &str = "Exit status: 0 done; 1 an error (an unknown forward name); 3 nothing \
                           to read: no dataplane is pinned.";

#[derive(Subcommand, Debug)]
pub enum ConntrackCmd {
    /// List live flows with their original and translated tuples.
    #[command(after_help = EXIT_STATUS)]
    List {
        /// Only flows of this forward.
        #[arg(long)]
        rule: Option<String>,
        /// Machine-readable output (errors too).
        #[arg(long)]
        json: bool,
    },
    /// Forget flows, so their next packets are treated as new (a TCP
    /// connection mid-stream then gets a reset, as from a closed port).
    #[command(after_help = EXIT_STATUS, group(clap::ArgGroup::new("which").required(true).args(["rule", "all"])))]
    Flush {
        /// Only flows of this forward.
        #[arg(long, conflicts_with = "all")]
        rule: Option<String>,
        /// Every flow of every forward.
        #[arg(long)]
        all: bool,
        /// Machine-readable output (errors too).
        #[arg(long)]
        json: bool,
    },
}

impl ConntrackCmd {
    pub fn json(&self) -> bool {
        match self {
            ConntrackCmd::List { json, .. } | ConntrackCmd::Flush { json, .. } => *json,
        }
    }
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Serialize, Clone, Debug)]
pub struct FlowView {
    pub proto: &'static str,
    pub state: &'static str,
    pub rule: String,
    pub rule_id: u32,
    /// As the client sent it.
    pub original: Tuple,
    /// As the backend receives it.
    pub translated: Tuple,
    pub snat: bool,
    /// "redirect" or "stack".
    pub path: &'static str,
    /// The SNAT decision was `snat = "auto"`'s.
    pub auto: bool,
    /// NAT64: the original tuple is IPv6, the translated one IPv4.
    pub nat64: bool,
    pub mss: Option<u16>,
    pub age_s: f64,
    pub idle_s: f64,
    pub packets_orig: u64,
    pub bytes_orig: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
}

fn ip(a: &[u32; 4], family: u8) -> String {
    forwarder_common::abi_ip(a, family).to_string()
}

fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        _ => "?",
    }
}

/// Every flow in the pinned table, oldest first.
pub fn flows(pin_dir: &Path) -> Result<Vec<FlowView>> {
    let names = pinned::read_rule_names(pin_dir)?;
    let (entries, _) = pinned::read_flows(pin_dir)?;
    let all: std::collections::HashMap<FlowKey, FlowEntry> = entries.into_iter().collect();
    let now = sweeper::monotonic_ns();
    let secs = |ns: u64| now.saturating_sub(ns) as f64 / 1e9;
    let mut out = Vec::new();
    for (k, e) in &all {
        if e.flags.contains(FlowFlags::REPLY) {
            continue;
        }
        // The reply's key is of the translated tuple's family (IPv4 for
        // a NAT64 flow's IPv6 original).
        let peer = FlowKey::peer_of(e, k.proto, k.family);
        let reply = all.get(&peer);
        out.push(FlowView {
            proto: proto_name(k.proto),
            state: sweeper::state_name(k.proto, e),
            rule: names
                .get(&e.rule_id)
                .cloned()
                .unwrap_or_else(|| format!("#{}", e.rule_id)),
            rule_id: e.rule_id,
            original: Tuple {
                src: ip(&k.src, k.family),
                dst: ip(&k.dst, k.family),
                sport: u16::from_be(k.sport),
                dport: u16::from_be(k.dport),
            },
            translated: Tuple {
                src: ip(&e.new_src, peer.family),
                dst: ip(&e.new_dst, peer.family),
                sport: u16::from_be(e.new_sport),
                dport: u16::from_be(e.new_dport),
            },
            snat: e.flags.contains(FlowFlags::SNAT),
            path: if e.flags.contains(FlowFlags::VIA_STACK) {
                "stack"
            } else {
                "redirect"
            },
            auto: e.flags.contains(FlowFlags::AUTO),
            nat64: e.flags.contains(FlowFlags::XLAT),
            mss: (e.mss != 0).then_some(e.mss),
            age_s: secs(e.created_ns),
            idle_s: secs(e.last_seen_ns.max(reply.map_or(0, |r| r.last_seen_ns))),
            packets_orig: e.packets,
            bytes_orig: e.bytes,
            packets_reply: reply.map_or(0, |r| r.packets),
            bytes_reply: reply.map_or(0, |r| r.bytes),
        });
    }
    out.sort_by(|a, b| b.age_s.total_cmp(&a.age_s));
    Ok(out)
}

fn check_rule(pin_dir: &Path, rule: &Option<String>) -> Result<()> {
    if let Some(r) = rule {
        let names = pinned::read_rule_names(pin_dir)?;
        if !names.values().any(|n| n == r) {
            let known: Vec<&str> = names.values().map(String::as_str).collect();
            bail!("no forward named {r:?} (known: {})", known.join(", "));
        }
    }
    Ok(())
}

pub fn conntrack(pin_dir: &Path, cmd: ConntrackCmd) -> Result<ExitCode> {
    super::pins::require(pin_dir, None)?;
    match cmd {
        ConntrackCmd::List { rule, json } => {
            check_rule(pin_dir, &rule)?;
            let list: Vec<FlowView> = flows(pin_dir)?
                .into_iter()
                .filter(|f| rule.as_ref().is_none_or(|r| &f.rule == r))
                .collect();
            if json {
                super::exit::print_json(&list);
            } else {
                for f in &list {
                    println!(
                        "{:<4} {:<11} rule={} src={} dst={} sport={} dport={} -> src={} dst={} sport={} dport={}{}{}{}{} age={:.0}s idle={:.0}s packets={}/{} bytes={}/{}",
                        f.proto,
                        f.state,
                        f.rule,
                        f.original.src,
                        f.original.dst,
                        f.original.sport,
                        f.original.dport,
                        f.translated.src,
                        f.translated.dst,
                        f.translated.sport,
                        f.translated.dport,
                        if f.snat { " [snat]" } else { "" },
                        if f.nat64 { " [nat64]" } else { "" },
                        if f.path == "stack" { " [via stack]" } else { "" },
                        f.mss.map_or(String::new(), |m| format!(" [mss {m}]")),
                        f.age_s,
                        f.idle_s,
                        f.packets_orig,
                        f.packets_reply,
                        f.bytes_orig,
                        f.bytes_reply
                    );
                }
                eprintln!("{} flows", list.len());
            }
        }
        ConntrackCmd::Flush { rule, all, json } => {
            // clap requires one of them (a usage error, exit 2).
            debug_assert!(rule.is_some() || all);
            check_rule(pin_dir, &rule)?;
            let names = pinned::read_rule_names(pin_dir)?;
            let id = rule
                .as_ref()
                .and_then(|r| names.iter().find(|(_, n)| *n == r).map(|(i, _)| *i));
            let (map, _) = pinned::open_flows(pin_dir)?;
            let doomed: Vec<FlowKey> = crate::dataplane::batch::dump::<FlowKey, FlowEntry>(&map)?
                .into_iter()
                .filter(|(_, e)| id.is_none_or(|i| e.rule_id == i))
                .map(|(k, _)| k)
                .collect();
            let n = crate::dataplane::batch::delete(&map, &doomed)?;
            if json {
                super::exit::print_json(&serde_json::json!({
                    "removed_flows": n / 2,
                    "removed_entries": n,
                }));
            } else {
                println!("removed {} flows ({n} entries)", n / 2);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
