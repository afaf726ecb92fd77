//! Use case 1 (seeds/002) with an IPv6 prefix on both bridges: the
//! Proxmox host forwards a routed LAN prefix to a ULA prefix behind it,
//! next to IPv4, and an IPv6-only VM sits on the private bridge.
//!
//! ```text
//!                 vmbr0 192.168.1.55/24              vmbr1 192.168.100.1/24
//!                       2001:db8:1::55/64 [host]           fd00:100::1/64
//! lan  192.168.1.10 ─┤                                ├─ vm80 192.168.100.80, fd00:100::80
//!      2001:db8:1::10│   (lan0 MTU 1280: see below)   │       nginx :80 (both), dnsmasq :53 (both)
//! lan2 2001:db8:1::11┘                                └─ vm6  fd00:100::60 only (IPv6-only VM)
//!                                                             nginx :80
//! ```
//!
//! The LAN clients have no route to 192.168.100.0/24 or fd00:100::/64:
//! whatever reaches a VM from them went through NAT on the host. The VMs
//! route back through the host (default via 192.168.100.1 and
//! fd00:100::1), so a forward that keeps the client's address works.
//! `lan2` is a second LAN client for allow-list tests.
//!
//! Path MTU: with `narrow_lan` the host's LAN port (lan0, so vmbr0) runs
//! at 1280 while the client and the VMs keep 1500. The client announces
//! an MSS for 1500, vm80 sends 1500-byte packets, and only an ICMPv6
//! packet too big from the host (or an MSS clamp) lets a download through:
//! the path-MTU check of issue 13.
//!
//! Servers log the client address they saw, for the SNAT checks.
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{
    client::{check_new_peers, client, curl, sha256},
    dual_stack::{addr6, enable, enable_router},
    netns::{self, Netns},
    process::{wait_for, Bg},
    servers::Nginx,
    topology::TempDir,
};

pub const LAN_CLIENT: &str = "192.168.1.10";
pub const LAN_CLIENT6: &str = "2001:db8:1::10";
pub const LAN2_CLIENT6: &str = "2001:db8:1::11";
pub const HOST_LAN: &str = "192.168.1.55";
pub const HOST_LAN6: &str = "2001:db8:1::55";
pub const HOST_VM: &str = "192.168.100.1";
pub const HOST_VM6: &str = "fd00:100::1";
pub const VM80: &str = "192.168.100.80";
pub const VM80_6: &str = "fd00:100::80";
pub const VM6: &str = "fd00:100::60";
/// The LAN's IPv6 prefix (routed to the host in the real setup).
pub const LAN6_NET: &str = "2001:db8:1::/64";
/// The MTU of the narrowed LAN port.
pub const NARROW_MTU: u32 = 1280;
pub const BIG_FILE: &str = "big.bin";
pub const BIG_SIZE: usize = 30_000_000;
pub const DNS_NAME: &str = "forwarder.test";
pub const DNS_ANSWER: &str = "10.1.2.3";

pub struct Proxmox6 {
    /// nginx on vm80, both families, `BIG_FILE`.
    pub nginx80: Nginx,
    /// dnsmasq on vm80 UDP 53, both families (logs client addresses).
    pub dns80: Bg,
    /// nginx on the IPv6-only vm6.
    pub nginx6: Nginx,
    pub lan: Netns,
    pub lan2: Netns,
    pub host: Netns,
    pub vm80: Netns,
    pub vm6: Netns,
    pub dir: TempDir,
}

fn vm(host: &Netns, label: &str, tap: &str) -> Result<Netns> {
    let ns = Netns::new(label)?;
    enable(&ns)?;
    netns::veth(&ns, "eth0", host, tap)?;
    host.ip(&["link", "set", tap, "master", "vmbr1"])?;
    host.ip(&["link", "set", tap, "up"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(ns)
}

fn lan_client(host: &Netns, label: &str, port: &str, v6: &str) -> Result<Netns> {
    let ns = Netns::new(label)?;
    enable(&ns)?;
    netns::veth(&ns, "eth0", host, port)?;
    host.ip(&["link", "set", port, "master", "vmbr0"])?;
    host.ip(&["link", "set", port, "up"])?;
    addr6(&ns, "eth0", &format!("{v6}/64"))?;
    Ok(ns)
}

impl Proxmox6 {
    /// Everything at MTU 1500.
    pub fn build() -> Result<Proxmox6> {
        Proxmox6::build_with(false)
    }

    /// `narrow_lan`: the host's LAN side at `NARROW_MTU` (see the module
    /// documentation).
    pub fn build_with(narrow_lan: bool) -> Result<Proxmox6> {
        let dir = TempDir::new("proxmox6")?;
        let host = Netns::new("host6")?;
        enable_router(&host)?;
        host.sysctl("net.ipv4.ip_forward", "1")?;
        host.bridge("vmbr0")?;
        host.bridge("vmbr1")?;
        host.addr("vmbr0", &format!("{HOST_LAN}/24"))?;
        host.addr("vmbr1", &format!("{HOST_VM}/24"))?;
        addr6(&host, "vmbr0", &format!("{HOST_LAN6}/64"))?;
        addr6(&host, "vmbr1", &format!("{HOST_VM6}/64"))?;

        let lan = lan_client(&host, "lan6", "lan0", LAN_CLIENT6)?;
        lan.addr("eth0", &format!("{LAN_CLIENT}/24"))?;
        let lan2 = lan_client(&host, "lan6b", "lan1", LAN2_CLIENT6)?;
        if narrow_lan {
            // The bridge takes the smallest MTU of its ports.
            host.ip(&["link", "set", "lan0", "mtu", &NARROW_MTU.to_string()])?;
            host.ip(&["link", "set", "lan1", "mtu", &NARROW_MTU.to_string()])?;
        }

        let vm80 = vm(&host, "vm80v6", "tap80")?;
        vm80.addr("eth0", &format!("{VM80}/24"))?;
        addr6(&vm80, "eth0", &format!("{VM80_6}/64"))?;
        vm80.ip(&["route", "add", "default", "via", HOST_VM])?;
        vm80.ip(&["-6", "route", "add", "default", "via", HOST_VM6])?;
        let vm6 = vm(&host, "vm6only", "tap60")?;
        addr6(&vm6, "eth0", &format!("{VM6}/64"))?;
        vm6.ip(&["-6", "route", "add", "default", "via", HOST_VM6])?;

        // Both families on one nginx: the extra directive adds [::]:80
        // next to the plain `listen 80`.
        let nginx80 =
            Nginx::start_with(&vm80, 80, None, &[(BIG_FILE, BIG_SIZE)], "listen [::]:80;")?;
        let nginx6 = Nginx::start_with(&vm6, 80, None, &[], "listen [::]:80;")?;
        let mut dns80 = vm80.spawn(&[
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--user=root",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            &format!("--listen-address={VM80}"),
            &format!("--listen-address={VM80_6}"),
            "--bind-interfaces",
            &format!("--address=/{DNS_NAME}/{DNS_ANSWER}"),
            &format!("--pid-file={}", dir.file_str("dnsmasq.pid")),
            "--log-facility=-",
            "--log-queries",
        ])?;
        let up = wait_for(Duration::from_secs(10), || {
            let ss = vm80.output(&["ss", "-lun"]).unwrap_or_default();
            (ss.contains(&format!("{VM80}:53 ")) && ss.contains(&format!("[{VM80_6}]:53 ")))
                .then_some(())
        });
        if up.is_none() || !dns80.is_running() {
            bail!(
                "dnsmasq on vm80 did not listen on both families: {}",
                dns80.log()
            );
        }
        // The LAN clients reach each other and the host on-link: a sanity
        // check that IPv6 is up before any test blames the forwarding.
        lan.run(&["ping", "-6", "-c", "1", "-W", "3", HOST_LAN6])
            .context("lan -> host over IPv6")?;
        Ok(Proxmox6 {
            nginx80,
            dns80,
            nginx6,
            lan,
            lan2,
            host,
            vm80,
            vm6,
            dir,
        })
    }

    /// Client addresses nginx on vm80 logged, in order.
    pub fn http_peers(&self) -> Vec<String> {
        self.nginx80.peers()
    }

    /// Client addresses nginx on vm6 logged, in order.
    pub fn vm6_peers(&self) -> Vec<String> {
        self.nginx6.peers()
    }

    /// Client addresses dnsmasq on vm80 logged queries from.
    pub fn dns_peers(&self) -> Vec<String> {
        self.dns80
            .log()
            .lines()
            .filter(|l| l.contains("query["))
            .filter_map(|l| l.split(" from ").nth(1))
            .map(|s| s.trim().to_string())
            .collect()
    }
}

/// `http://HOST:PORT/PATH` with IPv6 hosts bracketed.
pub fn url(host: &str, port: u16, path: &str) -> String {
    if host.contains(':') {
        format!("http://[{host}]:{port}/{path}")
    } else {
        format!("http://{host}:{port}/{path}")
    }
}

impl Proxmox6 {
    /// `from` fetches `url` (index.html of the backend): HTTP 200 with its
    /// body, and `peers` gained exactly one entry, `seen`.
    pub fn check_http(
        &self,
        from: &Netns,
        url: &str,
        seen: &str,
        peers: impl Fn() -> Vec<String>,
    ) -> Result<()> {
        let before = peers().len();
        // -g: the brackets of an IPv6 URL are not a curl glob.
        let o = curl(from, 3, 8, &["-g"], url);
        anyhow::ensure!(
            o.ok && o.stdout == "hello from the backend\n",
            "curl {url}: {o}"
        );
        check_new_peers(url, before, 1, seen, peers)
    }

    /// `BIG_FILE` from vm80 through `url` arrives intact (size and sha256),
    /// and vm80 saw `seen`.
    pub fn check_big_download(&self, url: &str, seen: &str) -> Result<()> {
        let before = self.http_peers().len();
        let dest = self.dir.file("download.bin");
        let _ = std::fs::remove_file(&dest);
        let o = curl(
            &self.lan,
            3,
            60,
            &[
                "-g",
                "-o",
                dest.to_str().unwrap(),
                "-w",
                "%{http_code} %{size_download} %{speed_download}",
            ],
            url,
        );
        anyhow::ensure!(o.ok, "curl {url}: {o}");
        let len = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        anyhow::ensure!(
            len == BIG_SIZE as u64,
            "downloaded {len} bytes, want {BIG_SIZE}: {o}"
        );
        let served = sha256(&self.nginx80.www().join(BIG_FILE))?;
        let got = sha256(&dest)?;
        let _ = std::fs::remove_file(&dest);
        anyhow::ensure!(
            served == got,
            "30 MB download corrupted: sha256 {got}, served {served}"
        );
        check_new_peers(url, before, 1, seen, || self.http_peers())
    }

    /// A DNS query to `server` port `port` over UDP from the LAN client is
    /// answered by vm80's dnsmasq, which saw `seen`.
    pub fn check_dns(&self, server: &str, port: u16, seen: &str) -> Result<()> {
        let before = self.dns_peers().len();
        let at = format!("@{server}");
        let p = port.to_string();
        let o = client(
            &self.lan,
            6,
            &[
                "dig", &at, "-p", &p, DNS_NAME, "+short", "+time=2", "+tries=1",
            ],
        );
        anyhow::ensure!(
            o.ok && o.stdout.trim() == DNS_ANSWER,
            "dig {at} -p {port} {DNS_NAME} (want {DNS_ANSWER}): {o}"
        );
        check_new_peers(&format!("dns {at}:{port}"), before, 1, seen, || {
            self.dns_peers()
        })
    }

    /// `from`'s connection to `url` is refused at once (a TCP reset, like
    /// a closed port) and no backend saw it.
    pub fn check_refused(&self, from: &Netns, url: &str) -> Result<()> {
        let before = (self.http_peers().len(), self.vm6_peers().len());
        let o = curl(from, 3, 5, &["-g"], url);
        // curl exit 7 "couldn't connect" well before the 3 s connect
        // timeout: a reset, not a silent drop (exit 28).
        anyhow::ensure!(
            o.code == Some(7) && o.elapsed < Duration::from_secs(2),
            "{url} from {}: want a refused connection: {o}",
            from.name
        );
        std::thread::sleep(Duration::from_millis(200));
        let after = (self.http_peers().len(), self.vm6_peers().len());
        anyhow::ensure!(
            after == before,
            "a refused client reached a backend: {before:?} -> {after:?}"
        );
        Ok(())
    }
}
