//! Use case 1 (seeds/002), the Proxmox host, built from namespaces:
//!
//! ```text
//! lan 192.168.1.10 ── vmbr0 192.168.1.55 [host] vmbr1 192.168.100.1 ─┬─ vm80 192.168.100.80
//!                                                                     ├─ vm50 192.168.100.50
//!                                                                     └─ vm81 192.168.100.81
//! ```
//!
//! vm80 runs nginx (HTTP 80, HTTPS 443, a 30 MB file), dnsmasq on UDP 53 and
//! a probe listener on 8080 that must never see anything; vm50 runs a TLS
//! server on 6443 with CN=vm50; vm81 runs a real sshd on 22. The LAN client
//! has no route to 192.168.100.0/24: anything reaching a VM from it went
//! through NAT on the host (192.168.1.55). The host namespace has no NAT of
//! its own; tests add iptables rules or start the forwarder there.
//!
//! Every server logs the client address it saw, so tests can check SNAT.
use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{
    netns::{self, next_id, Netns, PREFIX},
    process::{run_in, wait_for, Bg},
    servers::{wait_listening, Nginx},
};

pub const LAN_CLIENT: &str = "192.168.1.10";
/// The host's address on vmbr0, the one LAN clients connect to.
pub const HOST_LAN: &str = "192.168.1.55";
/// The host's address on vmbr1, the VMs' gateway and the seed's SNAT source.
pub const HOST_VM: &str = "192.168.100.1";
pub const VM80: &str = "192.168.100.80";
pub const VM50: &str = "192.168.100.50";
pub const VM81: &str = "192.168.100.81";
/// Subject CN of vm50's certificate.
pub const VM50_CN: &str = "vm50";
/// Name dnsmasq on vm80 answers, and its answer.
pub const DNS_NAME: &str = "forwarder.test";
pub const DNS_ANSWER: &str = "10.1.2.3";
/// The big file nginx on vm80 serves, and its size.
pub const BIG_FILE: &str = "big.bin";
pub const BIG_SIZE: usize = 30_000_000;
/// Port on vm80 that no rule forwards; a listener there counts arrivals.
pub const PROBE_PORT: u16 = 8080;

/// A private directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!(
            "{PREFIX}{}-{}-{label}",
            std::process::id(),
            next_id()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn file_str(&self, name: &str) -> String {
        self.file(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The whole topology. Fields drop in declaration order: servers first,
/// then the namespaces (deleting a namespace removes its veths and bridges),
/// then the temp directory.
pub struct Proxmox {
    /// nginx on vm80: HTTP 80, HTTPS 443, `index.html` and `BIG_FILE`.
    pub nginx80: Nginx,
    /// dnsmasq on vm80 UDP 53 (`--log-queries` to its log: client addresses).
    pub dns80: Bg,
    /// TLS server on vm50:6443 (socat, logs each accepted client address).
    pub tls50: Bg,
    /// sshd on vm81:22 (`LogLevel VERBOSE`, logs client addresses).
    pub sshd81: Bg,
    /// Listener on vm80:`PROBE_PORT` (logs every accepted connection).
    pub probe80: Bg,
    pub lan: Netns,
    pub host: Netns,
    pub vm80: Netns,
    pub vm50: Netns,
    pub vm81: Netns,
    /// Certificates, keys, pid files, downloads.
    pub dir: TempDir,
    /// vm81's host public key line (`ssh-ed25519 AAAA...`).
    pub vm81_host_key: String,
}

fn vm(host: &Netns, label: &str, tap: &str, addr: &str) -> Result<Netns> {
    let ns = Netns::new(label)?;
    netns::veth(&ns, "eth0", host, tap)?;
    host.ip(&["link", "set", tap, "master", "vmbr1"])?;
    ns.addr("eth0", &format!("{addr}/24"))?;
    ns.ip(&["route", "add", "default", "via", HOST_VM])?;
    Ok(ns)
}

impl Proxmox {
    pub fn build() -> Result<Proxmox> {
        let dir = TempDir::new("proxmox")?;
        let host = Netns::new("host")?;
        let lan = Netns::new("lan")?;
        host.bridge("vmbr0")?;
        host.bridge("vmbr1")?;
        host.addr("vmbr0", &format!("{HOST_LAN}/24"))?;
        host.addr("vmbr1", &format!("{HOST_VM}/24"))?;
        host.sysctl("net.ipv4.ip_forward", "1")?;
        netns::veth(&lan, "eth0", &host, "lan0")?;
        host.ip(&["link", "set", "lan0", "master", "vmbr0"])?;
        lan.addr("eth0", &format!("{LAN_CLIENT}/24"))?;

        let vm80 = vm(&host, "vm80", "tap80", VM80)?;
        let vm50 = vm(&host, "vm50", "tap50", VM50)?;
        let vm81 = vm(&host, "vm81", "tap81", VM81)?;

        // vm80: nginx, dnsmasq, probe listener.
        let nginx80 = Nginx::start(&vm80, 80, Some(443), &[(BIG_FILE, BIG_SIZE)])?;
        wait_for(Duration::from_secs(10), || {
            let ss = vm80.output(&["ss", "-ltn"]).unwrap_or_default();
            ss.contains(":443 ").then_some(())
        })
        .context("nginx on vm80 did not listen on 443")?;
        let mut dns80 = vm80.spawn(&[
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--user=root",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            &format!("--listen-address={VM80}"),
            "--bind-interfaces",
            &format!("--address=/{DNS_NAME}/{DNS_ANSWER}"),
            &format!("--pid-file={}", dir.file_str("dnsmasq.pid")),
            "--log-facility=-",
            "--log-queries",
        ])?;
        wait_listening(&vm80, 'u', 53, &mut dns80)?;
        let mut probe80 = vm80.spawn(&[
            "socat",
            "-d",
            "-d",
            &format!("TCP-LISTEN:{PROBE_PORT},reuseaddr,fork"),
            "SYSTEM:echo probe",
        ])?;
        wait_listening(&vm80, 't', PROBE_PORT, &mut probe80)?;
        // And an nft counter in vm80 (not the host) for every packet to the
        // probe port, completed connection or not.
        vm80.run(&[
            "nft",
            &format!(
                "add table ip probe; add counter ip probe hits; \
                 add chain ip probe pre {{ type filter hook prerouting priority -300; }}; \
                 add rule ip probe pre tcp dport {PROBE_PORT} counter name hits"
            ),
        ])?;

        // vm50: TLS on 6443 with its own certificate.
        run_in(
            None,
            &[
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={VM50_CN}"),
                "-keyout",
                &dir.file_str("vm50.key"),
                "-out",
                &dir.file_str("vm50.crt"),
            ],
        )?;
        let mut tls50 = vm50.spawn(&[
            "socat",
            "-d",
            "-d",
            &format!(
                "OPENSSL-LISTEN:6443,reuseaddr,fork,verify=0,cert={},key={}",
                dir.file_str("vm50.crt"),
                dir.file_str("vm50.key")
            ),
            "SYSTEM:echo vm50",
        ])?;
        wait_listening(&vm50, 't', 6443, &mut tls50)?;

        // vm81: sshd with a fresh host key, nothing from /etc/ssh.
        let key = dir.file_str("vm81_host_ed25519");
        run_in(
            None,
            &["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", &key],
        )?;
        let pubkey = std::fs::read_to_string(format!("{key}.pub"))?;
        let vm81_host_key = pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        // sshd's privilege separation directory (normally created by the
        // openssh-server unit); an empty directory on the /run tmpfs.
        std::fs::create_dir_all("/run/sshd")?;
        let mut sshd81 = vm81.spawn(&[
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            "/dev/null",
            "-o",
            &format!("HostKey={key}"),
            "-o",
            &format!("PidFile={}", dir.file_str("sshd.pid")),
            "-o",
            "ListenAddress=0.0.0.0:22",
            "-o",
            "LogLevel=VERBOSE",
        ])?;
        wait_listening(&vm81, 't', 22, &mut sshd81)?;

        Ok(Proxmox {
            nginx80,
            dns80,
            tls50,
            sshd81,
            probe80,
            lan,
            host,
            vm80,
            vm50,
            vm81,
            dir,
            vm81_host_key,
        })
    }

    /// Client addresses nginx on vm80 logged for HTTP (port 80), in order.
    pub fn http_peers(&self) -> Vec<String> {
        self.nginx80.peers()
    }

    /// Client addresses nginx on vm80 logged for HTTPS (port 443), in order.
    pub fn https_peers(&self) -> Vec<String> {
        std::fs::read_to_string(self.nginx80.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Client addresses dnsmasq on vm80 logged queries from.
    pub fn dns_peers(&self) -> Vec<String> {
        // "dnsmasq: query[A] forwarder.test from 192.168.100.1"
        self.dns80
            .log()
            .lines()
            .filter(|l| l.contains("query["))
            .filter_map(|l| l.split(" from ").nth(1))
            .map(|s| s.trim().to_string())
            .collect()
    }

    /// Client addresses the TLS server on vm50 accepted.
    pub fn tls_peers(&self) -> Vec<String> {
        socat_peers(&self.tls50)
    }

    /// Client addresses sshd on vm81 logged.
    pub fn ssh_peers(&self) -> Vec<String> {
        // "Connection from 192.168.100.1 port 40000 on 192.168.100.81 port 22 ..."
        self.sshd81
            .log()
            .lines()
            .filter_map(|l| l.split("Connection from ").nth(1))
            .filter_map(|s| s.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// A rate-limited (1 MB/s: 30 s) download of `BIG_FILE` from the LAN
    /// through a forward on the host's port 80, in the background: a long
    /// flow that breaks when a packet of it meets no program, and outlasts
    /// a daemon restart under load (the new daemon verifies its programs,
    /// seconds on a busy 2-core machine, before it swaps them in). The
    /// rate is divided by `time_scale()` (and the time limits multiplied):
    /// under emulation a restart takes longer still (at 2 MB/s, a 6.1
    /// guest on a loaded host finished the download before the restarted
    /// daemon listed its flow).
    pub fn slow_download(&self, dest: &std::path::Path) -> Result<Bg> {
        let url = format!("http://{HOST_LAN}/{BIG_FILE}");
        let dest = dest.to_str().context("download path")?;
        let scale = crate::process::time_scale();
        let rate = format!("{}K", 1024 / scale);
        let max_time = (90 * scale).to_string();
        self.lan.spawn(&[
            "curl",
            "-sS",
            "--limit-rate",
            &rate,
            "--max-time",
            &max_time,
            "-o",
            dest,
            &url,
        ])
    }

    /// Waits for a `slow_download` to end and checks that it succeeded and
    /// brought exactly what nginx serves.
    pub fn finish_download(&self, dl: &mut Bg, dest: &std::path::Path) -> Result<()> {
        let ended = wait_for(Duration::from_secs(60), || {
            dl.child.try_wait().ok().flatten()
        });
        let status = ended.context("the download did not finish")?;
        if !status.success() {
            bail!("the download failed: {}", dl.log());
        }
        let served = crate::client::sha256(&self.nginx80.dir.join("www").join(BIG_FILE))?;
        if crate::client::sha256(dest)? != served {
            bail!("the download arrived damaged");
        }
        Ok(())
    }

    /// Connections the probe listener on vm80:`PROBE_PORT` accepted.
    pub fn probe_peers(&self) -> Vec<String> {
        socat_peers(&self.probe80)
    }

    /// Packets to vm80:`PROBE_PORT` that arrived in vm80 (nft counter).
    pub fn probe_packets(&self) -> Result<u64> {
        let out = self
            .vm80
            .output(&["nft", "-j", "list", "counter", "ip", "probe", "hits"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
            .with_context(|| format!("no counter in {out}"))
    }
}

/// Peers from `socat -d -d` logs:
/// "... N accepting connection from AF=2 192.168.100.1:40000 on AF=2 ...".
fn socat_peers(bg: &Bg) -> Vec<String> {
    bg.log()
        .lines()
        .filter_map(|l| l.split("accepting connection from AF=2 ").nth(1))
        .filter_map(|s| s.split(':').next().map(str::to_string))
        .collect()
}
