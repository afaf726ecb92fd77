//! CONFORMANCE.md row "hairpinning" (RFC 4787 REQ-9, RFC 5382 REQ-8): a
//! host on the inside (the backend's own link) connects to the forward's
//! outside address and must reach the backend, with the router's address
//! as the source the backend sees (else the backend answers the inside
//! host directly, which drops an answer from an address it never asked).
//!
//! netfilter does it when the DNAT rule also matches the inside interface
//! and a SNAT covers inside clients; the forwarder when a second forward
//! listens on the inside interface (a forward always names its `in`, like
//! `-i` in the DNAT rule; `snat = "auto"` then picks SNAT by itself: the
//! backend is reached through the interface the client came in on). Both
//! halves run the same two steps: with the outside rule alone the inside
//! client meets the router's closed port (connection refused); with the
//! inside rule too it reaches the backend, which sees 10.2.0.1.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ─┬─ backend 10.2.0.2:8000
//!                                                         └─ other   10.2.0.3 (the inside client)
//! ```
use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        echo_round, install_toml, sa, tcp_connect, Forward, Nat, TcpEcho, Topo, TopoOpts, BACKEND,
        ROUTER_BACK, ROUTER_LAN,
    },
    netns, require_root,
};

/// The forward, and with `inside` its hairpin twin on br1.
fn forward(inside: bool) -> (Forward, String) {
    let mut f = Forward::new("tcp", 8080, BACKEND, 8000);
    f.snat = false;
    if !inside {
        return (f, String::new());
    }
    let (lan, back, to) = (
        ROUTER_LAN.to_string(),
        ROUTER_BACK.to_string(),
        BACKEND.to_string(),
    );
    let dnat = [
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-i",
        "br1",
        "-d",
        &lan,
        "-p",
        "tcp",
        "--dport",
        "8080",
        "-j",
        "DNAT",
        "--to-destination",
        "10.2.0.2:8000",
    ];
    let snat = [
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.2.0.0/24",
        "-d",
        &to,
        "-p",
        "tcp",
        "--dport",
        "8000",
        "-j",
        "SNAT",
        "--to-source",
        &back,
    ];
    f.iptables_extra = vec![
        dnat.iter().map(|s| s.to_string()).collect(),
        snat.iter().map(|s| s.to_string()).collect(),
    ];
    let twin = format!(
        "[[forward]]\nname = \"hairpin\"\nin = \"br1\"\nlisten = \"{lan}\"\nproto = \"tcp\"\n\
         port = 8080\nto = \"{to}:8000\"\nsnat = \"auto\"\n"
    );
    (f, twin)
}

fn hairpin(nat: Nat, inside: bool) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let echo = TcpEcho::start(&t.backend, sa(BACKEND, 8000), &[])?;
    let (f, twin) = forward(inside);
    let inst = install_toml(&t, nat, &f, &twin)?;
    // The outside client works either way (proves the forward).
    let mut s = tcp_connect(&t.client, sa(ROUTER_LAN, 8080), Duration::from_secs(10))
        .context("outside client")?;
    assert_eq!(echo_round(&mut s, b"outside")?, b"outside");
    let inside_client = tcp_connect(&t.other, sa(ROUTER_LAN, 8080), Duration::from_secs(10));
    if !inside {
        let e = inside_client.expect_err("no hairpin rule: the router's own closed port");
        let io = e.downcast_ref::<std::io::Error>().map(|e| e.kind());
        assert_eq!(io, Some(ErrorKind::ConnectionRefused), "{nat:?}: {e:#}");
        return Ok(());
    }
    let mut s = inside_client.with_context(|| format!("{nat:?}: inside client"))?;
    assert_eq!(echo_round(&mut s, b"hairpin")?, b"hairpin");
    assert_eq!(
        s.peer_addr()?,
        SocketAddr::new(IpAddr::V4(ROUTER_LAN), 8080)
    );
    // The backend saw the outside client as itself (no SNAT on eth0's
    // forward) and the inside one as the router.
    let peers: Vec<IpAddr> = echo.peers().iter().map(SocketAddr::ip).collect();
    assert_eq!(
        peers,
        vec![
            IpAddr::V4(forwarder_tests::conformance::CLIENT),
            IpAddr::V4(ROUTER_BACK)
        ],
        "{nat:?}"
    );
    if nat == Nat::Forwarder {
        // Both connections were the forwarder's (redirected, not the
        // stack's NAT: there is none in this half).
        assert!(inst.reason_count("fwd_redirect")? >= 4);
    }
    Ok(())
}

#[test]
fn iptables_without_an_inside_rule_the_inside_client_meets_a_closed_port() -> Result<()> {
    if !require_root("iptables_without_an_inside_rule_the_inside_client_meets_a_closed_port") {
        return Ok(());
    }
    hairpin(Nat::Iptables, false)
}

#[test]
fn forwarder_without_an_inside_forward_the_inside_client_meets_a_closed_port() -> Result<()> {
    if !require_root("forwarder_without_an_inside_forward_the_inside_client_meets_a_closed_port") {
        return Ok(());
    }
    hairpin(Nat::Forwarder, false)
}

#[test]
fn iptables_hairpins_with_an_inside_rule_and_snat() -> Result<()> {
    if !require_root("iptables_hairpins_with_an_inside_rule_and_snat") {
        return Ok(());
    }
    hairpin(Nat::Iptables, true)
}

#[test]
fn forwarder_hairpins_with_an_inside_forward() -> Result<()> {
    if !require_root("forwarder_hairpins_with_an_inside_forward") {
        return Ok(());
    }
    hairpin(Nat::Forwarder, true)
}
