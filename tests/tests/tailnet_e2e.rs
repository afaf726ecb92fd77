//! Use case 2 (seeds/000) end to end: a VPS and a phone on a tailnet reach
//! Kubernetes ClusterIPs on a k3s node through forwards on the node's
//! `tailscale0` (L3 tun, MTU 1280). Real clients (curl) and real servers
//! (nginx in the pods, logging client addresses). The same checks run
//! against the seed's socat units + per-app firewall rules (proving the
//! harness) and against the forwarder started from the shipped example
//! `rules/examples/tailnet-k3s.toml`; then the node's `tailscale0` appears
//! late, changes address, and is re-created under a running forwarder.
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use forwarder_tests::{
    client::{check_new_peers, client, curl, sha256, Out},
    k3s::{self, App, K3s, IMMICH, JELLYFIN, NODE_LAN, NODE_TS, NODE_TS_NEW, PHONE, VPS},
    netns,
    process::wait_for,
    require_root, tailnet, Bg, Daemon, Netns,
};

fn example() -> String {
    format!(
        "{}/../rules/examples/tailnet-k3s.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

// ---------------------------------------------------------------- legacy

/// The seed's relay for one app, exactly as its systemd unit runs it.
fn socat_unit(t: &K3s, app: &App) -> Result<Bg> {
    let mut bg = t.node.spawn(&[
        "/usr/bin/socat",
        &format!("TCP-LISTEN:{},bind={NODE_TS},fork", app.node_port),
        &format!("TCP:{}:80", app.cluster_ip),
    ])?;
    let needle = format!("{NODE_TS}:{} ", app.node_port);
    wait_for(Duration::from_secs(10), || {
        let ss = t.node.output(&["ss", "-ltn"]).unwrap_or_default();
        ss.contains(&needle).then_some(())
    })
    .with_context(|| format!("socat for {} did not listen: {}", app.name, bg.log()))?;
    ensure!(
        bg.is_running(),
        "socat for {} exited: {}",
        app.name,
        bg.log()
    );
    Ok(bg)
}

/// The seed's per-app firewall (`ufw allow from 100.101.92.95 to any port
/// 8080 proto tcp`), as iptables INPUT rules, with the phone also admitted
/// to jellyfin. Others are refused with a TCP reset (ufw's default is a
/// silent drop) so a refused peer fails at once, as with the forwarder's
/// `reject = "rst"`; the checks are then the same for both setups.
const SEED_FIREWALL: &[&str] = &[
    "-A INPUT -p tcp --dport 8080 -s 100.101.92.95 -j ACCEPT",
    "-A INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset",
    "-A INPUT -p tcp --dport 8081 -s 100.101.92.95 -j ACCEPT",
    "-A INPUT -p tcp --dport 8081 -s 100.90.12.7 -j ACCEPT",
    "-A INPUT -p tcp --dport 8081 -j REJECT --reject-with tcp-reset",
];

/// The socat units and the firewall; the units stop when dropped.
fn seed_setup(t: &K3s) -> Result<Vec<Bg>> {
    for r in SEED_FIREWALL {
        let mut args = vec!["iptables", "-w", "5"];
        args.extend(r.split_whitespace());
        t.node.run(&args)?;
    }
    Ok(vec![socat_unit(t, &IMMICH)?, socat_unit(t, &JELLYFIN)?])
}

// ---------------------------------------------------------------- checks

/// Who the pods must see as the client: the node itself behind socat, the
/// tailnet peers themselves when the forwarder keeps their address.
struct Seen {
    vps: &'static str,
    phone: &'static str,
}

const VIA_SOCAT: Seen = Seen {
    vps: NODE_LAN,
    phone: NODE_LAN,
};
const KEPT: Seen = Seen {
    vps: VPS,
    phone: PHONE,
};

fn url(node: &str, app: &App, path: &str) -> String {
    format!("http://{node}:{}/{path}", app.node_port)
}

/// `from` fetches /app of `app` through `node`; the pod saw `seen`.
fn check_app(t: &K3s, from: &Netns, node: &str, app: &App, seen: &str) -> Result<()> {
    let before = t.peers(app).len();
    let u = url(node, app, "app");
    let o = curl(from, 3, 5, &[], &u);
    ensure!(o.ok && o.stdout == k3s::app_body(app), "curl {u}: {o}");
    check_new_peers(app.name, before, 1, seen, || t.peers(app))
}

/// 20 MB from immich through MTU 1280 arrives intact.
fn check_download(t: &K3s, node: &str, seen: &str) -> Result<()> {
    let before = t.peers(&IMMICH).len();
    let dest = t.dir.file("download.bin");
    let _ = std::fs::remove_file(&dest);
    let u = url(node, &IMMICH, k3s::BIG_FILE);
    let o = curl(
        &t.vps,
        3,
        40,
        &[
            "-o",
            dest.to_str().unwrap(),
            "-w",
            "%{http_code} %{size_download} %{speed_download}",
        ],
        &u,
    );
    ensure!(o.ok, "curl {u}: {o}");
    let len = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    ensure!(
        len == k3s::BIG_SIZE as u64,
        "downloaded {len} bytes, want {}: {o}",
        k3s::BIG_SIZE
    );
    let served = sha256(&t.immich.www().join(k3s::BIG_FILE))?;
    let got = sha256(&dest)?;
    let _ = std::fs::remove_file(&dest);
    ensure!(
        served == got,
        "20 MB download corrupted: sha256 {got}, served {served}"
    );
    check_new_peers("immich download", before, 1, seen, || t.peers(&IMMICH))
}

/// An 8 MB upload (PUT, like a photo upload) reaches the pod intact.
fn check_upload(t: &K3s, node: &str, seen: &str) -> Result<()> {
    const SIZE: usize = 8_000_000;
    let before = t.peers(&IMMICH).len();
    let src = t.dir.file("upload.bin");
    // Different bytes than the download: the tail of a longer stream.
    let data = forwarder_tests::servers::pseudo_random(SIZE + 4096);
    std::fs::write(&src, &data[4096..])?;
    let name = format!("up-{}.bin", forwarder_tests::netns::next_id());
    let u = url(node, &IMMICH, &format!("uploads/{name}"));
    let o = curl(
        &t.vps,
        3,
        40,
        &["-T", src.to_str().unwrap(), "-w", "%{http_code}"],
        &u,
    );
    ensure!(o.ok && o.stdout.ends_with("201"), "curl -T {u}: {o}");
    let stored = t.immich.www().join("uploads").join(&name);
    let (want, got) = (sha256(&src)?, sha256(&stored)?);
    let _ = std::fs::remove_file(&stored);
    ensure!(
        want == got,
        "8 MB upload corrupted: pod stored sha256 {got}, sent {want}"
    );
    check_new_peers("immich upload", before, 1, seen, || t.peers(&IMMICH))
}

/// The phone is refused on immich like on a closed port: at once, with a
/// reset, and the pod sees nothing.
fn check_phone_refused(t: &K3s, node: &str) -> Result<()> {
    let before = t.peers(&IMMICH).len();
    let u = url(node, &IMMICH, "app");
    let snmp0 = t.phone.snmp()?;
    // -v: curl 7.88 says "Couldn't connect to server" for any failed
    // connect; only its verbose log names the reason.
    let o = curl(&t.phone, 3, 5, &["-v"], &u);
    ensure!(
        !o.ok && o.code == Some(7) && o.stderr.contains("Connection refused"),
        "phone -> {u}: want 'Connection refused' (curl exit 7): {o}"
    );
    // "At once" as the phone's kernel saw it, not by the clock (a loaded
    // machine is slow to start curl): the first SYN got the refusal, none
    // was sent again. A dropped SYN would be retransmitted after 1 s.
    let again = t.phone.snmp()?.since(&snmp0, "TcpExtTCPSynRetrans");
    ensure!(
        again == 0,
        "phone -> {u}: refused only after {again} SYN retransmission(s) (want at once, like \
         a closed port); curl took {:?}",
        o.elapsed
    );
    std::thread::sleep(Duration::from_millis(200));
    let new = t.peers(&IMMICH).len() - before;
    ensure!(
        new == 0,
        "immich pod logged {new} request(s) for the refused phone"
    );
    Ok(())
}

/// Runs every check of the seed's scenario against the node's tailnet
/// address `node`; returns the failures as (check number, message).
fn failures(t: &K3s, node: &str, seen: &Seen) -> Vec<(u32, String)> {
    type Check<'a> = (u32, &'a str, Box<dyn Fn() -> Result<()> + 'a>);
    let checks: Vec<Check> = vec![
        (
            1,
            "vps -> immich :8080",
            Box::new(|| check_app(t, &t.vps, node, &IMMICH, seen.vps)),
        ),
        (
            2,
            "vps -> jellyfin :8081",
            Box::new(|| check_app(t, &t.vps, node, &JELLYFIN, seen.vps)),
        ),
        (
            3,
            "20 MB download via MTU 1280",
            Box::new(|| check_download(t, node, seen.vps)),
        ),
        (
            4,
            "8 MB upload via MTU 1280",
            Box::new(|| check_upload(t, node, seen.vps)),
        ),
        (
            5,
            "phone refused on :8080",
            Box::new(|| check_phone_refused(t, node)),
        ),
        (
            6,
            "phone -> jellyfin :8081",
            Box::new(|| check_app(t, &t.phone, node, &JELLYFIN, seen.phone)),
        ),
    ];
    let mut out = Vec::new();
    for (n, name, check) in &checks {
        let t0 = Instant::now();
        let r = check();
        eprintln!(
            "check {n} {name}: {} ({:.1}s)",
            if r.is_ok() { "ok" } else { "FAILED" },
            t0.elapsed().as_secs_f64()
        );
        if let Err(e) = r {
            out.push((*n, format!("check {n} {name}: {e:#}")));
        }
    }
    out
}

/// What the relay, the node's device, kube-proxy and the forwarder counted:
/// printed with every failure so a broken step can be located.
fn diagnostics(t: &K3s, daemon: Option<&Daemon>) -> String {
    let mut s = String::new();
    match t.tailnet.stats() {
        Ok(st) => s += &format!("{st}\n  per member: {}\n", st.0["members"]),
        Err(e) => s += &format!("relay stats: {e:#}\n"),
    }
    s += &t
        .node
        .output(&["ip", "-s", "addr", "show", "dev", tailnet::DEV])
        .unwrap_or_else(|e| format!("node {}: {e:#}\n", tailnet::DEV));
    s += &t
        .node
        .output(&[
            "iptables",
            "-w",
            "5",
            "-t",
            "nat",
            "-L",
            "KUBE-SERVICES",
            "-v",
            "-n",
            "-x",
        ])
        .unwrap_or_default();
    s += &format!(
        "SYNs the node's stack received (after TC): {:#?}\n",
        t.node_syns()
    );
    for (name, peer) in [("VPS", &t.vps), ("phone", &t.phone)] {
        s += &format!(
            "SYN-ACKs the {name} received: {:#?}\n",
            t.peer_synacks(peer)
        );
    }
    // What the pods' TCP saw (SYN-RECV with the peer address: a SYN
    // arrived but the handshake never completed) and what the node's
    // conntrack made of the flows.
    for (name, ns) in [
        ("immich pod", &t.immich_pod),
        ("jellyfin pod", &t.jellyfin_pod),
    ] {
        let ss = ns.output(&["ss", "-tan"]).unwrap_or_default();
        let socks: Vec<&str> = ss
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("LISTEN"))
            .collect();
        s += &format!("{name} sockets: {socks:#?}\n");
    }
    s += &format!(
        "node conntrack:\n{}",
        t.node
            .output(&["conntrack", "-L", "-p", "tcp", "-o", "extended"])
            .unwrap_or_else(|e| format!("{e:#}\n"))
    );
    if let Some(d) = daemon {
        s += &d
            .cli(&["status"])
            .unwrap_or_else(|e| format!("forwarder status: {e:#}\n"));
    }
    s
}

fn check_all(t: &K3s, node: &str, seen: &Seen, daemon: Option<&Daemon>) {
    let f = failures(t, node, seen);
    assert!(
        f.is_empty(),
        "{} of 6 checks failed:\n{}\n---- diagnostics ----\n{}",
        f.len(),
        f.iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        diagnostics(t, daemon)
    );
}

/// Prints the daemon's log if the test panics while it is alive.
struct LogOnPanic<'a>(&'a Daemon);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- forwarder daemon log ----\n{}", self.0.log());
        }
    }
}

// ------------------------------------------------------ harness self-tests

/// The stand-in tailnet itself: delivery by current address, MTU 1280,
/// drops without owner, readdressing, stale netmaps, delete and re-create.
/// The live-interface tests below rely on all of it.
#[test]
fn tailnet_relay_follows_devices() -> Result<()> {
    if !require_root("tailnet_relay_follows_devices") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s::build()?;
    let ping = |from: &Netns, to: &str| client(from, 4, &["ping", "-c", "1", "-W", "2", to]);
    for ns in [&t.vps, &t.phone, &t.node] {
        let out = ns.output(&["ip", "-j", "link", "show", tailnet::DEV])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(v[0]["mtu"], tailnet::MTU, "{}: {out}", ns.name);
        assert!(
            v[0]["link_type"] == "none" && v[0]["flags"].to_string().contains("POINTOPOINT"),
            "{} is not an L3 tun: {out}",
            ns.name
        );
    }
    let o = ping(&t.vps, NODE_TS);
    assert!(o.ok, "vps -> node: {o}");
    let o = ping(&t.phone, VPS);
    assert!(o.ok, "phone -> vps: {o}");
    // No route to the pods from the tailnet peers.
    let o = ping(&t.vps, IMMICH.pod);
    assert!(!o.ok, "vps reached a pod directly: {o}");

    let s0 = t.tailnet.stats()?;
    let o = ping(&t.vps, "100.100.100.100");
    assert!(!o.ok, "nobody owns 100.100.100.100: {o}");
    let s1 = t.tailnet.stats()?;
    assert!(s1.get("no_owner") > s0.get("no_owner"), "{s1}");
    assert_eq!(s1.0["last_no_owner"], "100.100.100.100", "{s1}");

    // Readdress: the relay follows within its 100 ms refresh.
    let ifindex = |ns: &Netns| -> Result<u64> {
        let out = ns.output(&["ip", "-j", "link", "show", tailnet::DEV])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["ifindex"].as_u64().context("ifindex")
    };
    let idx0 = ifindex(&t.node)?;
    t.node_readdress(NODE_TS_NEW)?;
    assert_eq!(tailnet::addrs(&t.node)?, [NODE_TS_NEW]);
    t.wait_relay_knows(NODE_TS_NEW)?;
    let o = ping(&t.vps, NODE_TS_NEW);
    assert!(o.ok, "vps -> node's new address: {o}");
    let o = ping(&t.vps, NODE_TS);
    assert!(!o.ok, "the old address still answers: {o}");

    // A stale netmap still delivers the old address to the node; the node
    // no longer owns it and routes it back out, which the relay refuses.
    t.tailnet.stale(NODE_TS, &t.node)?;
    let s0 = t.tailnet.stats()?;
    let o = ping(&t.vps, NODE_TS);
    assert!(!o.ok, "stale address answered: {o}");
    let s1 = t.tailnet.stats()?;
    assert!(
        s1.delivered_to(&t.node) > s0.delivered_to(&t.node)
            && s1.get("hairpin") > s0.get("hairpin"),
        "stale delivery: before {s0}, after {s1}"
    );

    // Delete and re-create: a new device with a new ifindex.
    t.tailnet.down(&t.node)?;
    assert!(
        t.node.run(&["ip", "link", "show", tailnet::DEV]).is_err(),
        "device still exists after down"
    );
    let o = ping(&t.vps, NODE_TS_NEW);
    assert!(!o.ok, "vps reached a node without tailscale0: {o}");
    t.node_up(NODE_TS)?;
    let o = ping(&t.vps, NODE_TS);
    assert!(o.ok, "vps -> re-created node device: {o}");
    assert_ne!(
        ifindex(&t.node)?,
        idx0,
        "re-created device kept its ifindex"
    );
    Ok(())
}

/// The seed's setup, proving the harness: socat units with the per-app
/// firewall carry every check; the pods see the node, not the client.
#[test]
fn socat_units_prove_the_harness() -> Result<()> {
    if !require_root("socat_units_prove_the_harness") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s::build()?;
    let _units = seed_setup(&t)?;
    check_all(&t, NODE_TS, &VIA_SOCAT, None);
    Ok(())
}

/// Negative control: without relays on the node every check that needs a
/// forward fails, fast; only "phone refused" passes (nothing listens, so
/// the node resets). A pass above means the traffic really was relayed.
#[test]
fn harness_detects_missing_forwards() -> Result<()> {
    if !require_root("harness_detects_missing_forwards") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s::build()?;
    let t0 = Instant::now();
    let failed: Vec<u32> = failures(&t, NODE_TS, &VIA_SOCAT)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(failed, [1, 2, 3, 4, 6], "checks that failed without relays");
    assert!(
        t0.elapsed() < Duration::from_secs(30) * forwarder_tests::process::time_scale(),
        "failing checks took {:?}",
        t0.elapsed()
    );
    Ok(())
}

/// Negative control for the tailnet: with socat running but the node's
/// `tailscale0` gone, every check fails, including "refused" (nothing
/// arrives to be refused), and the relay counts the packets it could not
/// deliver.
#[test]
fn harness_detects_missing_tailnet() -> Result<()> {
    if !require_root("harness_detects_missing_tailnet") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s::build()?;
    let _units = seed_setup(&t)?;
    t.tailnet.down(&t.node)?;
    let s0 = t.tailnet.stats()?;
    let failed: Vec<u32> = failures(&t, NODE_TS, &VIA_SOCAT)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        failed,
        [1, 2, 3, 4, 5, 6],
        "checks that failed without the tailnet"
    );
    let s1 = t.tailnet.stats()?;
    assert!(s1.get("no_owner") > s0.get("no_owner"), "{s1}");
    assert_eq!(s1.0["last_no_owner"], NODE_TS, "{s1}");
    Ok(())
}

// -------------------------------------------------------------- forwarder

/// No userspace relay in the node: its only process is the daemon and
/// nothing listens on the forwarded ports.
fn check_no_userspace_relay(t: &K3s) -> Result<()> {
    let pids = t.node.output(&["ip", "netns", "pids", &t.node.name])?;
    let pids: Vec<&str> = pids.split_whitespace().collect();
    ensure!(!pids.is_empty(), "no process in the node namespace");
    let mut args = vec!["ps", "-o", "pid=,comm=,args=", "-p"];
    let list = pids.join(",");
    args.push(&list);
    let ps = t.node.output(&args)?;
    for line in ps.lines() {
        let comm = line.split_whitespace().nth(1).unwrap_or("");
        ensure!(
            comm == "forwarder",
            "userspace process in the node namespace: {line}\n{ps}"
        );
    }
    let ss = t.node.output(&["ss", "-ltnp"])?;
    for a in [&IMMICH, &JELLYFIN] {
        ensure!(
            !ss.contains(&format!(":{} ", a.node_port)),
            "something listens on :{} in the node:\n{ss}",
            a.node_port
        );
    }
    Ok(())
}

/// `status --json` counts translated packets and flows for both rules, and
/// the phone's refusal on immich.
fn check_status(d: &Daemon) -> Result<()> {
    let st = d.status_json()?;
    let rules = st["rules"].as_array().context("status rules")?;
    for (name, min_flows) in [("immich", 3), ("jellyfin", 2)] {
        let r = rules
            .iter()
            .find(|r| r["name"] == name)
            .with_context(|| format!("no rule {name} in status: {st}"))?;
        let c = &r["counters"];
        ensure!(
            c["packets"].as_u64().unwrap_or(0) > 0
                && c["new_flows"].as_u64().unwrap_or(0) >= min_flows,
            "rule {name}: want packets > 0 and >= {min_flows} flows: {c}"
        );
        if name == "immich" {
            ensure!(
                c["drops"]["denied"].as_u64().unwrap_or(0) >= 1,
                "rule immich: the phone's refused SYN is not counted as denied: {c}"
            );
        }
        // The ClusterIP flows went through the stack (kube-proxy DNATs
        // them) and kept the client's address.
        ensure!(
            c["stack_flows"] == c["new_flows"] && c["snat_flows"] == 0,
            "rule {name}: want every flow through the stack without SNAT: {c}"
        );
        // MSS clamping: the pods answer with MSS 1460, which a 1280-byte
        // tailnet cannot carry; every SYN-ACK is lowered to 1240.
        ensure!(
            r["mss"] == 1240 && c["mss_clamped"].as_u64().unwrap_or(0) >= min_flows,
            "rule {name}: want MSS clamped to 1240 on each SYN-ACK: mss {} {c}",
            r["mss"]
        );
    }
    Ok(())
}

/// The kube-proxy rules, so a test can see the forwarder added none.
fn nat_rules(t: &K3s) -> String {
    t.node
        .output(&["iptables-save", "-t", "nat"])
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn forwarder_replaces_socat_units() -> Result<()> {
    if !require_root("forwarder_replaces_socat_units") {
        return Ok(());
    }
    netns::sweep();
    let out = std::process::Command::new(forwarder_tests::daemon::forwarder_bin())
        .args(["check", &example()])
        .output()?;
    assert!(
        out.status.success(),
        "forwarder check {}: {}{}",
        example(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let t = K3s::build()?;
    let nat_before = nat_rules(&t);
    let daemon = Daemon::start(&t.node, &["--rules", &example()])?;
    let _log = LogOnPanic(&daemon);
    // Every check runs; one assertion reports all failures at once.
    let mut f = failures(&t, NODE_TS, &KEPT);
    let nat = || {
        let now = nat_rules(&t);
        ensure!(
            now == nat_before,
            "the forwarder changed the nat table:\n{now}"
        );
        Ok(())
    };
    let more: [(u32, &str, Result<()>); 3] = [
        (7, "no userspace relay", check_no_userspace_relay(&t)),
        (8, "nat table untouched", nat()),
        (9, "status counters", check_status(&daemon)),
    ];
    for (n, name, r) in more {
        eprintln!(
            "check {n} {name}: {}",
            if r.is_ok() { "ok" } else { "FAILED" }
        );
        if let Err(e) = r {
            f.push((n, format!("check {n} {name}: {e:#}")));
        }
    }
    assert!(
        f.is_empty(),
        "{} of 9 checks failed:\n{}\n---- diagnostics ----\n{}",
        f.len(),
        f.iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        diagnostics(&t, Some(&daemon))
    );
    Ok(())
}

/// Polls a fetch of immich's /app from the VPS via `node` with short
/// timeouts until it works; returns how long that took.
fn wait_forwarding(t: &K3s, node: &str, limit: Duration) -> Result<Duration> {
    let limit = limit * forwarder_tests::process::time_scale();
    let t0 = Instant::now();
    let u = url(node, &IMMICH, "app");
    let mut last: Option<Out> = None;
    let mut tries = 0;
    while t0.elapsed() < limit {
        tries += 1;
        let o = curl(&t.vps, 1, 2, &[], &u);
        if o.ok && o.stdout == k3s::app_body(&IMMICH) {
            return Ok(t0.elapsed());
        }
        last = Some(o);
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{u} not forwarded within {limit:?} ({tries} tries); last: {}",
        last.map_or("-".into(), |o| o.to_string())
    )
}

/// The steps of a live-interface test. Every step runs even when an
/// earlier one failed (each failure is reported with the diagnostics of
/// that moment), so one run shows which of the live steps work.
struct Steps<'a> {
    t: &'a K3s,
    d: &'a Daemon,
    failed: Vec<String>,
}

impl<'a> Steps<'a> {
    fn new(t: &'a K3s, d: &'a Daemon) -> Self {
        Steps {
            t,
            d,
            failed: Vec::new(),
        }
    }

    fn step<T>(&mut self, name: &str, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                eprintln!("step {name}: ok");
                Some(v)
            }
            Err(e) => {
                eprintln!("step {name}: FAILED");
                self.failed.push(format!(
                    "step {name}: {e:#}\n---- diagnostics ----\n{}",
                    diagnostics(self.t, Some(self.d))
                ));
                None
            }
        }
    }

    /// Immich forwards via `node`; prints how long it took (0.1-0.2 s;
    /// the 15 s deadline is for a loaded machine, not a speed claim).
    fn forwarding(&mut self, name: &str, node: &str) {
        let r = wait_forwarding(self.t, node, Duration::from_secs(15));
        if let Some(took) = self.step(name, r) {
            eprintln!("  forwarding via {node} after {took:?}");
        }
    }

    fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} step(s) failed:\n{}",
            self.failed.len(),
            self.failed.join("\n\n")
        );
    }
}

/// A started forwarder waits for `tailscale0`: tailscaled usually starts
/// after it at boot.
#[test]
fn forwarder_starts_before_tailscale0_exists() -> Result<()> {
    if !require_root("forwarder_starts_before_tailscale0_exists") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s::build_with(false)?;
    let daemon = Daemon::start(&t.node, &["--rules", &example()])?;
    let _log = LogOnPanic(&daemon);
    let mut s = Steps::new(&t, &daemon);
    t.node_up(NODE_TS)?;
    s.forwarding("1 forwarding once tailscale0 appeared", NODE_TS);
    s.step(
        "2 immich saw the VPS",
        check_app(&t, &t.vps, NODE_TS, &IMMICH, VPS),
    );
    s.finish();
    Ok(())
}

/// The coordination server gives the node a new address: forwarding
/// follows it, and the old address (still delivered by a peer with a stale
/// netmap) is no longer forwarded.
#[test]
fn forwarder_follows_tailscale0_address() -> Result<()> {
    if !require_root("forwarder_follows_tailscale0_address") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s::build()?;
    let daemon = Daemon::start(&t.node, &["--rules", &example()])?;
    let _log = LogOnPanic(&daemon);
    let mut s = Steps::new(&t, &daemon);
    s.forwarding("1 forwarding before the change", NODE_TS);

    t.node_readdress(NODE_TS_NEW)?;
    t.tailnet.stale(NODE_TS, &t.node)?;
    s.forwarding("2 forwarding on the new address", NODE_TS_NEW);
    s.step(
        "3 immich saw the VPS via the new address",
        check_app(&t, &t.vps, NODE_TS_NEW, &IMMICH, VPS),
    );

    let before = t.peers(&IMMICH).len();
    let s0 = t.tailnet.stats()?;
    let o = curl(&t.vps, 2, 3, &[], &url(NODE_TS, &IMMICH, "app"));
    let s1 = t.tailnet.stats()?;
    let r = (|| {
        ensure!(
            s1.delivered_to(&t.node) > s0.delivered_to(&t.node),
            "the stale address never reached the node, this proves nothing: {s1}"
        );
        ensure!(!o.ok, "the old address {NODE_TS} still forwards: {o}");
        let new = t.peers(&IMMICH).len() - before;
        ensure!(new == 0, "immich saw {new} request(s) via the old address");
        Ok(())
    })();
    s.step("4 the old address no longer forwards", r);
    s.finish();
    Ok(())
}

/// tailscaled restarts: `tailscale0` is deleted and created again (new
/// ifindex); forwarding resumes.
#[test]
fn forwarder_survives_tailscale0_recreate() -> Result<()> {
    if !require_root("forwarder_survives_tailscale0_recreate") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s::build()?;
    let daemon = Daemon::start(&t.node, &["--rules", &example()])?;
    let _log = LogOnPanic(&daemon);
    let mut s = Steps::new(&t, &daemon);
    s.forwarding("1 forwarding before tailscale0 is re-created", NODE_TS);
    t.tailnet.down(&t.node)?;
    std::thread::sleep(Duration::from_millis(500));
    t.node_up(NODE_TS)?;
    s.forwarding("2 forwarding after tailscale0 was re-created", NODE_TS);
    s.step(
        "3 jellyfin saw the VPS",
        check_app(&t, &t.vps, NODE_TS, &JELLYFIN, VPS),
    );
    s.finish();
    Ok(())
}
