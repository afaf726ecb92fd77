//! CONFORMANCE.md row "UDP mapping timeout" (RFC 4787 REQ-5/6), with the
//! defaults of both implementations: a datagram nobody answered keeps its
//! mapping 30 s (netfilter's `nf_conntrack_udp_timeout`, the forwarder's
//! `udp`). An answer 15 s later still reaches the client through it; one
//! 40 s later meets no mapping and never reaches the client. (The 120 s
//! stream timeout is the test_run table's: `ct_udp_states`.)
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1:5000 [router] br1 10.2.0.1 ── backend 10.2.0.2:5000
//!   sockets A, B: one datagram each        backend answers A after 15 s, B after 40 s
//! ```
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{install, sa, udp_socket, Forward, Nat, Topo, TopoOpts, BACKEND, ROUTER_LAN},
    netns, require_root,
};

const PORT: u16 = 5000;

/// The next datagram on `s` within `within`, and who sent it.
fn recv(s: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(within)).ok()?;
    let mut buf = [0u8; 64];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    Some((buf[..n].to_vec(), from))
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

fn unreplied_mapping_lives_30_s(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let backend = udp_socket(&t.backend, sa(BACKEND, PORT))?;
    let _inst = install(&t, nat, &Forward::new("udp", PORT, BACKEND, PORT))?;
    let a = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let b = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let mut mappings = Vec::new();
    for s in [&a, &b] {
        s.send_to(b"hello", sa(ROUTER_LAN, PORT))?;
        let (_, m) = recv(&backend, Duration::from_secs(10))
            .with_context(|| format!("{nat:?}: the backend got nothing"))?;
        mappings.push(m);
    }
    let sent = Instant::now();

    sleep_until(sent + Duration::from_secs(15));
    backend.send_to(b"15 s later", mappings[0])?;
    let got = recv(&a, Duration::from_secs(5));
    assert_eq!(
        got,
        Some((b"15 s later".to_vec(), SocketAddr::V4(sa(ROUTER_LAN, PORT)))),
        "{nat:?}: the mapping lives 30 s"
    );

    sleep_until(sent + Duration::from_secs(40));
    backend.send_to(b"40 s later", mappings[1])?;
    let got = recv(&b, Duration::from_secs(4));
    assert_eq!(got, None, "{nat:?}: the mapping expired after 30 s");
    Ok(())
}

#[test]
fn iptables_keeps_an_unreplied_udp_mapping_30_s() -> Result<()> {
    if !require_root("iptables_keeps_an_unreplied_udp_mapping_30_s") {
        return Ok(());
    }
    unreplied_mapping_lives_30_s(Nat::Iptables)
}

#[test]
fn forwarder_keeps_an_unreplied_udp_mapping_30_s() -> Result<()> {
    if !require_root("forwarder_keeps_an_unreplied_udp_mapping_30_s") {
        return Ok(());
    }
    unreplied_mapping_lives_30_s(Nat::Forwarder)
}
