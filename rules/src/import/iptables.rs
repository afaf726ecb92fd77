//! `iptables-save` output (or `iptables -t nat -A ...` commands) to forwards.
//!
//! A forward comes from a `nat` table `PREROUTING` DNAT rule that names the
//! interface (`-i`), protocol (`-p tcp|udp`) and port(s) (`--dport`,
//! `--dports`). `POSTROUTING` SNAT/MASQUERADE rules that select traffic by
//! target (`-d`) and/or target port (`--dport`) are paired onto the forwards
//! they serve, first match wins as in iptables. Everything else is listed as
//! not translated, with the reason.

use std::{collections::HashSet, net::Ipv4Addr, str::FromStr};

use ipnet::Ipv4Net;

use super::{logical_lines, render, sanitize_name, unique_name, Draft, Imported, Skipped};
use crate::model::*;

const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// What one rule line says, as far as the importer understands it.
#[derive(Default, Debug)]
struct Rule {
    table: String,
    chain: String,
    in_iface: Option<String>,
    source: Option<Ipv4Net>,
    dest: Option<Ipv4Net>,
    proto: Option<L4>,
    dports: Vec<PortRange>,
    comment: Option<String>,
    jump: Option<String>,
    to_destination: Option<String>,
    to_source: Option<String>,
}

/// A parsed SNAT/MASQUERADE rule waiting to be paired.
struct SnatRule {
    line: usize,
    text: String,
    proto: Option<L4>,
    dest: Option<Ipv4Net>,
    dports: Vec<PortRange>,
    snat: Snat,
    used: bool,
}

struct Dnat {
    draft: Draft,
    snat_from: Option<usize>,
}

/// Translates iptables rules. `source` names the input in messages.
pub fn import(source: &str, text: &str) -> Imported {
    let mut skipped = Vec::new();
    let mut dnats: Vec<Dnat> = Vec::new();
    let mut snats: Vec<SnatRule> = Vec::new();
    let mut names = HashSet::new();
    let mut table = String::from("filter");
    let mut skip = |line: usize, text: &str, reason: String| {
        skipped.push(Skipped {
            source: source.to_owned(),
            line,
            text: text.to_owned(),
            reason,
        });
    };

    for (line, text) in logical_lines(text) {
        let t = text.trim();
        if t.is_empty() || t.starts_with('#') || t == "COMMIT" {
            continue;
        }
        if let Some(name) = t.strip_prefix('*') {
            table = name.trim().to_owned();
            continue;
        }
        if let Some(decl) = t.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let chain = parts.next().unwrap_or("");
            let policy = parts.next().unwrap_or("-");
            if !BUILTIN_CHAINS.contains(&chain) {
                skip(line, t, format!("custom chain {chain}: the forwarder has no chains; rules in or jumping to it are not translated"));
            } else if policy != "ACCEPT" {
                skip(line, t, format!("{table} {chain} policy {policy}: the forwarder does not filter; keep this in your firewall"));
            }
            continue;
        }
        let Some(tokens) = shlex::split(t) else {
            skip(line, t, "unbalanced quotes".into());
            continue;
        };
        match parse_rule(&tokens, &table) {
            Err(reason) => skip(line, t, reason),
            Ok(None) => skip(line, t, "not an iptables rule".into()),
            Ok(Some(rule)) => match classify(rule) {
                Err(reason) => skip(line, t, reason),
                Ok(Classified::Snat {
                    proto,
                    dest,
                    dports,
                    snat,
                }) => snats.push(SnatRule {
                    line,
                    text: t.to_owned(),
                    proto,
                    dest,
                    dports,
                    snat,
                    used: false,
                }),
                Ok(Classified::Dnat(forwards)) => {
                    let n = forwards.len();
                    for (i, mut f) in forwards.into_iter().enumerate() {
                        let suffix = if n > 1 {
                            format!(" ({} of {n})", i + 1)
                        } else {
                            String::new()
                        };
                        f.name = unique_name(&f.name, &mut names);
                        let comments = vec![format!(
                            "from {}line {line}{suffix}: {t}",
                            source_prefix(source)
                        )];
                        dnats.push(Dnat {
                            draft: Draft {
                                forward: f,
                                comments,
                            },
                            snat_from: None,
                        });
                    }
                }
            },
        }
    }

    // First SNAT rule that matches a forward wins, as in POSTROUTING.
    for d in &mut dnats {
        let f = &mut d.draft.forward;
        let Some(s) = snats.iter_mut().find(|s| snat_matches(s, f)) else {
            d.draft.comments.push(
                "no SNAT rule matched: snat = \"auto\" keeps the client's address when replies route back through this host (as iptables did), and rewrites it when they would not".into(),
            );
            continue;
        };
        s.used = true;
        f.snat = s.snat;
        d.snat_from = Some(s.line);
        d.draft.comments.push(format!(
            "SNAT from {}line {}: {}",
            source_prefix(source),
            s.line,
            s.text
        ));
    }
    for s in snats.iter().filter(|s| !s.used) {
        skipped.push(Skipped {
            source: source.to_owned(),
            line: s.line,
            text: s.text.clone(),
            reason: if s.dest.is_none() && s.dports.is_empty() {
                "source NAT for all routed traffic, not tied to a forward: keep it in your firewall (the forwarder SNATs only its own forwards)".into()
            } else {
                "SNAT rule matches none of the translated forwards (by -p, -d and --dport), or an earlier SNAT rule already covers them".into()
            },
        });
    }
    skipped.sort_by_key(|s| s.line);

    let mut header = vec![format!(
        "Generated by `forwarder import iptables` from {}.",
        if source.is_empty() {
            "standard input"
        } else {
            source
        }
    )];
    header.push(
        "Each forward cites the iptables rules it replaces; review, then run `forwarder check`."
            .into(),
    );
    render(
        &header,
        dnats.into_iter().map(|d| d.draft).collect(),
        skipped,
    )
}

fn source_prefix(source: &str) -> String {
    if source.is_empty() {
        String::new()
    } else {
        format!("{source} ")
    }
}

/// Option tokens to a [`Rule`]; `Ok(None)` for a line that is not iptables.
fn parse_rule(tokens: &[String], current_table: &str) -> Result<Option<Rule>, String> {
    let mut rest: &[String] = tokens;
    // `iptables-save -c` prefixes counters: "[12:345] -A ...".
    if rest
        .first()
        .is_some_and(|t| t.starts_with('[') && t.ends_with(']'))
    {
        rest = &rest[1..];
    }
    let mut rule = Rule {
        table: current_table.to_owned(),
        ..Default::default()
    };
    // Command form: [sudo] iptables [-t nat] -A CHAIN ...
    if rest.first().is_some_and(|t| t == "sudo") {
        rest = &rest[1..];
    }
    if let Some(cmd) = rest.first().filter(|t| !t.starts_with('-')) {
        let base = cmd.rsplit('/').next().unwrap_or(cmd);
        if base.starts_with("ip6tables") {
            return Err("ip6tables: IPv6 is not supported yet".into());
        }
        if !base.starts_with("iptables") {
            return Ok(None);
        }
        rest = &rest[1..];
        rule.table = "filter".into();
    }
    let mut i = 0;
    let next = |i: &mut usize, opt: &str| -> Result<String, String> {
        *i += 1;
        rest.get(*i)
            .cloned()
            .ok_or_else(|| format!("`{opt}` without a value"))
    };
    let mut chain = None;
    while i < rest.len() {
        let opt = rest[i].as_str();
        match opt {
            "-t" | "--table" => rule.table = next(&mut i, opt)?,
            "-A" | "--append" => chain = Some(next(&mut i, opt)?),
            "-I" | "--insert" => {
                chain = Some(next(&mut i, opt)?);
                // Optional rule number: order does not matter to the forwarder.
                if rest.get(i + 1).is_some_and(|t| t.parse::<u32>().is_ok()) {
                    i += 1;
                }
            }
            "-w" | "--wait" => {
                if rest.get(i + 1).is_some_and(|t| t.parse::<u32>().is_ok()) {
                    i += 1;
                }
            }
            "-D" | "--delete" | "-R" | "--replace" | "-N" | "--new-chain" | "-X"
            | "--delete-chain" | "-P" | "--policy" | "-F" | "--flush" | "-Z" | "-E" => {
                return Err(format!(
                    "`{opt}` changes rules or chains; only -A/-I rules are translated"
                ));
            }
            "!" => {
                return Err(format!(
                    "negated match `! {}` is not supported",
                    rest.get(i + 1).map_or("", String::as_str)
                ))
            }
            "-i" | "--in-interface" => rule.in_iface = Some(next(&mut i, opt)?),
            "-o" | "--out-interface" => {
                // Only meaningful on POSTROUTING; the forwarder picks the
                // egress by route, so it does not change the translation.
                next(&mut i, opt)?;
            }
            "-s" | "--source" | "--src" => rule.source = Some(parse_net(&next(&mut i, opt)?)?),
            "-d" | "--destination" | "--dst" => rule.dest = Some(parse_net(&next(&mut i, opt)?)?),
            "-p" | "--protocol" => {
                let p = next(&mut i, opt)?;
                rule.proto = Some(match p.to_ascii_lowercase().as_str() {
                    "tcp" | "6" => L4::Tcp,
                    "udp" | "17" => L4::Udp,
                    other => {
                        return Err(format!(
                            "protocol `{other}`: only tcp and udp are forwarded"
                        ))
                    }
                });
            }
            "-m" | "--match" => {
                let m = next(&mut i, opt)?;
                if !["tcp", "udp", "multiport", "comment"].contains(&m.as_str()) {
                    return Err(format!("match `-m {m}` is not supported (only tcp, udp, multiport and comment are)"));
                }
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                for part in next(&mut i, opt)?.split(',') {
                    rule.dports.push(parse_iptables_ports(part)?);
                }
            }
            "--comment" => rule.comment = Some(next(&mut i, opt)?),
            "-j" | "--jump" | "-g" | "--goto" => rule.jump = Some(next(&mut i, opt)?),
            "--to-destination" | "--to" if rule.jump.as_deref() == Some("DNAT") => {
                rule.to_destination = Some(next(&mut i, opt)?)
            }
            "--to-source" if rule.jump.as_deref() == Some("SNAT") => {
                rule.to_source = Some(next(&mut i, opt)?)
            }
            // REDIRECT is refused for its target, which explains it better
            // than its option would.
            "--to-ports" if rule.jump.as_deref() == Some("REDIRECT") => {
                next(&mut i, opt)?;
            }
            "-c" | "--set-counters" => {
                next(&mut i, opt)?;
                next(&mut i, opt)?;
            }
            _ => return Err(format!("option `{opt}` is not supported")),
        }
        i += 1;
    }
    let Some(chain) = chain else {
        return Err("no -A/-I: not a rule".into());
    };
    rule.chain = chain;
    Ok(Some(rule))
}

/// `1.2.3.4` or `1.2.3.0/24` (iptables-save prints `/32`).
fn parse_net(s: &str) -> Result<Ipv4Net, String> {
    if s.contains(',') {
        return Err(format!(
            "address list `{s}` is not supported: write one rule per address"
        ));
    }
    if let Ok(a) = Ipv4Addr::from_str(s) {
        return Ok(a.into());
    }
    match Ipv4Net::from_str(s) {
        Ok(n) => Ok(n.trunc()),
        Err(_) if s.contains(':') => Err(format!("`{s}`: IPv6 is not supported yet")),
        Err(_) => Err(format!(
            "`{s}` is not an IPv4 address or network (hostnames are not resolved)"
        )),
    }
}

/// iptables port syntax: `80` or `30000:32767`.
fn parse_iptables_ports(s: &str) -> Result<PortRange, String> {
    let bad = || format!("`{s}` is not a port or port range");
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (a, b) = match s.split_once(':') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(s)?, port(s)?),
    };
    PortRange::new(a, b).ok_or_else(bad)
}

enum Classified {
    Dnat(Vec<Forward>),
    Snat {
        proto: Option<L4>,
        dest: Option<Ipv4Net>,
        dports: Vec<PortRange>,
        snat: Snat,
    },
}

fn classify(rule: Rule) -> Result<Classified, String> {
    if rule.table != "nat" {
        return Err(format!("{} table: the forwarder translates nat-table port forwards only; keep filtering in your firewall", rule.table));
    }
    let jump = rule.jump.clone().unwrap_or_default();
    match (rule.chain.as_str(), jump.as_str()) {
        ("PREROUTING", "DNAT") => dnat(rule).map(Classified::Dnat),
        ("POSTROUTING", "SNAT" | "MASQUERADE") => {
            if let Some(src) = rule.source {
                if rule.dest.is_some() || !rule.dports.is_empty() {
                    return Err(format!("SNAT limited to sources {src} is not supported: the forwarder SNATs all of a forward's flows or none"));
                }
            }
            let snat = if jump == "MASQUERADE" {
                Snat::Masquerade
            } else {
                let to = rule.to_source.ok_or("SNAT without --to-source")?;
                match Ipv4Addr::from_str(&to) {
                    Ok(a) => Snat::Fixed(a),
                    Err(_) => return Err(format!("--to-source {to}: only a single address is supported (no ranges or ports)")),
                }
            };
            Ok(Classified::Snat { proto: rule.proto, dest: rule.dest, dports: rule.dports, snat })
        }
        ("OUTPUT", "DNAT") => Err("DNAT of locally generated traffic: the forwarder translates packets arriving on an interface".into()),
        (_, "REDIRECT") => Err("REDIRECT to a local port: the forwarder forwards to other hosts; point your service at the port instead".into()),
        (_, "") => Err("rule without -j: it only counts packets".into()),
        (chain, target) if !BUILTIN_CHAINS.contains(&chain) => Err(format!("rule in custom chain {chain} (-j {target}): custom chains are not translated")),
        (_, target) if !["ACCEPT", "DROP", "RETURN", "DNAT", "SNAT", "MASQUERADE", "LOG", "REJECT"].contains(&target) => {
            Err(format!("jump to custom chain {target}: custom chains are not translated"))
        }
        (chain, target) => Err(format!("-j {target} in {chain}: only PREROUTING DNAT and POSTROUTING SNAT/MASQUERADE are translated")),
    }
}

fn dnat(rule: Rule) -> Result<Vec<Forward>, String> {
    let iface = rule.in_iface.ok_or("DNAT without -i matches every interface: the forwarder needs the interface packets arrive on; add -i")?;
    if iface.ends_with('+') {
        return Err(format!(
            "interface wildcard `-i {iface}` is not supported: write one rule per interface"
        ));
    }
    let proto = rule
        .proto
        .ok_or("DNAT without -p: the forwarder forwards tcp or udp ports; add -p tcp or -p udp")?;
    if rule.dports.is_empty() {
        return Err(
            "DNAT without --dport forwards every port: the forwarder forwards ports or port ranges"
                .into(),
        );
    }
    let listen = match rule.dest {
        None => Listen::Interface,
        Some(n) if n.prefix_len() == 32 => Listen::Addr(n.addr()),
        Some(n) => {
            return Err(format!(
                "-d {n}: only a single destination address is supported"
            ))
        }
    };
    let to = rule.to_destination.ok_or("DNAT without --to-destination")?;
    let (host, port) = match to.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (to.as_str(), None),
    };
    if host.contains('-') {
        return Err(format!(
            "--to-destination {to}: address ranges are not supported (one target per forward)"
        ));
    }
    let addr = Ipv4Addr::from_str(host)
        .map_err(|_| format!("--to-destination {to}: `{host}` is not an IPv4 address"))?;
    let target_ports = match port {
        None => None,
        Some(p) => {
            let r = match p.split_once('-') {
                Some((a, b)) => PortRange::new(a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
                None => p.parse().ok().and_then(PortRange::single),
            }
            .ok_or_else(|| format!("--to-destination {to}: `{p}` is not a port or port range"))?;
            if !r.is_single() {
                return Err(format!(
                    "--to-destination {to}: iptables picks any port of a target range per connection; the forwarder maps ranges 1:1, so write this forward by hand"
                ));
            }
            Some(r)
        }
    };
    let base = rule
        .comment
        .as_deref()
        .map(sanitize_name)
        .filter(|n| !n.is_empty());
    Ok(rule
        .dports
        .iter()
        .map(|&ports| {
            let name = base.clone().unwrap_or_else(|| {
                let udp = if proto == L4::Udp { "-udp" } else { "" };
                sanitize_name(&format!("{iface}{udp}-{ports}"))
            });
            let mut f = Forward::new(
                name,
                iface.clone(),
                ports,
                Target {
                    addr,
                    ports: target_ports,
                },
            );
            f.listen = listen;
            f.proto = if proto == L4::Udp {
                Proto::Udp
            } else {
                Proto::Tcp
            };
            f.description = rule.comment.clone();
            f.allow = rule.source.into_iter().collect();
            f
        })
        .collect())
}

/// Whether the SNAT rule selects the packets of `f` after DNAT.
fn snat_matches(s: &SnatRule, f: &Forward) -> bool {
    if s.dest.is_none() && s.dports.is_empty() {
        // Generic source NAT (e.g. the VMs' internet masquerade) is not
        // paired: it is about routed traffic in general.
        return false;
    }
    if s.proto.is_some_and(|p| !f.proto.includes(p)) {
        return false;
    }
    if s.dest.is_some_and(|d| !d.contains(&f.target.addr)) {
        return false;
    }
    let target_ports = f.target.ports.unwrap_or(f.ports);
    s.dports.is_empty()
        || s.dports
            .iter()
            .any(|r| r.start() <= target_ports.start() && target_ports.end() <= r.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(i: &Imported) -> Vec<(usize, &str)> {
        i.skipped
            .iter()
            .map(|s| (s.line, s.reason.as_str()))
            .collect()
    }

    #[test]
    fn command_form_with_sudo_and_multiport() {
        let text = "sudo iptables -t nat -A PREROUTING -i eth0 -p udp -m multiport --dports 53,5000:5002 -j DNAT --to-destination 10.0.0.2\n";
        let i = import("", text);
        assert!(i.skipped.is_empty(), "{:?}", i.skipped);
        let names: Vec<&str> = i.rules.forwards.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["eth0-udp-53", "eth0-udp-5000-5002"]);
        assert_eq!(
            i.rules.forwards[1].ports,
            PortRange::new(5000, 5002).unwrap()
        );
        assert_eq!(i.rules.forwards[1].snat, Snat::Auto);
        i.validate("out.toml").unwrap();
    }

    #[test]
    fn untranslatable_lines_are_listed() {
        let text = "\
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
-A INPUT -p tcp --dport 22 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 10.0.0.1
-A PREROUTING -i eth0 -p tcp --dport 81 -j REDIRECT --to-ports 8080
-A PREROUTING -i eth0 -p tcp --dport 82 -j DNAT --to-destination 10.0.0.1:9000-9010
-A POSTROUTING -s 192.168.100.0/24 -o vmbr0 -j MASQUERADE
-A POSTROUTING -d 10.9.9.9 -j SNAT --to-source 10.0.0.254
-A OUTPUT -p tcp --dport 83 -j DNAT --to-destination 10.0.0.1
COMMIT
";
        let i = import("rules.v4", text);
        assert!(i.rules.forwards.is_empty());
        let r = reasons(&i);
        assert_eq!(
            r.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            vec![2, 4, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        assert!(r[0].1.contains("policy DROP"));
        assert!(r[1].1.starts_with("filter table"));
        assert!(r[2].1.starts_with("custom chain DOCKER"));
        assert!(r[3].1.contains("-m addrtype"));
        assert!(r[4].1.contains("without -i"));
        assert!(r[5].1.contains("REDIRECT"));
        assert!(r[6].1.contains("maps ranges 1:1"));
        assert!(r[7].1.contains("all routed traffic"));
        assert!(r[8].1.contains("matches none"));
        assert!(r[9].1.contains("locally generated"));
        assert!(
            i.toml
                .contains("# Not translated (10):\n#   rules.v4:2: :INPUT DROP [0:0]\n"),
            "{}",
            i.toml
        );
    }

    #[test]
    fn first_snat_wins_and_masquerade_pairs() {
        let text = "\
-t nat -A PREROUTING -i wg0 -s 10.8.0.0/24 -d 10.8.0.1/32 -p tcp --dport 443 -j DNAT --to-destination 192.168.1.10
-t nat -A POSTROUTING -p tcp -d 192.168.1.0/24 -j MASQUERADE
-t nat -A POSTROUTING -p tcp --dport 443 -j SNAT --to-source 192.168.1.2
";
        let i = import("", text);
        let f = &i.rules.forwards[0];
        assert_eq!(f.snat, Snat::Masquerade);
        assert_eq!(f.listen, Listen::Addr("10.8.0.1".parse().unwrap()));
        assert_eq!(f.allow, vec!["10.8.0.0/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(reasons(&i), vec![(3, "SNAT rule matches none of the translated forwards (by -p, -d and --dport), or an earlier SNAT rule already covers them")]);
    }

    #[test]
    fn ip6tables_and_other_commands() {
        let i = import(
            "",
            "ip6tables -t nat -A PREROUTING -i eth0 -j ACCEPT\nnetfilter-persistent save\n",
        );
        assert_eq!(
            reasons(&i),
            vec![
                (1, "ip6tables: IPv6 is not supported yet"),
                (2, "not an iptables rule")
            ]
        );
    }
}
