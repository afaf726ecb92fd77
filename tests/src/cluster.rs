//! Support for the cluster tests (issue 16): how Kubernetes and Proxmox
//! deliver a rules file to a node, and small topologies with servers that
//! say who they are.
//!
//! * [`ConfigMapVolume`]: a directory laid out and updated exactly as
//!   kubelet's AtomicWriter does for a ConfigMap volume.
//! * [`FuseMount`]: a real FUSE mount (bindfs) of a directory, standing in
//!   for pmxcfs: writes to the source directory reach the mount without an
//!   inotify event on it, as writes made on another Proxmox node do.
//! * [`Line`]: client -- router -- server, the server answering "one" on
//!   port 8001 and "two" on 8002, so a client sees which target a forward
//!   points at.
use std::{
    collections::BTreeSet,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    client::client,
    netns::{veth, Netns},
    process::{run_in, wait_for, Bg},
    topology::TempDir,
};

/// A ConfigMap volume directory with one key per file.
///
/// kubelet (pkg/volume/util/atomic_writer.go) writes the payload into a new
/// directory named `..<UTC timestamp>.<random>`, points a new symlink
/// `..data_tmp` at it, renames that over `..data` (the one atomic step),
/// creates the visible `KEY -> ..data/KEY` symlinks if they are missing,
/// and removes the previous timestamped directory.
pub struct ConfigMapVolume {
    pub dir: PathBuf,
    writes: u32,
}

impl ConfigMapVolume {
    pub fn new(dir: &Path) -> ConfigMapVolume {
        ConfigMapVolume {
            dir: dir.to_path_buf(),
            writes: 0,
        }
    }

    /// The visible path of `key` (what a pod reads).
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// One update, in kubelet's order.
    pub fn write(&mut self, files: &[(&str, &str)]) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.writes += 1;
        let ts = format!("..{}.{:09}", utc_stamp(), self.writes);
        let ts_dir = self.dir.join(&ts);
        std::fs::create_dir(&ts_dir)?;
        std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
        for (key, content) in files {
            let p = ts_dir.join(key);
            std::fs::write(&p, content)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        }
        let data = self.dir.join("..data");
        let old = std::fs::read_link(&data).ok();
        let tmp = self.dir.join("..data_tmp");
        symlink(&ts, &tmp)?;
        std::fs::rename(&tmp, &data)?;
        for (key, _) in files {
            let visible = self.dir.join(key);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new("..data").join(key), &visible)?;
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old))?;
        }
        Ok(())
    }
}

/// `2006_01_02_15_04_05` in UTC, the prefix format of kubelet's directories.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `bindfs SOURCE MOUNTPOINT`: a FUSE file system showing `source`.
/// Unmounted on drop.
pub struct FuseMount {
    pub source: TempDir,
    pub mount: TempDir,
}

impl FuseMount {
    pub fn new() -> Result<FuseMount> {
        sweep_fuse_mounts();
        let source = TempDir::new("fuse-src")?;
        let mount = TempDir::new("fuse-mnt")?;
        run_in(
            None,
            &[
                "bindfs",
                "--no-allow-other",
                source.path.to_str().context("path")?,
                mount.path.to_str().context("path")?,
            ],
        )?;
        Ok(FuseMount { source, mount })
    }
}

fn unmount(path: &Path) {
    let done = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !done {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Unmounts FUSE mounts left by test processes that died (their TempDir
/// guards never ran).
fn sweep_fuse_mounts() {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let Some(name) = Path::new(m).file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let owner = name
            .strip_prefix(crate::netns::PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok());
        // SAFETY: signal 0 only checks for existence.
        if let Some(pid) = owner.filter(|p| unsafe { libc::kill(*p, 0) } != 0) {
            if name.ends_with("-fuse-mnt") && pid > 0 {
                unmount(Path::new(m));
                let _ = std::fs::remove_dir_all(m);
            }
        }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        unmount(&self.mount.path);
    }
}

/// `client 10.1.0.2 -- eth0 10.1.0.1 [router] eth1 10.2.0.1 -- server 10.2.0.2`
/// ([`routed_line`](crate::routed_line)), the server answering "one" on
/// TCP 8001 and "two" on 8002 (one line per connection). Fields drop
/// servers first, then namespaces.
pub struct Line {
    _servers: Vec<Bg>,
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
}

pub use crate::routed_line::{ROUTER_IN, SERVER};

impl Line {
    pub fn build() -> Result<Line> {
        let (client, router, server) = crate::routed_line::build(["lncli", "lnrtr", "lnsrv"])?;
        let mut servers = Vec::new();
        for (port, word) in [(8001, "one"), (8002, "two")] {
            servers.push(echo_server(&server, port, &format!("echo {word}"))?);
        }
        Ok(Line {
            _servers: servers,
            client,
            router,
            server,
        })
    }

    /// What the server behind `ROUTER_IN:port` answers, if anything.
    pub fn ask(&self, port: u16) -> Option<String> {
        ask(&self.client, ROUTER_IN, port)
    }
}

/// A TCP server on `port` in `ns` running the shell command `reply` for
/// each connection (`$SOCAT_PEERADDR` is the client's address as seen).
pub fn echo_server(ns: &Netns, port: u16, reply: &str) -> Result<Bg> {
    let mut bg = ns.spawn(&[
        "socat",
        &format!("TCP-LISTEN:{port},fork,reuseaddr"),
        &format!("SYSTEM:{reply}"),
    ])?;
    let needle = format!(":{port} ");
    let up = wait_for(Duration::from_secs(10), || {
        ns.output(&["ss", "-ltn"])
            .unwrap_or_default()
            .contains(&needle)
            .then_some(())
    });
    if up.is_none() || !bg.is_running() {
        bail!("echo server on {port} did not start: {}", bg.log());
    }
    Ok(bg)
}

/// One connection from `ns` to `addr:port`: the first line the far end
/// sends, or `None` (refused, timed out, empty).
pub fn ask(ns: &Netns, addr: &str, port: u16) -> Option<String> {
    let o = client(
        ns,
        3,
        &[
            "socat",
            "-T1",
            "-u",
            &format!("TCP:{addr}:{port},connect-timeout=1"),
            "-",
        ],
    );
    let line = o.stdout.lines().next().unwrap_or("").trim().to_string();
    (o.ok && !line.is_empty()).then_some(line)
}

/// The VIP the two nodes of [`TwoNodes`] hand over between them.
pub const VIP: &str = "192.168.50.100";
pub const BACKEND: &str = "10.60.0.100";

/// Two cluster nodes on one LAN and one backend network, like two Proxmox
/// hosts sharing `vmbr0` and a VM network:
///
/// ```text
/// client 192.168.50.10 ─┬─ eth0 192.168.50.1 [node A] eth1 10.60.0.1 ─┬─ backend 10.60.0.100
///          (lan switch) └─ eth0 192.168.50.2 [node B] eth1 10.60.0.2 ─┘  (san switch)
/// ```
///
/// The backend answers TCP 80 with the address it saw the connection come
/// from: a node's eth1 address once that node masquerades, which tells
/// which node forwarded it. Each node has IP forwarding on (as Proxmox
/// hosts do). The VIP is on no node until [`TwoNodes::move_vip`].
pub struct TwoNodes {
    _backend_server: Bg,
    pub client: Netns,
    pub a: Netns,
    pub b: Netns,
    pub backend: Netns,
    _lan: Netns,
    _san: Netns,
}

impl TwoNodes {
    pub fn build() -> Result<TwoNodes> {
        let lan = Netns::new("lansw")?;
        let san = Netns::new("sansw")?;
        lan.bridge("br0")?;
        san.bridge("br0")?;
        let client = Netns::new("vipcli")?;
        let a = Netns::new("nodea")?;
        let b = Netns::new("nodeb")?;
        let backend = Netns::new("vipbe")?;
        let port = |sw: &Netns, ns: &Netns, dev: &str, swdev: &str| -> Result<()> {
            veth(ns, dev, sw, swdev)?;
            sw.ip(&["link", "set", swdev, "master", "br0"])
        };
        port(&lan, &client, "eth0", "pcli")?;
        port(&lan, &a, "eth0", "pa")?;
        port(&lan, &b, "eth0", "pb")?;
        port(&san, &a, "eth1", "pa")?;
        port(&san, &b, "eth1", "pb")?;
        port(&san, &backend, "eth0", "pbe")?;
        client.addr("eth0", "192.168.50.10/24")?;
        a.addr("eth0", "192.168.50.1/24")?;
        b.addr("eth0", "192.168.50.2/24")?;
        a.addr("eth1", "10.60.0.1/24")?;
        b.addr("eth1", "10.60.0.2/24")?;
        backend.addr("eth0", &format!("{BACKEND}/24"))?;
        for n in [&a, &b] {
            n.sysctl("net.ipv4.ip_forward", "1")?;
        }
        let backend_server = echo_server(&backend, 80, "echo $SOCAT_PEERADDR")?;
        Ok(TwoNodes {
            _backend_server: backend_server,
            client,
            a,
            b,
            backend,
            _lan: lan,
            _san: san,
        })
    }

    /// What keepalived does on a failover: the VIP leaves `from` (if
    /// given), is added on `to`, and `to` announces it with a gratuitous
    /// ARP. Returns the wall-clock time (seconds since the epoch, the
    /// clock of the client loop's timestamps) when it started.
    pub fn move_vip(&self, from: Option<&Netns>, to: &Netns) -> Result<f64> {
        let t = unix_now();
        let cidr = format!("{VIP}/32");
        if let Some(f) = from {
            f.ip(&["addr", "del", &cidr, "dev", "eth0"])?;
        }
        to.ip(&["addr", "add", &cidr, "dev", "eth0"])?;
        to.run(&[
            "arping", "-q", "-U", "-c", "1", "-I", "eth0", "-s", VIP, VIP,
        ])?;
        Ok(t)
    }

    /// The MAC address of `ns`'s eth0.
    pub fn mac(ns: &Netns) -> Result<String> {
        let out = ns.output(&["ip", "-j", "link", "show", "eth0"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["address"]
            .as_str()
            .map(str::to_lowercase)
            .context("no MAC address")
    }

    /// MAC addresses that answer ARP for the VIP on the LAN now.
    pub fn vip_owners(&self) -> Result<BTreeSet<String>> {
        let o = client(
            &self.client,
            10,
            &["arping", "-c", "3", "-w", "4", "-I", "eth0", VIP],
        );
        // "Unicast reply from 192.168.50.100 [AA:BB:CC:DD:EE:FF]  0.6ms"
        Ok(o.stdout
            .lines()
            .filter_map(|l| l.split('[').nth(1)?.split(']').next())
            .map(str::to_lowercase)
            .collect())
    }

    /// A client loop on the VIP: one new connection every 20 ms, each line
    /// `<unix time> <what the backend said, or FAIL>`.
    pub fn client_loop(&self) -> Result<Bg> {
        self.client.spawn(&[
            "sh",
            "-c",
            &format!(
                "while :; do r=$(timeout 1 socat -T1 -u TCP:{VIP}:80,connect-timeout=0.3 - 2>/dev/null); \
                 echo \"$(date +%s.%N) ${{r:-FAIL}}\"; sleep 0.02; done"
            ),
        ])
    }
}

/// Seconds since the epoch, as `date +%s.%N` prints them.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The lines of a [`TwoNodes::client_loop`] log as (time, answer).
pub fn loop_answers(log: &str) -> Vec<(f64, String)> {
    log.lines()
        .filter_map(|l| {
            let (t, r) = l.split_once(' ')?;
            Some((t.parse().ok()?, r.trim().to_string()))
        })
        .collect()
}
