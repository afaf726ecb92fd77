//! UFW rules to allow-lists: `ufw allow from 100.101.92.95 to any port
//! 8080 proto tcp` restricts who reaches port 8080, so the forward of port
//! 8080 gets `allow = ["100.101.92.95"]`.
//!
//! Read from `ufw ...` command lines, `ufw status [numbered|verbose]`
//! output, or the rules' iptables form (`/etc/ufw/user.rules`, or the
//! `ufw-user-input` chain in iptables-save).
//!
//! The fact a reader would get wrong: UFW is first-match and its default
//! is to deny. Sources are evaluated region by region like the NAT rules;
//! an earlier `allow in on tailscale0` lets everyone on tailscale0 in
//! before a later per-port rule is consulted, so that port was not
//! restricted and gets no allow-list (with a comment saying why). Plain
//! rules filter INPUT, so they restrict what a local listener (socat)
//! received; traffic DNATed by iptables went through FORWARD, which only
//! `ufw route` rules filter, matched on the target.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;

use super::{
    ir::{Action, Candidate, Nets, Origin, Ruleset, Tri},
    shell::Command,
    Entry,
};
use crate::model::{PortRange, L4};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    Limit,
}

/// One UFW rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UfwRule {
    pub origin: Origin,
    pub verdict: Verdict,
    /// A `route` rule (FORWARD), matched on the forwarded target.
    pub route: bool,
    pub in_iface: Option<String>,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub ports: Option<Vec<PortRange>>,
    pub proto: Option<L4>,
    pub v6: bool,
}

/// All UFW rules in evaluation order, and the default policies.
#[derive(Debug, Default)]
pub struct UfwRules {
    pub rules: Vec<UfwRule>,
    pub allow_incoming: bool,
    pub allow_routed: bool,
}

const SERVICES: [(&str, u16); 8] = [
    ("ssh", 22),
    ("http", 80),
    ("https", 443),
    ("dns", 53),
    ("domain", 53),
    ("smtp", 25),
    ("OpenSSH", 22),
    ("ntp", 123),
];

/// `8080`, `8080/tcp`, `8000:8100/udp`, `80,443/tcp`, `ssh`.
pub(crate) fn port_spec(s: &str) -> Result<(Option<Vec<PortRange>>, Option<L4>), String> {
    let (ports, proto) = match s.split_once('/') {
        Some((p, pr)) => (p, Some(pr)),
        None => (s, None),
    };
    let proto = match proto {
        Some("tcp") => Some(L4::Tcp),
        Some("udp") => Some(L4::Udp),
        None | Some("any") => None,
        Some(o) => return Err(format!("protocol {o}: not forwarded")),
    };
    if let Some((_, p)) = SERVICES.iter().find(|(n, _)| *n == ports) {
        return Ok((Some(vec![PortRange::single(*p).expect("non-zero")]), proto));
    }
    let mut out = Vec::new();
    for part in ports.split(',') {
        let (a, b) = part.split_once(':').unwrap_or((part, part));
        let r = a
            .parse::<u16>()
            .ok()
            .zip(b.parse::<u16>().ok())
            .and_then(|(a, b)| PortRange::new(a, b));
        out.push(r.ok_or_else(|| format!("`{ports}` is not a port or an application profile the importer knows (ufw app info shows its ports)"))?);
    }
    Ok((Some(out), proto))
}

pub(crate) fn addr(s: &str) -> Result<Option<IpNet>, String> {
    if s == "any" || s == "Anywhere" {
        return Ok(None);
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(Some(IpNet::from(a)));
    }
    s.parse::<IpNet>()
        .map(|n| Some(n.trunc()))
        .map_err(|_| format!("`{s}` is not an address or network"))
}

/// A `ufw ...` command line.
pub fn command(
    cmd: &Command,
    rules: &mut Vec<UfwRule>,
    defaults: &mut Vec<(String, String)>,
    entries: &mut Vec<Entry>,
) {
    let w: Vec<&str> = cmd.words[1..]
        .iter()
        .map(String::as_str)
        .filter(|w| *w != "--dry-run" && *w != "rule")
        .collect();
    match w.first().copied() {
        Some("default") => {
            let policy = w.get(1).copied().unwrap_or("");
            let dir = w.get(2).copied().unwrap_or("incoming");
            defaults.push((dir.to_owned(), policy.to_owned()));
            return;
        }
        Some("allow" | "deny" | "reject" | "limit" | "route" | "insert" | "prepend") => {}
        Some("delete") => {
            entries.push(Entry::note(
                cmd.origin.clone(),
                "deletes a ufw rule: a removal, nothing to translate".into(),
            ));
            return;
        }
        _ => {
            entries.push(Entry::note(
                cmd.origin.clone(),
                "ufw housekeeping (enable, status, logging...): nothing to translate".into(),
            ));
            return;
        }
    }
    match parse_command(&w, cmd.origin.clone()) {
        Ok(r) => rules.push(r),
        Err(reason) => entries.push(Entry::left(cmd.origin.clone(), reason)),
    }
}

fn parse_command(w: &[&str], origin: Origin) -> Result<UfwRule, String> {
    let mut r = UfwRule {
        origin,
        verdict: Verdict::Allow,
        route: false,
        in_iface: None,
        src: None,
        dst: None,
        ports: None,
        proto: None,
        v6: false,
    };
    let mut i = 0;
    let mut out = false;
    while i < w.len() {
        let next = w.get(i + 1).copied();
        match w[i] {
            "insert" | "prepend" => i += usize::from(w[i] == "insert"),
            "route" => r.route = true,
            "allow" => r.verdict = Verdict::Allow,
            "deny" | "reject" => r.verdict = Verdict::Deny,
            "limit" => r.verdict = Verdict::Limit,
            "in" => {}
            "out" => out = true,
            "on" => {
                if !out {
                    r.in_iface = next.map(str::to_owned);
                }
                i += 1;
            }
            "log" | "log-all" => {}
            "proto" => {
                r.proto = match next {
                    Some("tcp") => Some(L4::Tcp),
                    Some("udp") => Some(L4::Udp),
                    Some(o) => return Err(format!("proto {o}: not forwarded")),
                    None => None,
                };
                i += 1;
            }
            "from" => {
                r.src = addr(next.unwrap_or(""))?;
                i += 1;
                if w.get(i + 1) == Some(&"port") {
                    return Err(
                        "a source port match: the forwarder's allow-lists are by address".into(),
                    );
                }
            }
            "to" => {
                r.dst = addr(next.unwrap_or(""))?;
                i += 1;
            }
            "port" => {
                let (p, proto) = port_spec(next.unwrap_or(""))?;
                r.ports = p;
                r.proto = r.proto.or(proto);
                i += 1;
            }
            "comment" => break,
            "app" => return Err("application profiles are not known offline: use the port".into()),
            spec => {
                let (p, proto) = port_spec(spec)?;
                r.ports = p;
                r.proto = proto;
            }
        }
        i += 1;
    }
    if out {
        return Err("an outgoing rule: not about connections to forwards".into());
    }
    r.v6 = r.src.is_some_and(|n| n.addr().is_ipv6()) || r.dst.is_some_and(|n| n.addr().is_ipv6());
    Ok(r)
}

/// Rules from commands and status output, plus those in `ufw-user-input` /
/// `ufw-user-forward` chains (user.rules, iptables-save of a UFW host).
pub fn collect(
    rs: &Ruleset,
    from_text: &[UfwRule],
    defaults: &[(String, String)],
    _entries: &mut [Entry],
) -> UfwRules {
    let mut rules: Vec<UfwRule> = from_text.to_vec();
    for c in &rs.chains {
        let route = match c.name.as_str() {
            "ufw-user-input" | "ufw6-user-input" => false,
            "ufw-user-forward" | "ufw6-user-forward" => true,
            _ => continue,
        };
        for r in &c.rules {
            let verdict = match &r.action {
                Action::Stop(v) if v == "ACCEPT" => Verdict::Allow,
                Action::Stop(_) => Verdict::Deny,
                Action::Jump { chain, .. } if chain.contains("limit") => Verdict::Limit,
                _ => continue,
            };
            let one = |n: &Option<Nets>| n.as_ref().and_then(|n| n.nets.first().copied());
            rules.push(UfwRule {
                origin: r.origin.clone(),
                verdict,
                route,
                in_iface: r.in_iface.as_ref().map(|i| i.name.clone()),
                src: one(&r.src),
                dst: one(&r.dst),
                ports: r.dports.clone(),
                proto: r.proto,
                v6: c.name.starts_with("ufw6"),
            });
        }
    }
    let policy = |dir: &str| {
        defaults
            .iter()
            .rev()
            .find(|(d, _)| d == dir)
            .is_some_and(|(_, p)| p == "allow")
    };
    UfwRules {
        rules,
        allow_incoming: policy("incoming"),
        allow_routed: policy("routed"),
    }
}

/// Sets the allow-list of one candidate from the UFW rules that filtered
/// its traffic.
pub fn apply(ufw: &UfwRules, c: &mut Candidate, entries: &mut Vec<Entry>) {
    let ports = if c.local {
        Some(c.ports)
    } else {
        c.map.apply(c.ports)
    };
    let host = if c.local { c.listen } else { Some(c.target) };
    let applicable: Vec<(&UfwRule, Tri)> = ufw
        .rules
        .iter()
        .filter(|r| r.route != c.local && r.v6 == c.family_is_v6())
        .map(|r| {
            let iface = match (&r.in_iface, c.iface.as_str()) {
                (None, _) => Tri::Yes,
                (Some(_), "") => Tri::Maybe,
                (Some(i), n) => Tri::from(i == n),
            };
            let proto = Tri::from(r.proto.is_none_or(|p| p == c.l4));
            let dst = match (r.dst, host) {
                (None, _) => Tri::Yes,
                (Some(d), Some(h)) => Tri::from(d.contains(&h)),
                (Some(_), None) => Tri::Maybe,
            };
            let port = match (&r.ports, ports) {
                (None, _) => Tri::Yes,
                (Some(ps), Some(p))
                    if ps
                        .iter()
                        .any(|r| r.start() <= p.start() && p.end() <= r.end()) =>
                {
                    Tri::Yes
                }
                (Some(ps), Some(p)) if ps.iter().all(|r| r.intersect(p).is_none()) => Tri::No,
                _ => Tri::Maybe,
            };
            (r, iface.and(proto).and(dst).and(port))
        })
        .filter(|(_, t)| *t != Tri::No)
        .collect();
    if let Some((r, _)) = applicable.iter().find(|(_, t)| *t == Tri::Maybe) {
        entries.push(Entry::left(r.origin.clone(), format!("whether this ufw rule applies to the forward of {} is not known (its interface or ports are only partly the forward's): set `allow` by hand", c.origins[0].at())));
        return;
    }
    let mut regions: BTreeSet<Option<IpNet>> = applicable
        .iter()
        .filter_map(|(r, _)| r.src.map(Some))
        .collect();
    regions.insert(None);
    let default_allow = if c.local {
        ufw.allow_incoming
    } else {
        ufw.allow_routed
    };
    let mut results = Vec::new();
    for region in &regions {
        let first = applicable.iter().find(|(r, _)| match (r.src, region) {
            (None, _) => true,
            (Some(s), Some(n)) => s.contains(n),
            (Some(_), None) => false,
        });
        let verdict = first.map_or(
            if default_allow {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            |(r, _)| r.verdict,
        );
        results.push((*region, verdict, first.map(|(r, _)| *r)));
    }
    let deciders: Vec<String> = results
        .iter()
        .filter_map(|(_, _, r)| r.map(|r| r.origin.at()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rest_allowed = results
        .iter()
        .any(|(r, v, _)| r.is_none() && *v != Verdict::Deny);
    let denied: Vec<IpNet> = results
        .iter()
        .filter(|(r, v, _)| r.is_some() && *v == Verdict::Deny)
        .filter_map(|(r, _, _)| *r)
        .collect();
    let allowed: Vec<IpNet> = results
        .iter()
        .filter(|(r, v, _)| r.is_some() && *v != Verdict::Deny)
        .filter_map(|(r, _, _)| *r)
        .collect();
    if results.iter().any(|(_, v, _)| *v == Verdict::Limit) {
        entries.push(Entry::left(c.origins[0].clone(), "ufw `limit` rate-limits new connections to this port: the forwarder does not rate-limit".into()));
    }
    if rest_allowed {
        if !denied.is_empty() {
            entries.push(Entry::left(c.origins[0].clone(), format!("ufw denies {} on this port and allows everyone else: an allow-list cannot make exceptions; write `allow` by hand", denied.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "))));
        }
        let skipped: Vec<&&UfwRule> = applicable
            .iter()
            .map(|(r, _)| r)
            .filter(|r| r.src.is_some() && r.verdict == Verdict::Allow)
            .collect();
        if let (Some(first), false) = (
            results
                .iter()
                .find(|(r, _, _)| r.is_none())
                .and_then(|(_, _, r)| *r),
            skipped.is_empty(),
        ) {
            c.comments.push(format!("ufw {} (`{}`) lets every source in before {} is consulted, so netfilter did not restrict this port: no allow-list (add one if that was the intent)", first.origin.at(), first.origin.text, skipped.iter().map(|r| r.origin.at()).collect::<Vec<_>>().join(", ")));
        }
        return;
    }
    if allowed.is_empty() {
        entries.push(Entry::left(c.origins[0].clone(), "ufw lets no one reach this port (default deny, no allow rule for it): the forward would let everyone in; add `allow` or leave it out".into()));
        return;
    }
    c.allow = IpNet::aggregate(&allowed);
    c.comments
        .push(format!("allow-list from ufw: {}", deciders.join(", ")));
}

impl Candidate {
    fn family_is_v6(&self) -> bool {
        self.family == super::ir::Family::V6
    }
}

pub use super::ufw_patch::patch;
