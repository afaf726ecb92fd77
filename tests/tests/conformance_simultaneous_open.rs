//! CONFORMANCE.md row "simultaneous open" (RFC 5382 REQ-2: a NAT supports
//! every valid TCP sequence, simultaneous open included). Through a
//! forward that keeps the client's address: the client connects to the
//! forward while the backend, from the forward's target port, connects to
//! the client's address and port. The client's SYN is lost before the
//! backend (a filter in the backend's own namespace), so the backend's SYN
//! is the first to arrive anywhere: it meets the router as a packet of the
//! flow's reply direction in SYN_SENT, is translated to come from the
//! forward's address and port, and the client, itself in SYN_SENT, answers
//! it with a SYN-ACK (RFC 793 figure 8). netfilter tracks this
//! (SYN_SENT2); the forwarder must carry it the same way: both sockets end
//! up connected to what they asked for, and data flows both ways.
//!
//! ```text
//! client 10.1.0.2:40000 ── eth0 10.1.0.1:8080 [router] br1 ── backend 10.2.0.2:8000
//!   connect(10.1.0.1:8080)                                     connect(10.1.0.2:40000)
//!                                                              drops incoming pure SYNs
//! ```
use std::{
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    os::fd::FromRawFd,
    time::Duration,
};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        in_netns, install, sa, Capture, Forward, Nat, Topo, TopoOpts, BACKEND, CLIENT, ROUTER_LAN,
    },
    netns, require_root, Netns,
};

const CLIENT_PORT: u16 = 40000;

/// A blocking connect from `local` to `to` in `ns` (SO_REUSEADDR, bound
/// first: std cannot bind before connecting), bounded by `timeout`.
fn connect_from(
    ns: &Netns,
    local: SocketAddrV4,
    to: SocketAddrV4,
    timeout: Duration,
) -> Result<TcpStream> {
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        }
    }
    in_netns(ns, || {
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        // SAFETY: plain socket calls on an fd this function owns (wrapped
        // in a TcpStream at once, which closes it on every path), with
        // valid pointers to locals of the sizes given.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let stream = TcpStream::from_raw_fd(fd);
            let one: libc::c_int = 1;
            let tv = libc::timeval {
                tv_sec: timeout.as_secs() as _,
                tv_usec: 0,
            };
            for (name, v, l) in [
                (libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), 4),
                (
                    libc::SO_SNDTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                ),
            ] {
                anyhow::ensure!(
                    libc::setsockopt(fd, libc::SOL_SOCKET, name, v, l) == 0,
                    "setsockopt: {}",
                    std::io::Error::last_os_error()
                );
            }
            let l = sockaddr(local);
            anyhow::ensure!(
                libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len) == 0,
                "bind {local}: {}",
                std::io::Error::last_os_error()
            );
            let r = sockaddr(to);
            if libc::connect(fd, (&r as *const libc::sockaddr_in).cast(), len) != 0 {
                anyhow::bail!(
                    "connect {local} -> {to}: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(stream)
        }
    })
}

fn simultaneous_open(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let mut fwd = Forward::new("tcp", 8080, BACKEND, 8000);
    fwd.snat = false;
    let inst = install(&t, nat, &fwd)?;
    // The backend loses every pure SYN (its own namespace's filter): the
    // client's SYN only makes the router's flow.
    t.backend.run(&[
        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8000", "--syn", "-j", "DROP",
    ])?;
    let cap = Capture::open(&t.backend, "eth0")?;
    let client_ns = &t.client;
    std::thread::scope(|s| -> Result<()> {
        let client = s.spawn(|| {
            connect_from(
                client_ns,
                sa(CLIENT, CLIENT_PORT),
                sa(ROUTER_LAN, 8080),
                Duration::from_secs(60),
            )
        });
        // The backend connects once the client's SYN has reached it (and
        // was dropped): by then the router's flow exists.
        cap.find(Duration::from_secs(30), |p| {
            !p.outgoing
                && p.proto() == 6
                && p.ports() == Some((CLIENT_PORT, 8000))
                && p.l4()[13] & 0x12 == 0x02
        })
        .context("the client's SYN never reached the backend")?;
        let mut backend = connect_from(
            &t.backend,
            sa(BACKEND, 8000),
            sa(CLIENT, CLIENT_PORT),
            Duration::from_secs(30),
        )
        .with_context(|| format!("{nat:?}: backend's side of the simultaneous open"))?;
        let mut client = client
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))?
            .with_context(|| format!("{nat:?}: client's side of the simultaneous open"))?;
        // Each side is connected to what it asked for.
        assert_eq!(client.peer_addr()?, SocketAddr::V4(sa(ROUTER_LAN, 8080)));
        assert_eq!(
            backend.peer_addr()?,
            SocketAddr::V4(sa(CLIENT, CLIENT_PORT))
        );
        for s in [&client, &backend] {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
        }
        let mut buf = [0u8; 16];
        client.write_all(b"from the client")?;
        backend.read_exact(&mut buf[..15])?;
        assert_eq!(&buf[..15], b"from the client");
        backend.write_all(b"from the backend")?;
        client.read_exact(&mut buf)?;
        assert_eq!(&buf, b"from the backend");
        Ok(())
    })?;
    if nat == Nat::Forwarder {
        assert!(inst.reason_count("fwd_redirect")? >= 4);
    }
    Ok(())
}

#[test]
fn iptables_carries_a_simultaneous_open() -> Result<()> {
    if !require_root("iptables_carries_a_simultaneous_open") {
        return Ok(());
    }
    simultaneous_open(Nat::Iptables)
}

#[test]
fn forwarder_carries_a_simultaneous_open() -> Result<()> {
    if !require_root("forwarder_carries_a_simultaneous_open") {
        return Ok(());
    }
    simultaneous_open(Nat::Forwarder)
}
