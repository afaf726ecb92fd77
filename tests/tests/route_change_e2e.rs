//! A route that changes under an established flow (issue 19): the
//! forwarder caches each flow's FIB answer, and the daemon's route
//! generation bump on the rtnetlink event must send the flow's next packets
//! the new way, as netfilter (which routes every packet) does.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ─┬─ backend 10.2.0.2 (+ 10.9.0.2)
//!                     10.9.0.0/24 via 10.2.0.2, then      └─ other 10.2.0.3: a second
//!                     via 10.2.0.3                           router to 10.9.0.0/24
//! ```
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        echo_round, install, sa, tcp_connect, Capture, Forward, Nat, TcpEcho, Topo, TopoOpts,
        ROUTER_LAN,
    },
    netns, require_root,
};

/// The service address, behind a gateway: first the backend itself, then
/// `other`, which routes it on to the backend.
const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

fn an_established_flow_follows_a_route_change(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    t.backend.addr("eth0", "10.9.0.2/32")?;
    t.router.ip(&[
        "route",
        "add",
        "10.9.0.0/24",
        "via",
        "10.2.0.2",
        "dev",
        "br1",
    ])?;
    // `other` hands the flow back over br1 to the backend: a bridged frame
    // that netfilter must not see a second time (br_netfilter would track
    // it as a new connection and SNAT it again).
    if std::path::Path::new("/proc/sys/net/bridge").exists() {
        t.router.sysctl("net.bridge.bridge-nf-call-iptables", "0")?;
    }
    t.other.sysctl("net.ipv4.ip_forward", "1")?;
    t.other.sysctl("net.ipv4.conf.all.send_redirects", "0")?;
    t.other.sysctl("net.ipv4.conf.eth0.send_redirects", "0")?;
    t.other.ip(&[
        "route",
        "add",
        "10.9.0.0/24",
        "via",
        "10.2.0.2",
        "dev",
        "eth0",
    ])?;
    let echo = TcpEcho::start(&t.backend, sa(SERVICE, 8000), &[])?;
    let _inst = install(&t, nat, &Forward::new("tcp", 8080, SERVICE, 8000))?;
    let mut s = tcp_connect(&t.client, sa(ROUTER_LAN, 8080), Duration::from_secs(10))
        .with_context(|| format!("{nat:?}: connecting"))?;
    let back = echo_round(&mut s, b"before").with_context(|| format!("{nat:?}: before"))?;
    assert_eq!(back, b"before", "{nat:?}");

    // Every packet to the service that reaches `other` from now on.
    let cap = Capture::open(&t.other, "eth0")?;
    let to_service = |p: &forwarder_tests::conformance::Captured| {
        !p.outgoing && p.dst() == SERVICE && p.ports().is_some_and(|(_, d)| d == 8000)
    };
    assert!(
        cap.find(Duration::from_millis(300), to_service).is_none(),
        "{nat:?}: the first route does not pass through other"
    );
    t.router.ip(&[
        "route",
        "replace",
        "10.9.0.0/24",
        "via",
        "10.2.0.3",
        "dev",
        "br1",
    ])?;
    // The same connection, after the route changed: its packets now go
    // through `other` (the daemon hears of the change within moments;
    // asking again until then costs nothing).
    let mut seen = None;
    for i in 0..20 {
        let msg = format!("after {i}");
        let back = echo_round(&mut s, msg.as_bytes())
            .with_context(|| format!("{nat:?}: {msg}: the connection survives the route change"))?;
        assert_eq!(back, msg.as_bytes(), "{nat:?}");
        seen = cap.find(Duration::from_millis(500), to_service);
        if seen.is_some() {
            break;
        }
    }
    let p = seen.with_context(|| format!("{nat:?}: no packet of the flow went through other"))?;
    assert_eq!(
        p.src(),
        forwarder_tests::conformance::ROUTER_BACK,
        "{nat:?}: SNATed"
    );
    assert_eq!(echo.peers().len(), 1, "{nat:?}: one connection throughout");
    Ok(())
}

#[test]
fn iptables_routes_an_established_flow_the_new_way() {
    if !require_root("iptables_routes_an_established_flow_the_new_way") {
        return;
    }
    an_established_flow_follows_a_route_change(Nat::Iptables).unwrap();
}

#[test]
fn the_forwarder_routes_an_established_flow_the_new_way() {
    if !require_root("the_forwarder_routes_an_established_flow_the_new_way") {
        return;
    }
    an_established_flow_follows_a_route_change(Nat::Forwarder).unwrap();
}
