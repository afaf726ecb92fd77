//! What the kernel does about targets whose next hop does not answer
//! (`FWD_NEIGH`), decided from the neighbour table: part of `plan`, pure.
//!
//! A redirect (`bpf_redirect_neigh`) to a neighbour that never answers ARP
//! queues and is dropped without a trace, and a FIB lookup's NO_NEIGH
//! cannot tell "not resolved yet" from "ARP gave up". The kernel's own
//! neighbour state can: FAILED. So per IPv4 target, its next hop (the
//! target itself on an on-link route, else its route's gateway, exactly
//! the next hop the kernel program's FIB lookup returns) is followed:
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
//! The map is keyed by next hop (what `path::decide` and `translate` look
//! up after their FIB lookup) and, for a target behind a dead gateway,
//! also by the target with the same flags (what `neigh_died` looks up from
//! a flow entry, which keeps the target, not the hop). A target is never
//! the next hop of another target's route while it is behind a gateway
//! itself, so the two kinds of keys never disagree.
//!
//! The one fact a reader gets wrong: a next hop's first FAILED takes the
//! kernel's ARP give-up time (3 probes 1 s apart), and the packets queued
//! until then are lost exactly as a router loses them; what changes is
//! every packet after that.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use forwarder_common::NeighFlags;
use rules::{Forward, PathMode, Snat};

use super::{Facts, NeighState, Route};

/// The next hop of each IPv4 target with a route: the target itself
/// (on-link) or its IPv4 gateway. IPv6 neighbours are not followed
/// (neighbour discovery is never touched, issue 13).
pub fn next_hops(routes: &BTreeMap<IpAddr, Option<Route>>) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
    routes
        .iter()
        .filter_map(|(t, r)| {
            let IpAddr::V4(t) = t else { return None };
            match r.as_ref()?.gateway {
                None => Some((*t, *t)),
                Some(IpAddr::V4(g)) => Some((*t, g)),
                // An IPv6 next hop of an IPv4 route (RTA_VIA): not followed.
                Some(IpAddr::V6(_)) => None,
            }
        })
        .collect()
}

/// The neighbours whose entries matter: every target's next hop.
pub fn watched(facts: &Facts) -> BTreeSet<Ipv4Addr> {
    next_hops(&facts.routes).into_values().collect()
}

/// What the kernel does about next hop `hop` now (see the module comment).
fn hop_flags(facts: &Facts, hop: Ipv4Addr) -> Option<NeighFlags> {
    let was_dead = facts.neigh_map.contains_key(&hop);
    match (facts.neighbours.get(&hop).map(|n| n.state), was_dead) {
        (Some(NeighState::Failed), _) | (Some(NeighState::Incomplete), true) => {
            Some(NeighFlags::STACK | NeighFlags::UNREACHABLE)
        }
        (None, true) => Some(NeighFlags::STACK),
        _ => None,
    }
}

/// What `FWD_NEIGH` should hold (see the module comment).
pub fn plan(facts: &Facts) -> BTreeMap<Ipv4Addr, NeighFlags> {
    let mut out = BTreeMap::new();
    for (target, hop) in next_hops(&facts.routes) {
        if let Some(flags) = hop_flags(facts, hop) {
            out.insert(hop, flags);
            out.insert(target, flags);
        }
    }
    out
}

/// Whether forward `f`'s flows to `target` may go through the stack
/// because of its next hop (now, or earlier in this daemon's life: such
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

/// What happens to flows that keep the client's address and go through
/// the stack: the two outcomes a router gives, named exactly.
const THROUGH_THE_STACK: &str = "through the stack, where a PREROUTING DNAT takes them (a \
                                 virtual target) or the stack's ARP fails and answers ICMP \
                                 host unreachable (3/1)";
const HOST_UNREACH_IN_BPF: &str = "answered ICMP host unreachable (3/1) built in BPF, \
                                   counted reply_host_unreach";

/// The sentence `status` and `explain` add to a forward's decision while
/// its target's next hop is dead; `None` while it is not.
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
    let hop = next_hops(&facts.routes).get(&target).copied()?;
    let n = facts.neighbours.get(&hop);
    let state = n.map_or("gone from the neighbour table after failing", |n| {
        n.state.name()
    });
    let link = n
        .and_then(|n| facts.link(n.ifindex))
        .or_else(|| facts.route_link(IpAddr::V4(target)))
        .map_or("?", |l| l.name.as_str());
    let unreachable = flags.contains(NeighFlags::UNREACHABLE);
    let snated = if unreachable {
        HOST_UNREACH_IN_BPF.to_string()
    } else {
        "redirected again, which probes it".to_string()
    };
    // The counter the kernel uses: `fwd_stack_neigh_dead` only where the
    // dead hop is what turned a redirect into the stack path; behind a
    // gateway (path "auto") and with path "stack" they took it anyway.
    let counted = match f.path {
        PathMode::Stack => "fwd_stack",
        PathMode::Auto if hop != target => "fwd_stack",
        _ => "fwd_stack_neigh_dead",
    };
    let what = match f.snat {
        Snat::Off => format!("new flows go {THROUGH_THE_STACK}, counted {counted}"),
        Snat::Auto => format!(
            "new flows that keep the client's address go {THROUGH_THE_STACK}, counted \
             {counted}; SNATed ones are {snated}"
        ),
        Snat::Fixed(_) | Snat::Masquerade => format!("new flows are {snated}"),
    };
    let whose = if hop == target {
        format!("target's neighbour {target}")
    } else {
        format!("target {target}'s gateway {hop}")
    };
    Some(format!(
        "{whose} on {link} is {state} (no ARP answer): {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{daemon::facts::Neighbour, ifaces::Iface};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    const ON_LINK: &str = "10.2.0.99";
    const BEHIND: &str = "172.16.0.9";
    const GATEWAY: &str = "10.2.0.1";

    /// An on-link target and one behind a gateway on the same link, whose
    /// own neighbour entry (a stale FAILED one) must never count.
    fn facts(hop: &str, state: Option<NeighState>, was: Option<NeighFlags>) -> Facts {
        let mut f = Facts::default();
        let route = |gateway: Option<&str>| {
            Some(Route {
                oif: 3,
                gateway: gateway.map(|g| ip(g).into()),
                prefsrc: None,
            })
        };
        f.routes.insert(ip(ON_LINK).into(), route(None));
        f.routes.insert(ip(BEHIND).into(), route(Some(GATEWAY)));
        if hop != BEHIND {
            f.neighbours.insert(
                ip(BEHIND),
                Neighbour {
                    ifindex: 3,
                    state: NeighState::Failed,
                },
            );
        }
        if let Some(state) = state {
            f.neighbours
                .insert(ip(hop), Neighbour { ifindex: 3, state });
        }
        if let Some(w) = was {
            f.neigh_map.insert(ip(hop), w);
        }
        f.links.insert(
            "br1".into(),
            Iface {
                name: "br1".into(),
                ifindex: 3,
                l3: false,
                mtu: 1500,
                kind: Some("bridge".into()),
                up: true,
            },
        );
        f
    }

    /// The state table, for the on-link target's own neighbour and for the
    /// gateway of the target behind it: the same decision, keyed by the
    /// next hop and by the target.
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
        for (hop, target) in [(ON_LINK, ON_LINK), (GATEWAY, BEHIND)] {
            for (state, was, want) in cases {
                let got = plan(&facts(hop, *state, *was));
                let what = format!("{hop}: {state:?} after {was:?}");
                assert_eq!(got.get(&ip(hop)).copied(), *want, "{what}");
                assert_eq!(got.get(&ip(target)).copied(), *want, "{what}");
                let keys = if hop == target { 1 } else { 2 };
                assert_eq!(got.len(), want.map_or(0, |_| keys), "{what}: {got:?}");
            }
        }
    }

    #[test]
    fn next_hops_are_targets_on_link_and_gateways_otherwise() {
        let f = facts(GATEWAY, None, None);
        let hops = next_hops(&f.routes);
        assert_eq!(hops[&ip(ON_LINK)], ip(ON_LINK));
        assert_eq!(hops[&ip(BEHIND)], ip(GATEWAY));
        assert_eq!(watched(&f), [ip(GATEWAY), ip(ON_LINK)].into());
    }

    fn forward(snat: &str, to: &str) -> Forward {
        forward_on(snat, to, "auto")
    }

    fn forward_on(snat: &str, to: &str, path: &str) -> Forward {
        let text = format!(
            "[[forward]]\nname = \"f\"\nin = \"eth0\"\nport = 80\nto = \"{to}:80\"\nsnat = \"{snat}\"\npath = \"{path}\"\n"
        );
        rules::load_str("r.toml", &text).unwrap().rules.forwards[0].clone()
    }

    /// The sentence names the dead next hop, its state and link, and says
    /// exactly what each kind of flow gets.
    #[test]
    fn the_sentence_names_the_hop_and_what_flows_get() {
        let f = facts(GATEWAY, Some(NeighState::Failed), None);
        let neigh = plan(&f);
        let behind: IpAddr = ip(BEHIND).into();
        assert_eq!(
            explain(&forward("10.2.0.1", BEHIND), &f, &neigh, behind).unwrap(),
            "target 172.16.0.9's gateway 10.2.0.1 on br1 is FAILED (no ARP answer): new flows \
             are answered ICMP host unreachable (3/1) built in BPF, counted reply_host_unreach"
        );
        assert_eq!(
            explain(&forward("off", BEHIND), &f, &neigh, behind).unwrap(),
            "target 172.16.0.9's gateway 10.2.0.1 on br1 is FAILED (no ARP answer): new flows \
             go through the stack, where a PREROUTING DNAT takes them (a virtual target) or the \
             stack's ARP fails and answers ICMP host unreachable (3/1), counted fwd_stack"
        );
        let auto = explain(&forward("auto", BEHIND), &f, &neigh, behind).unwrap();
        assert!(
            auto.contains("keep the client's address go through the stack")
                && auto.ends_with("SNATed ones are answered ICMP host unreachable (3/1) built in BPF, counted reply_host_unreach"),
            "{auto}"
        );
        // The counter: fwd_stack_neigh_dead only where the dead hop turned a
        // redirect into the stack path.
        let redirected = explain(&forward_on("off", BEHIND, "redirect"), &f, &neigh, behind);
        assert!(
            redirected
                .unwrap()
                .ends_with("counted fwd_stack_neigh_dead"),
            "path redirect"
        );
        let stack = explain(&forward_on("off", BEHIND, "stack"), &f, &neigh, behind);
        assert!(stack.unwrap().ends_with("counted fwd_stack"), "path stack");
        // The on-link target's neighbour is alive here: nothing to say.
        let on_link: IpAddr = ip(ON_LINK).into();
        assert_eq!(
            explain(&forward("auto", ON_LINK), &f, &neigh, on_link),
            None
        );

        // Gone after failing: SNATed flows probe it again.
        let f = facts(ON_LINK, None, Some(NeighFlags::STACK));
        let neigh = plan(&f);
        let off = explain(&forward("off", ON_LINK), &f, &neigh, on_link).unwrap();
        assert!(off.ends_with("counted fwd_stack_neigh_dead"), "{off}");
        assert_eq!(
            explain(&forward("masquerade", ON_LINK), &f, &neigh, on_link).unwrap(),
            "target's neighbour 10.2.0.99 on br1 is gone from the neighbour table after \
             failing (no ARP answer): new flows are redirected again, which probes it"
        );
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
