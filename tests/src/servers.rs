//! Real servers for the tests and the demo, each a guarded background
//! process with its files in a private temp directory.
use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Result};

use crate::{
    netns::{next_id, Netns, PREFIX},
    process::{wait_for, Bg},
};

/// Waits until `ns` has a listening socket on `port` (`ss -l<proto>n`,
/// proto 't' or 'u'), started by `bg`: a server is ready when the kernel
/// says it listens, not after a fixed sleep.
pub fn wait_listening(ns: &Netns, proto: char, port: u16, bg: &mut Bg) -> Result<()> {
    let flag = format!("-l{proto}n");
    let needle = format!(":{port} ");
    let up = wait_for(Duration::from_secs(10), || {
        let ss = ns.output(&["ss", &flag]).unwrap_or_default();
        ss.contains(&needle).then_some(())
    });
    if up.is_none() || !bg.is_running() {
        bail!(
            "{} did not start listening on {port}: {}",
            bg.what,
            bg.log()
        );
    }
    Ok(())
}

/// nginx serving `files` (name, size in bytes of pseudo-random content) on
/// HTTP `port`, plus HTTPS on `tls_port` with a fresh self-signed cert.
pub struct Nginx {
    pub bg: Bg,
    pub dir: PathBuf,
}

impl Nginx {
    pub fn start(
        ns: &Netns,
        port: u16,
        tls_port: Option<u16>,
        files: &[(&str, usize)],
    ) -> Result<Nginx> {
        Nginx::start_with(ns, port, tls_port, files, "")
    }

    /// As `start`, with `server_extra` directives added to the plain HTTP
    /// server block (e.g. WebDAV PUT for upload tests).
    pub fn start_with(
        ns: &Netns,
        port: u16,
        tls_port: Option<u16>,
        files: &[(&str, usize)],
        server_extra: &str,
    ) -> Result<Nginx> {
        let dir = std::env::temp_dir().join(format!(
            "{PREFIX}{}-{}-nginx",
            std::process::id(),
            next_id()
        ));
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        for (name, size) in files {
            std::fs::write(www.join(name), pseudo_random(*size))?;
        }
        std::fs::write(www.join("index.html"), "hello from the backend\n")?;
        let tls = match tls_port {
            Some(p) => {
                crate::process::run_in(
                    None,
                    &[
                        "openssl",
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=backend",
                        "-keyout",
                        dir.join("key.pem").to_str().unwrap(),
                        "-out",
                        dir.join("cert.pem").to_str().unwrap(),
                    ],
                )?;
                format!(
                    "server {{ listen {p} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem; root {w}; }}",
                    d = dir.display(),
                    w = www.display()
                )
            }
            None => String::new(),
        };
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log {d}/access.log;
  log_format peer '$remote_addr $status $body_bytes_sent';
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen {port}; root {w}; access_log {d}/peers.log peer; keepalive_requests 100000; {server_extra} }}
  {tls}
}}
"#,
            w = www.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let mut bg = ns.spawn(&["nginx", "-c", dir.join("nginx.conf").to_str().unwrap()])?;
        wait_listening(ns, 't', port, &mut bg)?;
        Ok(Nginx { bg, dir })
    }

    /// The directory nginx serves files from.
    pub fn www(&self) -> PathBuf {
        self.dir.join("www")
    }

    /// Client addresses nginx saw on the plain HTTP server, in order.
    pub fn peers(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("peers.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.bg.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deterministic incompressible-looking bytes (xorshift), so corruption or
/// truncation shows in a checksum.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
