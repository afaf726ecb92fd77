//! Use case 2 over the tailnet's IPv6 addresses (tests/src/k3s6.rs): a VPS
//! and a phone reach the k3s node's fd7a:115c:a1e0:: address over the
//! 1280-byte tunnel. IPv6 clients of the IPv4 ClusterIPs are translated
//! (what the seed's socat does with `TCP6-LISTEN:...,ipv6only=0`); IPv6
//! clients of the IPv6 ClusterIPs keep their address.
//!
//! Each scenario runs first through today's setup (socat units and
//! ip6tables rules on the node), proving the harness, then through the
//! forwarder with the equivalent rules. The NAT66 forward to the IPv6
//! ClusterIP takes the IPv6 stack path; NAT64 runs to the pods' IPv4
//! addresses and to the IPv4 ClusterIPs (through the node's stack from the
//! NAT64 pool, 192.0.0.2: a source of the node's would be a martian there).
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    client::{check_new_peers, client, curl, sha256},
    k3s::{app_body, App, CNI_GW, IMMICH, JELLYFIN, NODE_LAN, NODE_TS, VPS},
    k3s6::{K3s6, BIG30_FILE, BIG30_SIZE, DNS_ANSWER, DNS_NAME, JELLYFIN6, NODE_TS6, PHONE6, VPS6},
    netns,
    process::wait_for,
    require_root, Bg, Daemon, Netns,
};

fn url(host: &str, port: u16, path: &str) -> String {
    if host.contains(':') {
        format!("http://[{host}]:{port}/{path}")
    } else {
        format!("http://{host}:{port}/{path}")
    }
}

/// `from` fetches /app of `app` at `host:port`; the pod saw `seen`.
fn check_app(t: &K3s6, from: &Netns, host: &str, port: u16, app: &App, seen: &str) -> Result<()> {
    let before = t.k.peers(app).len();
    let u = url(host, port, "app");
    let o = curl(from, 3, 8, &["-g"], &u);
    ensure!(o.ok && o.stdout == app_body(app), "curl {u}: {o}");
    check_new_peers(app.name, before, 1, seen, || t.k.peers(app))
}

/// 30 MB from immich over IPv6 and the 1280-byte tunnel, intact.
fn check_download(t: &K3s6, port: u16, seen: &str) -> Result<()> {
    let before = t.k.peers(&IMMICH).len();
    let dest = t.k.dir.file("download6.bin");
    let _ = std::fs::remove_file(&dest);
    let u = url(NODE_TS6, port, BIG30_FILE);
    let o = curl(
        &t.k.vps,
        3,
        60,
        &[
            "-g",
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
        len == BIG30_SIZE as u64,
        "downloaded {len} bytes, want {BIG30_SIZE}: {o}"
    );
    let served = sha256(&t.k.immich.www().join(BIG30_FILE))?;
    let got = sha256(&dest)?;
    let _ = std::fs::remove_file(&dest);
    ensure!(
        served == got,
        "download corrupted: sha256 {got}, served {served}"
    );
    check_new_peers("immich download", before, 1, seen, || t.k.peers(&IMMICH))
}

/// DNS over UDP from the VPS to the node's IPv6 address, port 5353.
fn check_dns(t: &K3s6, seen: &str) -> Result<()> {
    let before = t.dns_peers().len();
    let at = format!("@{NODE_TS6}");
    let o = client(
        &t.k.vps,
        6,
        &[
            "dig", &at, "-p", "5353", DNS_NAME, "+short", "+time=2", "+tries=1",
        ],
    );
    ensure!(
        o.ok && o.stdout.trim() == DNS_ANSWER,
        "dig {at} -p 5353: {o}"
    );
    check_new_peers("dns", before, 1, seen, || t.dns_peers())
}

/// The phone is not on immich's allow-list: a reset at once, and the pod
/// never sees it.
fn check_phone_refused(t: &K3s6) -> Result<()> {
    let before = t.k.peers(&IMMICH).len();
    let u = url(NODE_TS6, IMMICH.node_port, "app");
    let o = curl(&t.k.phone, 3, 5, &["-g"], &u);
    ensure!(
        o.code == Some(7) && o.elapsed < Duration::from_secs(2),
        "phone -> {u}: want a reset: {o}"
    );
    std::thread::sleep(Duration::from_millis(200));
    ensure!(
        t.k.peers(&IMMICH).len() == before,
        "the phone reached immich"
    );
    Ok(())
}

fn socat(node: &Netns, listen: &str, connect: &str, port: u16, udp: bool) -> Result<Bg> {
    let mut bg = node.spawn(&["socat", listen, connect])?;
    let flag = if udp { "-lun" } else { "-ltn" };
    let needle = format!(":{port} ");
    wait_for(Duration::from_secs(10), || {
        node.output(&["ss", flag])
            .unwrap_or_default()
            .contains(&needle)
            .then_some(())
    })
    .with_context(|| format!("socat {listen} did not listen: {}", bg.log()))?;
    ensure!(bg.is_running(), "socat exited: {}", bg.log());
    Ok(bg)
}

fn ip6tables(node: &Netns, rules: &[&str]) -> Result<()> {
    for r in rules {
        let mut args = vec!["ip6tables", "-w", "5"];
        args.extend(r.split_whitespace());
        node.run(&args)?;
    }
    Ok(())
}

/// The seed's relays made dual-stack, and its per-app firewall for IPv6.
fn seed_setup(t: &K3s6) -> Result<Vec<Bg>> {
    ip6tables(
        &t.k.node,
        &[
            &format!("-A INPUT -p tcp --dport 8080 -s {VPS6} -j ACCEPT"),
            "-A INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset",
        ],
    )?;
    Ok(vec![
        socat(
            &t.k.node,
            "TCP6-LISTEN:8080,ipv6only=0,reuseaddr,fork",
            &format!("TCP4:{}:80", IMMICH.cluster_ip),
            8080,
            false,
        )?,
        socat(
            &t.k.node,
            "UDP6-RECVFROM:5353,ipv6only=0,reuseaddr,fork",
            "UDP4:10.43.0.10:53",
            5353,
            true,
        )?,
    ])
}

/// The IPv6 ClusterIP of jellyfin exposed on the node's tailnet address
/// like a NodePort: straight into kube-proxy's service chain, so nothing
/// rewrites the client's address.
fn nodeport6(t: &K3s6) -> Result<()> {
    ip6tables(
        &t.k.node,
        &[&format!(
            "-t nat -I PREROUTING -i tailscale0 -d {NODE_TS6} -p tcp --dport {} -j {}",
            JELLYFIN.node_port,
            JELLYFIN6.svc_chain()
        )],
    )
}

#[test]
fn socat_and_ip6tables_prove_the_ipv6_tailnet_harness() -> Result<()> {
    if !require_root("socat_and_ip6tables_prove_the_ipv6_tailnet_harness") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s6::build()?;
    let _units = seed_setup(&t)?;
    nodeport6(&t)?;
    // Translated: the pod sees the node, as behind the seed's socat.
    check_app(&t, &t.k.vps, NODE_TS6, IMMICH.node_port, &IMMICH, NODE_LAN)?;
    check_app(&t, &t.k.vps, NODE_TS, IMMICH.node_port, &IMMICH, NODE_LAN)?;
    check_download(&t, IMMICH.node_port, NODE_LAN)?;
    check_dns(&t, NODE_LAN)?;
    check_phone_refused(&t)?;
    // IPv6 to IPv6: the client's address is kept.
    check_app(&t, &t.k.vps, NODE_TS6, JELLYFIN.node_port, &JELLYFIN, VPS6)?;
    check_app(
        &t,
        &t.k.phone,
        NODE_TS6,
        JELLYFIN.node_port,
        &JELLYFIN,
        PHONE6,
    )
}

/// Negative control: nothing on the node, nothing reaches a pod.
#[test]
fn ipv6_tailnet_harness_detects_missing_forwards() -> Result<()> {
    if !require_root("ipv6_tailnet_harness_detects_missing_forwards") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s6::build()?;
    assert!(check_app(&t, &t.k.vps, NODE_TS6, IMMICH.node_port, &IMMICH, NODE_LAN).is_err());
    assert!(check_app(&t, &t.k.vps, NODE_TS6, JELLYFIN.node_port, &JELLYFIN, VPS6).is_err());
    assert!(check_dns(&t, NODE_LAN).is_err());
    Ok(())
}

const RULES: &str = r#"
[[forward]]
name = "immich"
in = "tailscale0"
family = "both"
port = 8080
to = "10.43.126.136:80"
allow = ["100.101.92.95", "fd7a:115c:a1e0::655c:5f5f"]

[[forward]]
name = "jellyfin6"
in = "tailscale0"
family = "ipv6"
port = 8081
to = "[2001:cafe:43::201]:80"

[[forward]]
name = "dns"
in = "tailscale0"
family = "both"
proto = "udp"
port = 5353
to = "10.43.0.10:53"
"#;

/// The NAT66 forward alone: IPv6 clients of the IPv6 ClusterIP over the
/// tun, the client's address kept, as with the ip6tables NodePort above.
/// A ClusterIP has no forwarding route (kube-proxy's DNAT in the stack
/// makes it reachable), so such a flow takes the IPv6 stack path: DNATed
/// to the ClusterIP at tailscale0's ingress, DNATed again to the pod by
/// kube-proxy's rules, and its replies (from the ClusterIP again once
/// netfilter undid its DNAT) translated back at tailscale0's egress. The
/// daemon's status must show those flows went through the stack.
#[test]
fn forwarder_serves_ipv6_tailnet_clients_of_an_ipv6_service() -> Result<()> {
    if !require_root("forwarder_serves_ipv6_tailnet_clients_of_an_ipv6_service") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s6::build()?;
    let rules = t.k.dir.file("rules.toml");
    let jellyfin6 = RULES.split("\n\n").nth(1).unwrap();
    assert!(jellyfin6.contains("name = \"jellyfin6\""), "{jellyfin6}");
    std::fs::write(&rules, jellyfin6)?;
    let d = Daemon::start(&t.k.node, &["--rules", rules.to_str().unwrap()])?;
    check_app(&t, &t.k.vps, NODE_TS6, JELLYFIN.node_port, &JELLYFIN, VPS6)?;
    check_app(
        &t,
        &t.k.phone,
        NODE_TS6,
        JELLYFIN.node_port,
        &JELLYFIN,
        PHONE6,
    )?;
    // Both connections were the forwarder's, through the stack, and their
    // replies were translated at tailscale0's egress.
    let c = d.rule_counters("jellyfin6")?;
    ensure!(
        c["new_flows"].as_u64() == Some(2) && c["stack_flows"].as_u64() == Some(2),
        "jellyfin6 counters: {c}"
    );
    let st = d.status_json()?;
    let egress = st["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["name"] == "tailscale0")
        .flat_map(|i| i["hooks"].as_array().cloned().unwrap_or_default())
        .filter(|h| h["hook"] == "tc_egress")
        .flat_map(|h| h["reasons"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["reason"] == "fwd_egress")
        .map(|r| r["packets"].as_u64().unwrap_or(0))
        .sum::<u64>();
    ensure!(
        egress > 0,
        "no reply translated at tailscale0's egress: {st}"
    );
    Ok(())
}

/// NAT64 to the pods' own IPv4 addresses, routed on cni0: the tailnet's
/// IPv6 clients of immich and of the DNS server, as `TCP4:POD` socat
/// units would (the seed's ClusterIP forwards: `RULES` and
/// `forwarder_serves_the_ipv6_tailnet_through_the_ipv4_clusterips`).
const RULES64: &str = r#"
[[forward]]
name = "immich"
in = "tailscale0"
family = "both"
port = 8080
to = "10.42.0.105:2283"
allow = ["100.101.92.95", "fd7a:115c:a1e0::655c:5f5f"]

[[forward]]
name = "dns"
in = "tailscale0"
family = "both"
proto = "udp"
port = 5353
to = "10.42.0.106:53"
"#;

/// What the tailnet's IPv6 clients get through NAT64 (or socat): immich
/// from the node's cni0 address (its source toward the pod), 30 MB intact
/// over the 1280-byte tunnel, DNS over UDP, the phone refused.
fn check_nat64(t: &K3s6) -> Result<()> {
    check_app(t, &t.k.vps, NODE_TS6, IMMICH.node_port, &IMMICH, CNI_GW)?;
    check_download(t, IMMICH.node_port, CNI_GW)?;
    check_dns(t, CNI_GW)?;
    check_phone_refused(t)
}

#[test]
fn forwarder_serves_the_ipv6_tailnet() -> Result<()> {
    if !require_root("forwarder_serves_the_ipv6_tailnet") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s6::build()?;
    // The harness first: socat relays to the pods, dual-stack, with the
    // seed's ip6tables allow-list.
    ip6tables(
        &t.k.node,
        &[
            &format!("-A INPUT -p tcp --dport 8080 -s {VPS6} -j ACCEPT"),
            "-A INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset",
        ],
    )?;
    let units = vec![
        socat(
            &t.k.node,
            "TCP6-LISTEN:8080,ipv6only=0,reuseaddr,fork",
            &format!("TCP4:{}:{}", IMMICH.pod, IMMICH.pod_port),
            8080,
            false,
        )?,
        socat(
            &t.k.node,
            "UDP6-RECVFROM:5353,ipv6only=0,reuseaddr,fork",
            &format!("UDP4:{}:53", JELLYFIN.pod),
            5353,
            true,
        )?,
    ];
    check_nat64(&t).context("through socat")?;
    drop(units);
    ip6tables(&t.k.node, &["-F INPUT"])?;

    let rules = t.k.dir.file("rules.toml");
    std::fs::write(&rules, RULES64)?;
    let d = Daemon::start(&t.k.node, &["--rules", rules.to_str().unwrap()])?;
    check_nat64(&t).context("through the forwarder")?;
    // IPv4 clients of the same forward keep their address (`auto`).
    check_app(&t, &t.k.vps, NODE_TS, IMMICH.node_port, &IMMICH, VPS)?;
    // The flow table says what happened, in both families.
    let list = d.cli(&["conntrack", "list", "--rule", "immich"])?;
    let want = format!("src={VPS6} dst={NODE_TS6}");
    ensure!(
        list.lines().any(|l| l.contains(&want)
            && l.contains(&format!("-> src={CNI_GW} dst={}", IMMICH.pod))
            && l.contains("[nat64]")),
        "conntrack list: {list}"
    );
    Ok(())
}

/// The seed's forwards as they are (`RULES` without the NAT66 one): the
/// IPv4 ClusterIPs, which only kube-proxy's DNAT in the node's stack
/// reaches. The tailnet's IPv6 clients are translated to IPv4 from the
/// NAT64 pool (192.0.0.2, on the daemon's fwd64 device), go through
/// PREROUTING's DNAT to the pod, and the pod's replies, routed to the pool,
/// are translated back as they leave by fwd64. kube-proxy here does not
/// masquerade off-cluster sources (see `k3s::kube_proxy_rules`), so the
/// pod sees the pool address; the seed's socat shows the node's.
#[test]
fn forwarder_serves_the_ipv6_tailnet_through_the_ipv4_clusterips() -> Result<()> {
    if !require_root("forwarder_serves_the_ipv6_tailnet_through_the_ipv4_clusterips") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s6::build()?;
    // The harness: the seed's dual-stack socat units to the ClusterIPs.
    let units = seed_setup(&t)?;
    check_app(&t, &t.k.vps, NODE_TS6, IMMICH.node_port, &IMMICH, NODE_LAN)?;
    check_download(&t, IMMICH.node_port, NODE_LAN).context("through socat")?;
    check_dns(&t, NODE_LAN)?;
    check_phone_refused(&t)?;
    drop(units);
    ip6tables(&t.k.node, &["-F INPUT"])?;

    let rules = t.k.dir.file("rules.toml");
    let seed: Vec<&str> = RULES
        .split("\n\n")
        .filter(|f| !f.contains("jellyfin6"))
        .collect();
    std::fs::write(&rules, seed.join("\n\n"))?;
    let mut d = Daemon::start(&t.k.node, &["--rules", rules.to_str().unwrap()])?;
    let pool = "192.0.0.2";
    check_app(&t, &t.k.vps, NODE_TS6, IMMICH.node_port, &IMMICH, pool)?;
    check_download(&t, IMMICH.node_port, pool).context("through the forwarder")?;
    check_dns(&t, pool)?;
    check_phone_refused(&t)?;
    // IPv4 clients of the same forward keep their address (`auto`).
    check_app(&t, &t.k.vps, NODE_TS, IMMICH.node_port, &IMMICH, VPS)?;
    let list = d.cli(&["conntrack", "list", "--rule", "immich"])?;
    let want = format!("src={VPS6} dst={NODE_TS6}");
    ensure!(
        list.lines().any(|l| l.contains(&want)
            && l.contains(&format!("-> src={pool} dst={}", IMMICH.cluster_ip))
            && l.contains("[nat64]")
            && l.contains("[via stack]")),
        "conntrack list: {list}"
    );
    // A crash: fwd64 and the pinned flow table outlive the daemon, and
    // the next daemon adopts them with the flows of the one before. (While
    // no daemon runs, IPv6 is not translated: FWD_PROGS is not pinned, so
    // the kernel empties it with its last user.)
    d.kill9()?;
    d.respawn()?;
    let after = d.cli(&["conntrack", "list", "--rule", "immich"])?;
    // One in TIME_WAIT (120 s): it cannot expire during the restart.
    let kept = list
        .lines()
        .find(|l| l.contains("[nat64]") && l.contains("TIME_WAIT"))
        .with_context(|| format!("no closed NAT64 flow: {list}"))?;
    let tuple = &kept[kept.find("src=").unwrap_or(0)..kept.find(" -> ").unwrap_or(kept.len())];
    ensure!(
        after.contains(tuple),
        "flow {tuple} lost in the restart: {after}"
    );
    check_app(&t, &t.k.vps, NODE_TS6, IMMICH.node_port, &IMMICH, pool).context("restarted")
}
