//! CONFORMANCE.md rows "ICMP errors" (RFC 5508 REQ-3/REQ-4, RFC 5382
//! REQ-9/10): an ICMP error the backend sends about a forwarded packet
//! reaches the client translated: outer source the forward's address, the
//! quoted packet as the client sent it (its own address and port, the
//! forward's address and port), every checksum valid (the client's kernel
//! accepts it: the socket sees ECONNREFUSED).
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ── backend 10.2.0.2 (5000 closed)
//! ```
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        install, sa, udp_socket, Capture, Forward, Nat, Topo, TopoOpts, BACKEND, CLIENT, ROUTER_LAN,
    },
    netns, require_root,
};

const PORT: u16 = 5000;

fn port_unreachable_is_translated(nat: Nat, snat: bool) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let mut fwd = Forward::new("udp", PORT, BACKEND, PORT);
    fwd.snat = snat;
    let _inst = install(&t, nat, &fwd)?;
    let cap = Capture::open(&t.client, "eth0")?;
    let sock = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let sport = sock.local_addr()?.port();
    sock.connect(sa(ROUTER_LAN, PORT))?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
    sock.send(b"anyone?")?;
    let mut buf = [0u8; 16];
    let err = sock
        .recv(&mut buf)
        .err()
        .context("an answer from a closed port")?;
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{nat:?}: the client's kernel accepted the error: {err}"
    );
    let icmp = cap
        .find(Duration::from_secs(1), |p| {
            !p.outgoing && p.icmp() == Some((3, 3))
        })
        .context("port unreachable not captured")?;
    assert_eq!(
        (icmp.src(), icmp.dst()),
        (ROUTER_LAN, CLIENT),
        "{nat:?}: outer"
    );
    let q = icmp.icmp_quote().context("quote")?;
    assert_eq!(
        (q.src(), q.dst(), q.ports()),
        (CLIENT, ROUTER_LAN, Some((sport, PORT))),
        "{nat:?}: quote as the client sent it"
    );
    Ok(())
}

#[test]
fn iptables_port_unreachable_from_backend_is_translated() -> Result<()> {
    if !require_root("iptables_port_unreachable_from_backend_is_translated") {
        return Ok(());
    }
    port_unreachable_is_translated(Nat::Iptables, true)
}

#[test]
fn forwarder_port_unreachable_from_backend_is_translated() -> Result<()> {
    if !require_root("forwarder_port_unreachable_from_backend_is_translated") {
        return Ok(());
    }
    port_unreachable_is_translated(Nat::Forwarder, true)
}

#[test]
fn iptables_port_unreachable_without_snat_is_translated() -> Result<()> {
    if !require_root("iptables_port_unreachable_without_snat_is_translated") {
        return Ok(());
    }
    port_unreachable_is_translated(Nat::Iptables, false)
}

#[test]
fn forwarder_port_unreachable_without_snat_is_translated() -> Result<()> {
    if !require_root("forwarder_port_unreachable_without_snat_is_translated") {
        return Ok(());
    }
    port_unreachable_is_translated(Nat::Forwarder, false)
}
