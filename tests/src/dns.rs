//! DNS for the name-target tests (issue 16): a dnsmasq the test controls,
//! and a namespace's own resolv.conf.
//!
//! * [`Dnsmasq`]: a real DNS server in a namespace, answering from a hosts
//!   file the test rewrites (and signals, as an operator would), with a
//!   chosen TTL, NXDOMAIN for names of its domain it does not have, and
//!   nothing read from the machine's own configuration.
//! * [`NetnsResolvConf`]: `/etc/netns/<ns>/resolv.conf`, which `ip netns
//!   exec <ns>` bind-mounts over /etc/resolv.conf for the command it runs
//!   (iproute2's way of giving a namespace its own resolver). The machine's
//!   /etc/resolv.conf is never touched; the file and its directory go on
//!   drop, and [`sweep`] removes those of test processes that died.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    netns::{Netns, PREFIX},
    process::{wait_for, Bg},
    topology::TempDir,
};

const ETC_NETNS: &str = "/etc/netns";

/// A namespace's resolv.conf, removed on drop.
pub struct NetnsResolvConf {
    dir: PathBuf,
}

impl NetnsResolvConf {
    pub fn new(ns: &Netns, text: &str) -> Result<NetnsResolvConf> {
        sweep();
        let dir = Path::new(ETC_NETNS).join(&ns.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = NetnsResolvConf { dir };
        std::fs::write(guard.dir.join("resolv.conf"), text)?;
        Ok(guard)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // The parent only when no one else (another test) uses it.
        let _ = std::fs::remove_dir(ETC_NETNS);
    }
}

/// Removes /etc/netns entries of test processes that no longer exist.
pub fn sweep() {
    let Ok(rd) = std::fs::read_dir(ETC_NETNS) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok());
        // SAFETY: signal 0 only checks for existence.
        if owner.is_some_and(|p| p > 0 && unsafe { libc::kill(p, 0) } != 0) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// dnsmasq serving `domain` from a hosts file in namespace `ns`.
pub struct Dnsmasq {
    ns: String,
    pub addr: String,
    pub port: u16,
    domain: String,
    ttl: u32,
    hosts: PathBuf,
    _dir: TempDir,
    bg: Option<Bg>,
}

impl Dnsmasq {
    /// Starts dnsmasq on `addr:port` in `ns` (the address must be
    /// assigned there), authoritative for `domain`: names of it that are
    /// not in the hosts file get NXDOMAIN; others are refused (no upstream).
    /// Answers carry `ttl`.
    pub fn start(ns: &Netns, addr: &str, port: u16, domain: &str, ttl: u32) -> Result<Dnsmasq> {
        let dir = TempDir::new("dnsmasq")?;
        let hosts = dir.file("hosts");
        std::fs::write(&hosts, "")?;
        let mut d = Dnsmasq {
            ns: ns.name.clone(),
            addr: addr.into(),
            port,
            domain: domain.into(),
            ttl,
            hosts,
            _dir: dir,
            bg: None,
        };
        d.restart()?;
        Ok(d)
    }

    /// (Re)starts the server with the hosts file as it is.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let argv = [
            "dnsmasq".to_string(),
            "--keep-in-foreground".into(),
            // Nothing from the machine: no config file, /etc/hosts or
            // upstream servers; no pid file; no privilege drop (the hosts
            // file is in a root-only temporary directory).
            "--conf-file=/dev/null".into(),
            "--no-hosts".into(),
            "--no-resolv".into(),
            "--no-poll".into(),
            "--pid-file".into(),
            "--user=root".into(),
            format!("--listen-address={}", self.addr),
            "--bind-interfaces".into(),
            format!("--port={}", self.port),
            format!("--addn-hosts={}", self.hosts.display()),
            format!("--local=/{}/", self.domain),
            format!("--local-ttl={}", self.ttl),
            "--log-queries".into(),
            "--log-facility=-".into(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut bg = Bg::spawn(Some(&self.ns), &argv)?;
        let needle = format!("{}:{} ", self.addr, self.port);
        let up = wait_for(Duration::from_secs(10), || {
            crate::process::run_in(Some(&self.ns), &["ss", "-lun"])
                .ok()
                .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(&needle))
                .then_some(())
        });
        if up.is_none() || !bg.is_running() {
            bail!("dnsmasq did not start: {}", bg.log());
        }
        self.bg = Some(bg);
        Ok(())
    }

    /// Kills the server: queries get no answer (ICMP port unreachable).
    pub fn stop(&mut self) {
        if let Some(mut bg) = self.bg.take() {
            bg.stop();
        }
    }

    /// Replaces every record: `(name, address)` pairs, `name` without the
    /// domain; then SIGHUP, on which dnsmasq clears its cache and re-reads
    /// the file. Returns the wall-clock time of the signal (Unix seconds,
    /// the clock of the client loops' timestamps).
    pub fn set(&self, records: &[(&str, &str)]) -> Result<f64> {
        let text: String = records
            .iter()
            .map(|(n, a)| format!("{a} {n}.{}\n", self.domain))
            .collect();
        let tmp = self.hosts.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.hosts)?;
        let bg = self.bg.as_ref().context("dnsmasq is not running")?;
        let at = crate::cluster::unix_now();
        // SAFETY: signalling the `ip netns exec` child, which execs dnsmasq.
        if unsafe { libc::kill(bg.child.id() as i32, libc::SIGHUP) } != 0 {
            bail!("SIGHUP to dnsmasq failed");
        }
        Ok(at)
    }

    /// What the server answers for `name` now (`dig +short`, from `from`).
    pub fn query(&self, from: &Netns, name: &str) -> String {
        let server = format!("@{}", self.addr);
        let port = self.port.to_string();
        from.output(&[
            "dig", "+short", "+time=1", "+tries=1", &server, "-p", &port, name, "A",
        ])
        .unwrap_or_default()
        .trim()
        .to_string()
    }

    pub fn log(&self) -> String {
        self.bg.as_ref().map(Bg::log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
