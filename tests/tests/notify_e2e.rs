//! systemd's readiness protocol (`Type=notify`, issue 15), spoken by the
//! real daemon to a NOTIFY_SOCKET this test binds, as systemd would:
//!
//! * READY=1 arrives once the forwards work: the first connection made the
//!   moment it arrives goes through (no retry), and nothing comes before it;
//! * an edit of the rules file (picked up by the watcher) is framed by
//!   RELOADING=1 with a MONOTONIC_USEC of now, then READY=1 whose STATUS=
//!   counts the new forwards, which work at once;
//! * a rejected file (by the watcher, then by `forwarder reload`) is framed
//!   the same way, READY=1 with a STATUS= that says it was rejected, and the
//!   running forwards keep working;
//! * SIGTERM sends STOPPING=1.
//!
//! Topology: lan (192.168.1.10) -- lan0 [host 192.168.1.55 | 192.168.100.1]
//! vm0 -- vm (192.168.100.80, a socat server on :80 that says "hello").
use std::{collections::BTreeMap, os::unix::net::UnixDatagram, path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    client::client,
    netns::{self, Netns},
    process::wait_for,
    require_root,
    topology::TempDir,
    Daemon,
};

fn forward(name: &str, port: u16) -> String {
    format!(
        "[[forward]]\nname = \"{name}\"\nin = \"lan0\"\nlisten = \"192.168.1.55\"\n\
         port = {port}\nto = \"192.168.100.80:80\"\nsnat = \"192.168.100.1\"\n\n"
    )
}

fn write_rules(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// One connection through the forward on `port`, no retry: "hello" back.
fn hello(lan: &Netns, port: u16) -> Result<()> {
    let to = format!("TCP:192.168.1.55:{port},connect-timeout=5");
    let o = client(lan, 10, &["socat", "-T", "5", "-", &to]);
    ensure!(
        o.stdout.trim() == "hello",
        "port {port}: {:?} {} {}",
        o.code,
        o.stdout,
        o.stderr
    );
    Ok(())
}

/// The next notification datagram as KEY=VALUE pairs.
fn next(sock: &UnixDatagram) -> Result<BTreeMap<String, String>> {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).context("no notification within 30 s")?;
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok(msg
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn monotonic_usec() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000 + ts.tv_nsec as i128 / 1000
}

/// RELOADING=1 with a MONOTONIC_USEC between `before` and now, then
/// READY=1; returns the READY message's STATUS.
fn reload_frame(sock: &UnixDatagram, before: i128) -> Result<String> {
    let m = next(sock)?;
    ensure!(
        m.get("RELOADING").map(String::as_str) == Some("1"),
        "expected RELOADING=1, got {m:?}"
    );
    let usec: i128 = m
        .get("MONOTONIC_USEC")
        .context("RELOADING=1 without MONOTONIC_USEC")?
        .parse()?;
    ensure!(
        (before..=monotonic_usec()).contains(&usec),
        "MONOTONIC_USEC={usec} is not between {before} and now"
    );
    let m = next(sock)?;
    ensure!(
        m.get("READY").map(String::as_str) == Some("1"),
        "expected READY=1, got {m:?}"
    );
    m.get("STATUS").cloned().context("READY=1 without STATUS")
}

#[test]
fn ready_after_the_forwards_work_and_reloading_ready_around_every_reload() -> Result<()> {
    if !require_root("ready_after_the_forwards_work_and_reloading_ready_around_every_reload") {
        return Ok(());
    }
    netns::sweep();
    let host = Netns::new("host")?;
    let lan = Netns::new("lan")?;
    let vm = Netns::new("vm")?;
    netns::veth(&lan, "eth0", &host, "lan0")?;
    netns::veth(&vm, "eth0", &host, "vm0")?;
    lan.addr("eth0", "192.168.1.10/24")?;
    host.addr("lan0", "192.168.1.55/24")?;
    host.addr("vm0", "192.168.100.1/24")?;
    vm.addr("eth0", "192.168.100.80/24")?;
    vm.ip(&["route", "add", "default", "via", "192.168.100.1"])?;
    host.sysctl("net.ipv4.ip_forward", "1")?;
    let mut server = vm.spawn(&["socat", "TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:echo hello"])?;
    wait_for(Duration::from_secs(10), || {
        vm.output(&["ss", "-ltn"])
            .unwrap_or_default()
            .contains(":80 ")
            .then_some(())
    })
    .with_context(|| format!("server did not listen: {}", server.log()))?;
    ensure!(server.is_running());

    let dir = TempDir::new("notify")?;
    let sock_path = dir.file("notify.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Inherited by the daemon (and harmlessly by the CLI commands).
    std::env::set_var("NOTIFY_SOCKET", &sock_path);
    let rules = dir.file("rules.toml");
    write_rules(&rules, &forward("web", 80))?;

    let daemon = Daemon::start(&host, &["--rules", rules.to_str().unwrap()])?;
    let m = next(&sock)?;
    ensure!(
        m.get("READY").map(String::as_str) == Some("1"),
        "first notification is not READY=1: {m:?}"
    );
    hello(&lan, 80).context("READY=1 came before the forward worked")?;
    let status = m.get("STATUS").cloned().unwrap_or_default();
    ensure!(
        status.contains("1 forwards") && status.contains("start"),
        "STATUS={status}"
    );

    // An edit, applied by the watcher.
    let before = monotonic_usec();
    write_rules(&rules, &(forward("web", 80) + &forward("web2", 8080)))?;
    let status = reload_frame(&sock, before)?;
    ensure!(
        status.contains("2 forwards") && status.contains("file changed"),
        "STATUS={status}"
    );
    hello(&lan, 8080).context("READY=1 came before the new forward worked")?;

    // A bad file: rejected by the watcher, then by `forwarder reload`.
    let before = monotonic_usec();
    write_rules(
        &rules,
        &(forward("web", 80) + "[[forward]]\nname = \"broken\"\n"),
    )?;
    let status = reload_frame(&sock, before)?;
    ensure!(
        status.starts_with("rules rejected (file changed)"),
        "STATUS={status}"
    );
    let before = monotonic_usec();
    let o = daemon.cli_output(&["reload"])?;
    ensure!(!o.status.success(), "reload of a bad file succeeded");
    let status = reload_frame(&sock, before)?;
    ensure!(
        status.starts_with("rules rejected (SIGHUP)"),
        "STATUS={status}"
    );
    hello(&lan, 80)?;
    hello(&lan, 8080)?;

    // Nothing else was sent in between; SIGTERM says STOPPING=1.
    let mut daemon = daemon;
    daemon.stop();
    let m = next(&sock)?;
    ensure!(
        m.get("STOPPING").map(String::as_str) == Some("1"),
        "expected STOPPING=1, got {m:?}"
    );
    Ok(())
}
