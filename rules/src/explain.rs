//! `forwarder explain`: which forward a packet would hit and what it becomes,
//! worked out offline from the rules alone.

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

/// The target's address as far as it is known offline, and a note when
/// it is a name.
fn target_host(f: &Forward, q: &Query, port: u16, notes: &mut Vec<String>) -> (String, Endpoint) {
    let name = match &f.target.host {
        Host::Addr(a) => return (a.to_string(), known(*a, port)),
        Host::Name(n) => n,
    };
    match q.resolved.get(name) {
        Some(a) => {
            notes.push(format!(
                "target {name} is a DNS name, taken here as {a}; the daemon resolves it itself at run time and follows its answers"
            ));
            if let Some(why) = crate::target::unusable_target(f, *a) {
                notes.push(format!(
                    "with that answer the daemon pauses this forward ({why}): its port answers like a closed one"
                ));
            }
            (a.to_string(), known(IpAddr::V4(*a), port))
        }
        None => {
            notes.push(format!(
                "target {name} is a DNS name: the daemon resolves it at run time (A records; the lowest address when there are several) and follows its answers; pass --resolve {name}=IP to state an address"
            ));
            let host = format!("<{name}>");
            (
                host.clone(),
                Endpoint::Partial {
                    host,
                    port: port.to_string(),
                },
            )
        }
    }
}

fn translated(rules: &RuleSet, f: &Forward, q: &Query, assumption: Option<String>) -> Explanation {
    let mut notes: Vec<String> = assumption.into_iter().collect();
    let client = Endpoint::Known(q.from);
    let listener = Endpoint::Known(q.to);
    let (t, target) = target_host(f, q, f.target.port_for(f.ports, q.to.port()), &mut notes);
    let snat_port = format!("<port from {}>", rules.global.snat_ports);
    let masq = |port: &str| Endpoint::Partial {
        host: format!("<{}'s address toward {}>", "egress interface", t),
        port: port.to_owned(),
    };
    let af = Af::of(q.from.ip());
    if f.translates(af) {
        let rfc = if af == Af::V6 { "NAT64" } else { "NAT46" };
        notes.push(format!(
            "an {af} client of the {} target {}: the header is translated between families ({rfc}, RFC 7915) and the source always becomes an {} address of this host",
            f.target.af(),
            f.target.host,
            f.target.af()
        ));
    }
    let source = match f.snat_for(af) {
        Snat::Off => {
            notes.push(format!(
                "snat = \"off\": {} must route replies to {} back through this host",
                t,
                q.from.ip()
            ));
            client.clone()
        }
        Snat::Fixed(a) => Endpoint::Partial {
            // Bracketed like a socket address, so the port stays apart.
            host: match a {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            },
            port: snat_port,
        },
        Snat::Masquerade => {
            notes.push("snat = \"masquerade\": the source address is the egress interface's, known only at run time".into());
            masq(&snat_port)
        }
        Snat::Auto => {
            notes.push(format!(
                "snat = \"auto\": shown with the client's address kept, which happens when {}'s reply routes back through this host; otherwise the source becomes {} and the reply is addressed to it",
                t,
                masq(&snat_port)
            ));
            client.clone()
        }
    };
    Explanation::Translated {
        rule: f.name.clone(),
        original: Rewrite {
            before: Tuple {
                src: client.clone(),
                dst: listener.clone(),
            },
            after: Tuple {
                src: source.clone(),
                dst: target.clone(),
            },
        },
        reply: Rewrite {
            before: Tuple {
                src: target,
                dst: source,
            },
            after: Tuple {
                src: listener,
                dst: client,
            },
        },
        notes,
    }
}

/// Text for the terminal.
pub fn render(rules: &RuleSet, q: &Query, e: &Explanation) -> String {
    let mut out = format!("{} {} -> {} on {}\n", q.proto, q.from, q.to, q.iface);
    match e {
        Explanation::Translated {
            rule,
            original,
            reply,
            notes,
        } => {
            let f = rules.forward(rule);
            let summary = f.map_or(String::new(), |f| {
                format!(
                    " ({} {} port {} -> {}, snat {})",
                    f.iface,
                    f.listen_label(),
                    f.ports,
                    f.target,
                    f.snat
                )
            });
            out.push_str(&format!("matches forward \"{rule}\"{summary}\n"));
            let width = original
                .before
                .to_string()
                .len()
                .max(reply.before.to_string().len());
            out.push_str(&format!(
                "  original: {:width$}  becomes  {}\n",
                original.before.to_string(),
                original.after
            ));
            out.push_str(&format!(
                "  reply:    {:width$}  becomes  {}\n",
                reply.before.to_string(),
                reply.after
            ));
            for n in notes {
                out.push_str(&format!("  note: {n}\n"));
            }
            out.push_str(&not_forwarded_note(rules, rule));
        }
        Explanation::Refused { rule, reason } => {
            out.push_str(&format!("refused by forward \"{rule}\": {reason}\n"));
            out.push_str(&not_forwarded_note(rules, rule));
        }
        Explanation::NoMatch { reasons } => {
            out.push_str("no forward matches: the packet is passed to the host untouched\n");
            for r in reasons {
                out.push_str(&format!("  - {r}\n"));
            }
        }
    }
    out
}

/// What `explain` adds for a forward this release does not forward: the
/// explanation is what the rule means, not what a running daemon does.
fn not_forwarded_note(rules: &RuleSet, rule: &str) -> String {
    match rules.forward(rule) {
        Some(f) if crate::needs_translation(f) => "  note: NAT64/NAT46 is not in this release: `forwarder run` refuses a rules file with this forward\n".into(),
        _ => String::new(),
    }
}

/// Parses `NAME=IP` as given to `--resolve`: what a target's DNS name is
/// taken to resolve to (IPv4: the daemon asks for A records only).
pub fn parse_resolve(s: &str) -> Result<(String, Ipv4Addr), String> {
    let (name, addr) = s.split_once('=').ok_or_else(|| {
        format!("`{s}`: expected NAME=IPv4, e.g. immich-server.immich.svc.cluster.local=10.43.12.7")
    })?;
    if !crate::target::dns_name(name) {
        return Err(format!("`{name}` is not a DNS name"));
    }
    let addr = addr.parse().map_err(|_| {
        format!("`{addr}` is not an IPv4 address (names are resolved for A records only)")
    })?;
    Ok((name.to_owned(), addr))
}

/// Parses `NAME=IP` as given to `--iface-addr` (either family).
pub fn parse_iface_addr(s: &str) -> Result<(String, IpAddr), String> {
    let (name, addr) = s.split_once('=').ok_or_else(|| {
        format!(
            "`{s}`: expected NAME=IP, e.g. tailscale0=100.118.5.68 or tailscale0=fd7a:115c:a1e0::1"
        )
    })?;
    let addr =
        crate::addrs::parse_addr(addr).ok_or_else(|| format!("`{addr}` is not an IP address"))?;
    Ok((name.to_owned(), addr))
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

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
[[forward]]
name = "immich"
in = "tailscale0"
port = 8080
to = "10.43.126.136:80"
allow = ["100.101.92.95"]

[[forward]]
name = "web"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80"
snat = "192.168.100.1"

[[forward]]
name = "nodeports"
in = "vmbr0"
listen = "192.168.1.55"
proto = "both"
port = "30000-32767"
to = "192.168.100.60"
snat = "off"
"#;

    fn q(iface: &str, from: &str, to: &str, proto: L4) -> Query {
        Query {
            iface: iface.into(),
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            proto,
            iface_addrs: BTreeMap::new(),
            resolved: BTreeMap::new(),
        }
    }

    fn rules() -> RuleSet {
        crate::load_str("r.toml", RULES).unwrap().rules
    }

    #[test]
    fn fixed_snat_translation() {
        let rs = rules();
        let query = q("vmbr0", "192.168.1.20:50000", "192.168.1.55:80", L4::Tcp);
        let e = explain(&rs, &query);
        let Explanation::Translated {
            rule,
            original,
            reply,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(rule, "web");
        assert_eq!(
            original.after.to_string(),
            "192.168.100.1:<port from 1024-32767> -> 192.168.100.80:80"
        );
        assert_eq!(
            reply.before.to_string(),
            "192.168.100.80:80 -> 192.168.100.1:<port from 1024-32767>"
        );
        assert_eq!(
            reply.after.to_string(),
            "192.168.1.55:80 -> 192.168.1.20:50000"
        );
        let text = render(&rs, &query, &e);
        assert!(text.contains("matches forward \"web\" (vmbr0 192.168.1.55 port 80 -> 192.168.100.80, snat 192.168.100.1)"), "{text}");
    }

    #[test]
    fn interface_form_with_and_without_known_addresses() {
        let rs = rules();
        let mut query = q(
            "tailscale0",
            "100.101.92.95:40000",
            "100.118.5.68:8080",
            L4::Tcp,
        );
        let Explanation::Translated {
            original, notes, ..
        } = explain(&rs, &query)
        else {
            panic!()
        };
        assert_eq!(
            original.after.to_string(),
            "100.101.92.95:40000 -> 10.43.126.136:80"
        );
        assert!(
            notes[0].contains("assuming 100.118.5.68 is an address of tailscale0"),
            "{notes:?}"
        );
        assert!(notes[1].contains("snat = \"auto\""), "{notes:?}");

        query
            .iface_addrs
            .insert("tailscale0".into(), vec!["100.118.5.69".parse().unwrap()]);
        let Explanation::NoMatch { reasons } = explain(&rs, &query) else {
            panic!()
        };
        assert_eq!(reasons, vec!["forward \"immich\" listens on tailscale0's addresses (100.118.5.69), and 100.118.5.68 is not one of them"]);
    }

    #[test]
    fn allow_list_refusal() {
        let rs = rules();
        let query = q(
            "tailscale0",
            "100.64.0.9:40000",
            "100.118.5.68:8080",
            L4::Tcp,
        );
        let e = explain(&rs, &query);
        assert_eq!(
            e,
            Explanation::Refused {
                rule: "immich".into(),
                reason: "source 100.64.0.9 is not in the allow-list (100.101.92.95/32): it \
                         gets a TCP RST, like from a closed port (reject = \"rst\"); never this \
                         host's own service on that port"
                    .into()
            }
        );
    }

    #[test]
    fn range_mapping_and_no_match_reasons() {
        let rs = rules();
        let Explanation::Translated {
            original, notes, ..
        } = explain(
            &rs,
            &q("vmbr0", "192.168.1.20:1000", "192.168.1.55:31000", L4::Udp),
        )
        else {
            panic!()
        };
        assert_eq!(
            original.after.to_string(),
            "192.168.1.20:1000 -> 192.168.100.60:31000"
        );
        assert!(notes[0].starts_with("snat = \"off\""));

        let Explanation::NoMatch { reasons } = explain(
            &rs,
            &q("vmbr0", "192.168.1.20:1000", "192.168.1.55:81", L4::Udp),
        ) else {
            panic!()
        };
        assert_eq!(
            reasons,
            vec![
                "forward \"web\" listens on tcp, not udp",
                "forward \"nodeports\" listens on ports 30000-32767, not 81"
            ]
        );

        let Explanation::NoMatch { reasons } =
            explain(&rs, &q("eth9", "1.1.1.1:1", "2.2.2.2:2", L4::Tcp))
        else {
            panic!()
        };
        assert_eq!(
            reasons,
            vec!["no forward listens on interface eth9 (forwards use: tailscale0, vmbr0)"]
        );
    }

    #[test]
    fn iface_addr_argument() {
        assert_eq!(
            parse_iface_addr("tailscale0=100.118.5.68"),
            Ok(("tailscale0".into(), "100.118.5.68".parse().unwrap()))
        );
        assert!(parse_iface_addr("tailscale0").is_err());
        assert_eq!(
            parse_iface_addr("x=fd7a:115c:a1e0::1"),
            Ok(("x".into(), "fd7a:115c:a1e0::1".parse().unwrap()))
        );
        assert!(parse_iface_addr("x=fd7a::zz").is_err());
    }
}
