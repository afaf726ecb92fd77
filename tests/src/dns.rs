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
//! * [`line_with`]: the `Line` topology with backends and a DNS server's
//!   address on the server side; [`connect_loop`]: a client that opens a
//!   new connection every 50 ms and logs who answered.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    cluster::{echo_server, Line, ROUTER_IN},
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

/// The [`Line`] topology with `addrs` (backends, a DNS server's address)
/// added to the server's interface, and a backend on TCP 8080 that
/// answers each connection with the address it was sent to. Keep the
/// returned server for as long as it must answer.
pub fn line_with(addrs: &[&str]) -> Result<(Line, Bg)> {
    let line = Line::build()?;
    for a in addrs {
        line.server
            .ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
    }
    let server = echo_server(&line.server, 8080, "echo $SOCAT_SOCKADDR")?;
    Ok((line, server))
}

/// A new connection from `client` to `ROUTER_IN:port` every 50 ms; each
/// log line `<unix time> <first line the backend sent | REFUSED | FAIL>`
/// (read with `cluster::loop_answers`). FAIL is no answer in time, which a
/// loaded machine causes; REFUSED (a reset) is the forward's doing.
///
/// Every connection has a source port of its own (each loop counts through
/// a block of ports no other loop of this process uses): the kernel's
/// choice reuses a port within seconds, and a SYN on the tuple of a closed
/// flow still in the forwarder's table takes that flow's old translation
/// (unlike netfilter, which re-NATs it), which is not what these tests
/// measure.
pub fn connect_loop(client: &Netns, port: u16) -> Result<Bg> {
    static NEXT_BLOCK: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    const BLOCK: u32 = 3000;
    let block = u32::from(NEXT_BLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4);
    let first = 20_000 + block * BLOCK;
    client.spawn(&[
        "sh",
        "-c",
        &format!(
            "i=0; while :; do p=$(({first} + i % {BLOCK})); i=$((i + 1)); \
             r=$(timeout 2 socat -T1 -u TCP:{ROUTER_IN}:{port},connect-timeout=1,sourceport=$p,reuseaddr - 2>&1 | head -n 1); \
             case \"$r\" in *refused*) r=REFUSED;; ''|*socat*) r=FAIL;; esac; \
             echo \"$(date +%s.%N) $r\"; sleep 0.05; done"
        ),
    ])
}
