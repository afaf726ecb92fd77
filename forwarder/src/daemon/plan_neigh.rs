//! What the kernel does about targets whose neighbour does not answer
//! (`FWD_NEIGH`), decided from the neighbour table: part of `plan`, pure.
//!
//! A redirect (`bpf_redirect_neigh`) to a neighbour that never answers ARP
//! queues and is dropped without a trace, and a FIB lookup's NO_NEIGH
//! cannot tell "not resolved yet" from "ARP gave up". The kernel's own
//! neighbour state can: FAILED. So per on-link target (its neighbour is
//! the target itself):
//!
//! * FAILED: `STACK | UNREACHABLE`. Flows that keep the client's address
//!   go through the stack, where netfilter (a PREROUTING DNAT of a virtual
//!   address: a ClusterIP routed on the CNI bridge, a moved VIP) or the
//!   stack's own ARP and ICMP host unreachable take over, as with iptables;
//!   SNATed flows, replies and established redirected flows, which the
//!   stack cannot take (their source is ours: a martian), are answered
//!   ICMP host unreachable (3/1) by the kernel program.
//! * INCOMPLETE after having failed (the stack, or a redirect, probes it
//!   again): unchanged, still dead. Otherwise every probe would flap it.
//! * no entry after having failed (the kernel's GC removed the FAILED
//!   entry): `STACK` only. Flows through the stack resolve it again when
//!   it is real (a virtual target never is, and stays on the stack path,
//!   which is where it works); a SNATed flow is redirected again, so its
//!   packet starts a new resolution: the first packet must always be able
//!   to, or a target that came back would never be found.
//! * resolved (REACHABLE, STALE, ...): forgotten; new flows redirect.
//!
//! The one fact a reader gets wrong: a target's first FAILED takes the
//! kernel's ARP give-up time (3 probes 1 s apart), and the packets queued
//! until then are lost exactly as a router loses them; what changes is
//! every packet after that.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use forwarder_common::NeighFlags;
use rules::{Forward, Snat};

use super::{Facts, NeighState};

/// On-link IPv4 targets: their neighbour is the target itself. IPv6
/// neighbours are not followed (neighbour discovery is never touched).
pub fn on_link_targets(facts: &Facts) -> BTreeSet<Ipv4Addr> {
    facts
        .routes
        .iter()
        .filter(|(_, r)| r.is_some_and(|r| r.gateway.is_none()))
        .filter_map(|(t, _)| match t {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// What `FWD_NEIGH` should hold (see the module comment).
pub fn plan(facts: &Facts) -> BTreeMap<Ipv4Addr, NeighFlags> {
    on_link_targets(facts)
        .into_iter()
        .filter_map(|t| {
            let was_dead = facts.neigh_map.contains_key(&t);
            let flags = match (facts.neighbours.get(&t).map(|n| n.state), was_dead) {
                (Some(NeighState::Failed), _) | (Some(NeighState::Incomplete), true) => {
                    NeighFlags::STACK | NeighFlags::UNREACHABLE
                }
                (None, true) => NeighFlags::STACK,
                _ => return None,
            };
            Some((t, flags))
        })
        .collect()
}

/// Whether forward `f`'s flows to `target` may go through the stack
/// because of its neighbour (now, or earlier in this daemon's life: such
/// flows live on after it recovers), so its listening interface needs the
/// egress program that translates their replies back.
pub fn needs_egress(
    f: &Forward,
    facts: &Facts,
    neigh: &BTreeMap<Ipv4Addr, NeighFlags>,
    target: IpAddr,
) -> bool {
    let IpAddr::V4(target) = target else {
        return false;
    };
    let keeps_client = matches!(f.snat, Snat::Off | Snat::Auto);
    keeps_client && (neigh.contains_key(&target) || facts.dead_once.contains(&target))
}

/// The sentence `status` adds to a forward's decision while its target's
/// neighbour is dead.
pub fn explain(
    f: &Forward,
    facts: &Facts,
    neigh: &BTreeMap<Ipv4Addr, NeighFlags>,
    target: IpAddr,
) -> Option<String> {
    let IpAddr::V4(target) = target else {
        return None;
    };
    let flags = neigh.get(&target)?;
    let n = facts.neighbours.get(&target);
    let state = n.map_or("gone from the neighbour table after failing", |n| {
        n.state.name()
    });
    let link = n
        .and_then(|n| facts.link(n.ifindex))
        .or_else(|| facts.route_link(IpAddr::V4(target)))
        .map_or("?", |l| l.name.as_str());
    let what = match (f.snat, flags.contains(NeighFlags::UNREACHABLE)) {
        (Snat::Off, _) => "new flows go through the stack (its ARP, netfilter and ICMP host \
                           unreachable take over), counted fwd_stack_neigh_dead"
            .to_string(),
        (Snat::Auto, true) => "new flows that keep the client's address go through the stack; \
                               SNATed ones are answered ICMP host unreachable (reply_host_unreach)"
            .to_string(),
        (Snat::Auto, false) => "new flows that keep the client's address go through the stack; \
                                SNATed ones are redirected again to probe it"
            .to_string(),
        (_, true) => "new flows are answered ICMP host unreachable (reply_host_unreach)".into(),
        (_, false) => "new flows are redirected again, which probes it".into(),
    };
    Some(format!(
        "target's neighbour {target} on {link} is {state} (no ARP answer): {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::facts::{Neighbour, Route};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn facts(state: Option<NeighState>, was: Option<NeighFlags>) -> Facts {
        let t = ip("10.2.0.99");
        let mut f = Facts::default();
        f.routes.insert(
            t.into(),
            Some(Route {
                oif: 3,
                gateway: None,
                prefsrc: None,
            }),
        );
        // Behind a gateway: never followed, whatever its table says.
        f.routes.insert(
            ip("172.16.0.9").into(),
            Some(Route {
                oif: 3,
                gateway: Some(ip("10.2.0.1").into()),
                prefsrc: None,
            }),
        );
        f.neighbours.insert(
            ip("172.16.0.9"),
            Neighbour {
                ifindex: 3,
                state: NeighState::Failed,
            },
        );
        if let Some(state) = state {
            f.neighbours.insert(t, Neighbour { ifindex: 3, state });
        }
        if let Some(w) = was {
            f.neigh_map.insert(t, w);
        }
        f
    }

    #[test]
    fn dead_is_failed_or_probed_again_after_failing() {
        use NeighState::*;
        let dead = NeighFlags::STACK | NeighFlags::UNREACHABLE;
        let cases: &[(Option<NeighState>, Option<NeighFlags>, Option<NeighFlags>)] = &[
            // First resolution in progress: nothing known yet.
            (Some(Incomplete), None, None),
            (Some(Failed), None, Some(dead)),
            // Probed again (by the stack, or a SNATed redirect): still dead.
            (Some(Incomplete), Some(dead), Some(dead)),
            (Some(Incomplete), Some(NeighFlags::STACK), Some(dead)),
            // The kernel dropped the FAILED entry: the stack path stays,
            // SNATed flows probe again.
            (None, Some(dead), Some(NeighFlags::STACK)),
            (None, Some(NeighFlags::STACK), Some(NeighFlags::STACK)),
            (None, None, None),
            // It answered: forgotten.
            (Some(Resolved), Some(dead), None),
            (Some(Resolved), None, None),
        ];
        for (state, was, want) in cases {
            let got = plan(&facts(*state, *was));
            assert_eq!(
                got.get(&ip("10.2.0.99")).copied(),
                *want,
                "{state:?} after {was:?}"
            );
            assert!(!got.contains_key(&ip("172.16.0.9")), "gateway routes");
        }
    }
}

#[cfg(test)]
mod event_tests {
    use std::collections::{BTreeMap, BTreeSet};

    use forwarder_common::NeighFlags;
    use netlink_packet_route::{
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        RouteNetlinkMessage,
    };

    use crate::daemon::facts::event_matters;

    fn neigh(addr: [u8; 4], state: NeighbourState, deleted: bool) -> RouteNetlinkMessage {
        let mut m = NeighbourMessage::default();
        m.header.state = state;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                addr.into(),
            )));
        if deleted {
            RouteNetlinkMessage::DelNeighbour(m)
        } else {
            RouteNetlinkMessage::NewNeighbour(m)
        }
    }

    #[test]
    fn only_neighbour_events_about_targets_that_could_change_the_map_reconcile() {
        let target = [10, 2, 0, 99];
        let watched: BTreeSet<_> = [target.into()].into();
        let none = BTreeMap::new();
        let dead: BTreeMap<_, _> = [(target.into(), NeighFlags::STACK)].into();
        use NeighbourState::*;
        let cases = [
            (neigh(target, Failed, false), &none, true),
            (neigh(target, Incomplete, false), &none, true),
            (neigh(target, Failed, true), &none, true),
            // The daily REACHABLE/STALE churn of a live target: nothing.
            (neigh(target, Reachable, false), &none, false),
            (neigh(target, Stale, false), &none, false),
            // ... unless it was dead: then it came back.
            (neigh(target, Reachable, false), &dead, true),
            // Not a target: never.
            (neigh([10, 2, 0, 7], Failed, false), &none, false),
        ];
        for (msg, map, want) in cases {
            assert_eq!(event_matters(&msg, &watched, map), want, "{msg:?}");
        }
        // Links, addresses and routes always do.
        let link = RouteNetlinkMessage::NewLink(Default::default());
        assert!(event_matters(&link, &watched, &none));
    }
}
