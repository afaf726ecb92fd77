//! Support for the connection-tracking attack tests through the real daemon
//! (`ct_*_e2e.rs`): the three-namespace topology, a rules file, a spoofed
//! segment sender (the tests crate's `synflood`), an echo client that holds
//! a connection open and reports each round trip, and status readers.
//!
//! ```text
//! client 10.1.0.2 -- eth0 10.1.0.1 [router] eth1 10.2.0.1 -- server 10.2.0.2
//! spoofed sources 10.99.0.0/16 from the client side (the router routes them
//! back there; the client namespace drops what comes back)
//! ```
//!
//! The server runs nginx on 8000 and a socat echo on 9000; the forwards
//! "web" (8000) and "echo" (9000) SNAT to 10.2.0.1.
#![allow(dead_code)] // each test file uses its own part of it

use std::time::Duration;

use anyhow::{bail, Context, Result};
pub use forwarder_tests::{
    netns,
    process::{wait_for, Bg},
    require_root,
    servers::Nginx,
    topology::TempDir,
    Daemon, Netns,
};

pub struct Topo {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
    pub dir: TempDir,
    _echo: Bg,
    _web: Nginx,
}

/// Where spoofed SYNs come from.
pub const SPOOFED: &str = "10.99.0.0/16";

/// The `synflood` binary (forwarder-tools): SYNFLOOD_BIN, or next to the
/// test executable like `tailnet::tunrelay_bin` (`cargo xtask test` builds
/// the whole workspace first; alone: `cargo build -p forwarder-tools`).
pub fn synflood_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SYNFLOOD_BIN") {
        return p.into();
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join("synflood");
            if p.is_file() {
                return p;
            }
        }
    }
    concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/synflood").into()
}

pub fn topo() -> Result<Topo> {
    netns::sweep();
    let (client, router, server) =
        forwarder_tests::routed_line::build(["ctacli", "ctartr", "ctasrv"])?;
    router.ip(&["route", "add", SPOOFED, "via", "10.1.0.2"])?;
    let echo = server.spawn(&["socat", "TCP-LISTEN:9000,reuseaddr,fork", "EXEC:cat"])?;
    let web = Nginx::start(&server, 8000, None, &[])?;
    wait_for(Duration::from_secs(10), || {
        let ss = server.output(&["ss", "-ltnH"]).unwrap_or_default();
        ss.contains(":9000 ").then_some(())
    })
    .context("echo server did not listen")?;
    Ok(Topo {
        client,
        router,
        server,
        dir: TempDir::new("ct-e2e")?,
        _echo: echo,
        _web: web,
    })
}

impl Topo {
    /// Writes the rules file (`global` goes into `[global]`) and starts the
    /// daemon in the router namespace.
    pub fn daemon(&self, global: &str) -> Result<Daemon> {
        let path = self.dir.file("rules.toml");
        std::fs::write(
            &path,
            forwarder_tests::routed_line::web_and_echo_rules(&format!("[global]\n{global}")),
        )?;
        Daemon::start(&self.router, &["--rules", path.to_str().unwrap()])
    }

    /// One HTTP request through the "web" forward; true when the backend's
    /// page arrived.
    pub fn http_ok(&self, max_secs: u32) -> bool {
        self.client
            .output(&[
                "curl",
                "-sS",
                "--max-time",
                &max_secs.to_string(),
                "http://10.1.0.1:8000/",
            ])
            .is_ok_and(|b| b == "hello from the backend\n")
    }

    /// Sends spoofed SYNs (see `synflood`) from the client namespace.
    pub fn flood(&self, args: &[&str]) -> Result<serde_json::Value> {
        let bin = synflood_bin();
        let mut argv = vec![bin.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        let out = self.client.output(&argv)?;
        Ok(serde_json::from_str(out.trim())?)
    }

    /// The same, in the background.
    pub fn flood_bg(&self, args: &[&str]) -> Result<Bg> {
        let bin = synflood_bin();
        let mut argv = vec![bin.to_str().expect("utf-8 path")];
        argv.extend_from_slice(args);
        self.client.spawn(&argv)
    }
}

/// A Python client holding one connection to the "echo" forward open: it
/// echoes a line whenever a line arrives on its stdin-like control file
/// and prints `ok N` or `FAILED N: why`. Lines are written with `round`.
pub struct Echo {
    pub bg: Bg,
    ctl: std::path::PathBuf,
    out: std::path::PathBuf,
}

const ECHO_PY: &str = r#"
import os, socket, sys, time
ctl, out, host, port, bind = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
s = socket.socket()
if bind:
    a, p = bind.split(":")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, int(p)))
s.settimeout(5)
s.connect((host, port))
def say(msg):
    with open(out, "a") as f:
        f.write(msg + "\n")
say("connected %s:%d" % s.getsockname())
seen = 0
while True:
    try:
        n = len(open(ctl).read().split())
    except FileNotFoundError:
        n = 0
    while seen < n:
        seen += 1
        line = ("round %d\n" % seen).encode()
        try:
            s.sendall(line)
            got = b""
            while len(got) < len(line):
                chunk = s.recv(64)
                if not chunk:
                    raise OSError("connection closed")
                got += chunk
            say("ok %d" % seen if got == line else "FAILED %d: got %r" % (seen, got))
        except OSError as e:
            say("FAILED %d: %s" % (seen, e))
    time.sleep(0.05)
"#;

impl Echo {
    /// Connects from `ns` to `host:port`, bound to `bind` ("IP:PORT") when
    /// given, and waits until connected.
    pub fn connect(
        ns: &Netns,
        dir: &TempDir,
        name: &str,
        host: &str,
        port: u16,
        bind: &str,
    ) -> Result<Echo> {
        let script = dir.file(&format!("{name}.py"));
        std::fs::write(&script, ECHO_PY)?;
        let ctl = dir.file(&format!("{name}.ctl"));
        let out = dir.file(&format!("{name}.out"));
        let bg = ns.spawn(&[
            "python3",
            script.to_str().unwrap(),
            ctl.to_str().unwrap(),
            out.to_str().unwrap(),
            host,
            &port.to_string(),
            bind,
        ])?;
        let e = Echo { bg, ctl, out };
        wait_for(Duration::from_secs(10), || {
            e.output().contains("connected").then_some(())
        })
        .with_context(|| format!("{name} did not connect: {}", e.bg.log()))?;
        Ok(e)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The local port it connected from.
    pub fn local_port(&self) -> u16 {
        self.output()
            .lines()
            .find_map(|l| l.strip_prefix("connected "))
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Asks for round trip `n` and waits for its result: Ok when echoed.
    pub fn round(&self, n: usize) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.ctl)?;
        use std::io::Write;
        writeln!(f, "x")?;
        let done = wait_for(Duration::from_secs(20), || {
            let o = self.output();
            if o.lines().any(|l| l == format!("ok {n}")) {
                Some(Ok(()))
            } else {
                o.lines()
                    .find(|l| l.starts_with(&format!("FAILED {n}")))
                    .map(|l| Err(l.to_string()))
            }
        });
        match done {
            Some(Ok(())) => Ok(()),
            Some(Err(l)) => bail!("round trip {n}: {l}"),
            None => bail!("round trip {n}: no answer in 20 s: {}", self.output()),
        }
    }
}

/// A per-interface reason counter of the daemon's `status --json`, summed
/// over interfaces and hooks.
pub fn reason_count(d: &Daemon, reason: &str) -> u64 {
    let st = d.status_json().unwrap_or_default();
    st["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["hooks"].as_array().into_iter().flatten())
        .flat_map(|h| h["reasons"].as_array().into_iter().flatten())
        .filter(|r| r["reason"] == reason)
        .map(|r| r["packets"].as_u64().unwrap_or(0))
        .sum()
}

/// A per-rule drop counter from `status --json`.
pub fn rule_drop(d: &Daemon, rule: &str, drop: &str) -> u64 {
    d.rule_counters(rule)
        .ok()
        .and_then(|c| c["drops"][drop].as_u64())
        .unwrap_or(0)
}
