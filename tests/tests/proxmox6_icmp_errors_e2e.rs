//! ICMPv6 errors from the backend side of a NAT66 forward (issue 13,
//! docs/CONFORMANCE.md "ICMPv6 errors"): the LAN client's UDP datagram to
//! the host's forward reaches vm80's closed port 5000, vm80 answers
//! ICMPv6 port unreachable about the packet as it got it (translated),
//! and the client's kernel must accept that error for its socket: the
//! quote must hold the client's own address and port and the forward's,
//! the quoted UDP checksum and the ICMPv6 checksum (over the new
//! pseudo-header) must be right. The socket then reports ECONNREFUSED.
//!
//! ip6tables first (the kernel's conntrack translates the error), with a
//! control that drops the error on its way and sees no refusal; then the
//! forwarder, with SNAT and keeping the client's address. Each also pings
//! the forward's address: ICMPv6 echo is the host's (CONFORMANCE.md).
//!
//! Topology: tests/src/proxmox6.rs.
use std::{io::ErrorKind, net::UdpSocket, time::Duration};

use anyhow::{ensure, Result};
use forwarder_tests::{
    conformance::in_netns,
    netns,
    proxmox6::{Proxmox6, HOST_LAN6, HOST_VM6, VM80_6},
    require_root, Daemon,
};

const PORT: u16 = 5000;

fn ip6tables(t: &Proxmox6, rules: &[String]) -> Result<()> {
    for r in rules {
        let mut args = vec!["ip6tables", "-w", "5"];
        args.extend(r.split_whitespace());
        t.host.run(&args)?;
    }
    Ok(())
}

fn nat66(snat: bool) -> Vec<String> {
    let mut r = vec![format!(
        "-t nat -A PREROUTING -i vmbr0 -d {HOST_LAN6} -p udp --dport {PORT} -j DNAT --to-destination [{VM80_6}]:{PORT}"
    )];
    if snat {
        r.push(format!(
            "-t nat -A POSTROUTING -o vmbr1 -d {VM80_6} -j SNAT --to-source {HOST_VM6}"
        ));
    }
    r
}

/// What the LAN client's connected UDP socket gets for its datagram to the
/// forward, within 3 s per try (up to three tries: the first may meet a
/// neighbour lookup): the error kind, or None for an answer.
fn ask(t: &Proxmox6) -> Result<Option<ErrorKind>> {
    in_netns(&t.lan, || {
        let s = UdpSocket::bind("[::]:0")?;
        s.connect(format!("[{HOST_LAN6}]:{PORT}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut last = None;
        for _ in 0..3 {
            s.send(b"anyone there?")?;
            let mut buf = [0u8; 64];
            match s.recv(&mut buf) {
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(Some(e.kind())),
                Err(e) => last = Some(e.kind()),
            }
        }
        Ok(last)
    })
}

/// The port unreachable reaches the client's socket; and ICMPv6 echo to
/// the forward's address is the host's to answer (neighbour discovery on
/// the way, which the forwarder never touches, included).
fn refused(t: &Proxmox6, what: &str) -> Result<()> {
    let got = ask(t)?;
    ensure!(
        got == Some(ErrorKind::ConnectionRefused),
        "{what}: the client's socket got {got:?}, want the port unreachable (ECONNREFUSED)"
    );
    t.lan
        .run(&["ping", "-6", "-c", "1", "-W", "5", HOST_LAN6])
        .map_err(|e| anyhow::anyhow!("{what}: the host does not answer ping: {e:#}"))?;
    Ok(())
}

fn forwarder(t: &Proxmox6, snat: &str) -> Result<Daemon> {
    let rules = t.dir.file("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[forward]]\nname = \"udp6\"\nin = \"vmbr0\"\nlisten = \"{HOST_LAN6}\"\nproto = \"udp\"\nport = {PORT}\nto = \"[{VM80_6}]:{PORT}\"\nsnat = \"{snat}\"\n"
        ),
    )?;
    Daemon::start(&t.host, &["--rules", rules.to_str().unwrap()])
}

#[test]
fn ip6tables_port_unreachable_from_the_backend_reaches_the_client() -> Result<()> {
    if !require_root("ip6tables_port_unreachable_from_the_backend_reaches_the_client") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build()?;
    ip6tables(&t, &nat66(true))?;
    refused(&t, "ip6tables, SNAT")
}

/// Control: the same error dropped on the host, the client hears nothing.
#[test]
fn without_the_error_the_client_sees_no_refusal() -> Result<()> {
    if !require_root("without_the_error_the_client_sees_no_refusal") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build()?;
    let mut rules = nat66(true);
    rules.push("-A FORWARD -p ipv6-icmp --icmpv6-type destination-unreachable -j DROP".into());
    ip6tables(&t, &rules)?;
    let got = ask(&t)?;
    ensure!(
        matches!(got, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "without the error: {got:?}"
    );
    Ok(())
}

#[test]
fn forwarder_translates_port_unreachable_from_the_backend() -> Result<()> {
    if !require_root("forwarder_translates_port_unreachable_from_the_backend") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build()?;
    let _d = forwarder(&t, HOST_VM6)?;
    refused(&t, "forwarder, SNAT")
}

#[test]
fn ip6tables_port_unreachable_without_snat_reaches_the_client() -> Result<()> {
    if !require_root("ip6tables_port_unreachable_without_snat_reaches_the_client") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build()?;
    ip6tables(&t, &nat66(false))?;
    refused(&t, "ip6tables, client address kept")
}

#[test]
fn forwarder_translates_port_unreachable_without_snat() -> Result<()> {
    if !require_root("forwarder_translates_port_unreachable_without_snat") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build()?;
    let _d = forwarder(&t, "auto")?;
    refused(&t, "forwarder, client address kept")
}
