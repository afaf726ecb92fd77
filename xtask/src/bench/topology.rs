//! The benchmark topology, built afresh for every run so no run inherits
//! another's conntrack entries, TIME_WAIT sockets or ARP state:
//!
//! ```text
//! client 10.77.1.2 (c0) ── (r0) 10.77.1.1 [router] 10.77.2.1 (r1) ── (s0) 10.77.2.2 server
//! ```
//!
//! Namespaces carry the test support's `fwt-<pid>-` prefix (swept when
//! their owner died) and are deleted by their guards, processes and all.
//! The client routes the server subnet via the router, so plain kernel
//! forwarding needs no extra step; the server's default route is the router.
//! The server runs iperf3, nginx and a sockperf server.
use std::time::Duration;

use anyhow::{bail, Result};
use forwarder_tests::{
    netns::{self, Netns},
    process::{wait_for, Bg},
    topology::TempDir,
};

pub const CLIENT: &str = "10.77.1.2";
pub const ROUTER_IN: &str = "10.77.1.1";
pub const ROUTER_OUT: &str = "10.77.2.1";
pub const SERVER: &str = "10.77.2.2";
/// The router's client-side and server-side interfaces.
pub const IF_IN: &str = "r0";
pub const IF_OUT: &str = "r1";

/// CPU placement. Client and server are separate machines in reality, so
/// the client's tools run on CPU 0 and the throughput servers on CPU 1
/// (left to the scheduler, runs flip between sharing a CPU and not, and the
/// spread swamps the differences between configurations). The RTT test puts
/// both sockperf ends on CPU 0: no cross-CPU wake-up (tens of µs on this
/// VM) in the round trip, so what remains is processing along the path,
/// which is what differs between configurations. The router's work (softirq,
/// socat, the daemon) is not pinned.
pub const CLIENT_CPU: usize = 0;
pub fn server_cpu() -> usize {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    1.min(n - 1)
}
pub const RTT_CPU: usize = 0;

/// `taskset -c CPU` in front of a command.
pub fn pinned(cpu: usize, argv: &[&str]) -> Vec<String> {
    ["taskset", "-c", &cpu.to_string()]
        .iter()
        .chain(argv)
        .map(|s| s.to_string())
        .collect()
}

pub const PORT_IPERF: u16 = 5201;
pub const PORT_HTTP: u16 = 80;
pub const PORT_SOCKPERF: u16 = 11111;

pub struct Topo {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
}

impl Topo {
    pub fn build() -> Result<Topo> {
        let client = Netns::new("bc")?;
        let router = Netns::new("br")?;
        let server = Netns::new("bs")?;
        netns::veth(&client, "c0", &router, IF_IN)?;
        netns::veth(&router, IF_OUT, &server, "s0")?;
        client.addr("c0", &format!("{CLIENT}/24"))?;
        router.addr(IF_IN, &format!("{ROUTER_IN}/24"))?;
        router.addr(IF_OUT, &format!("{ROUTER_OUT}/24"))?;
        server.addr("s0", &format!("{SERVER}/24"))?;
        client.ip(&["route", "add", "10.77.2.0/24", "via", ROUTER_IN])?;
        server.ip(&["route", "add", "default", "via", ROUTER_OUT])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Topo {
            client,
            router,
            server,
        })
    }
}

/// The server-side programs, stopped on drop (before the namespaces go:
/// declare this after the `Topo` it runs in).
pub struct Servers {
    _iperf: Bg,
    _nginx: Bg,
    _sockperf: Bg,
    _dir: TempDir,
}

/// nginx as a connection-rate target: one worker (the machine has two
/// vCPUs for client, router and server), no access log (its disk writes
/// would dominate), a tiny index page, and `/whoami`, which answers with
/// the client address nginx saw: the path check of every run.
fn nginx_conf(dir: &TempDir) -> String {
    let d = dir.path.display();
    format!(
        r#"daemon off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen {PORT_HTTP} backlog=4096;
    listen [::]:{PORT_HTTP} backlog=4096;
    root {d}/www;
    location = /whoami {{ default_type text/plain; return 200 "$remote_addr\n"; }}
  }}
}}
"#
    )
}

fn iperf_server() -> Vec<String> {
    pinned(
        server_cpu(),
        &["iperf3", "-s", "-p", &PORT_IPERF.to_string()],
    )
}

fn nginx_server(conf: &str) -> Vec<String> {
    pinned(server_cpu(), &["nginx", "-c", conf])
}

fn sockperf_server() -> Vec<String> {
    pinned(
        RTT_CPU,
        &[
            "sockperf",
            "server",
            "--tcp",
            "-i",
            SERVER,
            "-p",
            &PORT_SOCKPERF.to_string(),
        ],
    )
}

/// Server command lines, for the report as much as for running them.
pub fn server_commands() -> Vec<(String, String)> {
    vec![
        ("iperf3 server".into(), iperf_server().join(" ")),
        (
            "nginx".into(),
            format!(
                "{} (1 worker, access_log off, 3-byte index page, /whoami returns $remote_addr)",
                nginx_server("CONF").join(" ")
            ),
        ),
        ("sockperf server".into(), sockperf_server().join(" ")),
    ]
}

fn spawn(ns: &Netns, argv: &[String]) -> Result<Bg> {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    ns.spawn(&args)
}

impl Servers {
    pub fn start(server: &Netns) -> Result<Servers> {
        let dir = TempDir::new("bench-srv")?;
        std::fs::create_dir_all(dir.path.join("www"))?;
        std::fs::write(dir.path.join("www/index.html"), "ok\n")?;
        std::fs::write(dir.file("nginx.conf"), nginx_conf(&dir))?;
        let mut iperf = spawn(server, &iperf_server())?;
        let mut nginx = spawn(server, &nginx_server(&dir.file_str("nginx.conf")))?;
        let mut sockperf = spawn(server, &sockperf_server())?;
        for (port, bg) in [
            (PORT_IPERF, &mut iperf),
            (PORT_HTTP, &mut nginx),
            (PORT_SOCKPERF, &mut sockperf),
        ] {
            wait_listening(server, port, bg)?;
        }
        Ok(Servers {
            _iperf: iperf,
            _nginx: nginx,
            _sockperf: sockperf,
            _dir: dir,
        })
    }
}

fn wait_listening(ns: &Netns, port: u16, bg: &mut Bg) -> Result<()> {
    let needle = format!(":{port} ");
    let up = wait_for(Duration::from_secs(10), || {
        let ss = ns.output(&["ss", "-ltnH"]).unwrap_or_default();
        ss.contains(&needle).then_some(())
    });
    if up.is_none() || !bg.is_running() {
        bail!("{} did not listen on {port}: {}", bg.what, bg.log());
    }
    Ok(())
}
