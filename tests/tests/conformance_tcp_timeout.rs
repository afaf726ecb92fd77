//! CONFORMANCE.md row "established idle timeout" (RFC 5382 REQ-5). The
//! defaults (5 days) cannot run in a test, so both implementations get
//! the same short one, 10 s (netfilter's
//! `nf_conntrack_tcp_timeout_established`, the forwarder's
//! `[global.timeouts] tcp_established`), and the test shows they time the
//! same thing: an idle connection's backend data 5 s after the last packet
//! reaches the client, and 20 s after the last one meets no translation
//! (it leaves untranslated from the backend's address, which the client
//! does not know: nothing reaches its socket).
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1:8080 [router] br1 10.2.0.1 ── backend 10.2.0.2:8000
//!                                                                (snat off)
//! ```
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        in_netns, install_toml, sa, tcp_connect, Forward, Nat, Topo, TopoOpts, BACKEND, ROUTER_LAN,
    },
    netns, require_root,
};

fn read_some(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(within)).ok()?;
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => Some(buf[..n].to_vec()),
        _ => None,
    }
}

fn established_times_out(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let listener = in_netns(&t.backend, || Ok(TcpListener::bind(sa(BACKEND, 8000))?))?;
    let mut f = Forward::new("tcp", 8080, BACKEND, 8000);
    f.snat = false;
    let inst = install_toml(
        &t,
        nat,
        &f,
        "[global.timeouts]\ntcp_established = \"10s\"\n",
    )?;
    if nat == Nat::Iptables {
        t.router
            .sysctl("net.netfilter.nf_conntrack_tcp_timeout_established", "10")?;
    }
    let mut client = tcp_connect(&t.client, sa(ROUTER_LAN, 8080), Duration::from_secs(10))?;
    let (mut backend, _) = listener.accept()?;
    client.write_all(b"hello")?;
    let got = read_some(&mut backend, Duration::from_secs(5)).context("first bytes")?;
    assert_eq!(got, b"hello");

    std::thread::sleep(Duration::from_secs(5));
    backend.write_all(b"5 s idle")?;
    let got = read_some(&mut client, Duration::from_secs(5));
    assert_eq!(got.as_deref(), Some(&b"5 s idle"[..]), "{nat:?}");

    std::thread::sleep(Duration::from_secs(20));
    backend.write_all(b"20 s idle")?;
    let got = read_some(&mut client, Duration::from_secs(4));
    assert_eq!(got, None, "{nat:?}: the flow expired after 10 s idle");
    drop(inst);
    Ok(())
}

#[test]
fn iptables_expires_an_idle_established_flow_after_its_timeout() -> Result<()> {
    if !require_root("iptables_expires_an_idle_established_flow_after_its_timeout") {
        return Ok(());
    }
    established_times_out(Nat::Iptables)
}

#[test]
fn forwarder_expires_an_idle_established_flow_after_its_timeout() -> Result<()> {
    if !require_root("forwarder_expires_an_idle_established_flow_after_its_timeout") {
        return Ok(());
    }
    established_times_out(Nat::Forwarder)
}
