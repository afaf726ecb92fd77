//! Use case 2 (seeds/000), a k3s node on a tailnet, built from namespaces:
//!
//! ```text
//! vps   100.101.92.95 ─┐  tunrelay          [node]
//!                      ├─ (stand-in  ── tailscale0 100.118.5.68
//! phone 100.90.12.7  ──┘   tailnet)        cni0 10.42.0.1/24 ─┬─ immich pod   10.42.0.105:2283
//!                                          eth0 192.168.1.50   └─ jellyfin pod 10.42.0.106:8096
//!                                          kube-proxy (iptables): 10.43.126.136:80 -> immich,
//!                                                                 10.43.18.201:80  -> jellyfin
//! ```
//!
//! The VPS and the phone have nothing but `tailscale0` (no route to
//! 10.42/10.43): anything reaching a pod from them went through the node.
//! The node's `eth0` leads to its home router (a namespace that forwards
//! nothing); it carries the default route, as on a real node, so the node can `connect()` to a
//! ClusterIP (the route lookup happens before kube-proxy's OUTPUT DNAT).
//! Pods route back through the node (default via 10.42.0.1), which is what
//! lets `snat = "auto"` keep a tailnet client's address.
//!
//! The pods run nginx and log every client address; immich serves a 20 MB
//! pseudo-random file and accepts PUT uploads under /uploads/.
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{
    netns::{self, Netns},
    process::wait_for,
    servers::Nginx,
    tailnet::{self, Member, Tailnet},
    topology::TempDir,
};

pub const VPS: &str = "100.101.92.95";
pub const PHONE: &str = "100.90.12.7";
/// The node's tailnet address (seed 000's `bind=100.118.5.68`).
pub const NODE_TS: &str = "100.118.5.68";
/// The address the live-interface tests move the node to.
pub const NODE_TS_NEW: &str = "100.118.5.99";
/// The node's home-LAN address; what pods see for connections the node
/// itself opens (socat's).
pub const NODE_LAN: &str = "192.168.1.50";
pub const NODE_LAN_GW: &str = "192.168.1.1";
/// cni0, the pods' gateway.
pub const CNI_GW: &str = "10.42.0.1";

/// One app of the seed's port table.
pub struct App {
    pub name: &'static str,
    /// kube service name (namespace/name), as kube-proxy comments it.
    pub service: &'static str,
    pub pod: &'static str,
    pub pod_port: u16,
    pub cluster_ip: &'static str,
    /// The socat/forward port on the node's tailnet address.
    pub node_port: u16,
    /// kube-proxy's chain suffixes (a hash of the service/endpoint in the
    /// real thing; fixed strings here).
    svc_chain: &'static str,
    sep_chain: &'static str,
}

pub const IMMICH: App = App {
    name: "immich",
    service: "immich/immich-server:http",
    pod: "10.42.0.105",
    pod_port: 2283,
    cluster_ip: "10.43.126.136",
    node_port: 8080,
    svc_chain: "KUBE-SVC-3QFJ7SZ5XHDMFX2M",
    sep_chain: "KUBE-SEP-WQ6MBPTLRSYV3CNB",
};

pub const JELLYFIN: App = App {
    name: "jellyfin",
    service: "jellyfin/jellyfin:http",
    pod: "10.42.0.106",
    pod_port: 8096,
    cluster_ip: "10.43.18.201",
    node_port: 8081,
    svc_chain: "KUBE-SVC-NHL7RJ4VDLYC2ZSQ",
    sep_chain: "KUBE-SEP-F2B5EOXK6GQ4JD7T",
};

pub const APPS: [&App; 2] = [&IMMICH, &JELLYFIN];

/// The big file immich serves, and its size.
pub const BIG_FILE: &str = "big.bin";
pub const BIG_SIZE: usize = 20_000_000;
/// Body of `/app` on each pod: the app's name and a newline.
pub fn app_body(app: &App) -> String {
    format!("{}\n", app.name)
}

/// PUT uploads land in the pod's www/uploads/.
const UPLOADS: &str =
    "location /uploads/ { dav_methods PUT; create_full_put_path on; client_max_body_size 64m; }";

/// kube-proxy's iptables mode for the two ClusterIPs, as `iptables-save`
/// shows it on a node (trimmed to what these services need).
///
/// Deliberately left out: kube-proxy's `KUBE-MARK-MASQ` for off-cluster
/// sources (`-A KUBE-SVC-... ! -s 10.42.0.0/16 -d <ClusterIP> -j
/// KUBE-MARK-MASQ`, present when --cluster-cidr is set, as k3s sets it)
/// and the `KUBE-POSTROUTING` MASQUERADE it triggers. With them, a pod sees
/// the node's address for every tailnet client no matter what the
/// forwarder does; without them the tests can observe whether the
/// forwarder kept the client's address. (A real node can get the same by
/// setting kube-proxy's masqueradeAll=false and no cluster CIDR, or by
/// using a NodePort with externalTrafficPolicy=Local.)
pub fn kube_proxy_rules() -> String {
    let mut s = String::from(
        "*nat\n\
         :KUBE-SERVICES - [0:0]\n",
    );
    for a in APPS {
        s += &format!(":{} - [0:0]\n:{} - [0:0]\n", a.svc_chain, a.sep_chain);
    }
    s += "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
          -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
    for a in APPS {
        s += &format!(
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{svc} cluster IP\" \
             -m tcp --dport 80 -j {svcc}\n\
             -A {svcc} -m comment --comment \"{svc} -> {pod}:{port}\" -j {sepc}\n\
             -A {sepc} -p tcp -m comment --comment \"{svc}\" -m tcp \
             -j DNAT --to-destination {pod}:{port}\n",
            ip = a.cluster_ip,
            svc = a.service,
            svcc = a.svc_chain,
            sepc = a.sep_chain,
            pod = a.pod,
            port = a.pod_port,
        );
    }
    s += "COMMIT\n";
    s
}

/// The whole topology. Fields drop in declaration order: servers, the
/// relay (its devices go with it), the namespaces, the temp directory.
pub struct K3s {
    pub immich: Nginx,
    pub jellyfin: Nginx,
    pub tailnet: Tailnet,
    pub vps: Netns,
    pub phone: Netns,
    pub node: Netns,
    /// The node's home router (192.168.1.1), a dead end.
    pub lan: Netns,
    pub immich_pod: Netns,
    pub jellyfin_pod: Netns,
    pub dir: TempDir,
}

fn pod(node: &Netns, app: &App) -> Result<Netns> {
    let ns = Netns::new(app.name)?;
    let host_end = format!("veth{}", app.pod.rsplit('.').next().unwrap());
    netns::veth(&ns, "eth0", node, &host_end)?;
    node.ip(&["link", "set", &host_end, "master", "cni0"])?;
    ns.addr("eth0", &format!("{}/24", app.pod))?;
    ns.ip(&["route", "add", "default", "via", CNI_GW])?;
    Ok(ns)
}

fn app_server(ns: &Netns, app: &App, files: &[(&str, usize)], extra: &str) -> Result<Nginx> {
    // Both families, as a dual-stack cluster's pods (k3s6.rs) need.
    let extra = format!("listen [::]:{}; {extra}", app.pod_port);
    let n = Nginx::start_with(ns, app.pod_port, None, files, &extra)?;
    std::fs::write(n.www().join("app"), app_body(app))?;
    Ok(n)
}

/// Records `iifname . ip saddr . <key>` of the packets matching `what` in
/// an nft set (table `ip probe`, hook prerouting, priority -300).
fn probe(ns: &Netns, what: &str, key: &str) -> Result<()> {
    ns.run(&[
        "nft",
        &format!(
            "add table ip probe; \
             add set ip probe seen {{ type ifname . ipv4_addr . ipv4_addr . inet_service; \
             flags dynamic; size 4096; }}; \
             add chain ip probe pre {{ type filter hook prerouting priority -300; }}; \
             add rule ip probe pre {what} add @seen {{ iifname . ip saddr . {key} }}"
        ),
    ])
    .with_context(|| format!("nft probe in {}", ns.name))?;
    Ok(())
}

/// The probe's records: [iface, saddr, addr, port].
fn probed(ns: &Netns) -> Vec<Vec<String>> {
    let out = ns
        .output(&["nft", "-j", "list", "set", "ip", "probe", "seen"])
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let mut seen = Vec::new();
    for o in v["nftables"].as_array().into_iter().flatten() {
        for e in o["set"]["elem"].as_array().into_iter().flatten() {
            let c = e["elem"]["val"]["concat"]
                .as_array()
                .or_else(|| e["concat"].as_array());
            if let Some(c) = c {
                let f: Vec<String> = c
                    .iter()
                    .map(|x| x.as_str().map_or(x.to_string(), str::to_string))
                    .collect();
                if f.len() == 4 {
                    seen.push(f);
                }
            }
        }
    }
    seen
}

impl K3s {
    /// Everything up, `tailscale0` on the node included.
    pub fn build() -> Result<K3s> {
        K3s::build_with(true)
    }

    /// With `node_tailscale0 = false` the node's device does not exist
    /// until `tailnet.up(&node, NODE_TS)` (tailscaled starting late).
    pub fn build_with(node_tailscale0: bool) -> Result<K3s> {
        let dir = TempDir::new("k3s")?;
        let vps = Netns::new("vps")?;
        let phone = Netns::new("phone")?;
        let node = Netns::new("node")?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        // The home LAN: a veth to a router namespace that forwards nothing
        // (no dummy module on these kernels).
        let lan = Netns::new("lan")?;
        netns::veth(&node, "eth0", &lan, "eth0")?;
        lan.addr("eth0", &format!("{NODE_LAN_GW}/24"))?;
        node.addr("eth0", &format!("{NODE_LAN}/24"))?;
        node.ip(&["route", "add", "default", "via", NODE_LAN_GW])?;
        node.bridge("cni0")?;
        node.addr("cni0", &format!("{CNI_GW}/24"))?;
        let immich_pod = pod(&node, &IMMICH)?;
        let jellyfin_pod = pod(&node, &JELLYFIN)?;

        let rules = dir.file("kube-proxy.rules");
        std::fs::write(&rules, kube_proxy_rules())?;
        node.run(&[
            "iptables-restore",
            "-w",
            "5",
            "--noflush",
            rules.to_str().unwrap(),
        ])
        .context("loading the kube-proxy rules")?;

        // Probes before conntrack (priority -300), diagnostics only: the
        // SYNs the node's stack received, as they were after any TC
        // rewrite, and the SYN-ACKs the tailnet peers received (from where
        // their connections were answered).
        probe(
            &node,
            "tcp flags & (syn|ack) == syn",
            "ip daddr . tcp dport",
        )?;

        let immich = app_server(&immich_pod, &IMMICH, &[(BIG_FILE, BIG_SIZE)], UPLOADS)?;
        let jellyfin = app_server(&jellyfin_pod, &JELLYFIN, &[], "")?;

        probe(
            &vps,
            "tcp flags & (syn|ack) == syn|ack",
            "ip daddr . tcp sport",
        )?;
        probe(
            &phone,
            "tcp flags & (syn|ack) == syn|ack",
            "ip daddr . tcp sport",
        )?;

        let tailnet = Tailnet::start(&[
            Member {
                ns: &vps,
                addr: VPS,
                up: true,
            },
            Member {
                ns: &phone,
                addr: PHONE,
                up: true,
            },
            Member {
                ns: &node,
                addr: NODE_TS,
                up: node_tailscale0,
            },
        ])?;
        Ok(K3s {
            immich,
            jellyfin,
            tailnet,
            vps,
            phone,
            node,
            lan,
            immich_pod,
            jellyfin_pod,
            dir,
        })
    }

    pub fn server(&self, app: &App) -> &Nginx {
        if app.name == IMMICH.name {
            &self.immich
        } else {
            &self.jellyfin
        }
    }

    /// Client addresses the app's pod logged, in order.
    pub fn peers(&self, app: &App) -> Vec<String> {
        self.server(app).peers()
    }

    /// SYNs the node's stack received (before conntrack), as
    /// `iface saddr -> daddr:dport`.
    pub fn node_syns(&self) -> Vec<String> {
        probed(&self.node)
            .iter()
            .map(|f| format!("on {} {} -> {}:{}", f[0], f[1], f[2], f[3]))
            .collect()
    }

    /// SYN-ACKs `peer` received, as `on iface from saddr:sport`: a reply
    /// from anything but the address it connected to is an un-NAT that
    /// did not happen.
    pub fn peer_synacks(&self, peer: &Netns) -> Vec<String> {
        probed(peer)
            .iter()
            .map(|f| format!("on {} from {}:{} to {}", f[0], f[1], f[3], f[2]))
            .collect()
    }

    /// Creates the node's `tailscale0` (when built without it) with `addr`.
    pub fn node_up(&self, addr: &str) -> Result<()> {
        self.tailnet.up(&self.node, addr)
    }

    /// Moves the node's `tailscale0` to `addr`.
    pub fn node_readdress(&self, addr: &str) -> Result<()> {
        tailnet::readdress(&self.node, addr)
    }

    /// Waits until the relay maps `addr` to the node (it re-reads the
    /// addresses every 100 ms).
    pub fn wait_relay_knows(&self, addr: &str) -> Result<()> {
        wait_for(Duration::from_secs(3), || {
            let s = self.tailnet.stats().ok()?;
            (s.0["owners"][addr].as_str() == Some(self.node.name.as_str())).then_some(())
        })
        .with_context(|| format!("relay never saw {addr} on the node"))
    }
}
