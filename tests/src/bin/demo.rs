//! `cargo xtask demo`: the Proxmox setup of use case 1 in network namespaces.
//!
//! LAN client 192.168.1.10 -- vmbr0 192.168.1.55 [host] vmbr1 192.168.100.1 --
//! VM 192.168.100.80 (nginx). The forwarder runs in the host namespace,
//! attached to both bridges; real HTTP crosses it and its counters are shown.
//! Everything lives in namespaces this program creates and removes.
use anyhow::Result;
use forwarder_tests::{netns, servers::Nginx, Daemon, Netns};

fn main() -> Result<()> {
    if !forwarder_tests::require_root("demo") {
        std::process::exit(1);
    }
    netns::sweep();
    println!("== building the topology (namespaces, bridges vmbr0/vmbr1, veth)");
    let host = Netns::new("host")?;
    let lan = Netns::new("lan")?;
    let vm = Netns::new("vm80")?;
    host.bridge("vmbr0")?;
    host.bridge("vmbr1")?;
    netns::veth(&lan, "eth0", &host, "lan0")?;
    netns::veth(&vm, "eth0", &host, "tap80")?;
    host.ip(&["link", "set", "lan0", "master", "vmbr0"])?;
    host.ip(&["link", "set", "tap80", "master", "vmbr1"])?;
    host.addr("vmbr0", "192.168.1.55/24")?;
    host.addr("vmbr1", "192.168.100.1/24")?;
    host.sysctl("net.ipv4.ip_forward", "1")?;
    lan.addr("eth0", "192.168.1.10/24")?;
    lan.ip(&["route", "add", "192.168.100.0/24", "via", "192.168.1.55"])?;
    vm.addr("eth0", "192.168.100.80/24")?;
    vm.ip(&["route", "add", "default", "via", "192.168.100.1"])?;
    let _nginx = Nginx::start(&vm, 80, None, &[("blob", 2_000_000)])?;

    println!("== starting forwarder on vmbr0 and vmbr1");
    let daemon = Daemon::start(&host, &["--iface", "vmbr0", "--iface", "vmbr1"])?;
    println!("== LAN client: curl http://192.168.100.80/ (routed through the host)");
    let body = lan.output(&["curl", "-sS", "--max-time", "5", "http://192.168.100.80/"])?;
    print!("   {body}");
    let size = lan.output(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "http://192.168.100.80/blob",
    ])?;
    println!("   downloaded {size} bytes");
    println!("== forwarder status");
    print!("{}", daemon.cli(&["status"])?);
    println!("== done; tearing down");
    Ok(())
}
