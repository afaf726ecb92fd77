//! A daemon restarted while the DNS server is down (issue 16: an upgraded
//! pod adopts the pinned dataplane hitlessly; in a cluster, CoreDNS may be
//! restarting at the same moment, or the node cut off from it).
//!
//! ```text
//! client 10.1.0.2 -- eth0 10.1.0.1 [router: forwarder] eth1 10.2.0.1 -- server 10.2.0.3
//!                                                                       dnsmasq 10.2.0.53:5353
//! ```
//!
//! The forward's target is a name; the daemon has resolved it and
//! forwards. Then dnsmasq dies and the daemon is restarted (SIGTERM: the
//! pinned maps stay). The new daemon's first lookup fails; a name that
//! never resolved would pause its forward, but this one was running: the
//! address the adopted listeners forward to stands in for the first
//! answer, and a client loop (a new connection every 50 ms) is never
//! refused. When dnsmasq is back the name resolves. Without the adoption
//! the forward pauses and its port refuses connections until DNS returns.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    cluster::{loop_answers, unix_now},
    dns::{connect_loop, line_with, Dnsmasq},
    netns,
    process::wait_for,
    require_root,
    topology::TempDir,
    Bg, Daemon,
};

const DNS: &str = "10.2.0.53";
const BACKEND: &str = "10.2.0.3";

const RULES: &str = "[global]\ndns_server = \"10.2.0.53:5353\"\n\n[[forward]]\nname = \"web\"\n\
     in = \"eth0\"\nlisten = \"10.1.0.1\"\nport = 80\nto = \"web.test.:8080\"\n";

/// Waits for `n` answers from the backend after `since`.
fn answered_after(bg: &Bg, since: f64, n: usize) -> Result<()> {
    wait_for(Duration::from_secs(30), || {
        let got = loop_answers(&bg.log())
            .into_iter()
            .filter(|(t, r)| *t > since && r == BACKEND)
            .count();
        (got >= n).then_some(())
    })
    .with_context(|| format!("fewer than {n} answers after {since}: {}", bg.log()))
}

/// The `web` forward's name in the status file, with its listener count.
fn resolution(d: &Daemon) -> serde_json::Value {
    d.state()
        .ok()
        .and_then(|s| {
            let r = s["rules"].as_array()?.iter().find(|r| r["name"] == "web")?;
            let mut n = r["resolution"].clone();
            n["listeners"] = r["listeners"].clone();
            Some(n)
        })
        .unwrap_or_default()
}

fn wait_state(d: &Daemon, state: &str) -> Result<serde_json::Value> {
    wait_for(Duration::from_secs(30), || {
        let n = resolution(d);
        (n["state"] == state).then_some(n)
    })
    .with_context(|| format!("never {state}: {}\n{}", resolution(d), d.log()))
}

#[test]
fn a_restart_while_dns_is_down_keeps_forwarding_to_the_adopted_address() -> Result<()> {
    if !require_root("a_restart_while_dns_is_down_keeps_forwarding_to_the_adopted_address") {
        return Ok(());
    }
    netns::sweep();
    let (line, _server) = line_with(&[BACKEND, DNS])?;
    let mut dns = Dnsmasq::start(&line.server, DNS, 5353, "test", 5)?;
    dns.set(&[("web", BACKEND)])?;

    let dir = TempDir::new("dnsrestart")?;
    let path = dir.file("rules.toml");
    std::fs::write(&path, RULES)?;
    let mut d = Daemon::start(&line.router, &["--rules", path.to_str().unwrap()])?;
    wait_state(&d, "resolved")?;
    let clients = connect_loop(&line.client, 80)?;
    answered_after(&clients, 0.0, 5).context("forwarding before the restart")?;

    dns.stop();
    let down = unix_now();
    d.stop().context("the first daemon was not running")?;
    d.respawn()?;
    let restarted = unix_now();
    let st = d.state()?;
    ensure!(
        st["adopted"]
            .as_str()
            .is_some_and(|a| a.contains("1 listener entries")),
        "the new daemon adopted the listener: {st}"
    );
    // Its first lookup failed: the adopted address is kept, stale.
    let n = wait_state(&d, "stale")?;
    ensure!(n["addr"] == BACKEND && n["listeners"] == 1, "{n}");
    let text = d.cli(&["status"])?;
    ensure!(
        text.contains(&format!("target web.test.: {BACKEND}, STALE: ")),
        "{text}"
    );
    answered_after(&clients, unix_now(), 10).context("forwarding after the restart")?;
    let refused: Vec<_> = loop_answers(&clients.log())
        .into_iter()
        .filter(|(t, r)| *t > down && r != BACKEND && r != "FAIL")
        .collect();
    ensure!(
        refused.is_empty(),
        "connections refused or misdirected across the restart: {refused:?}\n{}",
        d.log()
    );
    ensure!(
        d.log()
            .contains("forwarding to the adopted address until it resolves"),
        "{}",
        d.log()
    );

    // DNS is back: the name resolves, still to the same address.
    dns.restart()?;
    let n = wait_state(&d, "resolved")?;
    ensure!(n["addr"] == BACKEND && n["changes"] == 0, "{n}");
    let log = clients.log();
    let after = loop_answers(&log)
        .into_iter()
        .filter(|(t, _)| *t > restarted)
        .count();
    eprintln!("{after} connections after the restart, none refused");
    Ok(())
}
