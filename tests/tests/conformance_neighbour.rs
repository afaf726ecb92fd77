//! CONFORMANCE.md rows "Neighbours": a forward whose target has no
//! answering neighbour must not vanish into a silent redirect.
//!
//! 1. A virtual target on an on-link route (a kube-proxy ClusterIP when the
//!    service range is routed on the CNI bridge, a VIP) that the stack's
//!    PREROUTING DNAT answers: works with socat (the reference here: one
//!    DNAT per packet means iptables cannot chain a forward onto it), and
//!    must work through the forwarder, whose flows then go through the stack.
//! 2. A target that is down (nothing answers ARP): the router answers ICMP
//!    host unreachable quoting the packet as the client sent it, like
//!    iptables, and the forwarder's `status` never counts it as forwarded.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ─┬─ backend 10.2.0.2:8000
//!                     route 10.3.0.0/24 dev br1 (on-link) │  (10.3.0.100:80 DNATs here)
//!                                                         └─ 10.2.0.99: nobody
//! ```
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use forwarder_tests::{
    conformance::{
        echo_round, install, sa, tcp_connect, udp_gets_host_unreachable, Forward, Nat, TcpEcho,
        Topo, TopoOpts, BACKEND, ROUTER_LAN,
    },
    netns,
    process::wait_for,
    require_root,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 100);
const DOWN: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 99);

/// The virtual address: on-link route, answered by a DNAT in PREROUTING
/// (forwarded traffic) and OUTPUT (the host's own, e.g. socat's).
fn virtual_target(t: &Topo) -> Result<()> {
    t.router
        .ip(&["route", "add", "10.3.0.0/24", "dev", "br1"])?;
    for chain in ["PREROUTING", "OUTPUT"] {
        t.router.run(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            chain,
            "-d",
            "10.3.0.100",
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DNAT",
            "--to-destination",
            "10.2.0.2:8000",
        ])?;
    }
    Ok(())
}

enum Via {
    Socat,
    Forwarder,
}

fn virtual_target_on_link_route_works(via: Via) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let echo = TcpEcho::start(&t.backend, sa(BACKEND, 8000), &[])?;
    virtual_target(&t)?;
    let mut _socat = None;
    let mut inst = None;
    match via {
        Via::Socat => {
            _socat = Some(t.router.spawn(&[
                "socat",
                "TCP-LISTEN:8080,bind=10.1.0.1,reuseaddr,fork",
                "TCP:10.3.0.100:80",
            ])?);
            wait_for(Duration::from_secs(10), || {
                let ss = t.router.output(&["ss", "-ltn"]).unwrap_or_default();
                ss.contains(":8080 ").then_some(())
            })
            .context("socat did not listen")?;
        }
        Via::Forwarder => {
            let mut f = Forward::new("tcp", 8080, VIP, 80);
            f.snat = false;
            inst = Some(install(&t, Nat::Forwarder, &f)?);
        }
    }
    for i in 0..3 {
        // The first connection's first SYNs queue behind an ARP for the
        // VIP that nobody answers: it takes the kernel's ARP give-up time
        // (about 3 s) and a SYN retransmission (1, 3, 7, 15 s...) before
        // the forwarder knows; a generous bound, the others are at once.
        let patience = if i == 0 { 60 } else { 10 };
        let mut s = tcp_connect(
            &t.client,
            sa(ROUTER_LAN, 8080),
            Duration::from_secs(patience),
        )
        .with_context(|| format!("connection {i} to the forward"))?;
        let msg = format!("through the VIP {i}");
        assert_eq!(echo_round(&mut s, msg.as_bytes())?, msg.as_bytes());
    }
    assert_eq!(echo.peers().len(), 3);
    if let Some(inst) = &inst {
        // The flows went through the stack because of the dead neighbour,
        // and say so; nothing was counted as answered by the forwarder.
        assert!(inst.reason_count("fwd_stack_neigh_dead")? >= 3);
        assert_eq!(inst.reason_count("reply_host_unreach")?, 0);
        let named = wait_for(Duration::from_secs(10), || {
            inst.daemon()
                .cli(&["status"])
                .ok()
                .filter(|t| t.contains("10.3.0.100") && t.contains("FAILED"))
        });
        assert!(
            named.is_some(),
            "status names the dead neighbour: {}",
            inst.daemon().cli(&["status"]).unwrap_or_default()
        );
    }
    Ok(())
}

/// `snat`: the forward rewrites the source (the forwarder answers the
/// host unreachable itself: the stack cannot take a packet from one of its
/// own addresses) or keeps the client's (the flow goes through the stack,
/// whose ARP fails and whose host unreachable the egress program
/// translates back, as conntrack does for iptables).
fn dead_target_gets_host_unreachable(nat: Nat, snat: bool) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let mut fwd = Forward::new("udp", 5000, DOWN, 5000);
    fwd.snat = snat;
    let inst = install(&t, nat, &fwd)?;
    udp_gets_host_unreachable(&t, &format!("{nat:?}"))?;
    if let Some(d) = &inst.daemon {
        let st = d.status_json()?;
        let (answered, stacked) = (
            inst.reason_count("reply_host_unreach")?,
            inst.reason_count("fwd_stack_neigh_dead")?,
        );
        if snat {
            assert!(answered >= 1, "{st}");
        } else {
            assert!(stacked >= 1 && answered == 0, "{st}");
        }
        // The daemon writes FWD_NEIGH before it republishes its status:
        // the kernel can act on the dead neighbour (and the client get its
        // answer) a moment before `status` says so.
        let named = wait_for(Duration::from_secs(10), || {
            d.cli(&["status"])
                .ok()
                .filter(|t| t.contains("10.2.0.99") && t.contains("FAILED"))
        });
        assert!(
            named.is_some(),
            "status names the dead neighbour: {}",
            d.cli(&["status"]).unwrap_or_default()
        );
    }
    Ok(())
}

#[test]
fn socat_reaches_a_virtual_target_on_an_on_link_route() -> Result<()> {
    if !require_root("socat_reaches_a_virtual_target_on_an_on_link_route") {
        return Ok(());
    }
    virtual_target_on_link_route_works(Via::Socat)
}

#[test]
fn forwarder_reaches_a_virtual_target_on_an_on_link_route() -> Result<()> {
    if !require_root("forwarder_reaches_a_virtual_target_on_an_on_link_route") {
        return Ok(());
    }
    virtual_target_on_link_route_works(Via::Forwarder)
}

#[test]
fn iptables_dead_target_gets_host_unreachable() -> Result<()> {
    if !require_root("iptables_dead_target_gets_host_unreachable") {
        return Ok(());
    }
    dead_target_gets_host_unreachable(Nat::Iptables, true)
}

#[test]
fn forwarder_dead_target_gets_host_unreachable() -> Result<()> {
    if !require_root("forwarder_dead_target_gets_host_unreachable") {
        return Ok(());
    }
    dead_target_gets_host_unreachable(Nat::Forwarder, true)
}

#[test]
fn iptables_dead_target_keeping_the_client_address_gets_host_unreachable() -> Result<()> {
    if !require_root("iptables_dead_target_keeping_the_client_address_gets_host_unreachable") {
        return Ok(());
    }
    dead_target_gets_host_unreachable(Nat::Iptables, false)
}

#[test]
fn forwarder_dead_target_keeping_the_client_address_gets_host_unreachable() -> Result<()> {
    if !require_root("forwarder_dead_target_keeping_the_client_address_gets_host_unreachable") {
        return Ok(());
    }
    dead_target_gets_host_unreachable(Nat::Forwarder, false)
}
