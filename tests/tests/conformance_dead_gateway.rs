//! CONFORMANCE.md row "Target behind a dead gateway": a target reached
//! through a gateway whose neighbour entry is FAILED is the same black
//! hole as a dead on-link target, and a router treats it the same way:
//! `ip_forward` queues behind the gateway's ARP, and when ARP gives up the
//! stack answers ICMP host unreachable (3/1) quoting the packet as the
//! client sent it (conntrack un-NATs the quote). The forwarder follows the
//! gateway's neighbour entry (`plan_neigh`) and must give the client the
//! same: 3/1 built in BPF for a SNATed flow (the stack cannot take a
//! packet from one of its own addresses), the stack's own 3/1 for a flow
//! that keeps the client's address, and for a virtual target that a
//! PREROUTING DNAT answers, a connection through the stack even when the
//! forward asks for the redirect path (socat is the reference there: one
//! DNAT per packet means iptables cannot chain a forward onto it).
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] br1 10.2.0.1 ─┬─ backend 10.2.0.2:8000
//!                     route 172.16.0.0/24 via 10.2.0.99   │  (172.16.0.100:80 DNATs here)
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

/// Behind the dead gateway: nothing there (only the gateway matters).
const BEHIND: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 9);
/// Behind the dead gateway, answered by a DNAT in the router.
const VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 100);

fn dead_gateway(t: &Topo) -> Result<()> {
    t.router
        .ip(&["route", "add", "172.16.0.0/24", "via", "10.2.0.99"])
}

/// `snat`: the forward rewrites the source, or keeps the client's.
fn dead_gateway_gets_host_unreachable(nat: Nat, snat: bool) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    dead_gateway(&t)?;
    let mut fwd = Forward::new("udp", 5000, BEHIND, 5000);
    fwd.snat = snat;
    let inst = install(&t, nat, &fwd)?;
    udp_gets_host_unreachable(&t, &format!("{nat:?} snat {snat}"))?;
    if let Some(d) = &inst.daemon {
        let st = d.status_json()?;
        let (answered, stacked) = (
            inst.reason_count("reply_host_unreach")?,
            inst.reason_count("fwd_stack")? + inst.reason_count("fwd_stack_neigh_dead")?,
        );
        if snat {
            assert!(answered >= 1, "{st}");
        } else {
            assert!(stacked >= 1 && answered == 0, "{st}");
        }
        // The stack's 3/1 (client address kept) may come before the
        // daemon hears of the FAILED entry: poll.
        wait_for(Duration::from_secs(20), || {
            let text = d.cli(&["status"]).ok()?;
            (text.contains("172.16.0.9's gateway 10.2.0.99") && text.contains("FAILED"))
                .then_some(())
        })
        .with_context(|| format!("status never named the dead gateway: {st}"))?;
    }
    Ok(())
}

enum Via {
    Socat,
    Forwarder,
}

/// The virtual address behind the dead gateway, answered by a DNAT in
/// PREROUTING (forwarded traffic) and OUTPUT (the host's own: socat's).
fn virtual_target_behind_a_dead_gateway_works(via: Via) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    dead_gateway(&t)?;
    let echo = TcpEcho::start(&t.backend, sa(BACKEND, 8000), &[])?;
    for chain in ["PREROUTING", "OUTPUT"] {
        t.router.run(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            chain,
            "-d",
            &VIP.to_string(),
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
    let mut _socat = None;
    let mut inst = None;
    match via {
        Via::Socat => {
            _socat = Some(t.router.spawn(&[
                "socat",
                "TCP-LISTEN:8080,bind=10.1.0.1,reuseaddr,fork",
                "TCP:172.16.0.100:80",
            ])?);
            wait_for(Duration::from_secs(10), || {
                let ss = t.router.output(&["ss", "-ltn"]).unwrap_or_default();
                ss.contains(":8080 ").then_some(())
            })
            .context("socat did not listen")?;
        }
        Via::Forwarder => {
            // The redirect path, asked for: behind a gateway the default
            // path would take the stack anyway. A redirect to a gateway
            // that never answers ARP is the black hole.
            let mut f = Forward::new("tcp", 8080, VIP, 80);
            f.snat = false;
            f.toml_extra = "path = \"redirect\"\n".into();
            inst = Some(install(&t, Nat::Forwarder, &f)?);
        }
    }
    for i in 0..3 {
        // The first SYNs queue behind the gateway's ARP, which nobody
        // answers: the kernel's give-up time (about 3 s) and a SYN
        // retransmission before the forwarder knows; later ones at once.
        let patience = if i == 0 { 60 } else { 10 };
        let mut s = tcp_connect(
            &t.client,
            sa(ROUTER_LAN, 8080),
            Duration::from_secs(patience),
        )
        .with_context(|| format!("connection {i} to the forward"))?;
        let msg = format!("behind the dead gateway {i}");
        assert_eq!(echo_round(&mut s, msg.as_bytes())?, msg.as_bytes());
    }
    assert_eq!(echo.peers().len(), 3);
    if let Some(inst) = &inst {
        assert!(inst.reason_count("fwd_stack_neigh_dead")? >= 3);
        assert_eq!(inst.reason_count("reply_host_unreach")?, 0);
        let text = inst.daemon().cli(&["status"])?;
        assert!(
            text.contains("172.16.0.100's gateway 10.2.0.99") && text.contains("FAILED"),
            "status names the dead gateway: {text}"
        );
    }
    Ok(())
}

#[test]
fn iptables_dead_gateway_gets_host_unreachable() -> Result<()> {
    if !require_root("iptables_dead_gateway_gets_host_unreachable") {
        return Ok(());
    }
    dead_gateway_gets_host_unreachable(Nat::Iptables, true)
}

#[test]
fn forwarder_dead_gateway_gets_host_unreachable() -> Result<()> {
    if !require_root("forwarder_dead_gateway_gets_host_unreachable") {
        return Ok(());
    }
    dead_gateway_gets_host_unreachable(Nat::Forwarder, true)
}

#[test]
fn iptables_dead_gateway_keeping_the_client_address_gets_host_unreachable() -> Result<()> {
    if !require_root("iptables_dead_gateway_keeping_the_client_address_gets_host_unreachable") {
        return Ok(());
    }
    dead_gateway_gets_host_unreachable(Nat::Iptables, false)
}

#[test]
fn forwarder_dead_gateway_keeping_the_client_address_gets_host_unreachable() -> Result<()> {
    if !require_root("forwarder_dead_gateway_keeping_the_client_address_gets_host_unreachable") {
        return Ok(());
    }
    dead_gateway_gets_host_unreachable(Nat::Forwarder, false)
}

#[test]
fn socat_reaches_a_virtual_target_behind_a_dead_gateway() -> Result<()> {
    if !require_root("socat_reaches_a_virtual_target_behind_a_dead_gateway") {
        return Ok(());
    }
    virtual_target_behind_a_dead_gateway_works(Via::Socat)
}

#[test]
fn forwarder_reaches_a_virtual_target_behind_a_dead_gateway() -> Result<()> {
    if !require_root("forwarder_reaches_a_virtual_target_behind_a_dead_gateway") {
        return Ok(());
    }
    virtual_target_behind_a_dead_gateway_works(Via::Forwarder)
}
