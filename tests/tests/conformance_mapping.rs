//! CONFORMANCE.md rows "Mapping" and "Filtering" (RFC 4787 REQ-1, REQ-8;
//! RFC 5382 REQ-1, REQ-3): one client socket keeps one mapping (the backend
//! sees the same source address and port for every datagram of it); two
//! sockets get two; and a host that is not the flow's backend cannot reach
//! the client through the mapping (the SNAT port only answers the backend).
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ─┬─ backend 10.2.0.2:5000
//!                                                         └─ other   10.2.0.3
//! ```
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        install, sa, udp_ask, udp_socket, Forward, Nat, Topo, TopoOpts, UdpServer, BACKEND,
        ROUTER_BACK, ROUTER_LAN,
    },
    netns, require_root,
};

const PORT: u16 = 5000;

fn one_mapping_per_session(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let server = UdpServer::start(&t.backend, sa(BACKEND, PORT), 8)?;
    let _inst = install(&t, nat, &Forward::new("udp", PORT, BACKEND, PORT))?;
    let a = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let b = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    for s in [&a, &a, &a, &b, &b] {
        udp_ask(s, sa(ROUTER_LAN, PORT), b"map", 3).with_context(|| format!("{nat:?}"))?;
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 5, "{nat:?}: {seen:?}");
    assert!(seen.iter().all(|s| s.peer.ip() == ROUTER_BACK));
    let ports: Vec<u16> = seen.iter().map(|s| s.peer.port()).collect();
    assert!(
        ports[0] == ports[1] && ports[1] == ports[2],
        "{nat:?}: {ports:?}"
    );
    assert!(
        ports[3] == ports[4] && ports[3] != ports[0],
        "{nat:?}: {ports:?}"
    );

    // Filtering: another host on the backend's link aims at a's mapping.
    let intruder = udp_socket(&t.other, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    intruder.send_to(b"intruder", sa(ROUTER_BACK, ports[0]))?;
    a.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 64];
    match a.recv_from(&mut buf) {
        Ok((n, from)) => panic!("{nat:?}: {n} bytes from {from} reached the client"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{nat:?}: {e}"
        ),
    }
    Ok(())
}

#[test]
fn iptables_keeps_one_mapping_per_session_and_filters_strangers() -> Result<()> {
    if !require_root("iptables_keeps_one_mapping_per_session_and_filters_strangers") {
        return Ok(());
    }
    one_mapping_per_session(Nat::Iptables)
}

#[test]
fn forwarder_keeps_one_mapping_per_session_and_filters_strangers() -> Result<()> {
    if !require_root("forwarder_keeps_one_mapping_per_session_and_filters_strangers") {
        return Ok(());
    }
    one_mapping_per_session(Nat::Forwarder)
}
