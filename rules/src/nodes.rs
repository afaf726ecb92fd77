//! `nodes = ["pve-alpha"]`: one rules file for a whole cluster, each forward
//! scoped to the nodes it belongs on.
//!
//! A Proxmox cluster replicates /etc/pve to every node and a Kubernetes
//! ConfigMap reaches every node of a DaemonSet, so a cluster shares one
//! file. A forward without `nodes` applies on every node (where its `in`
//! interface and listen address exist); with `nodes` it applies only on the
//! nodes named. The fact a reader would get wrong: names are compared the
//! way hostnames are (ASCII case-insensitively), and a name without a dot
//! also matches a fully-qualified node name that starts with it, because
//! Proxmox names nodes by their short hostname while Kubernetes node names
//! are often FQDNs.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    diagnostics::{did_you_mean, Sink, Span},
    model::{Forward, RuleSet},
};

/// A node name as the file may spell it: a DNS name (RFC 1123 labels of
/// letters, digits and `-`, separated by dots), at most 253 bytes. Both
/// hostnames and Kubernetes node names have this form.
pub(crate) fn valid_node_name(s: &str) -> Result<(), String> {
    const HELP: &str = "use the node's hostname (`hostname`), or its Kubernetes node name: \
                        letters, digits and `-`, in dot-separated labels";
    if s.is_empty() || s.len() > 253 {
        return Err(HELP.into());
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(HELP.into());
        }
    }
    Ok(())
}

/// Whether the entry `entry` of a `nodes` list names the node called `node`.
pub fn node_matches(entry: &str, node: &str) -> bool {
    if entry.eq_ignore_ascii_case(node) {
        return true;
    }
    // "pve-alpha" names the node "pve-alpha.lan" too; "pve-alpha.lan" does
    // not name a node that only knows itself as "pve-alpha" (it could be
    // another cluster's).
    !entry.contains('.')
        && node
            .split_once('.')
            .is_some_and(|(short, _)| short.eq_ignore_ascii_case(entry))
}

impl Forward {
    /// Whether this forward applies on the node called `node`.
    pub fn applies_on(&self, node: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| node_matches(n, node))
    }

    /// Whether some node could run both forwards (so their listeners can
    /// collide). A forward without `nodes` runs everywhere.
    pub fn shares_a_node_with(&self, other: &Forward) -> bool {
        if self.nodes.is_empty() || other.nodes.is_empty() {
            return true;
        }
        self.nodes.iter().any(|a| {
            other
                .nodes
                .iter()
                .any(|b| node_matches(a, b) || node_matches(b, a))
        })
    }
}

impl RuleSet {
    /// Keeps the forwards that apply on `node` and returns the names of the
    /// others (for the log and `status`). The daemon calls this once per
    /// load, before anything is compiled, so forwards of other nodes never
    /// get a rule id, a listener or an attached interface here.
    pub fn retain_node(&mut self, node: &str) -> Vec<String> {
        let mut others = Vec::new();
        self.forwards.retain(|f| {
            let keep = f.applies_on(node);
            if !keep {
                others.push(f.name.clone());
            }
            keep
        });
        others
    }

    /// Every node name the file mentions, sorted and deduplicated.
    pub fn node_names(&self) -> BTreeSet<&str> {
        self.forwards
            .iter()
            .flat_map(|f| f.nodes.iter().map(String::as_str))
            .collect()
    }
}

/// The spans of each forward's `nodes` entries (parallel to the entries).
pub(crate) type NodeSpans = Vec<Span>;

/// Cross-forward checks: a name listed twice in one forward, and a name that
/// appears once in the whole file while a close spelling appears elsewhere
/// (a typo would silently scope the forward to a node that does not exist).
pub(crate) fn check(forwards: &[Forward], spans: &[&NodeSpans], sink: &mut Sink) {
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    for f in forwards {
        let distinct: BTreeSet<String> = f.nodes.iter().map(|n| n.to_ascii_lowercase()).collect();
        for n in distinct {
            *uses.entry(n).or_default() += 1;
        }
    }
    for (f, sp) in forwards.iter().zip(spans) {
        let ctx = format!("forward \"{}\"", f.name);
        let mut seen = BTreeSet::new();
        for (n, span) in f.nodes.iter().zip(sp.iter()) {
            let lower = n.to_ascii_lowercase();
            if !seen.insert(lower.clone()) {
                sink.warning(
                    span,
                    Some(&ctx),
                    format!("node \"{n}\" is listed twice"),
                    Some("remove the duplicate".into()),
                );
                continue;
            }
            if uses.get(&lower) != Some(&1) {
                continue;
            }
            let others = uses
                .iter()
                .filter(|(name, count)| **count > 1 && **name != lower)
                .map(|(name, _)| name.as_str());
            if let Some(close) = did_you_mean(&lower, others) {
                sink.warning(
                    span,
                    Some(&ctx),
                    format!(
                        "node \"{n}\" appears only here, while other forwards name \"{close}\""
                    ),
                    Some(format!(
                        "did you mean \"{close}\"? A misspelt node name scopes the forward to a \
                         node that does not exist"
                    )),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortRange, Target};

    fn fwd(name: &str, nodes: &[&str]) -> Forward {
        let mut f = Forward::new(
            name,
            "eth0",
            PortRange::single(80).unwrap(),
            Target::ip("10.0.0.1".parse().unwrap(), None),
        );
        f.nodes = nodes.iter().map(|s| s.to_string()).collect();
        f
    }

    #[test]
    fn names_match_like_hostnames() {
        assert!(node_matches("pve-alpha", "pve-alpha"));
        assert!(node_matches("PVE-Alpha", "pve-alpha"));
        assert!(node_matches("pve-alpha", "pve-alpha.lan"));
        assert!(!node_matches("pve-alpha.lan", "pve-alpha"));
        assert!(!node_matches("pve-alpha", "pve-alphabet"));
        assert!(!node_matches("pve", "pve-alpha"));
        assert!(!node_matches("pve-alpha.lan", "pve-alpha.other"));
    }

    #[test]
    fn node_names_are_dns_names() {
        for ok in ["pve-alpha", "ichigo", "node-1.example.com", "N1"] {
            assert!(valid_node_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", &"x".repeat(64)] {
            assert!(valid_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retain_node_keeps_unscoped_and_own_forwards() {
        let mut rs = RuleSet {
            forwards: vec![
                fwd("everywhere", &[]),
                fwd("alpha", &["pve-alpha"]),
                fwd("beta", &["pve-beta"]),
                fwd("both", &["pve-beta", "pve-alpha"]),
            ],
            ..Default::default()
        };
        let others = rs.retain_node("pve-alpha");
        assert_eq!(others, vec!["beta".to_string()]);
        let kept: Vec<&str> = rs.forwards.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(kept, ["everywhere", "alpha", "both"]);
    }

    #[test]
    fn disjoint_node_sets_share_no_node() {
        let a = fwd("a", &["pve-alpha"]);
        let b = fwd("b", &["pve-beta"]);
        let all = fwd("all", &[]);
        let fq = fwd("fq", &["pve-beta.lan"]);
        assert!(!a.shares_a_node_with(&b));
        assert!(a.shares_a_node_with(&all));
        assert!(b.shares_a_node_with(&fq));
        assert!(!a.shares_a_node_with(&fq));
    }
}
