//! CONFORMANCE.md rows "DSCP/ECN", "IP ID", "DF", "TTL decrement": a
//! forward changes addresses and ports and nothing else a router keeps.
//! The TOS byte (DSCP and ECN bits), the IP identification and the DF flag
//! arrive as the client sent them, and the TTL is one less; the same holds
//! for the backend's answer.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ── backend 10.2.0.2:5000
//! ```
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        install, sa, set_pmtudisc, set_tos, udp_socket, Capture, Forward, Nat, Topo, TopoOpts,
        UdpServer, BACKEND, CLIENT, ROUTER_BACK, ROUTER_LAN,
    },
    netns, require_root,
};

const PORT: u16 = 5000;
/// DSCP EF (46) with ECT(0).
const CLIENT_TOS: u8 = (46 << 2) | 0b10;
/// DSCP AF11 (10) with CE: a congestion mark must survive too.
const BACKEND_TOS: u8 = (10 << 2) | 0b11;

fn header_fields_survive(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let _server = UdpServer::start_with(&t.backend, sa(BACKEND, PORT), 32, |s| {
        set_tos(s, BACKEND_TOS)?;
        set_pmtudisc(s, libc::IP_PMTUDISC_DO)
    })?;
    let _inst = install(&t, nat, &Forward::new("udp", PORT, BACKEND, PORT))?;
    let client_cap = Capture::open(&t.client, "eth0")?;
    let backend_cap = Capture::open(&t.backend, "eth0")?;
    let sock = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    set_tos(&sock, CLIENT_TOS)?;
    set_pmtudisc(&sock, libc::IP_PMTUDISC_DO)?;
    // Connected: Linux then numbers DF packets (unconnected ones get ID 0).
    sock.connect(sa(ROUTER_LAN, PORT))?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
    sock.send(b"fields")?;
    let mut buf = [0u8; 64];
    let n = sock
        .recv(&mut buf)
        .with_context(|| format!("{nat:?}: no answer"))?;
    assert_eq!(n, 32);

    let udp_to = |dport: u16| {
        move |p: &forwarder_tests::conformance::Captured| {
            p.proto() == 17 && p.ports().map(|x| x.1) == Some(dport)
        }
    };
    let sent = client_cap.find(Duration::from_secs(1), |p| p.outgoing && udp_to(PORT)(p));
    let sent = sent.context("client's datagram not captured")?;
    let arrived = backend_cap
        .find(Duration::from_secs(1), |p| !p.outgoing && udp_to(PORT)(p))
        .context("datagram not captured at the backend")?;
    assert_eq!(arrived.src(), ROUTER_BACK, "{nat:?}");
    assert_eq!(arrived.tos(), CLIENT_TOS, "{nat:?}: DSCP/ECN kept");
    assert_eq!(arrived.id(), sent.id(), "{nat:?}: IP ID kept");
    assert!(arrived.df(), "{nat:?}: DF kept");
    assert_eq!(
        arrived.ttl(),
        sent.ttl() - 1,
        "{nat:?}: TTL decremented once"
    );

    let answered = backend_cap
        .find(Duration::from_secs(1), |p| p.outgoing && p.proto() == 17)
        .context("answer not captured at the backend")?;
    let back = client_cap
        .find(Duration::from_secs(1), |p| !p.outgoing && p.proto() == 17)
        .context("answer not captured at the client")?;
    assert_eq!((back.src(), back.dst()), (ROUTER_LAN, CLIENT), "{nat:?}");
    assert_eq!(back.tos(), BACKEND_TOS, "{nat:?}: DSCP/ECN (CE) kept");
    assert_eq!(back.id(), answered.id(), "{nat:?}: IP ID kept");
    assert!(back.df(), "{nat:?}: DF kept");
    assert_eq!(
        back.ttl(),
        answered.ttl() - 1,
        "{nat:?}: TTL decremented once"
    );
    Ok(())
}

#[test]
fn iptables_keeps_dscp_ecn_ip_id_df_and_decrements_ttl() -> Result<()> {
    if !require_root("iptables_keeps_dscp_ecn_ip_id_df_and_decrements_ttl") {
        return Ok(());
    }
    header_fields_survive(Nat::Iptables)
}

#[test]
fn forwarder_keeps_dscp_ecn_ip_id_df_and_decrements_ttl() -> Result<()> {
    if !require_root("forwarder_keeps_dscp_ecn_ip_id_df_and_decrements_ttl") {
        return Ok(());
    }
    header_fields_survive(Nat::Forwarder)
}
