//! Use case 2 (seeds/000) dual-stack: the k3s node of `k3s.rs` with the
//! tailnet's IPv6 addresses (fd7a:115c:a1e0::/48, as every tailnet node
//! has next to its 100.x address) and a dual-stack cluster (k3s
//! `--cluster-cidr 10.42.0.0/16,2001:cafe:42::/56 --service-cidr
//! 10.43.0.0/16,2001:cafe:43::/112`).
//!
//! ```text
//! vps   100.101.92.95, fd7a:115c:a1e0::655c:5f5f ─┐ tunrelay     [node] tailscale0 100.118.5.68
//! phone 100.90.12.7,   fd7a:115c:a1e0::5a0c:7   ──┘ (MTU 1280)           fd7a:115c:a1e0::7605:44
//!   cni0 10.42.0.1, 2001:cafe:42::1 ─┬─ immich   10.42.0.105, 2001:cafe:42::105 :2283 (+ big30.bin)
//!                                    └─ jellyfin 10.42.0.106, 2001:cafe:42::106 :8096, dnsmasq :53
//!   kube-proxy: immich   10.43.126.136:80, [2001:cafe:43::136]:80
//!               jellyfin 10.43.18.201:80,  [2001:cafe:43::201]:80
//!               dns      10.43.0.10:53/udp, [2001:cafe:43::a]:53/udp -> jellyfin pod :53
//! ```
//!
//! The fact a reader gets wrong: an IPv6 tailnet client of an IPv4
//! ClusterIP cannot keep its address anywhere (the pod would need an IPv4
//! address for it); the client address is kept only toward the IPv6
//! ClusterIPs, through the node's own kube-proxy rules, like IPv4.
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{
    dual_stack::{addr6, enable, enable_router},
    k3s::{App, K3s, IMMICH, JELLYFIN},
    process::{wait_for, Bg},
    servers::pseudo_random,
    tailnet::DEV,
    Netns,
};

/// Tailscale's IPv6 range, routed to the device on every member.
pub const TAILNET6_CIDR: &str = "fd7a:115c:a1e0::/48";
pub const VPS6: &str = "fd7a:115c:a1e0::655c:5f5f";
pub const PHONE6: &str = "fd7a:115c:a1e0::5a0c:7";
pub const NODE_TS6: &str = "fd7a:115c:a1e0::7605:44";
pub const CNI_GW6: &str = "2001:cafe:42::1";
/// The DNS service: a UDP ClusterIP of each family in front of dnsmasq in
/// the jellyfin pod.
pub const DNS_CLUSTER_IP: &str = "10.43.0.10";
pub const DNS_CLUSTER_IP6: &str = "2001:cafe:43::a";
pub const DNS_NAME: &str = "forwarder.test";
pub const DNS_ANSWER: &str = "10.1.2.3";
/// A UDP server in the jellyfin pod that answers every datagram with
/// `BIG_UDP_SIZE` bytes: bigger than the tunnel's MTU, so the first answer
/// to a tailnet client needs an ICMPv6 packet too big from the node (the
/// pod fragments later ones). socat, because dnsmasq fragments its IPv6
/// answers at 1280 by itself and would never need one.
pub const BIG_UDP_PORT: u16 = 5300;
pub const BIG_UDP_SIZE: usize = 1400;
/// 30 MB on immich, for the download over the 1280-byte tunnel.
pub const BIG30_FILE: &str = "big30.bin";
pub const BIG30_SIZE: usize = 30_000_000;

/// An app's IPv6 side.
pub struct App6 {
    pub app: &'static App,
    pub pod6: &'static str,
    pub cluster_ip6: &'static str,
    svc_chain: &'static str,
    sep_chain: &'static str,
}

pub const IMMICH6: App6 = App6 {
    app: &IMMICH,
    pod6: "2001:cafe:42::105",
    cluster_ip6: "2001:cafe:43::136",
    svc_chain: "KUBE-SVC-3QFJ7SZ5XHDMFX2M",
    sep_chain: "KUBE-SEP-7VKX3QK2N4WHDRXB",
};

pub const JELLYFIN6: App6 = App6 {
    app: &JELLYFIN,
    pod6: "2001:cafe:42::106",
    cluster_ip6: "2001:cafe:43::201",
    svc_chain: "KUBE-SVC-NHL7RJ4VDLYC2ZSQ",
    sep_chain: "KUBE-SEP-QJ4XKZ3W2M6TRVBN",
};

pub const APPS6: [&App6; 2] = [&IMMICH6, &JELLYFIN6];

impl App6 {
    /// The chain a NodePort-like rule jumps to (`KUBE-SVC-...`).
    pub fn svc_chain(&self) -> &'static str {
        self.svc_chain
    }
}

/// kube-proxy's ip6tables rules for the IPv6 ClusterIPs, as on a
/// dual-stack node.
fn kube_proxy6_rules() -> String {
    let mut s = String::from("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-DNS6 - [0:0]\n");
    for a in APPS6 {
        s += &format!(":{} - [0:0]\n:{} - [0:0]\n", a.svc_chain, a.sep_chain);
    }
    s += "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
          -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
    for a in APPS6 {
        s += &format!(
            "-A KUBE-SERVICES -d {ip}/128 -p tcp -m comment --comment \"{svc} cluster IP\" -m tcp --dport 80 -j {svcc}\n\
             -A {svcc} -j {sepc}\n\
             -A {sepc} -p tcp -m tcp -j DNAT --to-destination [{pod}]:{port}\n",
            ip = a.cluster_ip6,
            svc = a.app.service,
            svcc = a.svc_chain,
            sepc = a.sep_chain,
            pod = a.pod6,
            port = a.app.pod_port,
        );
    }
    s += &format!(
        "-A KUBE-SERVICES -d {DNS_CLUSTER_IP6}/128 -p udp -m udp --dport 53 -j KUBE-SVC-DNS6\n\
         -A KUBE-SVC-DNS6 -p udp -j DNAT --to-destination [{}]:53\nCOMMIT\n",
        JELLYFIN6.pod6
    );
    s
}

/// The IPv4 DNS ClusterIP (the app ClusterIPs are `k3s.rs`'s).
fn kube_proxy_dns4_rules() -> String {
    format!(
        "*nat\n:KUBE-SVC-DNS4 - [0:0]\n\
         -A KUBE-SERVICES -d {DNS_CLUSTER_IP}/32 -p udp -m udp --dport 53 -j KUBE-SVC-DNS4\n\
         -A KUBE-SVC-DNS4 -p udp -j DNAT --to-destination {}:53\nCOMMIT\n",
        JELLYFIN.pod
    )
}

/// The whole dual-stack topology: the IPv4 one plus its IPv6 side.
pub struct K3s6 {
    /// dnsmasq in the jellyfin pod (both families; logs client addresses).
    pub dns: Bg,
    /// The `BIG_UDP_PORT` server in the jellyfin pod.
    pub big_udp: Bg,
    pub k: K3s,
}

/// Address, route: what tailscaled adds for IPv6 on each member.
pub fn configure6(ns: &Netns, addr6: &str) -> Result<()> {
    enable(ns)?;
    crate::dual_stack::addr6(ns, DEV, &format!("{addr6}/128"))?;
    ns.ip(&["-6", "route", "replace", TAILNET6_CIDR, "dev", DEV])
}

impl K3s6 {
    pub fn build() -> Result<K3s6> {
        let k = K3s::build()?;
        configure6(&k.vps, VPS6)?;
        configure6(&k.phone, PHONE6)?;
        enable_router(&k.node)?;
        configure6(&k.node, NODE_TS6)?;
        addr6(&k.node, "cni0", &format!("{CNI_GW6}/64"))?;
        for (ns, a) in [(&k.immich_pod, &IMMICH6), (&k.jellyfin_pod, &JELLYFIN6)] {
            enable(ns)?;
            addr6(ns, "eth0", &format!("{}/64", a.pod6))?;
            ns.ip(&["-6", "route", "add", "default", "via", CNI_GW6])?;
        }
        let rules6 = k.dir.file("kube-proxy6.rules");
        std::fs::write(&rules6, kube_proxy6_rules())?;
        k.node
            .run(&[
                "ip6tables-restore",
                "-w",
                "5",
                "--noflush",
                rules6.to_str().unwrap(),
            ])
            .context("loading the IPv6 kube-proxy rules")?;
        let dns4 = k.dir.file("kube-proxy-dns4.rules");
        std::fs::write(&dns4, kube_proxy_dns4_rules())?;
        k.node
            .run(&[
                "iptables-restore",
                "-w",
                "5",
                "--noflush",
                dns4.to_str().unwrap(),
            ])
            .context("loading the IPv4 DNS service rules")?;
        std::fs::write(k.immich.www().join(BIG30_FILE), pseudo_random(BIG30_SIZE))?;
        let mut dns = k.jellyfin_pod.spawn(&[
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--user=root",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            &format!("--listen-address={}", JELLYFIN.pod),
            &format!("--listen-address={}", JELLYFIN6.pod6),
            "--bind-interfaces",
            &format!("--address=/{DNS_NAME}/{DNS_ANSWER}"),
            &format!("--pid-file={}", k.dir.file_str("dnsmasq.pid")),
            "--log-facility=-",
            "--log-queries",
        ])?;
        let up = wait_for(Duration::from_secs(10), || {
            let ss = k.jellyfin_pod.output(&["ss", "-lun"]).unwrap_or_default();
            ss.contains(&format!("[{}]:53 ", JELLYFIN6.pod6))
                .then_some(())
        });
        anyhow::ensure!(
            up.is_some() && dns.is_running(),
            "dnsmasq in the jellyfin pod did not listen: {}",
            dns.log()
        );
        let mut big_udp = k.jellyfin_pod.spawn(&[
            "socat",
            &format!("UDP6-RECVFROM:{BIG_UDP_PORT},ipv6only=0,fork"),
            &format!("SYSTEM:head -c {BIG_UDP_SIZE} /dev/zero"),
        ])?;
        let up = wait_for(Duration::from_secs(10), || {
            let ss = k.jellyfin_pod.output(&["ss", "-lun"]).unwrap_or_default();
            ss.contains(&format!(":{BIG_UDP_PORT} ")).then_some(())
        });
        anyhow::ensure!(
            up.is_some() && big_udp.is_running(),
            "the big UDP server did not listen: {}",
            big_udp.log()
        );
        // The relay learns the IPv6 owners within 100 ms; wait for all
        // three so no test races it.
        for (addr, ns) in [(VPS6, &k.vps), (PHONE6, &k.phone), (NODE_TS6, &k.node)] {
            wait_for(Duration::from_secs(3), || {
                let s = k.tailnet.stats().ok()?;
                (s.0["owners"][addr].as_str() == Some(ns.name.as_str())).then_some(())
            })
            .with_context(|| format!("relay never saw {addr}"))?;
        }
        Ok(K3s6 { dns, big_udp, k })
    }

    /// Client addresses dnsmasq logged queries from.
    pub fn dns_peers(&self) -> Vec<String> {
        self.dns
            .log()
            .lines()
            .filter(|l| l.contains("query["))
            .filter_map(|l| l.split(" from ").nth(1))
            .map(|s| s.trim().to_string())
            .collect()
    }
}
