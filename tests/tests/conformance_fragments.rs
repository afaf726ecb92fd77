//! CONFORMANCE.md row "Fragments": a 3000-byte UDP datagram (fragmented by
//! the client on its 1500-byte link) reaches the backend whole, from the
//! address the rule says, and the backend's 3000-byte answer (fragmented by
//! the backend) comes back whole from the forward's address; no fragment
//! on the client's wire carries the backend's own address.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ── backend 10.2.0.2:5000
//! ```
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        install, sa, udp_ask, udp_socket, Capture, Forward, Nat, Topo, TopoOpts, UdpServer,
        BACKEND, CLIENT, ROUTER_BACK, ROUTER_LAN,
    },
    netns, require_root,
    servers::pseudo_random,
};
use std::time::Duration;

const PORT: u16 = 5000;
const SIZE: usize = 3000;

fn big_datagrams_cross_both_ways(nat: Nat, snat: bool) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let server = UdpServer::start(&t.backend, sa(BACKEND, PORT), SIZE)?;
    let mut fwd = Forward::new("udp", PORT, BACKEND, PORT);
    fwd.snat = snat;
    let _inst = install(&t, nat, &fwd)?;
    let client_cap = Capture::open(&t.client, "eth0")?;
    let sock = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let request = pseudo_random(SIZE);
    let (data, from) = udp_ask(&sock, sa(ROUTER_LAN, PORT), &request, 3)
        .with_context(|| format!("{nat:?}: no answer; backend saw {:?}", server.seen()))?;
    assert_eq!(from, sa(ROUTER_LAN, PORT).into(), "{nat:?}: answer source");
    assert_eq!(data.len(), SIZE, "{nat:?}: answer size");
    let seen = server.seen();
    let peer = if snat { ROUTER_BACK } else { CLIENT };
    assert!(
        seen.iter().all(|s| s.len == SIZE && s.peer.ip() == peer),
        "{nat:?}: backend saw {seen:?}"
    );
    let wire = client_cap.drain(Duration::from_millis(300), Duration::from_secs(3));
    let frags: Vec<_> = wire
        .iter()
        .filter(|p| !p.outgoing && p.is_fragment())
        .collect();
    assert!(
        frags.len() >= 3,
        "{nat:?}: the answer came in fragments: {}",
        frags.len()
    );
    assert!(
        frags.iter().all(|p| p.src() == ROUTER_LAN),
        "{nat:?}: every fragment from the forward's address"
    );
    Ok(())
}

#[test]
fn iptables_3000_byte_datagrams_cross_both_ways() -> Result<()> {
    if !require_root("iptables_3000_byte_datagrams_cross_both_ways") {
        return Ok(());
    }
    big_datagrams_cross_both_ways(Nat::Iptables, true)
}

#[test]
fn forwarder_3000_byte_datagrams_cross_both_ways() -> Result<()> {
    if !require_root("forwarder_3000_byte_datagrams_cross_both_ways") {
        return Ok(());
    }
    big_datagrams_cross_both_ways(Nat::Forwarder, true)
}

#[test]
fn iptables_3000_byte_datagrams_cross_without_snat() -> Result<()> {
    if !require_root("iptables_3000_byte_datagrams_cross_without_snat") {
        return Ok(());
    }
    big_datagrams_cross_both_ways(Nat::Iptables, false)
}

#[test]
fn forwarder_3000_byte_datagrams_cross_without_snat() -> Result<()> {
    if !require_root("forwarder_3000_byte_datagrams_cross_without_snat") {
        return Ok(());
    }
    big_datagrams_cross_both_ways(Nat::Forwarder, false)
}
