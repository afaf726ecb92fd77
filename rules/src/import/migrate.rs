//! `forwarder migrate-check`: after switching to the forwarder, what in
//! netfilter or socat still takes the forwards' traffic.
//!
//! The fact a reader would get wrong: old rules do not simply become dead
//! once the forwarder runs. A connection the forwarder does not take (a
//! source its allow-list refuses, handed to the stack untouched; anything
//! while the daemon is being replaced) reaches netfilter's DNAT or a socat
//! still listening, which forwards it anyway, around the allow-list; and a
//! flow the forwarder sends through the stack is translated a second time
//! by a matching SNAT rule. Both are reported here, read-only.

use std::net::IpAddr;

use super::{flatten, ir, Entry, HostView, Input, Origin, Reader, Source};
use crate::model::{Forward, Listen, RuleSet};

/// One thing that still handles a forward's traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub origin: Origin,
    pub forward: String,
    pub what: String,
}

impl Finding {
    pub fn render(&self) -> String {
        format!(
            "{}: {}\n  forward \"{}\": {}",
            self.origin.at(),
            self.origin.text,
            self.forward,
            self.what
        )
    }
}

/// NAT rules (iptables-save or `nft -j` output) that match the traffic of
/// a forward of `rules`.
pub fn nat_rules(rules: &RuleSet, inputs: &[Input]) -> Vec<Finding> {
    let mut reader = Reader::default();
    let mut entries: Vec<Entry> = Vec::new();
    let mut nets = Vec::new();
    for i in inputs {
        reader.read(i, Source::Iptables, &mut entries, &mut nets, true);
    }
    let mut out = Vec::new();
    for (hook, after_dnat) in [(ir::Hook::Prerouting, false), (ir::Hook::Postrouting, true)] {
        for f in flatten::flatten(&reader.ruleset, ir::Family::V4, hook, &mut entries) {
            let r = &f.rule;
            if !r.action.is_nat() {
                continue;
            }
            for fw in &rules.forwards {
                if !touches(r, fw, after_dnat) {
                    continue;
                }
                let what = if after_dnat {
                    "source NAT of the forward's translated traffic: flows the forwarder sends through the stack are translated twice (double NAT); delete it if it served only this forward".to_owned()
                } else {
                    format!("still translates traffic to port {} on {}: connections the forwarder does not take (sources its allow-list refuses, or while the daemon restarts) are forwarded by netfilter instead, around the allow-list; delete it", fw.ports, fw.iface)
                };
                out.push(Finding {
                    origin: r.origin.clone(),
                    forward: fw.name.clone(),
                    what,
                });
            }
        }
    }
    out
}

fn touches(r: &ir::Rule, fw: &Forward, after_dnat: bool) -> bool {
    let proto = r.proto.is_none_or(|p| fw.proto.includes(p));
    let (addr, ports) = if after_dnat {
        (
            // A name's address is not known offline: any destination may
            // be it.
            fw.target.fixed_addr().map(IpAddr::V4),
            fw.target.ports.unwrap_or(fw.ports),
        )
    } else {
        (
            match fw.listen {
                Listen::Addr(a) => Some(IpAddr::V4(a)),
                Listen::Interface => None,
            },
            fw.ports,
        )
    };
    let port = r
        .dports
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| p.intersect(ports).is_some()));
    let dst = match (&r.dst, addr) {
        (None, _) | (_, None) => true,
        (Some(d), Some(a)) => d.contains(a),
    };
    let iface = after_dnat || r.in_iface.as_ref().is_none_or(|i| i.matches(&fw.iface));
    // A generic masquerade (no -d, no --dport) is about routed traffic in
    // general; only rules aimed at the target count as double NAT.
    let aimed = !after_dnat || r.dst.is_some() || r.dports.is_some();
    proto && port && dst && iface && aimed
}

/// socat processes (pid, command line) listening on a forward's port.
pub fn socat_processes(rules: &RuleSet, processes: &[(u32, String)]) -> Vec<Finding> {
    let mut out = Vec::new();
    let view = HostView::default();
    for (pid, cmdline) in processes {
        let Some(words) = shlex::split(cmdline) else {
            continue;
        };
        let origin = Origin::new(&format!("pid {pid}"), 0, cmdline);
        let cmd = super::shell::Command {
            origin: origin.clone(),
            words,
            label: None,
            description: None,
        };
        let mut ignored = Vec::new();
        for c in super::socat::command(&cmd, &view, &mut ignored) {
            for fw in &rules.forwards {
                let same_addr = match (c.listen, fw.listen) {
                    (None, _) | (_, Listen::Interface) => true,
                    (Some(a), Listen::Addr(b)) => a == IpAddr::V4(b),
                };
                if fw.proto.includes(c.l4) && fw.ports.intersect(c.ports).is_some() && same_addr {
                    out.push(Finding {
                        origin: Origin { line: 0, ..origin.clone() },
                        forward: fw.name.clone(),
                        what: format!("socat still listens on {} port {}: connections the forwarder refuses reach it and are relayed around the allow-list; stop and disable it", c.l4, c.ports),
                    });
                }
            }
        }
    }
    out
}
