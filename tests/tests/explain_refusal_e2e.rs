//! Issue 20: `explain` says exactly what a source the allow-list refuses
//! meets. With `reject = "rst"` the kernel program answers it like a
//! closed port (a RST it builds itself), also on a port the host itself
//! listens on: a refused client never reaches the host's own service
//! (issue 11 item 7). With `reject = "drop"` it meets nothing. Real
//! traffic, then `explain` on the same file must say what the client saw,
//! and `check` on the host has nothing to warn about.
//!
//! ```text
//!  lan ns                       host ns (forwarder)                 vm ns
//!  eth0 192.168.1.10 ── veth ── lan0 192.168.1.55  vm0 192.168.100.1 ── veth ── eth0 192.168.100.80
//!                               socat :2222 "host"                   socat :22 "backend"
//!  forwards (allow 10.0.0.0/8, the client is refused):
//!    2222 -> :22 reject rst (the host listens there)   2223 -> :22 reject rst (nothing there)
//!    2224 -> :22 reject drop (the host listens there)
//! ```
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    cli::{forwarder, forwarder_in},
    client::client,
    netns::{self, veth},
    process::wait_for,
    require_root,
    topology::TempDir,
    Daemon, Netns,
};

const RULES: &str = r#"
[[forward]]
name = "host-listens"
in = "lan0"
listen = "192.168.1.55"
port = 2222
to = "192.168.100.80:22"
snat = "off"
allow = ["10.0.0.0/8"]

[[forward]]
name = "nothing-there"
in = "lan0"
listen = "192.168.1.55"
port = 2223
to = "192.168.100.80:22"
snat = "off"
allow = ["10.0.0.0/8"]

[[forward]]
name = "dropped"
in = "lan0"
listen = "192.168.1.55"
port = 2224
to = "192.168.100.80:22"
snat = "off"
allow = ["10.0.0.0/8"]
reject = "drop"
"#;

/// What the client reads from a connection to `port`, and socat's error.
fn connect(lan: &Netns, port: u16) -> (String, String) {
    let o = client(
        lan,
        8,
        &[
            "socat",
            "-T3",
            "STDIO",
            &format!("TCP:192.168.1.55:{port},connect-timeout=3"),
        ],
    );
    (o.stdout, o.stderr)
}

fn explain(file: &str, port: u16) -> String {
    let to = format!("192.168.1.55:{port}");
    let r = forwarder(&[
        "explain",
        file,
        "--in",
        "lan0",
        "--from",
        "192.168.1.10:40000",
        "--to",
        &to,
    ]);
    r.stdout
}

#[test]
fn a_refused_client_meets_what_explain_says() -> Result<()> {
    if !require_root("a_refused_client_meets_what_explain_says") {
        return Ok(());
    }
    netns::sweep();
    let host = Netns::new("rfhost")?;
    let lan = Netns::new("rflan")?;
    let vm = Netns::new("rfvm")?;
    veth(&lan, "eth0", &host, "lan0")?;
    veth(&vm, "eth0", &host, "vm0")?;
    lan.addr("eth0", "192.168.1.10/24")?;
    host.addr("lan0", "192.168.1.55/24")?;
    host.addr("vm0", "192.168.100.1/24")?;
    vm.addr("eth0", "192.168.100.80/24")?;
    vm.ip(&["route", "add", "default", "via", "192.168.100.1"])?;
    host.sysctl("net.ipv4.ip_forward", "1")?;
    let _backend = vm.spawn(&[
        "socat",
        "TCP-LISTEN:22,reuseaddr,fork",
        "SYSTEM:echo backend",
    ])?;
    // The host's own services on two of the forwarded ports.
    let _host_2222 = host.spawn(&[
        "socat",
        "TCP-LISTEN:2222,reuseaddr,fork",
        "SYSTEM:echo host",
    ])?;
    let _host_2224 = host.spawn(&[
        "socat",
        "TCP-LISTEN:2224,reuseaddr,fork",
        "SYSTEM:echo host",
    ])?;
    wait_for(Duration::from_secs(10), || {
        let h = host.output(&["ss", "-ltn"]).unwrap_or_default();
        let v = vm.output(&["ss", "-ltn"]).unwrap_or_default();
        (h.contains(":2222 ") && h.contains(":2224 ") && v.contains(":22 ")).then_some(())
    })
    .context("listeners")?;

    let dir = TempDir::new("refusal")?;
    let file = dir.file("rules.toml");
    std::fs::write(&file, RULES)?;
    let file = file.to_str().unwrap();
    let _d = Daemon::start(&host, &["--rules", file])?;

    // Refused, rst, a host service on the port: a closed port's reset
    // all the same, never the host's service.
    let (out, err) = connect(&lan, 2222);
    ensure!(
        out.is_empty() && err.contains("Connection refused"),
        "a refused client on a port the host listens on gets a RST: stdout {out:?}, stderr {err:?}"
    );
    let said = explain(file, 2222);
    ensure!(
        said.contains("it gets a TCP RST, like from a closed port")
            && said.contains("never this host's own service"),
        "explain must say RST, never the host's service: {said}"
    );

    // Refused, rst, nothing there: a closed port's reset, at once.
    let (out, err) = connect(&lan, 2223);
    ensure!(
        out.is_empty() && err.contains("Connection refused"),
        "a refused client on a port nothing listens on gets a RST: stdout {out:?}, stderr {err:?}"
    );
    let said = explain(file, 2223);
    ensure!(
        said.contains("it gets a TCP RST, like from a closed port"),
        "explain must say RST where nothing listens: {said}"
    );

    // Refused, drop: neither the host's service nor a reset.
    let (out, err) = connect(&lan, 2224);
    ensure!(
        out.is_empty() && !err.contains("Connection refused"),
        "reject = \"drop\" with a host service on the port: stdout {out:?}, stderr {err:?}"
    );
    let said = explain(file, 2224);
    ensure!(
        said.contains("dropped silently"),
        "explain must say dropped: {said}"
    );

    // check, on the host: refused sources reach no local service, so
    // nothing to warn about.
    let r = forwarder_in(&host.name, &["check", file]);
    ensure!(r.code == 0, "{r}");
    ensure!(
        !format!("{}{}", r.stdout, r.stderr).contains("host's own stack"),
        "check must not warn about refused sources: {r}"
    );
    Ok(())
}
