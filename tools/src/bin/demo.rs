//! `cargo xtask demo [proxmox|tailnet]`: a use case in network namespaces.
//!
//! proxmox (the default), use case 1 (seeds/002): LAN client 192.168.1.10 -- vmbr0 192.168.1.55 [host] vmbr1 192.168.100.1 --
//! VMs 192.168.100.80 (nginx 80/443), .50 (TLS 6443), .81 (sshd 22).
//! The forwarder runs in the host namespace from rules/examples/proxmox.toml;
//! real clients on the LAN reach the VMs through it and its counters are
//! shown.
//!
//! tailnet, use case 2 (seeds/000): a VPS and a phone on a stand-in tailnet
//! (tun `tailscale0`, MTU 1280) reach two Kubernetes ClusterIPs on a k3s
//! node through the forwarder, started there from
//! rules/examples/tailnet-k3s.toml instead of one socat unit per app.
//!
//! Everything lives in namespaces this program creates and removes.
use std::path::Path;

use anyhow::Result;
use forwarder_tests::{
    client::{curl, Out},
    k3s::{self, K3s, IMMICH, JELLYFIN, NODE_TS},
    netns,
    topology::Proxmox,
    Daemon,
};

const USAGE: &str = "usage: demo [proxmox|tailnet]";

fn main() -> Result<()> {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "proxmox".into());
    if !["proxmox", "tailnet"].contains(&scenario.as_str()) {
        eprintln!("unknown scenario {scenario:?}; {USAGE}");
        std::process::exit(2);
    }
    if !forwarder_tests::require_root("demo") {
        std::process::exit(1);
    }
    netns::sweep();
    match scenario.as_str() {
        "tailnet" => tailnet(),
        _ => proxmox(),
    }
}

fn rules(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules/examples")
        .join(name);
    std::fs::canonicalize(&p)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn proxmox() -> Result<()> {
    println!("== building the Proxmox topology in namespaces (bridges vmbr0/vmbr1, three VMs)");
    let topo = Proxmox::build()?;
    let rules = rules("proxmox.toml");
    println!("== forwarder run --rules {rules}");
    let daemon = Daemon::start(&topo.host, &["--rules", &rules])?;
    let lan = |args: &[&str]| -> String {
        match topo.lan.output(args) {
            Ok(s) => s,
            Err(e) => format!("FAILED: {e:#}\n"),
        }
    };
    println!("== LAN client: curl http://192.168.1.55/  (-> VM 192.168.100.80:80)");
    print!(
        "   {}",
        lan(&["curl", "-sS", "--max-time", "5", "http://192.168.1.55/"])
    );
    println!("== LAN client: 30 MB download through the forward");
    println!(
        "   {}",
        lan(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} bytes in %{time_total}s (%{speed_download} B/s)",
            "http://192.168.1.55/big.bin",
        ])
    );
    println!("== LAN client: curl -k https://192.168.1.55/  (-> VM :443)");
    print!(
        "   {}",
        lan(&["curl", "-sSk", "--max-time", "5", "https://192.168.1.55/"])
    );
    println!("== LAN client: ssh-keyscan -p 2222 192.168.1.55  (-> VM 192.168.100.81:22)");
    print!(
        "   {}",
        lan(&["ssh-keyscan", "-T", "3", "-p", "2222", "192.168.1.55"])
    );
    println!(
        "== the VM saw these client addresses (SNAT to 192.168.100.1): {:?}",
        topo.http_peers()
    );
    println!("== forwarder status");
    print!("{}", daemon.cli(&["status"])?);
    println!("== done; tearing down");
    Ok(())
}

/// One line for a client result: its output, or why it failed.
fn show(o: &Out) -> String {
    if o.ok {
        o.stdout.trim_end().to_string()
    } else {
        // With -v, curl's "connect to ... failed: Connection refused" names
        // the reason its final "Couldn't connect to server" hides.
        let lines = || o.stderr.lines();
        let why = lines()
            .find(|l| l.contains(" failed: "))
            .map(|l| l.trim_start_matches("* "))
            .or_else(|| lines().find(|l| l.starts_with("curl:")))
            .unwrap_or(o.stderr.trim());
        format!("FAILED after {:.1}s: {why}", o.elapsed.as_secs_f64())
    }
}

fn tailnet() -> Result<()> {
    println!("== building the k3s node of use case 2 in namespaces:");
    println!("   vps 100.101.92.95, phone 100.90.12.7 --tailnet (tun, MTU 1280)--> tailscale0 {NODE_TS} [node]");
    println!(
        "   node: kube-proxy ClusterIPs {}:80 -> immich pod {}:{}, {}:80 -> jellyfin pod {}:{}",
        IMMICH.cluster_ip,
        IMMICH.pod,
        IMMICH.pod_port,
        JELLYFIN.cluster_ip,
        JELLYFIN.pod,
        JELLYFIN.pod_port
    );
    let t = K3s::build()?;
    let rules = rules("tailnet-k3s.toml");
    println!("== forwarder run --rules {rules}   (instead of one socat unit per app)");
    let daemon = Daemon::start(&t.node, &["--rules", &rules])?;
    for app in [&IMMICH, &JELLYFIN] {
        let url = format!("http://{NODE_TS}:{}/app", app.node_port);
        println!(
            "== vps: curl {url}  (-> ClusterIP {}:80 -> pod {}:{})",
            app.cluster_ip, app.pod, app.pod_port
        );
        println!("   {}", show(&curl(&t.vps, 3, 5, &[], &url)));
    }
    let url = format!("http://{NODE_TS}:{}/{}", IMMICH.node_port, k3s::BIG_FILE);
    println!("== vps: 20 MB download through MTU 1280: {url}");
    let w = "%{size_download} bytes in %{time_total}s (%{speed_download} B/s)";
    println!(
        "   {}",
        show(&curl(&t.vps, 3, 30, &["-o", "/dev/null", "-w", w], &url))
    );
    let url = format!("http://{NODE_TS}:{}/app", IMMICH.node_port);
    println!("== phone: curl {url}  (not in immich's allow-list: refused like a closed port)");
    let o = curl(&t.phone, 3, 5, &["-v"], &url);
    if o.ok {
        println!("   NOT REFUSED: {}", show(&o));
    } else if o.stderr.contains("Connection refused") {
        println!(
            "   refused, as intended, after {:.1}s",
            o.elapsed.as_secs_f64()
        );
    } else {
        println!("   {}", show(&o));
    }
    let url = format!("http://{NODE_TS}:{}/app", JELLYFIN.node_port);
    println!("== phone: curl {url}  (allowed on jellyfin)");
    println!("   {}", show(&curl(&t.phone, 3, 5, &[], &url)));
    println!(
        "== client addresses the pods saw (the tailnet peers themselves when snat = \"auto\" keeps them):\n   immich {:?}\n   jellyfin {:?}",
        t.peers(&IMMICH),
        t.peers(&JELLYFIN)
    );
    println!("== forwarder status");
    print!("{}", daemon.cli(&["status"])?);
    println!("== done; tearing down");
    Ok(())
}
