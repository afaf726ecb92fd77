//! CONFORMANCE.md rows "TTL": a packet for a forward that arrives with TTL 1
//! is answered with ICMP time exceeded (11/0) from the router, quoting the
//! packet as the client sent it (destination = the forward's address, not
//! the backend's), and never reaches the backend; a packet with TTL 2
//! arrives with TTL 1 (the router decrements once). traceroute through a
//! forward depends on both.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ── backend 10.2.0.2:5000
//! ```
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        install, sa, udp_socket, Capture, Forward, Nat, Topo, TopoOpts, UdpServer, BACKEND, CLIENT,
        ROUTER_LAN,
    },
    netns,
    process::wait_for,
    require_root,
};

const PORT: u16 = 5000;

fn ttl_one_gets_time_exceeded(nat: Nat, snat: bool) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let server = UdpServer::start(&t.backend, sa(BACKEND, PORT), 0)?;
    let mut fwd = Forward::new("udp", PORT, BACKEND, PORT);
    fwd.snat = snat;
    let inst = install(&t, nat, &fwd)?;
    let client_cap = Capture::open(&t.client, "eth0")?;
    let backend_cap = Capture::open(&t.backend, "eth0")?;
    let sock = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let sport = sock.local_addr()?.port();

    sock.set_ttl(1)?;
    sock.send_to(b"ttl one", sa(ROUTER_LAN, PORT))?;
    let err = client_cap
        .find(Duration::from_secs(3), |p| !p.outgoing && p.proto() == 1)
        .with_context(|| format!("{nat:?}: no ICMP came back for TTL 1"))?;
    assert_eq!(
        err.icmp(),
        Some((11, 0)),
        "{nat:?}: time exceeded in transit"
    );
    assert_eq!(
        err.src(),
        ROUTER_LAN,
        "{nat:?}: sent by the router's client-side address"
    );
    assert_eq!(err.dst(), CLIENT);
    let q = err.icmp_quote().context("quote")?;
    assert_eq!(
        (q.src(), q.dst(), q.ports()),
        (CLIENT, ROUTER_LAN, Some((sport, PORT))),
        "{nat:?}: the error quotes the packet as the client sent it"
    );

    sock.set_ttl(2)?;
    sock.send_to(b"ttl two", sa(ROUTER_LAN, PORT))?;
    let arrived = backend_cap
        .find(Duration::from_secs(3), |p| {
            !p.outgoing && p.proto() == 17 && p.ports().map(|x| x.1) == Some(PORT)
        })
        .with_context(|| format!("{nat:?}: TTL 2 did not reach the backend"))?;
    assert_eq!(arrived.ttl(), 1, "{nat:?}: decremented once");
    // The server thread records what its socket got; give it a moment.
    let seen = wait_for(Duration::from_secs(3), || {
        let s = server.seen();
        (!s.is_empty()).then_some(s)
    })
    .unwrap_or_default();
    assert_eq!(
        seen.len(),
        1,
        "{nat:?}: only the TTL 2 datagram arrives: {seen:?}"
    );
    assert_eq!(seen[0].len, "ttl two".len());
    if inst.daemon.is_some() {
        assert!(
            inst.reason_count("reply_time_exceeded")? >= 1,
            "counted under its own reason"
        );
    }
    Ok(())
}

#[test]
fn iptables_ttl_one_gets_time_exceeded_quoting_the_forward_address() -> Result<()> {
    if !require_root("iptables_ttl_one_gets_time_exceeded_quoting_the_forward_address") {
        return Ok(());
    }
    ttl_one_gets_time_exceeded(Nat::Iptables, true)
}

#[test]
fn forwarder_ttl_one_gets_time_exceeded_quoting_the_forward_address() -> Result<()> {
    if !require_root("forwarder_ttl_one_gets_time_exceeded_quoting_the_forward_address") {
        return Ok(());
    }
    ttl_one_gets_time_exceeded(Nat::Forwarder, true)
}

#[test]
fn iptables_ttl_one_without_snat_gets_time_exceeded() -> Result<()> {
    if !require_root("iptables_ttl_one_without_snat_gets_time_exceeded") {
        return Ok(());
    }
    ttl_one_gets_time_exceeded(Nat::Iptables, false)
}

#[test]
fn forwarder_ttl_one_without_snat_gets_time_exceeded() -> Result<()> {
    if !require_root("forwarder_ttl_one_without_snat_gets_time_exceeded") {
        return Ok(());
    }
    ttl_one_gets_time_exceeded(Nat::Forwarder, false)
}
