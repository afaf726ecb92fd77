//! iptables input to the importer model: `iptables-save` output, `iptables
//! -S` listings and `iptables ...` command lines (ip6tables alike).
//!
//! The fact a reader would get wrong: `iptables -S` output names no table,
//! so a listing of the nat table looks like filter rules. The table is
//! taken from `*nat` headers, from `-t`, or, in a listing, from its chains
//! and targets (PREROUTING, DNAT... exist only in nat here).

use super::{
    iptables_values::{iptables_ports, nets, range_nets, target_action},
    ir::{Action, Family, Iface, Nets, Origin, Rule, Ruleset},
    shell::Command,
    Entry,
};
use crate::model::L4;

/// State while reading one save-format input.
pub struct SaveReader {
    source: String,
    family: Family,
    table: Option<String>,
    /// `iptables -S` without a `*table` line: the table is guessed per block
    /// of `-P` lines.
    listing_table: Option<String>,
}

impl SaveReader {
    pub fn new(source: &str, text: &str) -> SaveReader {
        let v6 = text.lines().take(3).any(|l| l.contains("ip6tables"));
        SaveReader {
            source: source.to_owned(),
            family: if v6 { Family::V6 } else { Family::V4 },
            table: None,
            listing_table: None,
        }
    }

    /// One line of `iptables-save` or `iptables -S` output.
    pub fn line(&mut self, line: usize, text: &str, rs: &mut Ruleset, entries: &mut Vec<Entry>) {
        let origin = Origin::new(&self.source, line, text);
        let t = text.trim();
        if t.starts_with("# Warning: iptables-legacy tables present") {
            entries.push(Entry::left(origin, "iptables-save (nf_tables backend) says legacy tables exist and it did not print them: run `iptables-legacy-save` and import its output too (`forwarder import --from-running` does)".into()));
            return;
        }
        if t.is_empty() || t.starts_with('#') || t == "COMMIT" {
            return;
        }
        if let Some(table) = t.strip_prefix('*') {
            self.table = Some(table.trim().to_owned());
            return;
        }
        if let Some(decl) = t.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let chain = parts.next().unwrap_or("");
            let policy = parts.next().unwrap_or("-");
            let table = self.table.clone().unwrap_or_else(|| "filter".into());
            rs.chain(self.family, &table, chain);
            policy_entry(&table, chain, policy, origin, entries);
            return;
        }
        let Some(words) = split(t, &origin, entries) else {
            return;
        };
        let mut words: &[String] = &words;
        if words
            .first()
            .is_some_and(|w| w.starts_with('[') && w.ends_with(']'))
        {
            words = &words[1..];
        }
        if words.first().is_some_and(|w| w == "-P") && self.table.is_none() {
            // A listing: each `iptables [-t T] -S` block starts with policies.
            let chain = words.get(1).map_or("", String::as_str);
            if chain == "PREROUTING" || chain == "POSTROUTING" {
                self.listing_table = Some("nat".into());
            } else if chain == "FORWARD" {
                self.listing_table = Some("filter".into());
            }
        }
        let table = self
            .table
            .clone()
            .or_else(|| self.listing_table.clone())
            .unwrap_or_else(|| guess_table(words));
        apply(
            self.family,
            &table,
            words,
            origin,
            rs,
            entries,
            self.table.is_none(),
        );
    }
}

/// A listing rule without a table: NAT targets and the nat-only chains say nat.
fn guess_table(words: &[String]) -> String {
    let nat = words.windows(2).any(|w| {
        (w[0] == "-j" || w[0] == "--jump")
            && matches!(
                w[1].as_str(),
                "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP"
            )
            || (w[0] == "-A" || w[0] == "-N")
                && matches!(w[1].as_str(), "PREROUTING" | "POSTROUTING")
    });
    if nat { "nat" } else { "filter" }.into()
}

fn policy_entry(table: &str, chain: &str, policy: &str, origin: Origin, entries: &mut Vec<Entry>) {
    match (table, chain, policy) {
        (_, _, "ACCEPT" | "-") => {}
        ("filter", "FORWARD", _) => entries.push(Entry::kept(origin, format!("FORWARD policy {policy}: stays in your firewall; flows the forwarder redirects bypass the FORWARD chain, so this does not restrict them (use `allow`)"))),
        _ => entries.push(Entry::kept(origin, format!("{table} {chain} policy {policy}: filtering stays in your firewall"))),
    }
}

fn split(t: &str, origin: &Origin, entries: &mut Vec<Entry>) -> Option<Vec<String>> {
    match shlex::split(t) {
        Some(w) => Some(w),
        None => {
            entries.push(Entry::left(origin.clone(), "unbalanced quotes".into()));
            None
        }
    }
}

/// An `iptables ...` / `ip6tables ...` command line.
pub fn command(cmd: &Command, rs: &mut Ruleset, entries: &mut Vec<Entry>) {
    let family = if cmd.program().starts_with("ip6tables") {
        Family::V6
    } else {
        Family::V4
    };
    apply(
        family,
        "filter",
        &cmd.words[1..],
        cmd.origin.clone(),
        rs,
        entries,
        false,
    )
}

/// Applies one rule-changing invocation (`-A`, `-I`, `-D`, `-N`, `-P`, `-F`...).
fn apply(
    family: Family,
    default_table: &str,
    words: &[String],
    origin: Origin,
    rs: &mut Ruleset,
    entries: &mut Vec<Entry>,
    listing: bool,
) {
    let mut table = default_table.to_owned();
    let mut rest = Vec::new();
    let mut op: Option<(String, Option<String>, Option<usize>)> = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let next = words.get(i + 1).cloned();
        match w {
            "-t" | "--table" => {
                table = next.unwrap_or_default();
                i += 1;
            }
            "-A" | "--append" | "-D" | "--delete" | "-N" | "--new-chain" | "-P" | "--policy"
            | "-C" | "--check" | "-F" | "--flush" | "-X" | "--delete-chain" | "-Z" | "--zero"
            | "-L" | "--list" | "-S" | "--list-rules" | "-E" | "-R" | "--replace" => {
                let takes_chain = next.as_ref().is_some_and(|n| !n.starts_with('-'));
                op = Some((w.to_owned(), next.filter(|_| takes_chain), None));
                if takes_chain {
                    i += 1;
                }
            }
            "-I" | "--insert" => {
                let pos = words.get(i + 2).and_then(|p| p.parse::<usize>().ok());
                op = Some(("-I".into(), next, pos));
                i += if pos.is_some() { 2 } else { 1 };
            }
            "-w" | "--wait" | "-W" | "--wait-interval" => {
                if next.as_ref().is_some_and(|n| n.parse::<f64>().is_ok()) {
                    i += 1;
                }
            }
            "-4" | "-6" | "-n" | "--numeric" | "-v" | "--verbose" | "-x" | "--line-numbers" => {}
            _ => rest.push(words[i].clone()),
        }
        i += 1;
    }
    let Some((op, chain, pos)) = op else {
        entries.push(Entry::note(origin, "no -A/-I: nothing to translate".into()));
        return;
    };
    let chain = chain.unwrap_or_default();
    match op.as_str() {
        "-A" | "--append" | "-I" => {
            let rule = parse_rule(family, &table, &rest, origin.clone());
            let c = rs.chain(family, &table, &chain);
            match (op.as_str(), rule) {
                (_, Err(reason)) => entries.push(Entry::left(origin, reason)),
                ("-I", Ok(r)) => {
                    let at = pos.unwrap_or(1).saturating_sub(1).min(c.rules.len());
                    c.rules.insert(at, r);
                }
                (_, Ok(r)) => c.rules.push(r),
            }
        }
        "-D" | "--delete" => {
            let c = rs.chain(family, &table, &chain);
            let wanted = parse_rule(family, &table, &rest, origin.clone()).ok();
            let found = wanted.and_then(|w| {
                c.rules.iter().position(|r| {
                    Rule {
                        origin: w.origin.clone(),
                        ..r.clone()
                    } == w
                })
            });
            match found {
                Some(i) => {
                    let removed = c.rules.remove(i);
                    entries.push(Entry::note(
                        origin,
                        format!("deletes the rule of {}: both left out", removed.origin.at()),
                    ));
                }
                None => entries.push(Entry::note(
                    origin,
                    "deletes a rule: a removal, nothing to translate".into(),
                )),
            }
        }
        "-N" | "--new-chain" => {
            rs.chain(family, &table, &chain);
        }
        "-P" | "--policy" => {
            let policy = rest.first().map_or("", String::as_str);
            rs.chain(family, &table, &chain);
            if listing || !policy.is_empty() {
                policy_entry(&table, &chain, policy, origin, entries);
            }
        }
        "-F" | "--flush" => {
            for c in rs.chains.iter_mut().filter(|c| {
                c.family == family && c.table == table && (chain.is_empty() || c.name == chain)
            }) {
                c.rules.clear();
            }
            entries.push(Entry::note(
                origin,
                "flushes rules before the script adds its own: nothing to translate".into(),
            ));
        }
        _ => entries.push(Entry::note(
            origin,
            format!("`{op}` lists, checks or deletes chains: nothing to translate"),
        )),
    }
}

fn val(words: &[String], i: &mut usize, opt: &str) -> Result<String, String> {
    *i += 1;
    words
        .get(*i)
        .cloned()
        .ok_or_else(|| format!("`{opt}` without a value"))
}

/// Match and target options to a rule.
fn parse_rule(
    family: Family,
    table: &str,
    words: &[String],
    origin: Origin,
) -> Result<Rule, String> {
    let mut r = Rule::new(origin, family, Action::Continue);
    let mut negate = false;
    let mut jump: Option<(String, bool)> = None;
    let mut to_dest: Vec<String> = Vec::new();
    let mut to_src: Vec<String> = Vec::new();
    let mut to_ports: Option<String> = None;
    let mut i = 0;
    while i < words.len() {
        let opt = words[i].as_str();
        if opt == "!" {
            negate = true;
            i += 1;
            continue;
        }
        let neg = std::mem::take(&mut negate);
        match opt {
            "-i" | "--in-interface" => {
                r.in_iface = Some(Iface {
                    name: val(words, &mut i, opt)?,
                    negated: neg,
                })
            }
            "-o" | "--out-interface" => {
                r.out_iface = Some(Iface {
                    name: val(words, &mut i, opt)?,
                    negated: neg,
                })
            }
            "-s" | "--source" | "--src" => {
                r.src = Some(Nets {
                    nets: nets(&val(words, &mut i, opt)?)?,
                    negated: neg,
                })
            }
            "-d" | "--destination" | "--dst" => {
                r.dst = Some(Nets {
                    nets: nets(&val(words, &mut i, opt)?)?,
                    negated: neg,
                })
            }
            "--src-range" => {
                r.src = Some(Nets {
                    nets: range_nets(&val(words, &mut i, opt)?)?,
                    negated: neg,
                })
            }
            "--dst-range" => {
                r.dst = Some(Nets {
                    nets: range_nets(&val(words, &mut i, opt)?)?,
                    negated: neg,
                })
            }
            "-p" | "--protocol" => {
                let p = val(words, &mut i, opt)?.to_ascii_lowercase();
                r.proto = match p.as_str() {
                    "tcp" | "6" => Some(L4::Tcp),
                    "udp" | "17" => Some(L4::Udp),
                    "all" | "0" => None,
                    other => return Err(format!("protocol {other}: only tcp and udp are forwarded, and a {other} rule never touches them")),
                };
                if neg {
                    r.unknown.push(format!("! -p {p}"));
                }
            }
            "-m" | "--match" => {
                val(words, &mut i, opt)?;
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                let v = val(words, &mut i, opt)?;
                let mut ports = Vec::new();
                for part in v.split(',') {
                    ports.push(iptables_ports(part)?);
                }
                if neg {
                    r.unknown.push(format!("! {opt} {v}"));
                } else {
                    r.dports = Some(ports);
                }
            }
            "--comment" => r.comment = Some(val(words, &mut i, opt)?),
            "--ctstate" | "--state" => {
                let v = val(words, &mut i, opt)?;
                let states: Vec<&str> = v.split(',').collect();
                if neg || !states.contains(&"NEW") {
                    if table == "nat" {
                        r.unknown.push(format!("{opt} {v}: the nat table only sees a connection's first packet (state NEW)"));
                    }
                } else {
                    r.accepted.push(format!("{opt} {v} (the nat table only sees a connection's first packet, which is NEW)"));
                }
            }
            "--dst-type" if !neg && words.get(i + 1).is_some_and(|v| v == "LOCAL") => {
                val(words, &mut i, opt)?;
                r.accepted.push(
                    "--dst-type LOCAL (a forward listens on the interface's own addresses)".into(),
                );
            }
            "--syn" | "--limit-iface-in" => {}
            "--tcp-flags" => {
                val(words, &mut i, opt)?;
                val(words, &mut i, opt)?;
                r.accepted.push("--tcp-flags".into());
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                jump = Some((
                    val(words, &mut i, opt)?,
                    opt.starts_with("-g") || opt == "--goto",
                ))
            }
            "--to-destination" => to_dest.push(val(words, &mut i, opt)?),
            "--to-source" => to_src.push(val(words, &mut i, opt)?),
            "--to" if jump.as_ref().is_some_and(|(j, _)| j == "SNAT") => {
                to_src.push(val(words, &mut i, opt)?)
            }
            "--to" => to_dest.push(val(words, &mut i, opt)?),
            "--to-ports" => to_ports = Some(val(words, &mut i, opt)?),
            "--random" | "--random-fully" | "--persistent" => {}
            "-c" | "--set-counters" => {
                val(words, &mut i, opt)?;
                val(words, &mut i, opt)?;
            }
            o if jump.is_some() && o.starts_with("--") => {
                // Options of LOG, MARK, CT, TCPMSS...: they do not change
                // where traffic goes. Skip the value, if any.
                if words.get(i + 1).is_some_and(|v| !v.starts_with("--")) {
                    val(words, &mut i, opt)?;
                }
                if jump.as_ref().is_some_and(|(j, _)| {
                    matches!(j.as_str(), "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT")
                }) {
                    r.unknown.push(format!("target option {o}"));
                }
            }
            o => {
                // An unknown match and its value(s).
                let mut shown = o.to_owned();
                while words
                    .get(i + 1)
                    .is_some_and(|v| !v.starts_with('-') && v != "!")
                {
                    shown.push(' ');
                    shown.push_str(&val(words, &mut i, opt)?);
                }
                r.unknown
                    .push(if neg { format!("! {shown}") } else { shown });
            }
        }
        i += 1;
    }
    r.owner = [&r.in_iface, &r.out_iface]
        .into_iter()
        .flatten()
        .find_map(|i| super::ir::iface_owner(&i.name));
    r.action = match jump {
        None => Action::Continue,
        Some((target, goto)) => target_action(&target, goto, family, &to_dest, &to_src, to_ports),
    };
    Ok(r)
}
