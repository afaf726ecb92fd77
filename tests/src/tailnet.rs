//! A stand-in tailnet: `tailscale0` tun devices (L3, MTU 1280) in several
//! namespaces, joined by the `tunrelay` binary, which moves IPv4 packets
//! between them by destination address like tailscaled does.
//!
//! Each member gets its /32 and the route `100.64.0.0/10 dev tailscale0`,
//! as Tailscale configures them. The relay learns who owns which address
//! from the devices themselves (re-read every 100 ms), so tests can
//! readdress, delete and re-create a member's device while traffic flows.
use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        mpsc::{self, Receiver},
        Mutex,
    },
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::{next_id, Netns, PREFIX};

/// The device name Tailscale uses on Linux.
pub const DEV: &str = "tailscale0";
/// Tailscale's default MTU.
pub const MTU: u32 = 1280;
/// Tailscale's CGNAT range, routed to the device on every member.
pub const TAILNET_CIDR: &str = "100.64.0.0/10";

/// One tailnet member: its namespace, its tailnet address, and whether
/// its device exists when the relay starts.
pub struct Member<'a> {
    pub ns: &'a Netns,
    pub addr: &'a str,
    pub up: bool,
}

/// Path of the relay binary (package forwarder-tools, tools/src/bin):
/// TUNRELAY_BIN, or next to the running executable (target/debug/ for the
/// demo, target/debug/deps/.. for tests). It lives in another package, so
/// building this crate's tests does not build it: `cargo xtask test` builds
/// the whole workspace first; alone, `cargo build -p forwarder-tools`.
pub fn tunrelay_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TUNRELAY_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join("tunrelay");
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/debug/tunrelay"
    ))
}

struct Inner {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

/// The running relay. Dropping it ends the relay (EOF on its stdin, then
/// SIGKILL), which closes every tun fd and so deletes every device.
pub struct Tailnet {
    inner: Mutex<Inner>,
    log: PathBuf,
}

/// The relay's counters (`stats`).
#[derive(Debug, Clone)]
pub struct RelayStats(pub serde_json::Value);

impl RelayStats {
    pub fn get(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or(0)
    }
    /// Packets delivered into `ns`'s device.
    pub fn delivered_to(&self, ns: &Netns) -> u64 {
        self.0["members"][&ns.name]["tx"].as_u64().unwrap_or(0)
    }
    /// Packets `ns` sent into the tailnet.
    pub fn sent_by(&self, ns: &Netns) -> u64 {
        self.0["members"][&ns.name]["rx"].as_u64().unwrap_or(0)
    }
}

impl std::fmt::Display for RelayStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "relay: forwarded {}, dropped {} without owner (last {}), {} hairpin, {} not IPv4",
            self.get("forwarded"),
            self.get("no_owner"),
            self.0["last_no_owner"].as_str().unwrap_or("-"),
            self.get("hairpin"),
            self.get("not_ipv4"),
        )
    }
}

impl Tailnet {
    /// Starts the relay with a device in every member whose `up` is set,
    /// and configures those devices (address, link up, route).
    pub fn start(members: &[Member]) -> Result<Tailnet> {
        let log = std::env::temp_dir().join(format!(
            "{PREFIX}{}-{}-tunrelay.log",
            std::process::id(),
            next_id()
        ));
        let bin = tunrelay_bin();
        let mut cmd = Command::new(&bin);
        for m in members {
            cmd.arg(if m.up {
                m.ns.name.clone()
            } else {
                format!("{}:down", m.ns.name)
            });
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| {
                format!(
                    "spawning {} (build it: cargo build -p forwarder-tools --bin tunrelay)",
                    bin.display()
                )
            })?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let (tx, lines) = mpsc::channel();
        // Replies arrive on a thread so every wait can be bounded.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let t = Tailnet {
            inner: Mutex::new(Inner {
                child,
                stdin,
                lines,
            }),
            log,
        };
        let first = t.next_line(Duration::from_secs(10));
        if first.as_deref() != Some("ready") {
            bail!("tunrelay did not start ({first:?}): {}", t.log());
        }
        for m in members.iter().filter(|m| m.up) {
            configure(m.ns, m.addr)?;
        }
        Ok(t)
    }

    fn next_line(&self, timeout: Duration) -> Option<String> {
        self.inner.lock().unwrap().lines.recv_timeout(timeout).ok()
    }

    /// Sends one command and returns the payload of its `ok` reply.
    pub fn command(&self, line: &str) -> Result<String> {
        let mut inner = self.inner.lock().unwrap();
        let stdin = inner.stdin.as_mut().context("relay stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        let reply = inner
            .lines
            .recv_timeout(Duration::from_secs(5))
            .map_err(|e| anyhow!("relay gave no reply to {line:?}: {e}"))?;
        drop(inner);
        match reply.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => bail!("relay: {line}: {reply}\n{}", self.log()),
        }
    }

    /// Creates `ns`'s device (new ifindex) and configures it with `addr`,
    /// as tailscaled does when it starts.
    pub fn up(&self, ns: &Netns, addr: &str) -> Result<()> {
        self.command(&format!("up {}", ns.name))?;
        configure(ns, addr)
    }

    /// Deletes `ns`'s device (its addresses and routes go with it), as
    /// when tailscaled stops.
    pub fn down(&self, ns: &Netns) -> Result<()> {
        self.command(&format!("down {}", ns.name))?;
        Ok(())
    }

    /// Keeps delivering `addr` to `ns` after `ns` dropped it: a peer still
    /// working from a stale netmap.
    pub fn stale(&self, addr: &str, ns: &Netns) -> Result<()> {
        self.command(&format!("stale {addr} {}", ns.name))?;
        Ok(())
    }

    pub fn stats(&self) -> Result<RelayStats> {
        let s = self.command("stats")?;
        Ok(RelayStats(
            serde_json::from_str(&s).with_context(|| format!("relay stats {s:?}"))?,
        ))
    }

    /// The relay's stderr (commands and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Address, link up and the tailnet route, in that order (the route needs
/// the link up).
pub fn configure(ns: &Netns, addr: &str) -> Result<()> {
    ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", DEV])?;
    ns.ip(&["link", "set", DEV, "up"])?;
    ns.ip(&["route", "replace", TAILNET_CIDR, "dev", DEV])
}

/// Moves `ns`'s device from its current address(es) to `addr`, as when the
/// coordination server assigns a new one. The new address is added before
/// the old ones go: removing an interface's last address would flush its
/// routes.
pub fn readdress(ns: &Netns, addr: &str) -> Result<()> {
    let old = addrs(ns)?;
    ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", DEV])?;
    for a in old.iter().filter(|a| *a != addr) {
        ns.ip(&["addr", "del", &format!("{a}/32"), "dev", DEV])?;
    }
    ns.ip(&["route", "replace", TAILNET_CIDR, "dev", DEV])
}

/// IPv4 addresses on `ns`'s device.
pub fn addrs(ns: &Netns) -> Result<Vec<String>> {
    let out = ns.output(&["ip", "-j", "-4", "addr", "show", "dev", DEV])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["local"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

impl Drop for Tailnet {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        // EOF makes the relay exit on its own; SIGKILL if it does not.
        inner.stdin.take();
        for _ in 0..50 {
            if matches!(inner.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = inner.child.kill();
        let _ = inner.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
