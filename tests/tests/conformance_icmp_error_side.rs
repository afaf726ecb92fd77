//! CONFORMANCE.md row "ICMP errors bound to the flow's interfaces": an
//! ICMP error about a flow is translated only when it arrives where that
//! flow's packets leave. Here a port unreachable quoting the flow's
//! backend-side packet (10.2.0.1:P -> 10.2.0.2:5000) comes twice: from a
//! host on the backend's link (where the flow's packets go: translated by
//! both, the client's connected socket reads ECONNREFUSED), and forged by
//! a host on the client's link (the wrong side). netfilter matches errors
//! on any interface and hands the forged one to the client too; the
//! forwarder leaves it untranslated (`pass_wrong_iface`) and the client
//! never sees it: a documented, stricter difference.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ─┬─ backend 10.2.0.2:5000
//! forger 10.1.0.5 ──┘                                     └─ other   10.2.0.3 (right side)
//! ```
use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result};
use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, PacketBuilder};
use forwarder_tests::{
    conformance::{
        install, sa, udp_socket, Forward, Nat, RawSender, Topo, TopoOpts, UdpServer, BACKEND,
        CLIENT, OTHER, ROUTER_BACK, ROUTER_LAN,
    },
    netns,
    process::wait_for,
    require_root,
};

const PORT: u16 = 5000;
const FORGER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);

/// A port unreachable from `from` to the SNAT address, quoting the flow's
/// packet as it left toward the backend (source port `mapped`).
fn port_unreachable(from: Ipv4Addr, mapped: u16) -> Result<Vec<u8>> {
    let mut quote = Vec::new();
    PacketBuilder::ipv4(ROUTER_BACK.octets(), BACKEND.octets(), 63)
        .udp(mapped, PORT)
        .write(&mut quote, b"ask")?;
    let mut v = Vec::new();
    PacketBuilder::ipv4(from.octets(), ROUTER_BACK.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ))
        .write(&mut v, &quote)?;
    Ok(v)
}

/// Whether the client's connected socket reads "connection refused".
fn refused(nat: Nat, t: &Topo, wrong_side: bool) -> Result<bool> {
    let server = UdpServer::start(&t.backend, sa(BACKEND, PORT), 0)?;
    let sock = udp_socket(&t.client, sa(CLIENT, 0))?;
    sock.connect(sa(ROUTER_LAN, PORT))?;
    sock.send(b"ask")?;
    let mapped = wait_for(Duration::from_secs(10), || {
        server.seen().first().map(|s| s.peer)
    })
    .with_context(|| format!("{nat:?}: the backend got nothing"))?;
    let SocketAddr::V4(mapped) = mapped else {
        unreachable!()
    };
    let (ns, from) = if wrong_side {
        (&t.client, FORGER)
    } else {
        (&t.other, OTHER)
    };
    RawSender::open(ns)?.send(&port_unreachable(from, mapped.port())?)?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut buf = [0u8; 16];
    Ok(match sock.recv(&mut buf) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        other => anyhow::bail!("{nat:?}: unexpected {other:?}"),
    })
}

fn error_sides(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    t.client.addr("eth0", &format!("{FORGER}/24"))?;
    let inst = install(&t, nat, &Forward::new("udp", PORT, BACKEND, PORT))?;
    let forged = refused(nat, &t, true)?;
    let right = refused(nat, &t, false)?;
    assert!(
        right,
        "{nat:?}: an error from the backend's side is translated"
    );
    match nat {
        Nat::Iptables => assert!(forged, "netfilter matches errors on any interface"),
        Nat::Forwarder => {
            assert!(!forged, "the forwarder left the wrong side's error alone");
            assert!(inst.reason_count("pass_wrong_iface")? >= 1);
        }
    }
    Ok(())
}

#[test]
fn iptables_translates_icmp_errors_from_either_side() -> Result<()> {
    if !require_root("iptables_translates_icmp_errors_from_either_side") {
        return Ok(());
    }
    error_sides(Nat::Iptables)
}

#[test]
fn forwarder_translates_icmp_errors_from_the_flows_side_only() -> Result<()> {
    if !require_root("forwarder_translates_icmp_errors_from_the_flows_side_only") {
        return Ok(());
    }
    error_sides(Nat::Forwarder)
}
