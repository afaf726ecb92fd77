//! CONFORMANCE.md row "IP options": a TCP connection whose packets start
//! carrying IPv4 options mid-flow (both ways: the client and the backend
//! set a 4-byte NOP/EOL option list) keeps being translated: the echo keeps
//! answering, and the backend still sees the address the rule says. A UDP
//! flow whose first datagram carries options is translated too.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ── backend 10.2.0.2:7000
//! ```
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        echo_round, install, sa, set_ip_options, tcp_connect, udp_ask, udp_socket, Capture,
        Forward, Nat, TcpEcho, Topo, TopoOpts, UdpServer, BACKEND, ROUTER_BACK, ROUTER_LAN,
    },
    netns, require_root,
};

const PORT: u16 = 7000;
/// NOP, NOP, NOP, end of list: a legal 4-byte option block that every
/// router forwards unchanged.
const OPTIONS: [u8; 4] = [1, 1, 1, 0];

fn options_keep_being_translated(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let echo = TcpEcho::start(&t.backend, sa(BACKEND, PORT), &[])?;
    let tcp = Forward::new("tcp", PORT, BACKEND, PORT);
    let _inst = install(&t, nat, &tcp)?;
    let cap = Capture::open(&t.backend, "eth0")?;
    let mut s = tcp_connect(&t.client, sa(ROUTER_LAN, PORT), Duration::from_secs(5))?;
    assert_eq!(echo_round(&mut s, b"before options")?, b"before options");
    set_ip_options(&s, &OPTIONS)?;
    for i in 0..5 {
        let msg = format!("with options {i}");
        let back = echo_round(&mut s, msg.as_bytes())
            .with_context(|| format!("{nat:?}: echo {i} after options were set"))?;
        assert_eq!(back, msg.as_bytes());
    }
    let with_opts = cap
        .find(Duration::from_secs(2), |p| !p.outgoing && p.ihl() > 20)
        .with_context(|| format!("{nat:?}: no packet with options reached the backend"))?;
    assert_eq!(
        with_opts.src(),
        ROUTER_BACK,
        "{nat:?}: translated with options"
    );
    assert_eq!(echo.peers().len(), 1, "{nat:?}: one connection");
    Ok(())
}

fn first_datagram_with_options_is_translated(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let server = UdpServer::start(&t.backend, sa(BACKEND, PORT), 64)?;
    let fwd = Forward::new("udp", PORT, BACKEND, PORT);
    let _inst = install(&t, nat, &fwd)?;
    let sock = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    set_ip_options(&sock, &OPTIONS)?;
    let (data, from) = udp_ask(&sock, sa(ROUTER_LAN, PORT), b"opts", 3)
        .with_context(|| format!("{nat:?}: no answer to a datagram with options"))?;
    assert_eq!((data.len(), from), (64, sa(ROUTER_LAN, PORT).into()));
    let seen = server.seen();
    assert!(
        seen.iter().all(|s| s.peer.ip() == ROUTER_BACK),
        "{nat:?}: {seen:?}"
    );
    Ok(())
}

#[test]
fn iptables_tcp_flow_with_options_mid_flow_keeps_being_translated() -> Result<()> {
    if !require_root("iptables_tcp_flow_with_options_mid_flow_keeps_being_translated") {
        return Ok(());
    }
    options_keep_being_translated(Nat::Iptables)
}

#[test]
fn forwarder_tcp_flow_with_options_mid_flow_keeps_being_translated() -> Result<()> {
    if !require_root("forwarder_tcp_flow_with_options_mid_flow_keeps_being_translated") {
        return Ok(());
    }
    options_keep_being_translated(Nat::Forwarder)
}

#[test]
fn iptables_udp_flow_starting_with_options_is_translated() -> Result<()> {
    if !require_root("iptables_udp_flow_starting_with_options_is_translated") {
        return Ok(());
    }
    first_datagram_with_options_is_translated(Nat::Iptables)
}

#[test]
fn forwarder_udp_flow_starting_with_options_is_translated() -> Result<()> {
    if !require_root("forwarder_udp_flow_starting_with_options_is_translated") {
        return Ok(());
    }
    first_datagram_with_options_is_translated(Nat::Forwarder)
}
