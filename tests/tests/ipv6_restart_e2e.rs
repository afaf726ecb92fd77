//! A daemon restart (SIGKILL, a few seconds with no daemon, a new one) does
//! not break established IPv6 flows, as it does not break IPv4 ones
//! (live_ops_e2e): a NAT66 TCP stream keeps delivering bytes in order, no
//! RST, through the gap and after the respawn, and a new IPv6 connection
//! works afterwards.
//!
//! The one fact a reader gets wrong: the attached programs and the pinned
//! flow table surviving the daemon is not enough. IPv6 runs in programs
//! reached by tail calls through `FWD_PROGS`, and the kernel empties a
//! program array when its last user reference goes; a private one emptied
//! when the daemon died, every IPv6 packet then passed to the host's stack
//! untranslated and the host reset the flow. The map is pinned now.
//!
//! The same stream through ip6tables NAT proves the harness: it keeps
//! flowing over the same time with no daemon involved at all. Two
//! consequences of the pin are checked too: a new daemon without the IPv6
//! path empties the slots the previous one filled, and `down` frees the
//! array (which holds programs that hold it: no leaked cycle).
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    netns::{self, Netns},
    process::{time_scale, wait_for, Bg},
    proxmox6::{url, Proxmox6, HOST_LAN6, HOST_VM6, VM80_6},
    require_root, Daemon,
};

/// The stream's port on the host's LAN address and on vm80.
const PORT: u16 = 7000;

const RULES: &str = r#"
[[forward]]
name = "stream6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 7000
to = "[fd00:100::80]:7000"
snat = "fd00:100::1"

[[forward]]
name = "http6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 80
to = "[fd00:100::80]:80"
snat = "fd00:100::1"
"#;

const IP6TABLES: &[&str] = &[
    "-t nat -A PREROUTING -i vmbr0 -d 2001:db8:1::55 -p tcp --dport 7000 -j DNAT --to-destination [fd00:100::80]:7000",
    "-t nat -A POSTROUTING -o vmbr1 -d fd00:100::80 -j SNAT --to-source fd00:100::1",
];

/// How long with no daemon: long enough that the stream sends many
/// segments (one every 0.2 s) and their ACKs through the gap.
const GAP: Duration = Duration::from_secs(3);

/// Lines that must arrive in each phase (a few seconds' worth at one line
/// each 0.2 s; under load fewer arrive per second, so the waits poll).
const LINES_PER_PHASE: usize = 10;

fn deadline() -> Duration {
    Duration::from_secs(40) * time_scale()
}

/// On vm80: a server that writes a numbered line every 0.2 s to each
/// client, for as long as the connection lives (a write on a reset
/// connection ends it).
fn stream_server(vm: &Netns, script: &Path) -> Result<Bg> {
    // A script file: socat's address syntax gives ':' ',' and brackets
    // meanings of its own.
    std::fs::write(
        script,
        "i=0\nwhile true; do i=$((i+1)); echo $i; sleep 0.2; done\n",
    )?;
    let listen = format!("TCP6-LISTEN:{PORT},bind=[{VM80_6}],reuseaddr,fork");
    let exec = format!("EXEC:sh {}", script.display());
    let mut bg = vm.spawn(&["socat", &listen, &exec])?;
    let needle = format!(":{PORT} ");
    wait_for(Duration::from_secs(10) * time_scale(), || {
        let ss = vm.output(&["ss", "-ltn"]).unwrap_or_default();
        ss.contains(&needle).then_some(())
    })
    .with_context(|| format!("the stream server did not listen: {}", bg.log()))?;
    ensure!(bg.is_running(), "the stream server exited: {}", bg.log());
    Ok(bg)
}

/// On the LAN client: one connection to the forwarded port, everything it
/// receives appended to `dest`. socat exits when the connection is reset.
fn stream_client(lan: &Netns, dest: &Path) -> Result<Bg> {
    let connect = format!("TCP6:[{HOST_LAN6}]:{PORT}");
    let out = format!("CREATE:{}", dest.display());
    lan.spawn(&["socat", "-u", &connect, &out])
}

/// The numbers received so far; an error unless they run 1, 2, 3... (TCP
/// delivers in order, so a gap means another connection or corruption).
fn received(dest: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(dest).unwrap_or_default();
    let mut n = 0;
    // A line still being written has no newline yet.
    for line in text.lines().take(text.matches('\n').count()) {
        n += 1;
        ensure!(line == n.to_string(), "line {n} of the stream is {line:?}");
    }
    Ok(n)
}

/// Waits until at least `more` lines beyond `from` have arrived (and at
/// least `min_wait` has passed), with the client's connection alive
/// throughout. Returns the count reached.
fn keeps_flowing(
    client: &mut Bg,
    dest: &Path,
    from: usize,
    more: usize,
    min_wait: Duration,
    phase: &str,
) -> Result<usize> {
    let t0 = Instant::now();
    loop {
        let n = received(dest)?;
        ensure!(
            client.is_running(),
            "{phase}: the stream's connection ended after {n} lines (reset?): {}",
            client.log()
        );
        if n >= from + more && t0.elapsed() >= min_wait {
            return Ok(n);
        }
        ensure!(
            t0.elapsed() < deadline(),
            "{phase}: the stream stopped: {n} lines, {} new in {:?} (wanted {more})",
            n - from,
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn setup() -> Result<(Proxmox6, Bg, PathBuf)> {
    netns::sweep();
    let t = Proxmox6::build()?;
    let server = stream_server(&t.vm80, &t.dir.file("stream.sh"))?;
    let dest = t.dir.file("stream.txt");
    Ok((t, server, dest))
}

#[test]
fn ip6tables_stream_proves_the_harness() -> Result<()> {
    if !require_root("ip6tables_stream_proves_the_harness") {
        return Ok(());
    }
    let (t, _server, dest) = setup()?;
    for r in IP6TABLES {
        let mut args = vec!["ip6tables", "-w", "5"];
        args.extend(r.split_whitespace());
        t.host.run(&args)?;
    }
    let mut client = stream_client(&t.lan, &dest)?;
    let n = keeps_flowing(&mut client, &dest, 0, LINES_PER_PHASE, GAP, "ip6tables")?;
    keeps_flowing(&mut client, &dest, n, LINES_PER_PHASE, GAP, "ip6tables")?;
    Ok(())
}

#[test]
fn an_established_nat66_flow_survives_sigkill_and_restart() -> Result<()> {
    if !require_root("an_established_nat66_flow_survives_sigkill_and_restart") {
        return Ok(());
    }
    let (t, _server, dest) = setup()?;
    let mut daemon = Daemon::start(&t.host, &["--rules", &rules_file(&t)?])?;
    let mut client = stream_client(&t.lan, &dest)?;
    let n = keeps_flowing(
        &mut client,
        &dest,
        0,
        LINES_PER_PHASE,
        Duration::ZERO,
        "with the daemon",
    )?;
    let flows: serde_json::Value = serde_json::from_str(&daemon.cli(&[
        "conntrack",
        "list",
        "--json",
        "--rule",
        "stream6",
    ])?)?;
    ensure!(
        flows.as_array().is_some_and(|f| f
            .iter()
            .any(|f| f["state"] == "ESTABLISHED" && f["translated"]["src"] == HOST_VM6)),
        "the stream is a NAT66 flow of the forwarder: {flows}"
    );

    // The host's stack answers packets of a flow it does not know with a
    // RST: what an untranslated packet of this flow gets.
    let rsts_before = t.host.snmp()?;
    daemon.kill9()?;
    let n = keeps_flowing(
        &mut client,
        &dest,
        n,
        LINES_PER_PHASE,
        GAP,
        "no daemon (killed)",
    )?;
    daemon.respawn()?;
    let st = daemon.state()?;
    ensure!(
        st["adopted"]
            .as_str()
            .is_some_and(|a| a.contains("adopted")),
        "the new daemon adopted the pinned state: {st}"
    );
    keeps_flowing(
        &mut client,
        &dest,
        n,
        LINES_PER_PHASE,
        Duration::ZERO,
        "after the respawn",
    )?;
    let rsts = t.host.snmp()?.since(&rsts_before, "TcpOutRsts");
    ensure!(rsts == 0, "the host sent {rsts} RSTs during the restart");

    // A new IPv6 connection through the new daemon, translated.
    t.check_http(&t.lan, &url(HOST_LAN6, 80, ""), HOST_VM6, || t.http_peers())?;
    ensure!(
        client.is_running(),
        "the stream still runs: {}",
        client.log()
    );
    Ok(())
}

fn rules_file(t: &Proxmox6) -> Result<String> {
    let p = t.dir.file("rules.toml");
    std::fs::write(&p, RULES)?;
    Ok(p.to_string_lossy().into_owned())
}

/// The pinned program array holds the IPv6 programs, and they hold it (and
/// every map they use): a cycle only the kernel's user-reference rule
/// breaks. After `down` removes the pin with no daemon running, the array
/// must be freed, so the programs and the flow table are too.
#[test]
fn down_frees_the_pinned_program_array() -> Result<()> {
    if !require_root("down_frees_the_pinned_program_array") {
        return Ok(());
    }
    let (t, _server, _dest) = setup()?;
    let mut daemon = Daemon::start(&t.host, &["--rules", &rules_file(&t)?])?;
    let pin = daemon.pin_dir.join(forwarder_common::MAP_PROGS);
    let show = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(&pin)
        .output()?;
    let info: serde_json::Value = serde_json::from_slice(&show.stdout)
        .with_context(|| format!("bpftool map show pinned {}: {show:?}", pin.display()))?;
    let id = info["id"]
        .as_u64()
        .context("the pinned map's id")?
        .to_string();
    let exists = || {
        std::process::Command::new("bpftool")
            .args(["map", "show", "id", &id])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ensure!(exists(), "map {id} is there while the daemon runs");
    ensure!(daemon.stop().is_some(), "the daemon exited on SIGTERM");
    ensure!(exists(), "the pin keeps map {id} without a daemon");
    let out = daemon.cli(&["down"])?;
    ensure!(out.contains("removed"), "down: {out}");
    // The kernel frees a map from a work queue: a moment after the last
    // reference goes.
    wait_for(deadline(), || (!exists()).then_some(()))
        .with_context(|| format!("map {id} ({}) still exists after down", pin.display()))?;
    Ok(())
}

/// The pinned slots still hold the previous daemon's IPv6 programs when a
/// new one starts: a daemon without the IPv6 path (a verifier that rejects
/// one, here FORWARDER_FORCE_IPV6=off, which takes the same path) must
/// empty them, not leave the old programs translating under its name.
#[test]
fn a_restart_without_the_ipv6_path_empties_the_slots() -> Result<()> {
    if !require_root("a_restart_without_the_ipv6_path_empties_the_slots") {
        return Ok(());
    }
    let (t, _server, _dest) = setup()?;
    let mut daemon = Daemon::start(&t.host, &["--rules", &rules_file(&t)?])?;
    let http = url(HOST_LAN6, 80, "");
    t.check_http(&t.lan, &http, HOST_VM6, || t.http_peers())?;
    ensure!(daemon.stop().is_some(), "the daemon exited on SIGTERM");
    // The daemon inherits this test process's environment (nextest runs
    // each test in a process of its own).
    std::env::set_var("FORWARDER_FORCE_IPV6", "off");
    let respawned = daemon.respawn();
    std::env::remove_var("FORWARDER_FORCE_IPV6");
    respawned?;
    let warnings = daemon.state()?["warnings"].to_string();
    ensure!(
        warnings.contains("the IPv6 path is off"),
        "the new daemon runs without the IPv6 path: {warnings}"
    );
    // Untranslated, the connection reaches the host's stack, which has
    // nothing on port 80: no backend sees it.
    let before = t.http_peers().len();
    let o = forwarder_tests::client::curl(&t.lan, 3, 5, &["-g"], &http);
    ensure!(!o.ok, "{http} is not forwarded any more: {o}");
    std::thread::sleep(Duration::from_millis(200));
    ensure!(
        t.http_peers().len() == before,
        "the backend saw a connection through the old programs"
    );
    Ok(())
}
