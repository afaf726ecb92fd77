//! Issue 12: `forwarder explain --lookup` says what happens to a forward
//! whose target's next hop does not answer ARP, in the words `status`
//! uses (the daemon's own pure decision, `plan_neigh`): through the stack
//! (a PREROUTING DNAT, or the stack's ARP and its host unreachable) for
//! flows that keep the client's address, ICMP host unreachable built in
//! BPF for SNATed ones. Both kinds of next hop: an on-link target itself,
//! and the gateway of a target behind it. Real neighbour entries: the
//! kernel's ARP gives up on addresses nobody answers, in a namespace.
//!
//! ```text
//!  router ns                                  lan ns
//!  eth1 10.2.0.1/24 ──────── veth ─────────── eth0 10.2.0.2 (answers ARP)
//!  route 172.16.0.0/24 via 10.2.0.98          10.2.0.98, 10.2.0.99: nobody
//! ```
use std::time::Duration;

use anyhow::{Context, Result};
use forwarder_tests::{
    cli::forwarder_in,
    netns::{self, veth},
    process::wait_for,
    require_root,
    topology::TempDir,
    Netns,
};

const RULES: &str = r#"
[[forward]]
name = "dead-target"
in = "lan0"
listen = "192.168.1.55"
port = 80
to = "10.2.0.99:80"
snat = "10.2.0.1"

[[forward]]
name = "dead-gateway"
in = "lan0"
listen = "192.168.1.55"
port = 81
to = "172.16.0.9:80"
snat = "off"

[[forward]]
name = "dead-gateway-auto"
in = "lan0"
listen = "192.168.1.55"
port = 82
to = "172.16.0.9:80"

[[forward]]
name = "alive"
in = "lan0"
listen = "192.168.1.55"
port = 83
to = "10.2.0.2:80"
"#;

/// The note lines of `explain --lookup` for a packet to `port`.
fn notes(router: &Netns, file: &str, port: u16, lookup: bool) -> Result<Vec<String>> {
    let to = format!("192.168.1.55:{port}");
    let mut args = vec![
        "explain",
        file,
        "--in",
        "lan0",
        "--from",
        "192.168.1.10:40000",
        "--to",
        &to,
    ];
    if lookup {
        args.push("--lookup");
    }
    let r = forwarder_in(&router.name, &args);
    anyhow::ensure!(r.code == 0, "explain {port}: {r}");
    Ok(r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  note: "))
        .map(str::to_owned)
        .collect())
}

/// Makes the kernel resolve `addr` (a ping) until its entry is FAILED.
fn make_failed(router: &Netns, addr: &str, via: &str) -> Result<()> {
    wait_for(Duration::from_secs(60), || {
        let _ = router.run(&["ping", "-c1", "-W1", addr]);
        let n = router
            .output(&["ip", "-4", "neigh", "show", via])
            .unwrap_or_default();
        n.contains("FAILED").then_some(())
    })
    .with_context(|| format!("{via} never became FAILED"))
}

#[test]
fn explain_lookup_names_a_dead_next_hop_and_what_flows_get() -> Result<()> {
    if !require_root("explain_lookup_names_a_dead_next_hop_and_what_flows_get") {
        return Ok(());
    }
    netns::sweep();
    let router = Netns::new("exrtr")?;
    let lan = Netns::new("exlan")?;
    veth(&router, "eth1", &lan, "eth0")?;
    router.addr("eth1", "10.2.0.1/24")?;
    lan.addr("eth0", "10.2.0.2/24")?;
    router.ip(&["route", "add", "172.16.0.0/24", "via", "10.2.0.98"])?;
    let dir = TempDir::new("explain-neigh")?;
    let file = dir.file("rules.toml");
    std::fs::write(&file, RULES)?;
    let file = file.to_str().unwrap();

    // Before anything failed: nothing to say, with or without --lookup.
    let _ = router.run(&["ping", "-c1", "-W2", "10.2.0.2"]);
    for port in [80, 81, 83] {
        let n = notes(&router, file, port, true)?;
        assert!(!n.iter().any(|n| n.contains("ARP")), "{port}: {n:?}");
    }

    make_failed(&router, "10.2.0.99", "10.2.0.99")?;
    make_failed(&router, "172.16.0.9", "10.2.0.98")?;

    let dead_target = "target's neighbour 10.2.0.99 on eth1 is FAILED (no ARP answer): new \
                       flows are answered ICMP host unreachable (3/1) built in BPF, counted \
                       reply_host_unreach";
    // Behind a gateway (path "auto") flows keeping the client's address
    // take the stack anyway: counted fwd_stack.
    let through_stack = "through the stack, where a PREROUTING DNAT takes them (a virtual \
                         target) or the stack's ARP fails and answers ICMP host unreachable \
                         (3/1), counted fwd_stack";
    let dead_gateway =
        format!("target 172.16.0.9's gateway 10.2.0.98 on eth1 is FAILED (no ARP answer): new flows go {through_stack}");
    let dead_gateway_auto = format!(
        "target 172.16.0.9's gateway 10.2.0.98 on eth1 is FAILED (no ARP answer): new flows \
         that keep the client's address go {through_stack}; SNATed ones are answered ICMP host \
         unreachable (3/1) built in BPF, counted reply_host_unreach"
    );
    let n = notes(&router, file, 80, true)?;
    assert!(n.contains(&dead_target.to_string()), "{n:?}");
    let n = notes(&router, file, 81, true)?;
    assert!(n.contains(&dead_gateway), "{n:?}");
    let n = notes(&router, file, 82, true)?;
    assert!(n.contains(&dead_gateway_auto), "{n:?}");
    // The live target: nothing about ARP.
    let n = notes(&router, file, 83, true)?;
    assert!(!n.iter().any(|n| n.contains("ARP")), "{n:?}");
    // Without --lookup explain reads nothing of the host.
    let n = notes(&router, file, 80, false)?;
    assert!(!n.iter().any(|n| n.contains("ARP")), "{n:?}");

    // The JSON form carries the same note.
    let r = forwarder_in(
        &router.name,
        &[
            "explain",
            file,
            "--in",
            "lan0",
            "--from",
            "192.168.1.10:40000",
            "--to",
            "192.168.1.55:81",
            "--lookup",
            "--json",
        ],
    );
    let notes = r.json()["notes"].clone();
    assert!(
        notes
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == dead_gateway.as_str())),
        "{r}"
    );
    Ok(())
}
