//! Use case 1 (seeds/002) end to end: a LAN client reaches the Proxmox VMs
//! through port forwards on the host, with real clients (curl, openssl,
//! ssh-keyscan, dig) and real servers that log who connected. The same
//! checks run against the seed's iptables rules (proving the harness) and
//! against the forwarder daemon driven by a rules file.
use std::time::Duration;

use anyhow::{ensure, Result};
use forwarder_tests::{
    client::{check_new_peers, client, sha256},
    netns, require_root,
    topology::{self, Proxmox},
    Daemon,
};

/// The seed's eight rules (docs/use-cases.md, Case 1) plus the UDP pair for
/// the 5353 -> vm80:53 forward from the issue.
const SEED_IPTABLES: &[&str] = &[
    "-t nat -A PREROUTING -i vmbr0 -p tcp --dport 80 -j DNAT --to-destination 192.168.100.80",
    "-t nat -A PREROUTING -i vmbr0 -p tcp --dport 443 -j DNAT --to-destination 192.168.100.80",
    "-t nat -A PREROUTING -i vmbr0 -p tcp --dport 6443 -j DNAT --to-destination 192.168.100.50:6443",
    "-t nat -A PREROUTING -i vmbr0 -p tcp --dport 2222 -j DNAT --to-destination 192.168.100.81:22",
    "-t nat -A POSTROUTING -p tcp --dport 80 -d 192.168.100.80 -j SNAT --to-source 192.168.100.1",
    "-t nat -A POSTROUTING -p tcp --dport 443 -d 192.168.100.80 -j SNAT --to-source 192.168.100.1",
    "-t nat -A POSTROUTING -p tcp --dport 6443 -d 192.168.100.50 -j SNAT --to-source 192.168.100.1",
    "-t nat -A POSTROUTING -p tcp --dport 22 -d 192.168.100.81 -j SNAT --to-source 192.168.100.1",
    "-t nat -A PREROUTING -i vmbr0 -p udp --dport 5353 -j DNAT --to-destination 192.168.100.80:53",
    "-t nat -A POSTROUTING -p udp --dport 53 -d 192.168.100.80 -j SNAT --to-source 192.168.100.1",
];

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn iptables(topo: &Proxmox, rules: &[&str]) -> Result<()> {
    for r in rules {
        let mut args = vec!["iptables", "-w", "5"];
        args.extend(r.split_whitespace());
        topo.host.run(&args)?;
    }
    Ok(())
}

const INDEX: &str = "hello from the backend\n";

/// 1. HTTP through port 80: index body, and vm80 saw `snat`.
fn check_http(t: &Proxmox, snat: &str) -> Result<()> {
    let before = t.http_peers().len();
    let o = client(
        &t.lan,
        8,
        &[
            "curl",
            "-sS",
            "--connect-timeout",
            "3",
            "--max-time",
            "5",
            "http://192.168.1.55/",
        ],
    );
    ensure!(o.ok && o.stdout == INDEX, "curl http://192.168.1.55/: {o}");
    check_new_peers("http :80", before, 1, snat, || t.http_peers())
}

/// 2. HTTPS through port 443 to vm80:443.
fn check_https(t: &Proxmox, snat: &str) -> Result<()> {
    let before = t.https_peers().len();
    let o = client(
        &t.lan,
        8,
        &[
            "curl",
            "-sSk",
            "--connect-timeout",
            "3",
            "--max-time",
            "5",
            "https://192.168.1.55/",
        ],
    );
    ensure!(
        o.ok && o.stdout == INDEX,
        "curl -k https://192.168.1.55/: {o}"
    );
    check_new_peers("https :443", before, 1, snat, || t.https_peers())
}

/// 3. TLS handshake on 6443 with vm50's own certificate.
fn check_tls_6443(t: &Proxmox, snat: &str) -> Result<()> {
    let before = t.tls_peers().len();
    let o = client(
        &t.lan,
        6,
        &[
            "openssl",
            "s_client",
            "-connect",
            "192.168.1.55:6443",
            "-servername",
            "vm50",
        ],
    );
    let want = format!("subject=CN = {}", topology::VM50_CN);
    ensure!(
        o.stdout.contains(&want) && o.stdout.contains("New, TLS"),
        "openssl s_client -connect 192.168.1.55:6443 (want {want:?} and a completed handshake): {o}"
    );
    // The exact certificate vm50 serves, not just a CN.
    let cert = std::fs::read_to_string(t.dir.file("vm50.crt"))?;
    ensure!(
        o.stdout.contains(cert.trim()),
        "6443 presented a different certificate than vm50's: {o}"
    );
    check_new_peers("tls :6443", before, 1, snat, || t.tls_peers())
}

/// 4. ssh-keyscan on 2222 returns vm81's host key.
fn check_ssh(t: &Proxmox, snat: &str) -> Result<()> {
    let before = t.ssh_peers().len();
    let o = client(
        &t.lan,
        8,
        &[
            "ssh-keyscan",
            "-T",
            "3",
            "-t",
            "ed25519",
            "-p",
            "2222",
            "192.168.1.55",
        ],
    );
    // "[192.168.1.55]:2222 ssh-ed25519 AAAA..."
    let keys: Vec<String> = o
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    ensure!(
        keys.contains(&t.vm81_host_key),
        "ssh-keyscan -p 2222 192.168.1.55: want {:?}: {o}",
        t.vm81_host_key
    );
    check_new_peers("ssh :2222", before, 1, snat, || t.ssh_peers())
}

/// 5. 30 MB through port 80 arrives intact.
fn check_big_download(t: &Proxmox, snat: &str) -> Result<()> {
    let before = t.http_peers().len();
    let dest = t.dir.file("download.bin");
    let _ = std::fs::remove_file(&dest);
    let url = format!("http://192.168.1.55/{}", topology::BIG_FILE);
    let o = client(
        &t.lan,
        35,
        &[
            "curl",
            "-sS",
            "--connect-timeout",
            "3",
            "--max-time",
            "30",
            "-o",
            dest.to_str().unwrap(),
            "-w",
            "%{http_code} %{size_download} %{speed_download}",
            &url,
        ],
    );
    ensure!(o.ok, "curl {url}: {o}");
    let len = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    ensure!(
        len == topology::BIG_SIZE as u64,
        "downloaded {len} bytes, want {}: {o}",
        topology::BIG_SIZE
    );
    let served = sha256(&t.nginx80.dir.join("www").join(topology::BIG_FILE))?;
    let got = sha256(&dest)?;
    let _ = std::fs::remove_file(&dest);
    ensure!(
        served == got,
        "30 MB download corrupted: sha256 {got}, served {served}"
    );
    check_new_peers("big download :80", before, 1, snat, || t.http_peers())
}

/// 6. 50 parallel connections, each its own TCP connection, all HTTP 200.
fn check_parallel(t: &Proxmox, snat: &str) -> Result<()> {
    const N: usize = 50;
    let before = t.http_peers().len();
    let cfg = t.dir.file("parallel.curlrc");
    let mut s = String::new();
    for i in 0..N {
        s += &format!("url = \"http://192.168.1.55/?n={i}\"\noutput = \"/dev/null\"\n");
    }
    std::fs::write(&cfg, s)?;
    let o = client(
        &t.lan,
        20,
        &[
            "curl",
            "-sS",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            "50",
            "--connect-timeout",
            "3",
            "--max-time",
            "15",
            "-w",
            "%{http_code} %{num_connects}\n",
            "-K",
            cfg.to_str().unwrap(),
        ],
    );
    let lines: Vec<&str> = o.stdout.lines().collect();
    let ok = lines.iter().filter(|l| l.starts_with("200 ")).count();
    let connects: usize = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        .sum();
    ensure!(
        o.ok && ok == N && connects == N,
        "{N} parallel requests: {ok} x 200 over {connects} connections: {o}"
    );
    check_new_peers("parallel :80", before, N, snat, || t.http_peers())
}

/// 7. An unconfigured port is not forwarded: the connect fails and vm80's
///    listener on that port saw nothing (no packet, no connection).
fn check_unconfigured_port(t: &Proxmox) -> Result<()> {
    let packets = t.probe_packets()?;
    let peers = t.probe_peers().len();
    let url = format!("http://192.168.1.55:{}/", topology::PROBE_PORT);
    let o = client(
        &t.lan,
        6,
        &[
            "curl",
            "-sS",
            "--connect-timeout",
            "3",
            "--max-time",
            "4",
            &url,
        ],
    );
    ensure!(!o.ok, "unconfigured port {url} answered: {o}");
    std::thread::sleep(Duration::from_millis(200));
    let (p, n) = (t.probe_packets()?, t.probe_peers().len());
    ensure!(
        p == packets && n == peers,
        "vm80:{} saw {} packet(s) and {} connection(s) for an unconfigured port",
        topology::PROBE_PORT,
        p - packets,
        n - peers
    );
    Ok(())
}

/// 8. UDP: DNS through 5353 -> vm80:53.
fn check_udp_dns(t: &Proxmox, snat: &str) -> Result<()> {
    let before = t.dns_peers().len();
    let o = client(
        &t.lan,
        6,
        &[
            "dig",
            "@192.168.1.55",
            "-p",
            "5353",
            topology::DNS_NAME,
            "+short",
            "+time=2",
            "+tries=1",
        ],
    );
    ensure!(
        o.ok && o.stdout.trim() == topology::DNS_ANSWER,
        "dig @192.168.1.55 -p 5353 {} (want {}): {o}",
        topology::DNS_NAME,
        topology::DNS_ANSWER
    );
    check_new_peers("dns udp :5353", before, 1, snat, || t.dns_peers())
}

/// Runs every forward check of the Proxmox case from the LAN namespace
/// (the servers must have seen `snat_source` as the client) and returns the
/// failures as (check number, message).
fn forward_failures(topo: &Proxmox, snat_source: &str) -> Vec<(u32, String)> {
    type Check<'a> = (u32, &'a str, Box<dyn Fn() -> Result<()> + 'a>);
    let checks: Vec<Check> = vec![
        (1, "http :80", Box::new(|| check_http(topo, snat_source))),
        (2, "https :443", Box::new(|| check_https(topo, snat_source))),
        (
            3,
            "tls :6443",
            Box::new(|| check_tls_6443(topo, snat_source)),
        ),
        (4, "ssh :2222", Box::new(|| check_ssh(topo, snat_source))),
        (
            5,
            "30 MB download",
            Box::new(|| check_big_download(topo, snat_source)),
        ),
        (
            6,
            "50 parallel connections",
            Box::new(|| check_parallel(topo, snat_source)),
        ),
        (
            7,
            "unconfigured port",
            Box::new(|| check_unconfigured_port(topo)),
        ),
        (
            8,
            "udp dns :5353",
            Box::new(|| check_udp_dns(topo, snat_source)),
        ),
    ];
    let mut failures = Vec::new();
    for (n, name, check) in &checks {
        let t0 = std::time::Instant::now();
        let r = check();
        eprintln!(
            "check {n} {name}: {} ({:.1}s)",
            if r.is_ok() { "ok" } else { "FAILED" },
            t0.elapsed().as_secs_f64()
        );
        if let Err(e) = r {
            failures.push((*n, format!("check {n} {name}: {e:#}")));
        }
    }
    failures
}

/// Every forward of the Proxmox case works and the far end saw
/// `snat_source`; reports all failing checks at once.
fn check_forwards(topo: &Proxmox, snat_source: &str) {
    let failures = forward_failures(topo, snat_source);
    assert!(
        failures.is_empty(),
        "{} of 8 forward checks failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Without SNAT the VM sees the LAN client itself (it routes back via the
/// host, so replies still cross the NAT).
fn check_snat_off(topo: &Proxmox) {
    check_http(topo, topology::LAN_CLIENT).unwrap();
}

fn host_ruleset(topo: &Proxmox) -> String {
    topo.host
        .output(&["nft", "list", "ruleset"])
        .expect("nft list ruleset")
}

#[test]
fn iptables_baseline_proves_the_harness() -> Result<()> {
    if !require_root("iptables_baseline_proves_the_harness") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    iptables(&topo, SEED_IPTABLES)?;
    check_forwards(&topo, topology::HOST_VM);
    Ok(())
}

/// The harness side of `forwarder_snat_off_keeps_client_address`: DNAT
/// alone with iptables keeps the client's address.
#[test]
fn iptables_baseline_snat_off() -> Result<()> {
    if !require_root("iptables_baseline_snat_off") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    iptables(&topo, &SEED_IPTABLES[..1])?;
    check_snat_off(&topo);
    Ok(())
}

/// Negative control: with no NAT on the host every forward check fails
/// (fast) and only "unconfigured port" passes, so a pass above means the
/// traffic really was forwarded.
#[test]
fn harness_detects_missing_forwards() -> Result<()> {
    if !require_root("harness_detects_missing_forwards") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    let t0 = std::time::Instant::now();
    let failed: Vec<u32> = forward_failures(&topo, topology::HOST_VM)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        failed,
        [1, 2, 3, 4, 5, 6, 8],
        "checks that failed without NAT"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30) * forwarder_tests::process::time_scale(),
        "failing checks took {:?}",
        t0.elapsed()
    );
    Ok(())
}

#[test]
fn forwarder_replaces_iptables() -> Result<()> {
    if !require_root("forwarder_replaces_iptables") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    let rules = fixture("proxmox-e2e.toml");
    let daemon = Daemon::start(&topo.host, &["--rules", &rules])?;
    check_forwards(&topo, topology::HOST_VM);
    // The forwarding is the daemon's own: no netfilter NAT in the host.
    let ruleset = host_ruleset(&topo);
    let lower = ruleset.to_lowercase();
    for word in ["nat", "dnat", "snat", "masquerade"] {
        assert!(
            !lower.contains(word),
            "host netfilter ruleset mentions {word:?}:\n{ruleset}"
        );
    }
    let status = daemon.status_json()?;
    assert!(status.is_object(), "status --json: {status}");
    Ok(())
}

#[test]
fn forwarder_snat_off_keeps_client_address() -> Result<()> {
    if !require_root("forwarder_snat_off_keeps_client_address") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    let rules = fixture("proxmox-snat-off.toml");
    let _daemon = Daemon::start(&topo.host, &["--rules", &rules])?;
    check_snat_off(&topo);
    let ruleset = host_ruleset(&topo);
    assert!(
        !ruleset.to_lowercase().contains("nat"),
        "host netfilter ruleset has NAT:\n{ruleset}"
    );
    Ok(())
}
