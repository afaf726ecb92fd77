//! What `FWD_ROUTE_HINTS` should hold: the route facts of each IPv4 target
//! (`ip route get`: egress interface, source address), which the kernel
//! programs read where bpf_fib_lookup cannot answer them (no
//! BPF_FIB_LOOKUP_SKIP_NEIGH before 6.3, no BPF_FIB_LOOKUP_SRC before 6.8;
//! forwarder-ebpf's `fib`). Part of `plan`, pure.
//!
//! Written on every kernel, not only those that read it: the same map
//! contents everywhere, so a test on a current kernel with the fallback
//! forced (FORWARDER_FORCE_FALLBACK) runs exactly what 5.10 runs.
//!
//! The one fact a reader gets wrong: these are the daemon's answers for
//! the host's own output route to the target (`ip route get TARGET`),
//! refreshed on every route change it hears of; policy routing that sends
//! a client's packets another way than the host's own is not seen here.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use forwarder_common::RouteHint;

use super::Facts;

/// One entry per IPv4 target with a forwarding route. A route without a
/// preferred source gets source 0: the kernel programs then treat the
/// target as unrouted on a kernel without SRC (through the stack).
pub fn plan(facts: &Facts) -> BTreeMap<Ipv4Addr, RouteHint> {
    facts
        .routes
        .iter()
        .filter_map(|(target, route)| match (target, route) {
            (IpAddr::V4(t), Some(r)) => Some((
                *t,
                RouteHint {
                    oif: r.oif,
                    src: match r.prefsrc {
                        Some(IpAddr::V4(s)) => u32::from_ne_bytes(s.octets()),
                        _ => 0,
                    },
                    mtu: mtu_through(facts, r.oif),
                },
            )),
            _ => None,
        })
        .collect()
}

/// The MTU of packets leaving by `oif`: its link's, lowered by the lowest
/// route `mtu` through it (as `mss_clamp = "auto"` takes it); 0 when the
/// link is not known.
fn mtu_through(facts: &Facts, oif: u32) -> u32 {
    let link = facts
        .links
        .values()
        .find(|l| l.ifindex == oif)
        .map_or(0, |l| l.mtu);
    match facts.route_mtus.get(&oif) {
        Some(&m) if link == 0 || m < link => m,
        _ => link,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::facts::Route;

    #[test]
    fn every_routed_ipv4_target_gets_its_interface_and_source() {
        let mut facts = Facts::default();
        let lan: Ipv4Addr = "10.0.0.5".parse().unwrap();
        let far: Ipv4Addr = "192.0.2.9".parse().unwrap();
        let src: Ipv4Addr = "10.0.0.1".parse().unwrap();
        facts.routes.insert(
            lan.into(),
            Some(Route {
                oif: 4,
                gateway: None,
                prefsrc: Some(src.into()),
            }),
        );
        facts.routes.insert(
            far.into(),
            Some(Route {
                oif: 7,
                gateway: Some("10.0.0.254".parse().unwrap()),
                prefsrc: None,
            }),
        );
        facts
            .routes
            .insert("10.9.9.9".parse::<Ipv4Addr>().unwrap().into(), None);
        facts.routes.insert(
            "2001:db8::1".parse().unwrap(),
            Some(Route {
                oif: 4,
                gateway: None,
                prefsrc: Some("2001:db8::2".parse().unwrap()),
            }),
        );
        for (name, ifindex, mtu) in [("lan0", 4, 1500), ("wg0", 7, 1420)] {
            facts.links.insert(
                name.into(),
                crate::ifaces::Iface {
                    name: name.into(),
                    ifindex,
                    l3: false,
                    mtu,
                    kind: None,
                    up: true,
                },
            );
        }
        // A route `mtu 1280` through wg0 lowers what leaves by it.
        facts.route_mtus.insert(7, 1280);
        let hints = plan(&facts);
        assert_eq!(hints.len(), 2, "{hints:?}");
        assert_eq!(
            hints[&lan],
            RouteHint {
                oif: 4,
                src: u32::from_ne_bytes(src.octets()),
                mtu: 1500,
            }
        );
        assert_eq!(
            hints[&far],
            RouteHint {
                oif: 7,
                src: 0,
                mtu: 1280
            }
        );
    }
}
