//! CONFORMANCE.md rows "port assignment" and "port parity" (RFC 4787
//! REQ-3/REQ-4, RFC 5382 REQ-7, RFC 7857 2.2): SNAT keeps a client's port
//! when it is free (port preservation, parity kept with it), a privileged
//! port stays privileged, and two clients with the same port never share
//! one mapping (no port overloading): the second gets another port.
//!
//! One difference, by design: netfilter keeps any free client port; the
//! forwarder keeps it only inside `snat_ports` (default 1024-32767, below
//! Linux's ephemeral range, so a translated flow never takes the port of a
//! connection the host itself opens later) or below 1024, and draws one
//! from `snat_ports` otherwise.
//!
//! ```text
//! client 10.1.0.2, 10.1.0.3 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ── backend 10.2.0.2:5000
//! ```
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        install, sa, udp_ask, udp_socket, Forward, Nat, Topo, TopoOpts, UdpServer, BACKEND, CLIENT,
        ROUTER_BACK, ROUTER_LAN,
    },
    netns, require_root,
};

const PORT: u16 = 5000;
const SECOND_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

fn ports_kept(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    t.client.addr("eth0", "10.1.0.3/24")?;
    let server = UdpServer::start(&t.backend, sa(BACKEND, PORT), 8)?;
    let _inst = install(&t, nat, &Forward::new("udp", PORT, BACKEND, PORT))?;
    // (client address, client port): in range and odd, privileged, above
    // the forwarder's snat_ports, and the first one's port again from
    // another address.
    let clients = [
        (CLIENT, 20001),
        (CLIENT, 800),
        (CLIENT, 40000),
        (SECOND_CLIENT, 20001),
    ];
    for (addr, port) in clients {
        let s = udp_socket(&t.client, sa(addr, port))?;
        udp_ask(&s, sa(ROUTER_LAN, PORT), b"port?", 3)
            .with_context(|| format!("{nat:?}: from {addr}:{port}"))?;
    }
    let seen: Vec<SocketAddr> = server.seen().iter().map(|s| s.peer).collect();
    assert_eq!(seen.len(), 4, "{nat:?}: {seen:?}");
    assert!(
        seen.iter().all(|p| p.ip() == ROUTER_BACK),
        "{nat:?}: {seen:?}"
    );
    let ports: Vec<u16> = seen.iter().map(SocketAddr::port).collect();
    assert_eq!(ports[0], 20001, "{nat:?}: kept, parity too");
    assert_eq!(ports[1], 800, "{nat:?}: a free privileged port is kept");
    match nat {
        Nat::Iptables => assert_eq!(ports[2], 40000, "netfilter keeps any free port"),
        Nat::Forwarder => assert!(
            (1024..=32767).contains(&ports[2]),
            "drawn from snat_ports: {ports:?}"
        ),
    }
    assert_ne!(ports[3], 20001, "{nat:?}: no overloading: {ports:?}");
    Ok(())
}

#[test]
fn iptables_keeps_free_client_ports() -> Result<()> {
    if !require_root("iptables_keeps_free_client_ports") {
        return Ok(());
    }
    ports_kept(Nat::Iptables)
}

#[test]
fn forwarder_keeps_free_client_ports_in_its_range() -> Result<()> {
    if !require_root("forwarder_keeps_free_client_ports_in_its_range") {
        return Ok(());
    }
    ports_kept(Nat::Forwarder)
}
