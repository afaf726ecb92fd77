//! What a packet that a forward takes becomes: its rewrite both ways, and
//! the notes that say what is assumed (a DNS answer, SNAT's address) or
//! known of the host (a dead next hop, `Query::host_notes`).
use std::net::IpAddr;

use super::{known, Endpoint, Explanation, Query, Rewrite, Tuple};
use crate::model::*;

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

pub(super) fn translated(
    rules: &RuleSet,
    f: &Forward,
    q: &Query,
    assumption: Option<String>,
) -> Explanation {
    let mut notes: Vec<String> = assumption.into_iter().collect();
    let client = Endpoint::Known(q.from);
    let listener = Endpoint::Known(q.to);
    let (t, target) = target_host(f, q, f.target.port_for(f.ports, q.to.port()), &mut notes);
    let snat_port = format!("<port from {}>", rules.global.snat_ports);
    let masq = |port: &str| Endpoint::Partial {
        host: format!("<{}'s address toward {}>", "egress interface", t),
        port: port.to_owned(),
    };
    if let Endpoint::Known(t) = &target {
        notes.extend(q.host_notes.get(&t.ip()).cloned());
    }
    let af = Af::of(q.from.ip());
    if f.translates(af) {
        let rfc = if af == Af::V6 { "NAT64" } else { "NAT46" };
        notes.push(format!(
            "an {af} client of the {} target {}: the header is translated between families ({rfc}, RFC 7915) and the source always becomes an {} address of this host",
            f.target.af(),
            f.target.host,
            f.target.af()
        ));
        if let Some(pool) = crate::compile::nat64_pool(f, af) {
            notes.push(format!(
                "unless the target has no forwarding route of its own (a ClusterIP, a gateway without path = \"redirect\"): then the source is the NAT64 pool address {pool} and the flow goes through the stack (kube-proxy's DNAT), its replies translated back at egress of {}",
                forwarder_common::NAT64_DEV
            ));
        }
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
