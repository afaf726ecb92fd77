//! The XDP accelerator end to end: client -> router -> server over veth,
//! with `attach = "xdp"` on both router interfaces. A 30 MB download must
//! arrive intact whether or not the senders leave checksums to offload;
//! with full checksums (TX offload off) the established flow runs through
//! XDP, with offloaded ones XDP must leave every data packet to TC (it
//! cannot finish a partial checksum) and TC forwards them.
use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    client::{client, sha256},
    daemon::tc_mode,
    netns::{self, Netns},
    require_root,
    servers::Nginx,
    topology::TempDir,
    Daemon,
};

const SIZE: usize = 30_000_000;

struct Topo {
    nginx: Nginx,
    client: Netns,
    router: Netns,
    server: Netns,
    dir: TempDir,
}

fn build(tx_offload: bool) -> Result<Topo> {
    netns::sweep();
    let client = Netns::new("xcli")?;
    let router = Netns::new("xrtr")?;
    let server = Netns::new("xsrv")?;
    netns::veth(&client, "eth0", &router, "c0")?;
    netns::veth(&router, "s0", &server, "eth0")?;
    client.addr("eth0", "10.70.1.2/24")?;
    router.addr("c0", "10.70.1.1/24")?;
    router.addr("s0", "10.70.2.1/24")?;
    server.addr("eth0", "10.70.2.2/24")?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    for ns in [&client, &server] {
        // A frame XDP redirects into a veth is only taken in natively when
        // the receiving end runs NAPI, which GRO turns on.
        ns.run(&["ethtool", "-K", "eth0", "gro", "on"])?;
        let tx = if tx_offload { "on" } else { "off" };
        ns.run(&["ethtool", "-K", "eth0", "tx", tx])?;
    }
    let nginx = Nginx::start(&server, 80, None, &[("big.bin", SIZE)])?;
    Ok(Topo {
        nginx,
        client,
        router,
        server,
        dir: TempDir::new("xdp")?,
    })
}

const RULES: &str = r#"
[interface.c0]
attach = "xdp"

[interface.s0]
attach = "xdp"

[[forward]]
name = "web"
in = "c0"
listen = "10.70.1.1"
port = 8080
to = "10.70.2.2:80"
snat = "10.70.2.1"
"#;

/// Packets a hook of an interface counted under `reason`.
fn count(st: &serde_json::Value, iface: &str, hook: &str, reason: &str) -> u64 {
    st["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["name"] == iface)
        .flat_map(|i| i["hooks"].as_array().cloned().unwrap_or_default())
        .filter(|h| h["hook"] == hook)
        .flat_map(|h| h["reasons"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["reason"] == reason)
        .map(|r| r["packets"].as_u64().unwrap_or(0))
        .sum()
}

fn download(t: &Topo) -> Result<()> {
    let dest = t.dir.file("big.bin");
    let o = client(
        &t.client,
        40,
        &[
            "curl",
            "-sS",
            "--max-time",
            "30",
            "-o",
            dest.to_str().unwrap(),
            "http://10.70.1.1:8080/big.bin",
        ],
    );
    ensure!(o.ok, "download through the forward: {o}");
    let served = sha256(&t.nginx.dir.join("www/big.bin"))?;
    ensure!(sha256(&dest)? == served, "the 30 MB arrived intact");
    Ok(())
}

fn run(tx_offload: bool) -> Result<serde_json::Value> {
    let t = build(tx_offload)?;
    let rules = t.dir.file("rules.toml");
    std::fs::write(&rules, RULES)?;
    let daemon = Daemon::start(&t.router, &["--rules", rules.to_str().unwrap()])?;
    let st = daemon.state()?;
    for i in st["interfaces"].as_array().context("interfaces")? {
        ensure!(
            i["attach"] == format!("{}+xdp", tc_mode())
                && i["mode"].as_str().unwrap_or("").contains("xdp"),
            "XDP attached as configured: {i}"
        );
    }
    download(&t)?;
    let _ = &t.server;
    daemon.status_json()
}

#[test]
fn full_checksums_run_established_flows_through_xdp() -> Result<()> {
    if !require_root("full_checksums_run_established_flows_through_xdp") {
        return Ok(());
    }
    let st = run(false)?;
    let xdp_fwd = count(&st, "s0", "xdp", "fwd_redirect") + count(&st, "c0", "xdp", "fwd_redirect");
    let xdp_pass = count(&st, "s0", "xdp", "pass_to_tc") + count(&st, "c0", "xdp", "pass_to_tc");
    // 30 MB is ~20000 full-size segments one way plus the ACKs back.
    ensure!(
        xdp_fwd > 15_000,
        "XDP forwarded the established flow ({xdp_fwd} redirected, {xdp_pass} left to TC): {st}"
    );
    // Only the handshake, the teardown and the first packets before the
    // flow existed are left to TC.
    eprintln!("xdp: {xdp_fwd} redirected, {xdp_pass} left to TC");
    ensure!(xdp_pass < 50, "XDP left {xdp_pass} packets to TC");
    Ok(())
}

#[test]
fn offloaded_checksums_are_left_to_tc_and_still_arrive_intact() -> Result<()> {
    if !require_root("offloaded_checksums_are_left_to_tc_and_still_arrive_intact") {
        return Ok(());
    }
    let st = run(true)?;
    let xdp_fwd = count(&st, "s0", "xdp", "fwd_redirect") + count(&st, "c0", "xdp", "fwd_redirect");
    let tc_fwd = count(&st, "s0", "tc_ingress", "fwd_redirect")
        + count(&st, "c0", "tc_ingress", "fwd_redirect");
    ensure!(
        xdp_fwd == 0,
        "XDP must not touch frames whose checksum was left to offload ({xdp_fwd} redirected): {st}"
    );
    eprintln!("offload on: xdp {xdp_fwd} redirected, tc {tc_fwd} redirected");
    ensure!(tc_fwd > 15_000, "TC forwarded them ({tc_fwd}): {st}");
    Ok(())
}

#[test]
fn a_restart_adopts_the_xdp_links_and_the_flow_continues() -> Result<()> {
    if !require_root("a_restart_adopts_the_xdp_links_and_the_flow_continues") {
        return Ok(());
    }
    let t = build(false)?;
    let rules = t.dir.file("rules.toml");
    std::fs::write(&rules, RULES)?;
    let mut daemon = Daemon::start(&t.router, &["--rules", rules.to_str().unwrap()])?;
    let dest = t.dir.file("slow.bin");
    // Slow enough (15 s for 30 MB) to outlast the restart under load: the
    // new daemon verifies its programs (seconds on a busy 2-core machine)
    // before it swaps them in.
    let mut dl = t.client.spawn(&[
        "curl",
        "-sS",
        "--limit-rate",
        "2M",
        "--max-time",
        "60",
        "-o",
        dest.to_str().unwrap(),
        "http://10.70.1.1:8080/big.bin",
    ])?;
    // Killed while the download is under way (curl takes its time to
    // start on a loaded machine): 2 MB of the 30 arrived.
    forwarder_tests::process::wait_for(std::time::Duration::from_secs(15), || {
        let got = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        (got > 2_000_000).then_some(())
    })
    .with_context(|| format!("the download did not start: {}", dl.log()))?;
    daemon.kill9()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    daemon.respawn()?;
    let st = daemon.state()?;
    for i in st["interfaces"].as_array().context("interfaces")? {
        ensure!(
            i["attach"] == format!("{}+xdp", tc_mode()),
            "XDP adopted after the restart: {i}"
        );
    }
    let done = forwarder_tests::process::wait_for(std::time::Duration::from_secs(60), || {
        dl.child.try_wait().ok().flatten()
    })
    .context("download did not finish")?;
    ensure!(
        done.success(),
        "download failed across the restart: {}",
        dl.log()
    );
    let served = sha256(&t.nginx.dir.join("www/big.bin"))?;
    ensure!(sha256(&dest)? == served, "the 30 MB arrived intact");
    // The adopted link forwards what comes after the restart: a transfer
    // of its own, so that this does not depend on how much of the first
    // one a slow restart left (on a loaded machine, possibly nothing).
    let before = count(&daemon.status_json()?, "s0", "xdp", "fwd_redirect");
    download(&t)?;
    let after = count(&daemon.status_json()?, "s0", "xdp", "fwd_redirect");
    ensure!(
        after > before + 1000,
        "the adopted XDP link runs the new program and keeps forwarding ({before} -> {after})"
    );
    Ok(())
}

#[test]
fn a_failed_xdp_attach_falls_back_to_tc_and_says_so() -> Result<()> {
    if !require_root("a_failed_xdp_attach_falls_back_to_tc_and_says_so") {
        return Ok(());
    }
    netns::sweep();
    // A bridge has no native XDP: asking for it must fall back, not fail.
    let cli = Netns::new("xbcli")?;
    let router = Netns::new("xbrtr")?;
    let server = Netns::new("xbsrv")?;
    router.bridge("br0")?;
    netns::veth(&cli, "eth0", &router, "p0")?;
    router.ip(&["link", "set", "p0", "master", "br0"])?;
    netns::veth(&router, "s0", &server, "eth0")?;
    cli.addr("eth0", "10.71.1.2/24")?;
    router.addr("br0", "10.71.1.1/24")?;
    router.addr("s0", "10.71.2.1/24")?;
    server.addr("eth0", "10.71.2.2/24")?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    let nginx = Nginx::start(&server, 80, None, &[])?;
    let dir = TempDir::new("xdpfb")?;
    let rules = dir.file("rules.toml");
    std::fs::write(
        &rules,
        "[interface.br0]\nattach = \"xdp\"\n\n[[forward]]\nname = \"web\"\nin = \"br0\"\nlisten = \"10.71.1.1\"\nport = 8080\nto = \"10.71.2.2:80\"\nsnat = \"10.71.2.1\"\n",
    )?;
    let daemon = Daemon::start(&router, &["--rules", rules.to_str().unwrap()])?;
    let st = daemon.state()?;
    let br = st["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "br0"))
        .context("br0 in status")?
        .clone();
    ensure!(
        br["attach"] == tc_mode()
            && br["mode"]
                .as_str()
                .unwrap_or("")
                .contains("XDP attach failed"),
        "br0 fell back to TC and says why: {br}"
    );
    ensure!(
        daemon.log().contains("falling back to TC only"),
        "the log says so too"
    );
    let o = client(
        &cli,
        10,
        &["curl", "-sS", "--max-time", "5", "http://10.71.1.1:8080/"],
    );
    ensure!(
        o.ok && o.stdout.contains("hello"),
        "forwarding works on TC: {o}"
    );
    let _ = (&nginx, &server);
    Ok(())
}

/// Whether `ip link` shows an XDP program on `dev` in `ns`.
fn has_xdp_prog(ns: &Netns, dev: &str) -> Result<bool> {
    let out = ns.output(&["ip", "-d", "link", "show", dev])?;
    Ok(out.contains("prog/xdp"))
}

#[test]
fn switching_to_tc_removes_xdp_live_and_across_a_restart() -> Result<()> {
    if !require_root("switching_to_tc_removes_xdp_live_and_across_a_restart") {
        return Ok(());
    }
    let t = build(false)?;
    let rules = t.dir.file("rules.toml");
    std::fs::write(&rules, RULES)?;
    let mut daemon = Daemon::start(&t.router, &["--rules", rules.to_str().unwrap()])?;
    ensure!(
        has_xdp_prog(&t.router, "c0")? && has_xdp_prog(&t.router, "s0")?,
        "XDP on both"
    );

    // Live: c0 switches to tc with a reload.
    std::fs::write(
        &rules,
        RULES.replacen("attach = \"xdp\"", "attach = \"tc\"", 1),
    )?;
    daemon.cli(&["reload"])?;
    ensure!(
        !has_xdp_prog(&t.router, "c0")?,
        "c0's XDP removed by the time the reload returns"
    );
    ensure!(has_xdp_prog(&t.router, "s0")?, "s0 keeps XDP");

    // Across a restart: the daemon stops (XDP pinned on s0 stays), the file
    // says tc for both, the next daemon must remove the adopted link.
    daemon.stop().context("daemon was running")?;
    ensure!(
        has_xdp_prog(&t.router, "s0")?,
        "the pinned XDP link outlives the daemon"
    );
    std::fs::write(&rules, RULES.replace("attach = \"xdp\"", "attach = \"tc\""))?;
    daemon.respawn()?;
    ensure!(
        !has_xdp_prog(&t.router, "c0")? && !has_xdp_prog(&t.router, "s0")?,
        "no XDP left after restarting with attach = tc"
    );
    download(&t)?;
    Ok(())
}
