//! CONFORMANCE.md row "MSS": with a route MTU towards the client
//! (`ip route ... mtu lock 1280`, as tailnet and VPN routes carry), the
//! backend's SYN-ACK reaches the client with an MSS of at most 1240, so the
//! backend never sends segments the path cannot carry. The iptables
//! baseline is `TCPMSS --clamp-mss-to-pmtu`; the forwarder's default
//! `mss_clamp = "auto"` must take the route MTU into account, not only
//! interface MTUs (issue 12 item 7).
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router: 10.1.0.2 mtu lock 1280] br1 ── backend 10.2.0.2:7000
//! ```
use std::time::Duration;

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        echo_round, install, sa, tcp_connect, Capture, Captured, Forward, Nat, TcpEcho, Topo,
        TopoOpts, BACKEND, ROUTER_LAN,
    },
    netns, require_root,
};

const PORT: u16 = 7000;

/// The MSS option of a TCP segment, if it has one.
fn mss_of(p: &Captured) -> Option<u16> {
    let l4 = p.l4();
    let hlen = (*l4.get(12)? >> 4) as usize * 4;
    let mut opts = l4.get(20..hlen)?;
    while let [kind, rest @ ..] = opts {
        match kind {
            0 => return None,
            1 => opts = rest,
            2 => return Some(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?])),
            _ => {
                let len = *rest.first()? as usize;
                opts = opts.get(len.max(2)..)?;
            }
        }
    }
    None
}

fn syn_ack_mss_follows_route_mtu(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    t.router.ip(&[
        "route",
        "add",
        "10.1.0.2/32",
        "dev",
        "eth0",
        "mtu",
        "lock",
        "1280",
    ])?;
    let _echo = TcpEcho::start(&t.backend, sa(BACKEND, PORT), &[])?;
    let mut fwd = Forward::new("tcp", PORT, BACKEND, PORT);
    fwd.iptables_extra.push(
        [
            "iptables",
            "-t",
            "mangle",
            "-A",
            "FORWARD",
            "-p",
            "tcp",
            "--tcp-flags",
            "SYN,RST",
            "SYN",
            "-j",
            "TCPMSS",
            "--clamp-mss-to-pmtu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    let _inst = install(&t, nat, &fwd)?;
    let cap = Capture::open(&t.client, "eth0")?;
    let mut s = tcp_connect(&t.client, sa(ROUTER_LAN, PORT), Duration::from_secs(5))?;
    assert_eq!(echo_round(&mut s, b"mss")?, b"mss");
    let syn_ack = cap
        .find(Duration::from_secs(2), |p| {
            !p.outgoing && p.proto() == 6 && p.l4().get(13).is_some_and(|f| f & 0x12 == 0x12)
        })
        .context("no SYN-ACK captured")?;
    let mss = mss_of(&syn_ack).context("SYN-ACK without MSS")?;
    assert!(
        mss <= 1240,
        "{nat:?}: SYN-ACK MSS {mss} > 1240 (route MTU 1280)"
    );
    Ok(())
}

#[test]
fn iptables_clamps_mss_to_the_route_mtu() -> Result<()> {
    if !require_root("iptables_clamps_mss_to_the_route_mtu") {
        return Ok(());
    }
    syn_ack_mss_follows_route_mtu(Nat::Iptables)
}

#[test]
fn forwarder_clamps_mss_to_the_route_mtu() -> Result<()> {
    if !require_root("forwarder_clamps_mss_to_the_route_mtu") {
        return Ok(());
    }
    syn_ack_mss_follows_route_mtu(Nat::Forwarder)
}
