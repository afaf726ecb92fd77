//! The smallest forwarding topology: a LAN client, the forwarder's host
//! and one backend, with a socat server per port on the backend that
//! answers `hello PORT` and logs each peer. For tests of the command line
//! against a real daemon with real traffic (diff, drop-ins, status).
//!
//! ```text
//!  lan ns                        host ns (forwarder)                   vm ns
//!  eth0 192.168.1.10 ── veth ── lan0 192.168.1.55  vm0 192.168.100.1 ── veth ── eth0 192.168.100.80
//!                                                                         socat :PORT -> "hello PORT"
//! ```
use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};

use crate::{
    client::client,
    netns::{self, veth, Netns},
    process::{wait_for, Bg},
    topology::TempDir,
};

pub const CLIENT: &str = "192.168.1.10";
pub const HOST_LAN: &str = "192.168.1.55";
pub const HOST_VM: &str = "192.168.100.1";
pub const VM: &str = "192.168.100.80";

/// Fields drop in order: servers, then namespaces, then the directory.
pub struct LanVm {
    pub servers: Vec<Bg>,
    pub lan: Netns,
    pub host: Netns,
    pub vm: Netns,
    /// Holds the rules file (`rules_path`) and whatever a test adds.
    pub dir: TempDir,
}

impl LanVm {
    /// The namespaces, and a server on each of `ports` on the backend.
    pub fn build(label: &str, ports: &[u16]) -> Result<LanVm> {
        netns::sweep();
        let host = Netns::new(&format!("{label}h"))?;
        let lan = Netns::new(&format!("{label}l"))?;
        let vm = Netns::new(&format!("{label}v"))?;
        veth(&lan, "eth0", &host, "lan0")?;
        veth(&vm, "eth0", &host, "vm0")?;
        lan.addr("eth0", &format!("{CLIENT}/24"))?;
        host.addr("lan0", &format!("{HOST_LAN}/24"))?;
        host.addr("vm0", &format!("{HOST_VM}/24"))?;
        vm.addr("eth0", &format!("{VM}/24"))?;
        vm.ip(&["route", "add", "default", "via", HOST_VM])?;
        lan.ip(&["route", "add", "default", "via", HOST_LAN])?;
        host.ip(&["link", "set", "lo", "up"])?;
        host.sysctl("net.ipv4.ip_forward", "1")?;
        let mut servers = Vec::new();
        for p in ports {
            servers.push(vm.spawn(&[
                "socat",
                "-d",
                "-d",
                &format!("TCP-LISTEN:{p},reuseaddr,fork"),
                &format!("SYSTEM:echo hello {p}"),
            ])?);
        }
        for p in ports {
            let needle = format!(":{p} ");
            wait_for(Duration::from_secs(10), || {
                let ss = vm.output(&["ss", "-ltn"]).unwrap_or_default();
                ss.contains(&needle).then_some(())
            })
            .with_context(|| format!("backend listener on {p}"))?;
        }
        Ok(LanVm {
            servers,
            lan,
            host,
            vm,
            dir: TempDir::new(label)?,
        })
    }

    /// The rules file of the test (not written yet).
    pub fn rules_path(&self) -> PathBuf {
        self.dir.file("rules.toml")
    }

    /// One connection from the client to the host's `port`; the backend's
    /// answer (`hello PORT`), or `None` when nothing answered.
    pub fn connect(&self, port: u16) -> Option<String> {
        let o = client(
            &self.lan,
            8,
            &[
                "socat",
                "-T3",
                "STDIO",
                &format!("TCP:{HOST_LAN}:{port},connect-timeout=3"),
            ],
        );
        let line = o.stdout.trim().to_string();
        line.starts_with("hello").then_some(line)
    }

    /// Waits (generously) until the host's `port` answers with the backend
    /// of `backend_port`.
    pub fn wait_forwarding(&self, port: u16, backend_port: u16) -> bool {
        let want = format!("hello {backend_port}");
        wait_for(Duration::from_secs(20), || {
            (self.connect(port).as_deref() == Some(want.as_str())).then_some(())
        })
        .is_some()
    }

    /// Peers the backend server on `port` accepted, from its log.
    pub fn peers(&self, port: u16) -> Vec<String> {
        let i = self
            .servers
            .iter()
            .position(|s| s.what.contains(&format!("TCP-LISTEN:{port},")))
            .expect("a server on that port");
        self.servers[i]
            .log()
            .lines()
            .filter_map(|l| l.split("accepting connection from ").nth(1))
            .map(|s| s.trim().to_string())
            .collect()
    }
}
