//! The decision line of `status` (and the log): what the routing table
//! and the neighbour table say about a forward's SNAT and path. Part of
//! `plan`, pure.
//!
//! The one fact a reader gets wrong: this is a forecast. The kernel
//! programs decide per flow with the same FIB (and `FWD_NEIGH`); nothing
//! here is consulted by them.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use forwarder_common::NeighFlags;
use rules::{Forward, Snat};

use super::{neigh, Facts, Route};

/// A forward's whole decision line: the route's forecast, and the dead
/// next hop's sentence when its target's is dead (`plan_neigh.rs`).
pub fn decision(
    f: &Forward,
    facts: &Facts,
    dead: &BTreeMap<Ipv4Addr, NeighFlags>,
    target: IpAddr,
) -> String {
    let mut line = explain_decision(f, facts, target);
    if let Some(n) = nat64_decision(f, facts, target) {
        line = format!("{line}; {n}");
    }
    match neigh::explain(f, facts, dead, target) {
        Some(n) => format!("{line}; {n}"),
        None => line,
    }
}

/// The IPv6 clients' part of a NAT64 forward's decision: redirected from
/// an address of the host to an on-link target (or `path = "redirect"`),
/// else through the stack from the NAT64 pool, replies translated back at
/// egress of the pool's device (`nat64dev`).
fn nat64_decision(f: &Forward, facts: &Facts, target: IpAddr) -> Option<String> {
    let pool = rules::nat64_pool(f, rules::Af::V6)?;
    let direct = facts.route(target).is_some_and(|r| r.gateway.is_none())
        || (f.path == rules::PathMode::Redirect && facts.route(target).is_some());
    Some(if direct {
        "IPv6 clients (NAT64): translated to IPv4 from an address of this host, redirected".into()
    } else {
        format!(
            "IPv6 clients (NAT64): translated to IPv4 from the NAT64 pool {pool} and handed to \
             the stack (no forwarding route of the target's own: kube-proxy's DNAT reaches it), \
             replies translated back at egress of {}",
            forwarder_common::NAT64_DEV
        )
    })
}

/// What can be said from the routing table about a forward's SNAT and
/// path decision. The kernel decides per flow with the same FIB, so this is
/// a forecast for `status` and the log, not a second implementation.
/// `target`: the address the forward's flows go to now.
pub fn explain_decision(f: &Forward, facts: &Facts, target: IpAddr) -> String {
    let route = facts.route(target);
    let oif = facts.route_link(target);
    let oif_name = oif.map_or("?", |l| l.name.as_str());
    let via = |r: &Route| match r.gateway {
        None => format!("redirected straight to {oif_name} (on-link)"),
        Some(g) => format!("through the stack (target behind gateway {g} on {oif_name})"),
    };
    let prefsrc = |r: &Route| {
        r.prefsrc
            .map_or("the egress address".into(), |a| a.to_string())
    };
    match (f.snat, route) {
        (Snat::Off, None) => "client address kept; no forwarding route to the target: through the \
             stack (virtual or local target), replies translated back at egress"
            .into(),
        (Snat::Off, Some(r)) => format!("client address kept; {}", via(&r)),
        (Snat::Fixed(a), Some(_)) => format!("source rewritten to {a}; redirected to {oif_name}"),
        (Snat::Masquerade, Some(r)) => format!(
            "source rewritten to {} (masquerade); redirected to {oif_name}",
            prefsrc(&r)
        ),
        (Snat::Fixed(_) | Snat::Masquerade, None) => {
            "no forwarding route to the target: new flows are dropped (counted as errors) \
             until one exists"
                .into()
        }
        (Snat::Auto, None) => format!(
            "client address kept: the target has no forwarding route (a virtual address such \
             as a ClusterIP, or local), so flows go through the stack (which cannot take a \
             SNAT) and replies are translated back at egress of {}",
            f.iface
        ),
        (Snat::Auto, Some(r)) if oif.is_some_and(|l| l.name == f.iface) => format!(
            "SNAT to {}: the target is reached through {} itself, so its replies would \
             bypass this host",
            prefsrc(&r),
            f.iface
        ),
        (Snat::Auto, Some(r)) => format!(
            "client address kept when the route back to the client leaves through {} \
             (decided per flow), else SNAT; a backend whose answers bypass this host is \
             switched to SNAT on the client's first SYN retransmit; {}",
            f.iface,
            via(&r)
        ),
    }
}
