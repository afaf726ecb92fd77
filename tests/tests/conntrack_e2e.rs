//! Connection tracking through the real daemon: flows are created, swept
//! after their timeouts, and a full table refuses new flows without
//! disturbing the established one.
use std::time::Duration;

use anyhow::Result;
use forwarder_tests::{
    netns,
    process::wait_for,
    require_root,
    servers::{wait_listening, Nginx},
    Daemon, Netns,
};

/// client 10.1.0.2 -- eth0 10.1.0.1 [router] eth1 10.2.0.1 -- server 10.2.0.2
struct Topo {
    client: Netns,
    router: Netns,
    server: Netns,
}

fn topo() -> Result<Topo> {
    let (client, router, server) =
        forwarder_tests::routed_line::build(["ctcli", "ctrtr", "ctsrv"])?;
    Ok(Topo {
        client,
        router,
        server,
    })
}

fn rules_file(global: &str) -> Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!(
        "fwt-{}-{}-ct.toml",
        std::process::id(),
        netns::next_id()
    ));
    std::fs::write(&p, forwarder_tests::routed_line::web_and_echo_rules(global))?;
    Ok(p)
}

fn flows(d: &Daemon) -> u64 {
    d.status_json().unwrap()["conntrack"]["flows"]
        .as_u64()
        .unwrap()
}

fn rule<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    st["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()
}

#[test]
fn flows_are_created_and_reclaimed_after_their_timeouts() -> Result<()> {
    if !require_root("flows_are_created_and_reclaimed_after_their_timeouts") {
        return Ok(());
    }
    netns::sweep();
    let t = topo()?;
    let _web = Nginx::start(&t.server, 8000, None, &[])?;
    let rules = rules_file(
        "[global.timeouts]\ntcp_established = \"3s\"\ntcp_fin_wait = \"2s\"\ntcp_time_wait = \"8s\"\ntcp_close = \"1s\"\ntcp_syn_sent = \"2s\"",
    )?;
    let d = Daemon::start(&t.router, &["--rules", rules.to_str().unwrap()])?;
    for _ in 0..3 {
        let body = t
            .client
            .output(&["curl", "-sS", "--max-time", "5", "http://10.1.0.1:8000/"])?;
        assert_eq!(body, "hello from the backend\n");
    }
    let st = d.status_json()?;
    let web = rule(&st, "web");
    assert_eq!(web["counters"]["new_flows"], 3, "{st}");
    assert_eq!(
        web["counters"]["active_flows"], 3,
        "entries live right after: {st}"
    );
    assert_eq!(st["conntrack"]["entries"], 6, "two entries per flow: {st}");
    // Closed connections sit in TIME_WAIT (8 s: long enough that "right
    // after" above holds however slowly a loaded machine runs three curls)
    // and the sweeper runs at least every second: gone after about 9 s;
    // the deadline is for a loaded machine.
    let gone = wait_for(Duration::from_secs(30), || (flows(&d) == 0).then_some(()));
    assert!(gone.is_some(), "flows not reclaimed: {}", d.status_json()?);
    assert_eq!(d.status_json()?["conntrack"]["entries"], 0);
    // A new connection after expiry works and is a new flow.
    t.client
        .run(&["curl", "-sS", "--max-time", "5", "http://10.1.0.1:8000/"])?;
    assert_eq!(rule(&d.status_json()?, "web")["counters"]["new_flows"], 4);
    let _ = std::fs::remove_file(rules);
    Ok(())
}

#[test]
fn full_table_refuses_new_flows_and_keeps_established_ones() -> Result<()> {
    if !require_root("full_table_refuses_new_flows_and_keeps_established_ones") {
        return Ok(());
    }
    netns::sweep();
    let t = topo()?;
    let mut echo = t
        .server
        .spawn(&["socat", "TCP-LISTEN:9000,reuseaddr,fork", "EXEC:cat"])?;
    wait_listening(&t.server, 't', 9000, &mut echo)?;
    let _web = Nginx::start(&t.server, 8000, None, &[])?;
    let rules = rules_file("[global]\nconntrack_max = 1")?;
    let d = Daemon::start(&t.router, &["--rules", rules.to_str().unwrap()])?;
    // One long-lived connection fills the table; while it is open a second
    // connection is refused; then the first still echoes.
    let script = r#"
import socket, sys
a = socket.create_connection(("10.1.0.1", 9000), timeout=3)
a.sendall(b"one\n"); assert a.recv(16) == b"one\n", "first echo"
try:
    b = socket.create_connection(("10.1.0.1", 8000), timeout=2)
    print("second-connected")
except OSError:
    print("second-refused")
a.sendall(b"two\n"); assert a.recv(16) == b"two\n", "echo after refusal"
print("first-alive")
"#;
    let out = t.client.output(&["python3", "-c", script])?;
    assert!(
        out.contains("second-refused"),
        "second flow must be refused: {out}"
    );
    assert!(
        out.contains("first-alive"),
        "established flow disturbed: {out}"
    );
    let st = d.status_json()?;
    let web = rule(&st, "web");
    assert!(
        web["counters"]["drops"]["table_full"].as_u64().unwrap() >= 1,
        "refusal counted per rule: {st}"
    );
    assert_eq!(rule(&st, "echo")["counters"]["new_flows"], 1);
    let _ = std::fs::remove_file(rules);
    Ok(())
}
