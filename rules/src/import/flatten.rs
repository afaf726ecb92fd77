//! Chains to one ordered list per NAT hook, as netfilter walks them: jumps
//! inlined (the jump's matches joined to each rule of the target chain),
//! base chains of a hook in priority order.
//!
//! The fact a reader would get wrong: ACCEPT in a nat chain does not end
//! NAT for the hook, only that base chain (nft runs every nat base chain
//! until one translates), and RETURN only ends its own chain. Each flat
//! rule therefore carries the path of chains it sits in, and a stop only
//! hides the rules under its own path (`Flat::stops`).

use std::collections::BTreeMap;

use super::{
    ir::{Action, Chain, Family, Hook, Iface, Nets, Origin, Rule, Ruleset},
    Entry,
};

/// A rule in hook order.
#[derive(Clone, Debug)]
pub struct Flat {
    pub rule: Rule,
    /// The jumps that lead here (outermost first), for messages.
    pub via: Vec<Origin>,
    /// Chain instances from the base chain inwards.
    pub path: Vec<u32>,
}

impl Flat {
    /// Whether a stop verdict of `self` hides `later`.
    pub fn stops(&self, later: &Flat) -> bool {
        let scope: &[u32] = match &self.rule.action {
            Action::Stop(v) if v == "RETURN" => &self.path,
            Action::Stop(v) if v == "ACCEPT" => &self.path[..1.min(self.path.len())],
            Action::Stop(_) => &[],
            _ => return false,
        };
        later.path.starts_with(scope)
    }
}

/// The rules netfilter evaluates at `hook` for `family`, in order.
pub fn flatten(rs: &Ruleset, family: Family, hook: Hook, entries: &mut Vec<Entry>) -> Vec<Flat> {
    let mut bases: Vec<&Chain> = rs
        .chains
        .iter()
        .filter(|c| c.family == family && c.nat && c.hook == Some(hook))
        .collect();
    bases.sort_by_key(|c| c.prio);
    let mut out = Vec::new();
    let mut next_id = 0;
    for base in bases {
        next_id += 1;
        walk(
            rs,
            base,
            &Rule::new(Origin::new("", 0, ""), family, Action::Continue),
            &[],
            &[next_id],
            &mut next_id,
            &mut out,
            entries,
            0,
        );
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn walk(
    rs: &Ruleset,
    chain: &Chain,
    outer: &Rule,
    via: &[Origin],
    path: &[u32],
    next_id: &mut u32,
    out: &mut Vec<Flat>,
    entries: &mut Vec<Entry>,
    depth: usize,
) {
    for r in &chain.rules {
        if r.owner.is_some() {
            continue;
        }
        let Some(joined) = conj(outer, r) else {
            continue;
        };
        match &r.action {
            Action::Jump {
                chain: target,
                goto,
            } => {
                let found = rs.find(r.family, &chain.table, target);
                match found {
                    _ if super::ir::owner_of(target).is_some() || found.is_some_and(|c| c.owner.is_some()) => {}
                    Some(inner) if depth < 8 => {
                        *next_id += 1;
                        let mut p = path.to_vec();
                        p.push(*next_id);
                        let mut v = via.to_vec();
                        v.push(r.origin.clone());
                        // A goto does not come back to this chain; for NAT
                        // that only matters after a stop, which already ends
                        // the inner chain's path.
                        let _ = goto;
                        walk(rs, inner, &joined, &v, &p, next_id, out, entries, depth + 1);
                    }
                    Some(_) => entries.push(Entry::left(r.origin.clone(), format!("jumps to {target} more than 8 chains deep: not followed"))),
                    None => entries.push(Entry::left(r.origin.clone(), format!("jumps to chain {target}, whose rules are not in the input: import them too"))),
                }
            }
            _ => out.push(Flat {
                rule: joined,
                via: via.to_vec(),
                path: path.to_vec(),
            }),
        }
    }
}

/// `outer`'s matches (a jump) joined to `inner`'s, or `None` when no packet
/// can match both.
fn conj(outer: &Rule, inner: &Rule) -> Option<Rule> {
    let mut r = inner.clone();
    r.in_iface = join_iface(&outer.in_iface, &inner.in_iface, &mut r.unknown)?;
    r.out_iface = join_iface(&outer.out_iface, &inner.out_iface, &mut r.unknown)?;
    r.src = join_nets(&outer.src, &inner.src, &mut r.unknown)?;
    r.dst = join_nets(&outer.dst, &inner.dst, &mut r.unknown)?;
    r.proto = match (outer.proto, inner.proto) {
        (Some(a), Some(b)) if a != b => return None,
        (a, b) => a.or(b),
    };
    r.dports = match (&outer.dports, &inner.dports) {
        (Some(a), Some(b)) => {
            let both: Vec<_> = a
                .iter()
                .flat_map(|x| b.iter().filter_map(move |y| x.intersect(*y)))
                .collect();
            if both.is_empty() {
                return None;
            }
            Some(both)
        }
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    r.unknown.extend(outer.unknown.iter().cloned());
    r.accepted.extend(outer.accepted.iter().cloned());
    r.comment = inner.comment.clone().or_else(|| outer.comment.clone());
    Some(r)
}

fn join_iface(
    a: &Option<Iface>,
    b: &Option<Iface>,
    unknown: &mut Vec<String>,
) -> Option<Option<Iface>> {
    Some(match (a, b) {
        (Some(x), Some(y)) if x == y => Some(x.clone()),
        (Some(x), Some(y)) => match (x.concrete(), y.concrete()) {
            (Some(_), Some(_)) => return None,
            (Some(_), None) if y.matches(&x.name) => Some(x.clone()),
            (None, Some(_)) if x.matches(&y.name) => Some(y.clone()),
            (Some(_), None) | (None, Some(_)) => return None,
            (None, None) => {
                unknown.push(format!("interfaces {} and {}", x.name, y.name));
                Some(y.clone())
            }
        },
        (x, y) => x.clone().or_else(|| y.clone()),
    })
}

fn join_nets(
    a: &Option<Nets>,
    b: &Option<Nets>,
    unknown: &mut Vec<String>,
) -> Option<Option<Nets>> {
    Some(match (a, b) {
        (Some(x), Some(y)) if !x.negated && !y.negated => {
            let mut nets = Vec::new();
            for p in &x.nets {
                for q in &y.nets {
                    if p.contains(q) {
                        nets.push(*q);
                    } else if q.contains(p) {
                        nets.push(*p);
                    }
                }
            }
            if nets.is_empty() {
                return None;
            }
            Some(Nets {
                nets,
                negated: false,
            })
        }
        (Some(x), Some(y)) => {
            unknown.push(format!(
                "address matches {:?} and {:?} combined",
                x.nets, y.nets
            ));
            Some(y.clone())
        }
        (x, y) => x.clone().or_else(|| y.clone()),
    })
}

/// Notes for chains the import leaves alone: other tools' chains (one note
/// each), filter/mangle/raw chains (one "stays in your firewall" each), and
/// nat chains no base chain reaches.
pub fn chain_entries(rs: &Ruleset, reached: &dyn Fn(&Chain) -> bool, entries: &mut Vec<Entry>) {
    let mut by_owner: BTreeMap<&str, (Origin, usize)> = BTreeMap::new();
    for c in &rs.chains {
        let Some(first) = c.rules.first() else {
            continue;
        };
        if c.name.starts_with("ufw-user-") || c.name.starts_with("ufw6-user-") {
            // Read as UFW rules (ufw.rs).
            continue;
        }
        if let Some(owner) = c.owner {
            let e = by_owner.entry(owner).or_insert((first.origin.clone(), 0));
            e.1 += c.rules.len();
            continue;
        }
        for r in c.rules.iter().filter(|r| r.owner.is_some()) {
            let e = by_owner
                .entry(r.owner.unwrap_or_default())
                .or_insert((r.origin.clone(), 0));
            e.1 += 1;
        }
        let own: Vec<&super::ir::Rule> = c.rules.iter().filter(|r| r.owner.is_none()).collect();
        let Some(first) = own.first() else { continue };
        let lines = own
            .iter()
            .map(|r| r.origin.line.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let n = own.len();
        let rules = if n == 1 {
            "1 rule".to_owned()
        } else {
            format!("{n} rules")
        };
        if !c.nat {
            let what = match (c.table.as_str(), c.hook) {
                ("filter", Some(Hook::Forward)) | (_, Some(Hook::Forward)) => {
                    forward_chain_entry(c, entries)
                }
                _ => None,
            };
            if let Some(what) = what {
                entries.push(Entry::kept(first.origin.clone(), what));
            } else if !matches!(c.hook, Some(Hook::Forward)) {
                entries.push(Entry::kept(
                    first.origin.clone(),
                    format!(
                        "{rules} of {} {} (lines {lines}): not NAT; they stay in your firewall",
                        c.table, c.name
                    ),
                ));
            }
        } else if c.hook.is_none() && !reached(c) && c.rules.iter().any(|r| r.action.is_nat()) {
            entries.push(Entry::note(first.origin.clone(), format!("{rules} of chain {} (lines {lines}): no base chain jumps to it, so netfilter never evaluates them", c.name)));
        }
    }
    for (owner, (origin, n)) in by_owner {
        entries.push(Entry::note(origin, format!("{n} rule(s) in chains managed by {owner}: ignored; {owner} creates and restores them itself")));
    }
}

/// FORWARD chain rules: an ACCEPT is not needed by redirected flows; a DROP
/// or REJECT restricted forwarded traffic, which redirected flows bypass.
fn forward_chain_entry(c: &Chain, entries: &mut Vec<Entry>) -> Option<String> {
    let mut accepts = Vec::new();
    for r in &c.rules {
        match &r.action {
            Action::Stop(v) if v == "DROP" || v == "REJECT" => entries.push(Entry::left(
                r.origin.clone(),
                format!("{v} in {}: restricted forwarded traffic, and flows the forwarder redirects bypass the FORWARD chain; express it with `allow` on the forward (or keep the flow on `path = \"stack\"`)", c.name),
            )),
            _ => accepts.push(r.origin.line.to_string()),
        }
    }
    (!accepts.is_empty()).then(|| {
        format!(
            "{} rule(s) of {} {} (lines {}): let forwarded traffic through; flows the forwarder redirects do not need them (they bypass FORWARD), keep them for everything else",
            accepts.len(),
            c.table,
            c.name,
            accepts.join(", ")
        )
    })
}
