//! `cargo xtask demo`: use case 1 (Proxmox, seeds/002) in network namespaces.
//!
//! LAN client 192.168.1.10 -- vmbr0 192.168.1.55 [host] vmbr1 192.168.100.1 --
//! VMs 192.168.100.80 (nginx 80/443), .50 (TLS 6443), .81 (sshd 22).
//! The forwarder runs in the host namespace from rules/examples/proxmox.toml;
//! real clients on the LAN reach the VMs through it and its counters are
//! shown. Everything lives in namespaces this program creates and removes.
use std::path::Path;

use anyhow::Result;
use forwarder_tests::{netns, topology::Proxmox, Daemon};

fn main() -> Result<()> {
    if !forwarder_tests::require_root("demo") {
        std::process::exit(1);
    }
    netns::sweep();
    println!("== building the Proxmox topology in namespaces (bridges vmbr0/vmbr1, three VMs)");
    let topo = Proxmox::build()?;
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/examples/proxmox.toml");
    println!("== forwarder run --rules {}", rules.display());
    let daemon = Daemon::start(&topo.host, &["--rules", rules.to_str().unwrap()])?;
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
