//! CONFORMANCE.md rows "Denied peers" (issue 11 item 7): a source that the
//! forward's allow-list refuses never reaches a service the host runs on
//! the same port. With `reject = "rst"` a denied SYN gets a TCP RST (and a
//! denied UDP datagram, fragmented or with IP options, an ICMP port
//! unreachable) built by the router; with `reject = "drop"` nothing comes
//! back. An untracked bare ACK to the forward's port is answered (or
//! dropped) the same way and never meets the host's listener.
//!
//! The iptables baseline is what an admin must add by hand to get this: an
//! INPUT rule rejecting (or dropping) the forward's port, because a DNAT
//! restricted to `-s allowed` leaves everyone else to the host's own socket.
//! The forwarder needs no such rule: the nft counter at the router's input
//! hook must stay at zero.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router: host service on *:2222] br1 ── backend 10.2.0.2:2222
//! ```
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use etherparse::PacketBuilder;
use forwarder_tests::{
    conformance::{
        count_local_delivery, install, local_delivered, sa, set_ip_options, tcp_connect,
        udp_socket, Capture, Forward, Nat, RawSender, TcpEcho, Topo, TopoOpts, UdpServer, BACKEND,
        CLIENT, ROUTER_LAN,
    },
    netns,
    process::wait_for,
    require_root,
};

const PORT: u16 = 2222;
/// The only source the forward allows; the client is not it.
const ALLOWED: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);

fn forward(proto: &'static str, reject: &str) -> Forward {
    let mut f = Forward::new(proto, PORT, BACKEND, PORT);
    f.allow = Some(ALLOWED);
    f.toml_extra = format!("reject = \"{reject}\"\n");
    let target: Vec<&str> = match (proto, reject) {
        ("tcp", "rst") => vec!["REJECT", "--reject-with", "tcp-reset"],
        ("udp", "rst") => vec!["REJECT", "--reject-with", "icmp-port-unreachable"],
        _ => vec!["DROP"],
    };
    let mut rule: Vec<String> = [
        "iptables", "-A", "INPUT", "-i", "eth0", "-d", "10.1.0.1", "-p", proto, "--dport", "2222",
        "-j",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    rule.extend(target.iter().map(|s| s.to_string()));
    f.iptables_extra.push(rule);
    f
}

fn bare_ack() -> Result<Vec<u8>> {
    let b = PacketBuilder::ipv4(CLIENT.octets(), ROUTER_LAN.octets(), 64)
        .tcp(40001, PORT, 1000, 512)
        .ack(4242);
    let mut v = Vec::new();
    b.write(&mut v, &[])?;
    Ok(v)
}

fn denied_tcp(nat: Nat, reject: &str) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let host_service = t.router.spawn(&[
        "socat",
        &format!("TCP-LISTEN:{PORT},reuseaddr,fork"),
        "SYSTEM:echo host-service",
    ])?;
    wait_for(Duration::from_secs(10), || {
        let ss = t.router.output(&["ss", "-ltn"]).unwrap_or_default();
        ss.contains(&format!(":{PORT} ")).then_some(())
    })
    .with_context(|| format!("host service did not start: {}", host_service.log()))?;
    let _backend = TcpEcho::start(&t.backend, sa(BACKEND, PORT), &[])?;
    let inst = install(&t, nat, &forward("tcp", reject))?;
    count_local_delivery(&t.router, "tcp", PORT)?;
    let cap = Capture::open(&t.client, "eth0")?;

    let r = tcp_connect(&t.client, sa(ROUTER_LAN, PORT), Duration::from_secs(3));
    let err = r
        .err()
        .with_context(|| format!("{nat:?}: a denied client connected"))?;
    let kind = err
        .downcast_ref::<std::io::Error>()
        .map(|e| e.kind())
        .with_context(|| format!("{err:#}"))?;
    let want = if reject == "rst" {
        std::io::ErrorKind::ConnectionRefused
    } else {
        std::io::ErrorKind::TimedOut
    };
    assert_eq!(kind, want, "{nat:?} reject={reject}: {err:#}");

    RawSender::open(&t.client)?.send(&bare_ack()?)?;
    let rst = cap.find(Duration::from_secs(2), |p| {
        !p.outgoing && p.proto() == 6 && p.ports() == Some((PORT, 40001))
    });
    if reject == "rst" {
        let rst = rst.with_context(|| format!("{nat:?}: no answer to an untracked ACK"))?;
        let l4 = rst.l4();
        assert_eq!(l4[13] & 0x04, 0x04, "{nat:?}: a RST");
        assert_eq!(
            &l4[4..8],
            &4242u32.to_be_bytes(),
            "{nat:?}: RST seq = the ACK's ack"
        );
    } else {
        assert!(rst.is_none(), "{nat:?}: drop answers nothing");
    }
    assert!(
        host_service.log().is_empty(),
        "host service: {}",
        host_service.log()
    );
    if inst.daemon.is_some() {
        assert_eq!(
            local_delivered(&t.router)?,
            0,
            "nothing reached a host socket"
        );
    }
    Ok(())
}

fn denied_udp(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let host_service = UdpServer::start(&t.router, sa(Ipv4Addr::UNSPECIFIED, PORT), 4)?;
    let _backend = UdpServer::start(&t.backend, sa(BACKEND, PORT), 4)?;
    let inst = install(&t, nat, &forward("udp", "rst"))?;
    count_local_delivery(&t.router, "udp", PORT)?;
    let cap = Capture::open(&t.client, "eth0")?;
    let plain = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let with_options = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    set_ip_options(&with_options, &[1, 1, 1, 0])?;
    let cases = [
        ("a small datagram", &plain, 16),
        ("a fragmented datagram", &plain, 3000),
        ("a datagram with IP options", &with_options, 16),
    ];
    for (what, sock, len) in cases {
        let sport = sock.local_addr()?.port();
        sock.send_to(&vec![7u8; len], sa(ROUTER_LAN, PORT))?;
        let err = cap
            .find(Duration::from_secs(3), |p| {
                !p.outgoing
                    && p.icmp() == Some((3, 3))
                    && p.icmp_quote().and_then(|q| q.ports()) == Some((sport, PORT))
            })
            .with_context(|| format!("{nat:?}: no port unreachable for {what}"))?;
        assert_eq!(err.src(), ROUTER_LAN, "{nat:?}: {what}");
    }
    assert!(
        host_service.seen().is_empty(),
        "{nat:?}: host service saw {:?}",
        host_service.seen()
    );
    if inst.daemon.is_some() {
        assert_eq!(
            local_delivered(&t.router)?,
            0,
            "nothing reached a host socket"
        );
    }
    Ok(())
}

#[test]
fn iptables_denied_tcp_gets_rst_never_the_host_service() -> Result<()> {
    if !require_root("iptables_denied_tcp_gets_rst_never_the_host_service") {
        return Ok(());
    }
    denied_tcp(Nat::Iptables, "rst")
}

#[test]
fn forwarder_denied_tcp_gets_rst_never_the_host_service() -> Result<()> {
    if !require_root("forwarder_denied_tcp_gets_rst_never_the_host_service") {
        return Ok(());
    }
    denied_tcp(Nat::Forwarder, "rst")
}

#[test]
fn iptables_denied_tcp_with_reject_drop_gets_silence() -> Result<()> {
    if !require_root("iptables_denied_tcp_with_reject_drop_gets_silence") {
        return Ok(());
    }
    denied_tcp(Nat::Iptables, "drop")
}

#[test]
fn forwarder_denied_tcp_with_reject_drop_gets_silence() -> Result<()> {
    if !require_root("forwarder_denied_tcp_with_reject_drop_gets_silence") {
        return Ok(());
    }
    denied_tcp(Nat::Forwarder, "drop")
}

#[test]
fn iptables_denied_udp_gets_port_unreachable_fragments_and_options_too() -> Result<()> {
    if !require_root("iptables_denied_udp_gets_port_unreachable_fragments_and_options_too") {
        return Ok(());
    }
    denied_udp(Nat::Iptables)
}

#[test]
fn forwarder_denied_udp_gets_port_unreachable_fragments_and_options_too() -> Result<()> {
    if !require_root("forwarder_denied_udp_gets_port_unreachable_fragments_and_options_too") {
        return Ok(());
    }
    denied_udp(Nat::Forwarder)
}
