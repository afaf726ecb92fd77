//! Network namespaces and links with guaranteed cleanup.
use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result};

use crate::process::run_in;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn next_id() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Prefix of everything the tests create: `fwt-<pid>-`.
pub const PREFIX: &str = "fwt-";

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Removes namespaces and bpffs mounts left by test processes that no
/// longer exist (a crashed or SIGKILLed run cannot clean up after itself).
pub fn sweep() {
    if let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = owner_pid(name) {
                if !pid_alive(pid) {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "del", name])
                        .status();
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_pid(&name) {
                if !pid_alive(pid) && name.ends_with("-bpf") {
                    let p = e.path();
                    let _ = std::process::Command::new("umount")
                        .arg("-l")
                        .arg(&p)
                        .status();
                    let _ = std::fs::remove_dir_all(&p);
                }
            }
        }
    }
}

fn owner_pid(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// A network namespace deleted on drop (which also destroys every link in
/// it, and with veth pairs their peers).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `fwt-<pid>-<n>-<label>` with loopback up and IPv6 off (no
    /// router solicitations or ND in the counters).
    pub fn new(label: &str) -> Result<Netns> {
        let name = format!("{PREFIX}{}-{}-{label}", std::process::id(), next_id());
        run_in(None, &["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(ns)
    }

    pub fn run(&self, args: &[&str]) -> Result<std::process::Output> {
        run_in(Some(&self.name), args)
    }

    /// Runs and returns stdout as a string.
    pub fn output(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.run(args)?.stdout).into_owned())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    pub fn spawn(&self, args: &[&str]) -> Result<crate::process::Bg> {
        crate::process::Bg::spawn(Some(&self.name), args)
    }

    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut v = vec!["ip"];
        v.extend_from_slice(args);
        self.run(&v)?;
        Ok(())
    }

    /// Adds `addr` (CIDR) to `dev` and brings it up.
    pub fn addr(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev])?;
        self.ip(&["link", "set", dev, "up"])
    }

    /// Creates a Linux bridge (up).
    pub fn bridge(&self, name: &str) -> Result<()> {
        self.ip(&["link", "add", name, "type", "bridge"])?;
        self.ip(&["link", "set", name, "up"])
    }

    /// RX packets and bytes of `dev` as the kernel counts them.
    pub fn rx_stats(&self, dev: &str) -> Result<(u64, u64)> {
        let out = self.output(&["ip", "-s", "-j", "link", "show", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let rx = &v[0]["stats64"]["rx"];
        Ok((
            rx["packets"].as_u64().context("rx packets")?,
            rx["bytes"].as_u64().context("rx bytes")?,
        ))
    }

    /// The kernel's own protocol counters in this namespace
    /// (/proc/net/snmp and /proc/net/netstat, per namespace), named as
    /// `nstat` names them: `IpInReceives`, `IpExtInOctets`,
    /// `TcpRetransSegs`, `TcpExtTCPSynRetrans`... What the kernel says
    /// arrived or was sent again is what a test bounds its expectations by,
    /// not what an ideal run would carry (a loaded machine retransmits).
    pub fn snmp(&self) -> Result<Snmp> {
        let text = self.output(&["cat", "/proc/net/snmp", "/proc/net/netstat"])?;
        let mut counters = std::collections::BTreeMap::new();
        let lines: Vec<&str> = text.lines().collect();
        // Each group is two lines: "Ip: Forwarding DefaultTTL ..." and
        // "Ip: 1 64 ...".
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (Some((group, names)), Some((_, values))) =
                (names.split_once(':'), values.split_once(':'))
            else {
                continue;
            };
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                // Some are signed (Tcp MaxConn -1): not counters.
                if let Ok(v) = v.parse::<u64>() {
                    counters.insert(format!("{group}{n}"), v);
                }
            }
        }
        anyhow::ensure!(
            counters.contains_key("IpInReceives"),
            "no IP counters in /proc/net/snmp of {}",
            self.name
        );
        Ok(Snmp(counters))
    }
}

/// One reading of a namespace's protocol counters ([`Netns::snmp`]).
#[derive(Clone, Debug, Default)]
pub struct Snmp(pub std::collections::BTreeMap<String, u64>);

impl Snmp {
    /// A counter by its nstat name; 0 when this kernel does not have it.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// How much counter `name` grew from `before` to this reading.
    pub fn since(&self, before: &Snmp, name: &str) -> u64 {
        self.get(name).saturating_sub(before.get(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill anything still running inside (servers a test forgot), then
        // delete the namespace.
        let _ = std::process::Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: plain kill of a process in our namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            });
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Connects two namespaces with a veth pair: `a_dev` in `a`, `b_dev` in `b`
/// (created directly inside them, so the names never clash with the host's).
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    run_in(
        None,
        &[
            "ip", "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev,
            "netns", &b.name,
        ],
    )?;
    a.ip(&["link", "set", a_dev, "up"])?;
    b.ip(&["link", "set", b_dev, "up"])?;
    Ok(())
}

/// A private bpffs mount in the host mount namespace: visible to processes
/// started later with `ip netns exec` (which remounts /sys, hiding
/// /sys/fs/bpf), so the daemon and `forwarder status` share pins.
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn new() -> Result<Bpffs> {
        let path =
            std::env::temp_dir().join(format!("{PREFIX}{}-{}-bpf", std::process::id(), next_id()));
        std::fs::create_dir_all(&path)?;
        run_in(None, &["mount", "-t", "bpf", "bpf", path.to_str().unwrap()])?;
        Ok(Bpffs { path })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Names of the TC programs on `iface` in `ns` (ingress and egress): TCX
/// links, asked from the kernel in that namespace (bookworm's bpftool
/// predates TCX, so the query is made here with aya), and cls_bpf filters
/// of a clsact qdisc (the legacy way), as `tc` lists them.
pub fn tc_programs(ns: &Netns, iface: &str) -> Result<Vec<String>> {
    let path = format!("/run/netns/{}", ns.name);
    let name = iface.to_string();
    // setns changes only the calling thread's namespace: do it on a thread
    // of its own so the test's thread stays where it is.
    let mut names = std::thread::spawn(move || -> Result<Vec<String>> {
        let f = std::fs::File::open(&path)?;
        // SAFETY: a valid namespace fd; affects only this thread.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut names = Vec::new();
        for ty in [
            aya::programs::TcAttachType::Ingress,
            aya::programs::TcAttachType::Egress,
        ] {
            // A kernel without TCX has nothing attached that way.
            let Ok((_, progs)) = aya::programs::SchedClassifier::query_tcx(&name, ty) else {
                continue;
            };
            names.extend(
                progs
                    .iter()
                    .map(|p| p.name_as_str().unwrap_or("?").to_string()),
            );
        }
        Ok(names)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("tcx query thread panicked"))??;
    for hook in ["ingress", "egress"] {
        let out = ns.output(&["tc", "-j", "filter", "show", "dev", iface, hook])?;
        let filters: serde_json::Value =
            serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
        names.extend(
            filters
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["options"]["bpf_name"].as_str())
                .map(String::from),
        );
    }
    Ok(names)
}
