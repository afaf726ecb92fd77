//! Listener cells back to candidate forwards: neighbouring port runs with
//! the same outcome merge into one range; `IP:A-B` targets become 1:1
//! ranges where netfilter keeps the port; merged and split rules say so.

use super::{
    flatten::Flat,
    ir::{Action, Candidate, PortMap, SnatChoice},
    resolve::{Cell, Outcome},
    Entry,
};
use crate::model::PortRange;

/// Listener cells to candidates: neighbouring port runs with the same
/// outcome merge back into one range.
pub(super) fn assemble(
    flats: &[Flat],
    mut cells: Vec<Cell>,
    entries: &mut Vec<Entry>,
) -> Vec<Candidate> {
    cells.sort_by(|a, b| (a.4.rule(), &a.0, a.1, a.3, a.2).cmp(&(b.4.rule(), &b.0, b.1, b.3, b.2)));
    let mut out: Vec<Candidate> = Vec::new();
    for (iface, l4, iv, listen, outcome, allow) in cells {
        let Outcome::Dnat { rule, addr, map } = outcome else {
            continue;
        };
        let map = match map {
            PortMap::Range(r) if r.start() <= iv.start() && iv.end() <= r.end() => {
                PortMap::Shift(0)
            }
            PortMap::Range(r) => {
                entries.push(Entry::left(flats[rule].rule.origin.clone(), format!("ports {iv} are outside the target range {r}: netfilter sends each connection to the range's first free port (usually {}), the forwarder maps ranges 1:1; write `to = \"{addr}:{}\"` to keep netfilter's choice", r.start(), r.start())));
                continue;
            }
            m => m,
        };
        let r = &flats[rule].rule;
        if let Some(last) = out.last_mut() {
            let contiguous = u32::from(last.ports.end()) + 1 == u32::from(iv.start());
            if contiguous
                && last.iface == iface
                && last.l4 == l4
                && last.listen == listen
                && last.target == addr
                && last.map == map
                && last.allow == allow
                && last.origins[0] == r.origin
            {
                last.ports = PortRange::new(last.ports.start(), iv.end()).expect("ordered");
                continue;
            }
        }
        let mut origins = vec![r.origin.clone()];
        for f in flats {
            if matches!(&f.rule.action, Action::Dnat { addr: a, .. } if *a == addr)
                && f.rule.origin != r.origin
                && f.rule.src.is_some()
                && allow
                    .iter()
                    .any(|n| f.rule.src.as_ref().is_some_and(|s| s.nets.contains(n)))
            {
                origins.push(f.rule.origin.clone());
            }
        }
        let mut comments = Vec::new();
        if origins.len() > 1 {
            comments.push(format!(
                "{} rules that differ only by source: one forward, their sources as the allow-list",
                origins.len()
            ));
        }
        if !flats[rule].via.is_empty() {
            comments.push(format!(
                "reached through the jump at {}",
                flats[rule]
                    .via
                    .iter()
                    .map(|o| o.at())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ));
        }
        for a in &r.accepted {
            comments.push(format!("{a}: translated as is"));
        }
        out.push(Candidate {
            family: r.family,
            iface,
            listen,
            l4,
            ports: iv,
            target: addr,
            target_name: None,
            map,
            allow,
            snat: SnatChoice::Auto,
            origins,
            comments,
            name_hint: r.comment.clone(),
            description: r.comment.clone(),
            local: false,
        });
    }
    // A rule split around an earlier one says so.
    for c in &mut out {
        let ports = flats
            .iter()
            .find(|f| f.rule.origin == c.origins[0])
            .and_then(|f| f.rule.dports.clone());
        if let Some(ps) = ports {
            if !ps.contains(&c.ports) {
                let listed = ps
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                c.comments.push(format!(
                    "ports {} of the rule's {listed}: earlier rules take the others",
                    c.ports
                ));
            }
        }
    }
    out
}
