//! PREROUTING rules to candidate forwards, evaluated the way netfilter
//! evaluates a new connection: the first rule that matches and translates
//! wins; a stop (ACCEPT, RETURN) ends its chain untranslated.
//!
//! The traffic space is cut into cells (interface, protocol, a run of
//! ports, a destination address class, a source region) small enough that
//! every rule either applies to a whole cell or not at all; each cell gets
//! the outcome of its first applying rule. Cells with the same outcome are
//! put back together: rules that differ only by `-s` become one forward
//! with an allow-list, a rule hidden behind an earlier one is dropped with
//! a note, a port range cut by an earlier rule is split.

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;

use super::{
    flatten::Flat,
    ir::{Action, Candidate, Nets, PortMap, Tri},
    Entry, HostView,
};
use crate::model::{PortRange, L4};

/// What a cell's traffic gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// No translation: the packet reaches this host (or is routed) as is.
    Untranslated,
    Dnat {
        rule: usize,
        addr: IpAddr,
        map: PortMap,
    },
    /// REDIRECT, or DNAT keeping the address: a port on this host.
    Local { rule: usize },
}

impl Outcome {
    pub(super) fn rule(&self) -> Option<usize> {
        match self {
            Outcome::Untranslated => None,
            Outcome::Dnat { rule, .. } | Outcome::Local { rule } => Some(*rule),
        }
    }
}

/// A listener cell: interface, protocol, ports, fixed address (or the
/// interface's), its outcome and allow-list.
pub(super) type Cell = (String, L4, PortRange, Option<IpAddr>, Outcome, Vec<IpNet>);

/// A region of source addresses: a listed network, or everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Region {
    Net(IpNet),
    Rest,
}

/// Evaluates the PREROUTING flats: candidate forwards plus entries for
/// what did not become one.
pub fn dnat(flats: &[Flat], view: &HostView, entries: &mut Vec<Entry>) -> Vec<Candidate> {
    // Which rules translate, and on which interface.
    let mut iface_of: Vec<Option<String>> = vec![None; flats.len()];
    let mut ifaces = BTreeSet::new();
    for (i, f) in flats.iter().enumerate() {
        let r = &f.rule;
        match &r.action {
            Action::Unsupported(reason) => {
                entries.push(Entry::left(r.origin.clone(), reason.clone()));
                continue;
            }
            Action::Redirect { to } => {
                entries.push(Entry::kept(r.origin.clone(), format!("REDIRECT to {to}: traffic goes to a port on this host itself (a local service or proxy), not to another host, so it is not a forward; keep this rule")));
            }
            Action::LocalPort { port } => {
                entries.push(Entry::kept(r.origin.clone(), format!("DNAT to :{port} keeps the destination address: traffic for this host goes to its own port {port}, not to another host, so it is not a forward; keep this rule (or move the service to the port)")));
            }
            Action::Dnat { .. } => {}
            Action::Snat { .. } | Action::Masquerade => {
                entries.push(Entry::left(
                    r.origin.clone(),
                    "source NAT in PREROUTING is not possible; this rule never did anything".into(),
                ));
                continue;
            }
            _ => continue,
        }
        if !r.unknown.is_empty() {
            entries.push(Entry::left(r.origin.clone(), format!("the match {} is not evaluated offline, so which connections this rule takes is not known: write the forward by hand", quote_list(&r.unknown))));
            continue;
        }
        let iface = match &r.in_iface {
            Some(i) => match i.concrete() {
                Some(n) => n.to_owned(),
                None => {
                    entries.push(Entry::left(r.origin.clone(), format!("interface match `{}{}`: the forwarder needs one interface per forward; write one rule per interface", if i.negated { "! " } else { "" }, i.name)));
                    continue;
                }
            },
            None => match &view.default_iface {
                Some(d) => d.clone(),
                None => {
                    entries.push(Entry::left(r.origin.clone(), "no -i (iifname): the rule matches every interface, and a forward needs the one packets arrive on; add -i, or import with --in IFACE".into()));
                    continue;
                }
            },
        };
        if matches!(r.action, Action::Dnat { .. }) && r.dports.is_none() {
            entries.push(Entry::left(
                r.origin.clone(),
                "DNAT of every port: the forwarder forwards ports or port ranges; add --dport"
                    .into(),
            ));
            continue;
        }
        if matches!(r.action, Action::Dnat { .. }) {
            ifaces.insert(iface.clone());
        }
        iface_of[i] = Some(iface);
    }

    let mut won: Vec<bool> = vec![false; flats.len()];
    let mut shadowed_by: Vec<Option<usize>> = vec![None; flats.len()];
    let mut listeners: Vec<Cell> = Vec::new();
    for iface in &ifaces {
        for l4 in [L4::Tcp, L4::Udp] {
            // Rules that may apply to this interface and protocol.
            let relevant: Vec<usize> = (0..flats.len())
                .filter(|&i| {
                    let r = &flats[i].rule;
                    let iface_ok = match (&r.in_iface, &iface_of[i]) {
                        (_, Some(n)) if r.action.is_nat() => n == iface,
                        (Some(m), _) => m.matches(iface),
                        (None, _) => true,
                    };
                    let terminal = matches!(r.action, Action::Stop(_)) || iface_of[i].is_some();
                    iface_ok && terminal && r.proto.is_none_or(|p| p == l4)
                })
                .collect();
            if !relevant.iter().any(|&i| {
                matches!(flats[i].rule.action, Action::Dnat { .. })
                    && iface_of[i].as_deref() == Some(iface)
            }) {
                continue;
            }
            for iv in intervals(flats, &relevant) {
                let here: Vec<usize> = relevant
                    .iter()
                    .copied()
                    .filter(|&i| {
                        flats[i].rule.dports.as_ref().is_none_or(|ps| {
                            ps.iter()
                                .any(|p| p.start() <= iv.start() && iv.end() <= p.end())
                        })
                    })
                    .collect();
                if !here
                    .iter()
                    .any(|&i| matches!(flats[i].rule.action, Action::Dnat { .. }))
                {
                    continue;
                }
                let dsts: BTreeSet<IpAddr> = here
                    .iter()
                    .filter_map(|&i| flats[i].rule.dst.as_ref().and_then(Nets::single))
                    .collect();
                let mut classes: Vec<Option<IpAddr>> = dsts.into_iter().map(Some).collect();
                classes.push(None);
                let mut per_class = Vec::new();
                for class in &classes {
                    let applying: Vec<(usize, Tri)> = here
                        .iter()
                        .map(|&i| (i, dst_applies(&flats[i].rule.dst, *class)))
                        .filter(|(_, t)| *t != Tri::No)
                        .collect();
                    per_class.push(eval_sources(
                        flats,
                        &applying,
                        &mut won,
                        &mut shadowed_by,
                        entries,
                        iface,
                        l4,
                        iv,
                    ));
                }
                // One listener on the interface when every address class
                // agrees; else one per fixed address, and the rest reported.
                let other = per_class.last().cloned().flatten();
                if other.is_some() && per_class.iter().all(|c| *c == other) {
                    if let Some((o, allow)) = other {
                        listeners.push((iface.clone(), l4, iv, None, o, allow));
                    }
                    continue;
                }
                for (class, outcome) in classes.iter().zip(per_class) {
                    match (class, outcome) {
                        (Some(a), Some((o, allow))) => {
                            listeners.push((iface.clone(), l4, iv, Some(*a), o, allow))
                        }
                        (None, Some((o, _))) => {
                            if let Some(rule) = o.rule() {
                                entries.push(Entry::left(flats[rule].rule.origin.clone(), format!("on {iface} {l4} {iv}, traffic to some of this host's addresses is translated differently by other rules (by -d): the forwarder listens on all of an interface's addresses or on one, so this part is left out")));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    for (i, f) in flats.iter().enumerate() {
        if matches!(f.rule.action, Action::Dnat { .. }) && iface_of[i].is_some() && !won[i] {
            if let Some(by) = shadowed_by[i] {
                entries.push(Entry::note(f.rule.origin.clone(), format!("never applies: {} is evaluated first for the same traffic (first match wins), so this rule is dropped", flats[by].rule.origin.at())));
            }
        }
    }
    super::assemble::assemble(flats, listeners, entries)
}

fn quote_list(items: &[String]) -> String {
    items
        .iter()
        .map(|u| format!("`{u}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runs of ports between every rule's port boundaries.
fn intervals(flats: &[Flat], relevant: &[usize]) -> Vec<PortRange> {
    let mut cuts = BTreeSet::new();
    for &i in relevant {
        for p in flats[i].rule.dports.iter().flatten() {
            cuts.insert(u32::from(p.start()));
            cuts.insert(u32::from(p.end()) + 1);
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    cuts.windows(2)
        .filter_map(|w| PortRange::new(u16::try_from(w[0]).ok()?, u16::try_from(w[1] - 1).ok()?))
        .collect()
}

fn dst_applies(dst: &Option<Nets>, class: Option<IpAddr>) -> Tri {
    match (dst, class) {
        (None, _) => Tri::Yes,
        (Some(n), Some(a)) => {
            if n.contains(a) {
                Tri::Yes
            } else {
                Tri::No
            }
        }
        (Some(n), None) => match n.single() {
            Some(_) => Tri::No,
            None if n.negated && n.nets.iter().all(|x| x.prefix_len() == x.max_prefix_len()) => {
                Tri::Yes
            }
            None => Tri::Maybe,
        },
    }
}

/// The outcome for one address class of a cell, over the source regions;
/// `None` when nothing translates it. Conflicts are reported here.
#[allow(clippy::too_many_arguments)]
fn eval_sources(
    flats: &[Flat],
    applying: &[(usize, Tri)],
    won: &mut [bool],
    shadowed_by: &mut [Option<usize>],
    entries: &mut Vec<Entry>,
    iface: &str,
    l4: L4,
    iv: PortRange,
) -> Option<(Outcome, Vec<IpNet>)> {
    let mut regions: BTreeSet<Region> = BTreeSet::new();
    for (i, _) in applying {
        if let Some(s) = &flats[*i].rule.src {
            regions.extend(s.nets.iter().map(|n| Region::Net(*n)));
        }
    }
    regions.insert(Region::Rest);
    let mut results: Vec<(Region, Outcome)> = Vec::new();
    for region in &regions {
        let mut stopped: Vec<usize> = Vec::new();
        let mut outcome = Outcome::Untranslated;
        let mut unsure: Vec<usize> = Vec::new();
        for (i, dtri) in applying {
            let f = &flats[*i];
            if stopped.iter().any(|s| flats[*s].stops(f)) {
                continue;
            }
            let stri = match (&f.rule.src, region) {
                (None, _) => Tri::Yes,
                (Some(s), Region::Net(n)) => s.covers(&[*n]),
                (Some(s), Region::Rest) => {
                    if s.negated {
                        Tri::Yes
                    } else {
                        Tri::No
                    }
                }
            };
            let t = dtri.and(stri).and(if f.rule.unknown.is_empty() {
                Tri::Yes
            } else {
                Tri::Maybe
            });
            match t {
                Tri::No => continue,
                // A narrower source is its own region; other unknowns are
                // reported if a later rule wins.
                Tri::Maybe => {
                    if !(matches!(region, Region::Net(_))
                        && f.rule.src.is_some()
                        && f.rule.unknown.is_empty()
                        && *dtri == Tri::Yes)
                    {
                        unsure.push(*i);
                    }
                    continue;
                }
                Tri::Yes => {}
            }
            match &f.rule.action {
                Action::Stop(_) => stopped.push(*i),
                Action::Dnat { addr, ports } => {
                    outcome = Outcome::Dnat {
                        rule: *i,
                        addr: *addr,
                        map: *ports,
                    };
                    break;
                }
                _ => {
                    outcome = Outcome::Local { rule: *i };
                    break;
                }
            }
        }
        if let Some(w) = outcome.rule() {
            won[w] = true;
            for (i, _) in applying {
                if *i != w && shadowed_by[*i].is_none() && *i > w {
                    shadowed_by[*i] = Some(w);
                }
            }
            for u in unsure {
                entries.push(Entry::left(flats[u].rule.origin.clone(), format!("may take some of the traffic of {} first ({} {iface} {iv}): its match is not evaluated offline", flats[w].rule.origin.at(), l4)));
            }
        }
        results.push((*region, outcome));
    }
    // Put the regions back together.
    let translated: Vec<&(Region, Outcome)> = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Dnat { .. }))
        .collect();
    let first = translated.first().map(|(_, o)| o.clone())?;
    let same_target = |o: &Outcome| match (o, &first) {
        (
            Outcome::Dnat {
                addr: a, map: m, ..
            },
            Outcome::Dnat {
                addr: b, map: n, ..
            },
        ) => a == b && m == n,
        _ => false,
    };
    let differing: Vec<&(Region, Outcome)> =
        results.iter().filter(|(_, o)| !same_target(o)).collect();
    let rest_translated = results
        .iter()
        .any(|(r, o)| *r == Region::Rest && same_target(o));
    let conflict = if rest_translated {
        // Everyone is forwarded, except the differing regions.
        !differing.is_empty()
    } else {
        // Only listed sources: fine as long as no other source is
        // translated elsewhere, and no region nested in an allowed one
        // (an exception the allow-list cannot express) differs.
        differing.iter().any(|(r, o)| {
            matches!(o, Outcome::Dnat { .. } | Outcome::Local { .. })
                || translated.iter().any(|(t, _)| match (t, r) {
                    (Region::Net(a), Region::Net(b)) => a.contains(b),
                    _ => false,
                })
        })
    };
    if conflict {
        let mut rules: Vec<usize> = results.iter().filter_map(|(_, o)| o.rule()).collect();
        rules.sort_unstable();
        rules.dedup();
        let lines = rules
            .iter()
            .map(|r| flats[*r].rule.origin.at())
            .collect::<Vec<_>>()
            .join(", ");
        for r in &rules {
            entries.push(Entry::left(flats[*r].rule.origin.clone(), format!("on {iface} {l4} {iv}, which target a connection gets depends on its source ({lines}): a forward sends a port to one target, and its allow-list cannot make exceptions; write this by hand")));
        }
        return None;
    }
    let allow: Vec<IpNet> = if rest_translated {
        Vec::new()
    } else {
        let nets: Vec<IpNet> = translated
            .iter()
            .filter_map(|(r, _)| match r {
                Region::Net(n) => Some(*n),
                Region::Rest => None,
            })
            .collect();
        IpNet::aggregate(&nets)
    };
    let rule_of = |o: &Outcome| o.rule().unwrap_or(usize::MAX);
    let min_rule = translated
        .iter()
        .map(|(_, o)| rule_of(o))
        .min()
        .unwrap_or(usize::MAX);
    let outcome = match first {
        Outcome::Dnat { addr, map, .. } => Outcome::Dnat {
            rule: min_rule,
            addr,
            map,
        },
        o => o,
    };
    Some((outcome, allow))
}
