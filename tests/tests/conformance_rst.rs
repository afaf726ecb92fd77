//! CONFORMANCE.md row "RST handling" (RFC 7857 2.1, RFC 5961): a RST
//! forged from the client's tuple with a sequence number outside the
//! window leaves the connection alone, also after longer than the CLOSE
//! timeout (10 s in both: netfilter's `nf_conntrack_tcp_timeout_close`,
//! the forwarder's `tcp_close`), and the backend never sees it; the
//! client's own RST (an abortive close: in the window) reaches the
//! backend, which reads a reset. netfilter marks the forged RST invalid
//! (no NAT, no state change: it ends at the router's own closed port);
//! the forwarder drops it (`drop_out_of_window`). Same observable result.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1:8080 [router] br1 10.2.0.1 ── backend 10.2.0.2:8000
//!   + raw RST, seq 12345 / 4000000000
//! ```
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use anyhow::{Context, Result};
use etherparse::PacketBuilder;
use forwarder_tests::{
    conformance::{
        in_netns, install, sa, tcp_connect, Capture, Forward, Nat, RawSender, Topo, TopoOpts,
        BACKEND, CLIENT, ROUTER_LAN,
    },
    netns, require_root,
};

fn forged_rst(sport: u16, seq: u32) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(CLIENT.octets(), ROUTER_LAN.octets(), 64)
        .tcp(sport, 8080, seq, 0)
        .rst()
        .write(&mut v, &[])?;
    Ok(v)
}

fn rst_handling(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let listener = in_netns(&t.backend, || Ok(TcpListener::bind(sa(BACKEND, 8000))?))?;
    let inst = install(&t, nat, &Forward::new("tcp", 8080, BACKEND, 8000))?;
    let mut client = tcp_connect(&t.client, sa(ROUTER_LAN, 8080), Duration::from_secs(10))?;
    let (mut backend, _) = listener.accept()?;
    backend.set_read_timeout(Some(Duration::from_secs(5)))?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 32];
    let mut round = |client: &mut std::net::TcpStream, msg: &[u8]| -> Result<()> {
        client.write_all(msg)?;
        backend.read_exact(&mut buf[..msg.len()])?;
        anyhow::ensure!(&buf[..msg.len()] == msg, "{nat:?}: echo");
        backend.write_all(msg)?;
        client.read_exact(&mut buf[..msg.len()])?;
        Ok(())
    };
    round(&mut client, b"before")?;

    let cap = Capture::open(&t.backend, "eth0")?;
    let sport = client.local_addr()?.port();
    let raw = RawSender::open(&t.client)?;
    for seq in [12345, 4_000_000_000] {
        raw.send(&forged_rst(sport, seq)?)?;
    }
    // Longer than the CLOSE timeout: a RST believed would have ended it.
    std::thread::sleep(Duration::from_secs(12));
    round(&mut client, b"after 12 s").with_context(|| format!("{nat:?}: after the forged RST"))?;
    let rst_seen = cap.find(Duration::from_millis(500), |p| {
        !p.outgoing && p.proto() == 6 && p.l4()[13] & 0x04 != 0
    });
    assert!(
        rst_seen.is_none(),
        "{nat:?}: the backend saw the forged RST"
    );
    if nat == Nat::Forwarder {
        assert!(inst.reason_count("drop_out_of_window")? >= 2);
    }

    // The client's own RST (linger 0: an abortive close) is in the window.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a linger struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&client),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    anyhow::ensure!(rc == 0, "SO_LINGER");
    let peer: SocketAddr = client.peer_addr()?;
    drop(client);
    let e = backend
        .read(&mut buf)
        .expect_err(&format!("{nat:?}: the backend reads a reset ({peer})"));
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{nat:?}");
    Ok(())
}

#[test]
fn iptables_ignores_an_out_of_window_rst_and_passes_the_clients_own() -> Result<()> {
    if !require_root("iptables_ignores_an_out_of_window_rst_and_passes_the_clients_own") {
        return Ok(());
    }
    rst_handling(Nat::Iptables)
}

#[test]
fn forwarder_ignores_an_out_of_window_rst_and_passes_the_clients_own() -> Result<()> {
    if !require_root("forwarder_ignores_an_out_of_window_rst_and_passes_the_clients_own") {
        return Ok(());
    }
    rst_handling(Nat::Forwarder)
}
