//! CONFORMANCE.md rows "PMTU, DF set" and "DF clear": a backend's reply
//! that does not fit the client link (MTU 1280, a tailnet) must still
//! arrive. With DF set (Linux's UDP default) the router answers the backend
//! with ICMP "fragmentation needed" carrying the next-hop MTU and quoting the
//! reply as the backend sent it; the backend learns the path MTU and its
//! next reply, fragmented by itself, arrives. With DF clear netfilter
//! fragments and the first reply arrives; the forwarder differs there (see
//! the last test).
//!
//! ```text
//! client 10.1.0.2 ─(mtu 1280)─ eth0 10.1.0.1 [router] br1 10.2.0.1 ── backend 10.2.0.2:5000
//! ```
use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        install, sa, set_pmtudisc, udp_ask, udp_socket, Capture, Forward, Nat, Topo, TopoOpts,
        UdpServer, BACKEND, CLIENT, ROUTER_BACK, ROUTER_LAN,
    },
    netns, require_root,
    servers::pseudo_random,
};
use std::{net::Ipv4Addr, time::Duration};

const PORT: u16 = 5000;
const REPLY: usize = 1400;

/// How the oversized reply gets through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The router fragments it: the first reply arrives.
    Fragmented,
    /// The backend gets fragmentation-needed, learns the path MTU and its
    /// next reply (fragmented by itself) arrives.
    FragNeededThenRetry,
}

fn reply_reaches_narrow_client(nat: Nat, snat: bool, df: bool, expect: Expect) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts {
        client_mtu: Some(1280),
    })?;
    let mode = if df {
        libc::IP_PMTUDISC_WANT
    } else {
        libc::IP_PMTUDISC_DONT
    };
    let server = UdpServer::start_with(&t.backend, sa(BACKEND, PORT), REPLY, |s| {
        set_pmtudisc(s, mode)
    })?;
    let mut fwd = Forward::new("udp", PORT, BACKEND, PORT);
    fwd.snat = snat;
    let inst = install(&t, nat, &fwd)?;
    let cap = Capture::open(&t.backend, "eth0")?;
    let sock = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let peer = if snat { ROUTER_BACK } else { CLIENT };
    let tries = if expect == Expect::Fragmented { 1 } else { 6 };
    let (data, from) = udp_ask(&sock, sa(ROUTER_LAN, PORT), b"ask", tries)
        .with_context(|| format!("{nat:?}: no {REPLY}-byte reply in {tries} tries"))?;
    assert_eq!(from, sa(ROUTER_LAN, PORT).into(), "{nat:?}: reply source");
    assert_eq!(data, pseudo_random(REPLY), "{nat:?}: reply bytes");
    let peers: Vec<_> = server.seen().iter().map(|s| s.peer.ip()).collect();
    assert!(
        peers.iter().all(|p| *p == peer),
        "{nat:?}: backend saw {peers:?}"
    );
    if expect == Expect::FragNeededThenRetry {
        let err = cap
            .find(Duration::from_secs(2), |p| {
                !p.outgoing && p.icmp() == Some((3, 4))
            })
            .with_context(|| format!("{nat:?}: backend got no fragmentation-needed"))?;
        assert_eq!(err.icmp_next_mtu(), Some(1280), "{nat:?}: next-hop MTU");
        let q = err.icmp_quote().context("quote")?;
        assert_eq!(
            (q.src(), q.dst()),
            (BACKEND, peer),
            "{nat:?}: the error quotes the reply as the backend sent it"
        );
        assert_eq!(q.ports().map(|p| p.0), Some(PORT), "{nat:?}: quoted port");
        assert_eq!(
            forwarder_tests::conformance::learned_pmtu(&t.backend, peer),
            Some(1280),
            "{nat:?}: the backend learned the path MTU"
        );
    }
    if let Some(d) = &inst.daemon {
        assert_eq!(
            inst.reason_count("fwd_stack")?,
            0,
            "martian path used: {}",
            d.status_json()?
        );
    }
    Ok(())
}

#[test]
fn iptables_df_reply_over_narrow_link_gets_frag_needed_and_retry_arrives() -> Result<()> {
    if !require_root("iptables_df_reply_over_narrow_link_gets_frag_needed_and_retry_arrives") {
        return Ok(());
    }
    reply_reaches_narrow_client(Nat::Iptables, true, true, Expect::FragNeededThenRetry)
}

#[test]
fn forwarder_df_reply_over_narrow_link_gets_frag_needed_and_retry_arrives() -> Result<()> {
    if !require_root("forwarder_df_reply_over_narrow_link_gets_frag_needed_and_retry_arrives") {
        return Ok(());
    }
    reply_reaches_narrow_client(Nat::Forwarder, true, true, Expect::FragNeededThenRetry)
}

#[test]
fn iptables_df_reply_without_snat_gets_frag_needed_and_retry_arrives() -> Result<()> {
    if !require_root("iptables_df_reply_without_snat_gets_frag_needed_and_retry_arrives") {
        return Ok(());
    }
    reply_reaches_narrow_client(Nat::Iptables, false, true, Expect::FragNeededThenRetry)
}

#[test]
fn forwarder_df_reply_without_snat_gets_frag_needed_and_retry_arrives() -> Result<()> {
    if !require_root("forwarder_df_reply_without_snat_gets_frag_needed_and_retry_arrives") {
        return Ok(());
    }
    reply_reaches_narrow_client(Nat::Forwarder, false, true, Expect::FragNeededThenRetry)
}

#[test]
fn iptables_reply_without_df_is_fragmented_and_first_reply_arrives() -> Result<()> {
    if !require_root("iptables_reply_without_df_is_fragmented_and_first_reply_arrives") {
        return Ok(());
    }
    reply_reaches_narrow_client(Nat::Iptables, true, false, Expect::Fragmented)
}

/// The documented difference (docs/CONFORMANCE.md, "Too big without DF"):
/// the translated reply would be a martian to the stack and the untranslated
/// one is addressed to the host, so the forwarder cannot have the kernel
/// fragment it; it answers fragmentation-needed instead, which Linux senders
/// honour whatever their DF setting. The first reply is lost, the next
/// arrives.
#[test]
fn forwarder_reply_without_df_gets_frag_needed_and_retry_arrives() -> Result<()> {
    if !require_root("forwarder_reply_without_df_gets_frag_needed_and_retry_arrives") {
        return Ok(());
    }
    reply_reaches_narrow_client(Nat::Forwarder, true, false, Expect::FragNeededThenRetry)
}
