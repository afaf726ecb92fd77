//! CONFORMANCE.md row "ICMP echo": forwards are TCP/UDP ports, so an echo
//! request to a forward's address is the host's own business: the router
//! answers it itself, with iptables and with the forwarder alike, and the
//! backend never sees it.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ── backend 10.2.0.2
//! ```
use std::time::Duration;

use anyhow::Result;
use forwarder_tests::{
    conformance::{install, Capture, Forward, Nat, Topo, TopoOpts, BACKEND},
    netns, require_root,
};

fn echo_is_answered_by_the_host(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let _inst = install(&t, nat, &Forward::new("udp", 5000, BACKEND, 5000))?;
    let cap = Capture::open(&t.backend, "eth0")?;
    let out = t
        .client
        .output(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.1"])?;
    assert!(out.contains("3 received"), "{nat:?}: {out}");
    let leaked = cap.find(Duration::from_millis(500), |p| p.proto() == 1);
    assert!(
        leaked.is_none(),
        "{nat:?}: echo reached the backend: {leaked:?}"
    );
    Ok(())
}

#[test]
fn iptables_echo_to_the_forward_address_is_answered_by_the_host() -> Result<()> {
    if !require_root("iptables_echo_to_the_forward_address_is_answered_by_the_host") {
        return Ok(());
    }
    echo_is_answered_by_the_host(Nat::Iptables)
}

#[test]
fn forwarder_echo_to_the_forward_address_is_answered_by_the_host() -> Result<()> {
    if !require_root("forwarder_echo_to_the_forward_address_is_answered_by_the_host") {
        return Ok(());
    }
    echo_is_answered_by_the_host(Nat::Forwarder)
}
