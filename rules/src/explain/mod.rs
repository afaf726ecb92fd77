//! `forwarder explain`: which forward a packet would hit and what it becomes,
//! worked out offline from the rules alone.
//!
//! Split by meaning: this file holds the question (`Query`), the answer
//! (`Explanation`) and which forward takes the packet; `translate` what
//! the packet becomes, `render` the terminal text, `args` the command-line
//! values.
//!
//! The one fact a reader gets wrong: `explain` knows the rules, not the
//! host. What only the host knows (interface addresses, DNS answers, a
//! dead next hop) comes in through the `Query`, stated by the caller
//! (`--iface-addr`, `--resolve`, `--lookup`), or is shown as an assumption.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use crate::model::*;

/// A packet arriving on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub iface: String,
    /// Of one family with `to`; IPv6 as `[addr]:port`.
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub proto: L4,
    /// Known addresses of interfaces, for `listen = "interface"` forwards.
    pub iface_addrs: BTreeMap<String, Vec<IpAddr>>,
    /// What DNS-name targets resolve to (`--resolve NAME=IP`); a name not
    /// here is shown as resolved at run time. IPv4: names are resolved for
    /// A records only.
    pub resolved: BTreeMap<String, Ipv4Addr>,
    /// What this host's tables say about a target address now, one
    /// sentence each, added to the explanation as notes: the caller reads
    /// the host (`--lookup`: a target whose next hop does not answer ARP,
    /// in the daemon's own words, `plan_neigh::explain`).
    pub host_notes: BTreeMap<IpAddr, String>,
}

/// One end of a tuple; SNAT sources are not known offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Known(SocketAddr),
    /// Rendered as `host:port` where either part may be a `<placeholder>`.
    Partial {
        host: String,
        port: String,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Known(a) => a.fmt(f),
            Endpoint::Partial { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)
    }
}

/// A packet and what the forwarder rewrites it to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub before: Tuple,
    pub after: Tuple,
}

// One value per `explain` call: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Explanation {
    /// The packet starts a flow of `rule`.
    Translated {
        rule: String,
        /// Client to listener, as it leaves toward the target.
        original: Rewrite,
        /// Target's answer, as it leaves toward the client.
        reply: Rewrite,
        /// Assumptions and alternatives (SNAT address unknown offline, ...).
        notes: Vec<String>,
    },
    /// A forward listens there but its allow-list refuses the source.
    Refused { rule: String, reason: String },
    /// No forward listens there; why each candidate did not match.
    NoMatch { reasons: Vec<String> },
}

fn known(a: IpAddr, p: u16) -> Endpoint {
    Endpoint::Known(SocketAddr::new(a, p))
}

/// Why `f` does not take the query's packet, or `None` when it does (with a
/// note when that depends on an assumption).
fn mismatch(f: &Forward, q: &Query) -> Result<Option<String>, String> {
    if !f.proto.includes(q.proto) {
        return Err(format!(
            "forward \"{}\" listens on {}, not {}",
            f.name,
            f.proto.as_str(),
            q.proto
        ));
    }
    if !f.ports.contains(q.to.port()) {
        let what = if f.ports.is_single() { "port" } else { "ports" };
        return Err(format!(
            "forward \"{}\" listens on {what} {}, not {}",
            f.name,
            f.ports,
            q.to.port()
        ));
    }
    let af = Af::of(q.to.ip());
    match f.listen {
        Listen::Addr(a) if a != q.to.ip() => Err(format!("forward \"{}\" listens on {a}, not {}", f.name, q.to.ip())),
        Listen::Addr(_) => Ok(None),
        Listen::Interface if !f.family.includes(af) => Err(format!(
            "forward \"{}\" takes {} clients only (family = \"{}\"), not {af}",
            f.name,
            f.family.label(),
            f.family.as_str()
        )),
        Listen::Interface if crate::family::is_link_local(q.to.ip()) => Err(format!(
            "forward \"{}\" does not listen on link-local addresses such as {}",
            f.name,
            q.to.ip()
        )),
        Listen::Interface => match q.iface_addrs.get(&f.iface) {
            Some(addrs) if addrs.contains(&q.to.ip()) => Ok(None),
            Some(addrs) => {
                let list: Vec<String> = addrs
                    .iter()
                    .filter(|a| Af::of(**a) == af)
                    .map(IpAddr::to_string)
                    .collect();
                Err(format!(
                    "forward \"{}\" listens on {}'s addresses ({}), and {} is not one of them",
                    f.name,
                    f.iface,
                    if list.is_empty() { "none given".to_owned() } else { list.join(", ") },
                    q.to.ip()
                ))
            }
            None => Ok(Some(format!(
                "assuming {} is an address of {} (listen = \"interface\"); pass --iface-addr {}={} to state it",
                q.to.ip(),
                f.iface,
                f.iface,
                q.to.ip()
            ))),
        },
    }
}

pub fn explain(rules: &RuleSet, q: &Query) -> Explanation {
    if q.from.is_ipv4() != q.to.is_ipv4() {
        return Explanation::NoMatch {
            reasons: vec![format!(
                "{} and {} are of different families: a packet's source and destination never are",
                q.from, q.to
            )],
        };
    }
    let on_iface: Vec<&Forward> = rules
        .forwards
        .iter()
        .filter(|f| f.iface == q.iface)
        .collect();
    if on_iface.is_empty() {
        let mut ifaces: Vec<&str> = rules.forwards.iter().map(|f| f.iface.as_str()).collect();
        ifaces.sort_unstable();
        ifaces.dedup();
        let known = if ifaces.is_empty() {
            "none".to_owned()
        } else {
            ifaces.join(", ")
        };
        return Explanation::NoMatch {
            reasons: vec![format!(
                "no forward listens on interface {} (forwards use: {known})",
                q.iface
            )],
        };
    }
    let mut reasons = Vec::new();
    for f in on_iface {
        match mismatch(f, q) {
            Err(why) => reasons.push(why),
            Ok(assumption) => {
                if !f.allow.is_empty() && !f.allow.iter().any(|n| n.contains(&q.from.ip())) {
                    let list: Vec<String> = f.allow.iter().map(|n| n.to_string()).collect();
                    let answer = refusal(f.reject, q.proto, q.to);
                    return Explanation::Refused {
                        rule: f.name.clone(),
                        reason: format!(
                            "source {} is not in the allow-list ({}): {answer}",
                            q.from.ip(),
                            list.join(", ")
                        ),
                    };
                }
                return translated(rules, f, q, assumption);
            }
        }
    }
    Explanation::NoMatch { reasons }
}

/// What a refused packet meets. With `reject = "rst"` the kernel program
/// answers it like a closed port; it never reaches this host's own stack,
/// so a service of the host on the same port never sees it.
fn refusal(reject: Reject, proto: L4, _to: SocketAddr) -> String {
    match (reject, proto) {
        (Reject::Drop, _) => "the packet is dropped silently (reject = \"drop\")".into(),
        (Reject::Rst, L4::Tcp) => "it gets a TCP RST, like from a closed port (reject = \"rst\"); \
                                   never this host's own service on that port"
            .into(),
        (Reject::Rst, L4::Udp) => "it gets an ICMP port-unreachable, like from a closed port \
                                   (reject = \"rst\"); never this host's own socket on that port"
            .into(),
    }
}

mod args;
mod render;
mod translate;

pub use args::{parse_iface_addr, parse_resolve};
pub use render::render;
use translate::translated;

#[cfg(test)]
mod tests;
