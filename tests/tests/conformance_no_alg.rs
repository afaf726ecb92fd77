//! CONFORMANCE.md row "ALGs off" (RFC 4787 REQ-10, RFC 5382 REQ-6): a
//! forward carries payload bytes untouched, also the FTP commands an
//! application-level gateway would rewrite (a `PORT` command on its way to
//! the server, a `227` passive-mode answer on its way back). netfilter's
//! helpers are off unless a rule assigns one (`nf_conntrack_helper = 0`
//! since Linux 4.7); the forwarder has none.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1:21 [router] br1 10.2.0.1 ── backend 10.2.0.2:21 (echo)
//! ```
use std::time::Duration;

use anyhow::Result;
use forwarder_tests::{
    conformance::{
        echo_round, install, sa, tcp_connect, Forward, Nat, TcpEcho, Topo, TopoOpts, BACKEND,
        ROUTER_LAN,
    },
    netns, require_root,
};

/// What an FTP ALG rewrites in each direction: the client's PORT command
/// (toward the server) and, echoed back, a server's 227 answer.
const FTP: &[u8] = b"PORT 10,1,0,2,156,64\r\n227 Entering Passive Mode (10,2,0,2,39,16).\r\n";

fn bytes_untouched(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let echo = TcpEcho::start(&t.backend, sa(BACKEND, 21), &[])?;
    let _inst = install(&t, nat, &Forward::new("tcp", 21, BACKEND, 21))?;
    let mut s = tcp_connect(&t.client, sa(ROUTER_LAN, 21), Duration::from_secs(10))?;
    assert_eq!(echo_round(&mut s, FTP)?, FTP, "{nat:?}");
    assert_eq!(echo.peers().len(), 1);
    Ok(())
}

#[test]
fn iptables_carries_ftp_commands_untouched() -> Result<()> {
    if !require_root("iptables_carries_ftp_commands_untouched") {
        return Ok(());
    }
    bytes_untouched(Nat::Iptables)
}

#[test]
fn forwarder_carries_ftp_commands_untouched() -> Result<()> {
    if !require_root("forwarder_carries_ftp_commands_untouched") {
        return Ok(());
    }
    bytes_untouched(Nat::Forwarder)
}
