//! The conformance suite's scenario kit (docs/CONFORMANCE.md): one routed
//! topology, the same forward installed either as iptables rules or as the
//! forwarder's rules file, and endpoints that report what the far end saw.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1 [router] eth1 10.2.0.1 ── backend 10.2.0.2
//!                                                      └──── other   10.2.0.3 (on a bridge)
//! ```
//!
//! Every row runs through `Nat::Iptables` first, which proves the harness
//! (the observation is what a Linux router with netfilter NAT does), and
//! then through `Nat::Forwarder` with the same expectation. Endpoints are
//! sockets opened inside the namespaces by this process (a socket belongs to
//! the namespace it was created in, whichever thread uses it later), and
//! packets are observed with AF_PACKET captures on the endpoints' own
//! interfaces: taps see a packet on the wire side of TC, so what they show
//! is what the client or the backend really sent and received.
//!
//! The one fact a reader would get wrong: the router namespace is never
//! captured in. What the router did is judged only by what arrived.
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    netns::{veth, Netns},
    servers::pseudo_random,
    topology::TempDir,
    Daemon,
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
/// The router's address on the client side: every forward listens here.
pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// The router's address on the backend side, the SNAT source.
pub const ROUTER_BACK: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
/// A second host on the backend's link (hairpin, filtering rows).
pub const OTHER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 3);

/// How the forward is implemented in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// iptables DNAT (+ SNAT) in the router: the reference behaviour.
    Iptables,
    /// The forwarder daemon with the equivalent rules file.
    Forwarder,
}

/// Topology knobs.
#[derive(Clone, Copy, Debug, Default)]
pub struct TopoOpts {
    /// MTU of the client link (both ends), e.g. 1280 for a tailnet.
    pub client_mtu: Option<u32>,
}

pub struct Topo {
    pub client: Netns,
    pub router: Netns,
    pub backend: Netns,
    pub other: Netns,
}

impl Topo {
    pub fn build(opts: TopoOpts) -> Result<Topo> {
        let client = Netns::new("cfcli")?;
        let router = Netns::new("cfrtr")?;
        let backend = Netns::new("cfbk")?;
        let other = Netns::new("cfoth")?;
        veth(&client, "eth0", &router, "eth0")?;
        // The backend side is a bridge so a second host can share the link.
        router.bridge("br1")?;
        veth(&backend, "eth0", &router, "tapb")?;
        veth(&other, "eth0", &router, "tapo")?;
        router.ip(&["link", "set", "tapb", "master", "br1"])?;
        router.ip(&["link", "set", "tapo", "master", "br1"])?;
        if let Some(mtu) = opts.client_mtu {
            let m = mtu.to_string();
            client.ip(&["link", "set", "eth0", "mtu", &m])?;
            router.ip(&["link", "set", "eth0", "mtu", &m])?;
        }
        client.addr("eth0", &format!("{CLIENT}/24"))?;
        client.ip(&["route", "add", "default", "via", &ROUTER_LAN.to_string()])?;
        router.addr("eth0", &format!("{ROUTER_LAN}/24"))?;
        router.addr("br1", &format!("{ROUTER_BACK}/24"))?;
        backend.addr("eth0", &format!("{BACKEND}/24"))?;
        backend.ip(&["route", "add", "default", "via", &ROUTER_BACK.to_string()])?;
        other.addr("eth0", &format!("{OTHER}/24"))?;
        other.ip(&["route", "add", "default", "via", &ROUTER_BACK.to_string()])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Topo {
            client,
            router,
            backend,
            other,
        })
    }
}

/// One port forward, described once for both implementations.
#[derive(Clone, Debug)]
pub struct Forward {
    /// "tcp" or "udp".
    pub proto: &'static str,
    pub port: u16,
    /// Target address and port.
    pub to: Ipv4Addr,
    pub to_port: u16,
    /// SNAT source (the router's backend-side address), or none.
    pub snat: bool,
    /// The only source allowed (`allow`, iptables `-s`), if any.
    pub allow: Option<Ipv4Addr>,
    /// Extra lines for the forwarder's `[[forward]]` table (allow, reject,
    /// mss_clamp...). iptables runs get `iptables_extra` instead.
    pub toml_extra: String,
    /// Extra iptables command lines (each a full argv, run in the router)
    /// that express `toml_extra` in netfilter terms.
    pub iptables_extra: Vec<Vec<String>>,
}

impl Forward {
    pub fn new(proto: &'static str, port: u16, to: Ipv4Addr, to_port: u16) -> Forward {
        Forward {
            proto,
            port,
            to,
            to_port,
            snat: true,
            allow: None,
            toml_extra: String::new(),
            iptables_extra: Vec::new(),
        }
    }

    pub fn rules_toml(&self) -> String {
        let snat = if self.snat {
            format!("\"{ROUTER_BACK}\"")
        } else {
            "\"off\"".into()
        };
        let allow = match self.allow {
            Some(a) => format!("allow = [\"{a}\"]\n"),
            None => String::new(),
        };
        format!(
            "[[forward]]\nname = \"conf\"\nin = \"eth0\"\nlisten = \"{ROUTER_LAN}\"\n\
             proto = \"{}\"\nport = {}\nto = \"{}:{}\"\nsnat = {snat}\n{allow}{}\n",
            self.proto, self.port, self.to, self.to_port, self.toml_extra
        )
    }

    fn iptables(&self, router: &Netns) -> Result<()> {
        let (port, dest) = (
            self.port.to_string(),
            format!("{}:{}", self.to, self.to_port),
        );
        let lan = ROUTER_LAN.to_string();
        let mut dnat = vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            "eth0",
            "-d",
            &lan,
            "-p",
            self.proto,
            "--dport",
            &port,
        ];
        let allow = self.allow.map(|a| a.to_string());
        if let Some(a) = &allow {
            dnat.extend(["-s", a.as_str()]);
        }
        dnat.extend(["-j", "DNAT", "--to-destination", &dest]);
        router.run(&dnat)?;
        if self.snat {
            router.run(&[
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-d",
                &self.to.to_string(),
                "-p",
                self.proto,
                "--dport",
                &self.to_port.to_string(),
                "-j",
                "SNAT",
                "--to-source",
                &ROUTER_BACK.to_string(),
            ])?;
        }
        for argv in &self.iptables_extra {
            let v: Vec<&str> = argv.iter().map(String::as_str).collect();
            router.run(&v)?;
        }
        Ok(())
    }
}

/// What keeps a forward installed: the daemon (and its rules file), or
/// nothing for iptables (its rules die with the router namespace).
pub struct Installed {
    pub daemon: Option<Daemon>,
    _dir: TempDir,
}

impl Installed {
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("forwarder run")
    }

    /// Packets the forwarder counted under `reason` (a `Reason` name such
    /// as "fwd_redirect"), summed over the router's interfaces and hooks;
    /// 0 for iptables runs.
    pub fn reason_count(&self, reason: &str) -> Result<u64> {
        let Some(d) = &self.daemon else {
            return Ok(0);
        };
        let st = d.status_json()?;
        Ok(st["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["hooks"].as_array().cloned().unwrap_or_default())
            .flat_map(|h| h["reasons"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["reason"] == reason)
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum())
    }
}

/// Installs `fwd` in the router as `nat` says.
pub fn install(t: &Topo, nat: Nat, fwd: &Forward) -> Result<Installed> {
    install_toml(t, nat, fwd, "")
}

/// As `install`, with `global` prepended to the forwarder's rules file.
pub fn install_toml(t: &Topo, nat: Nat, fwd: &Forward, global: &str) -> Result<Installed> {
    let dir = TempDir::new("conf")?;
    match nat {
        Nat::Iptables => {
            fwd.iptables(&t.router)?;
            Ok(Installed {
                daemon: None,
                _dir: dir,
            })
        }
        Nat::Forwarder => {
            let path = dir.file("rules.toml");
            std::fs::write(&path, format!("{global}\n{}", fwd.rules_toml()))?;
            let d = Daemon::start(&t.router, &["--rules", path.to_str().unwrap()])?;
            Ok(Installed {
                daemon: Some(d),
                _dir: dir,
            })
        }
    }
}

/// Runs `f` on a thread that has entered `ns`'s network namespace, so the
/// sockets it creates live there.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            let file = std::fs::File::open(&path).with_context(|| path.clone())?;
            // SAFETY: a valid namespace fd; affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    })
}

fn setsockopt_bytes(fd: i32, level: i32, name: i32, v: &[u8]) -> Result<()> {
    // SAFETY: v is a valid buffer of v.len() bytes for the call.
    let rc = unsafe { libc::setsockopt(fd, level, name, v.as_ptr().cast(), v.len() as u32) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt");
    }
    Ok(())
}

fn setsockopt_int(fd: i32, level: i32, name: i32, v: i32) -> Result<()> {
    setsockopt_bytes(fd, level, name, &v.to_ne_bytes())
}

/// Sets IPv4 options on every packet `fd` sends from now on (`IP_OPTIONS`).
pub fn set_ip_options(fd: &impl AsRawFd, options: &[u8]) -> Result<()> {
    setsockopt_bytes(fd.as_raw_fd(), libc::IPPROTO_IP, libc::IP_OPTIONS, options)
}

/// Sets the TOS byte (DSCP and ECN) of every packet `fd` sends.
pub fn set_tos(fd: &impl AsRawFd, tos: u8) -> Result<()> {
    setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IP, libc::IP_TOS, tos as i32)
}

/// `IP_MTU_DISCOVER`: `libc::IP_PMTUDISC_DO` (DF, never fragment locally),
/// `IP_PMTUDISC_DONT` (no DF), `IP_PMTUDISC_WANT` (Linux's UDP default).
pub fn set_pmtudisc(fd: &impl AsRawFd, mode: i32) -> Result<()> {
    setsockopt_int(
        fd.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        mode,
    )
}

/// A UDP socket bound in `ns` (port 0 for an ephemeral one).
pub fn udp_socket(ns: &Netns, bind: SocketAddrV4) -> Result<UdpSocket> {
    in_netns(ns, || Ok(UdpSocket::bind(bind)?))
}

/// A TCP connection from `ns` to `to`.
pub fn tcp_connect(ns: &Netns, to: SocketAddrV4, timeout: Duration) -> Result<TcpStream> {
    in_netns(ns, || {
        Ok(TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)?)
    })
}

/// What a server saw: who sent how many bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub peer: SocketAddr,
    pub len: usize,
}

/// A UDP server in `ns` that records each datagram and answers it with
/// `reply_len` bytes (none when 0). Stops when dropped.
pub struct UdpServer {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(ns: &Netns, bind: SocketAddrV4, reply_len: usize) -> Result<UdpServer> {
        UdpServer::start_with(ns, bind, reply_len, |_| Ok(()))
    }

    /// As `start`, with `configure` applied to the socket first (DF mode,
    /// TOS, IP options of the replies).
    pub fn start_with(
        ns: &Netns,
        bind: SocketAddrV4,
        reply_len: usize,
        configure: impl FnOnce(&UdpSocket) -> Result<()>,
    ) -> Result<UdpServer> {
        let sock = udp_socket(ns, bind)?;
        configure(&sock)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let reply = pseudo_random(reply_len);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    seen2.lock().unwrap().push(Seen { peer, len: n });
                    if !reply.is_empty() {
                        let _ = sock.send_to(&reply, peer);
                    }
                }
            }
        });
        Ok(UdpServer {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP echo server in `ns`: each connection's bytes come back; peers are
/// recorded. `server_options` are set as IP options on each accepted
/// socket (its replies carry them).
pub struct TcpEcho {
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpEcho {
    pub fn start(ns: &Netns, bind: SocketAddrV4, server_options: &[u8]) -> Result<TcpEcho> {
        let l = in_netns(ns, || Ok(TcpListener::bind(bind)?))?;
        l.set_nonblocking(true)?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (peers2, stop2) = (peers.clone(), stop.clone());
        let opts = server_options.to_vec();
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<std::thread::JoinHandle<()>> = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        peers2.lock().unwrap().push(peer);
                        if !opts.is_empty() {
                            let _ = set_ip_options(&s, &opts);
                        }
                        let stop3 = stop2.clone();
                        conns.push(std::thread::spawn(move || {
                            use std::io::{Read, Write};
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                            let mut buf = [0u8; 65536];
                            while !stop3.load(Ordering::Relaxed) {
                                match s.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e)
                                        if e.kind() == std::io::ErrorKind::WouldBlock
                                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                                    Err(_) => break,
                                }
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Ok(TcpEcho {
            peers,
            stop,
            thread: Some(thread),
        })
    }

    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `data` and reads the same number of bytes back (an echo round).
pub fn echo_round(s: &mut TcpStream, data: &[u8]) -> Result<Vec<u8>> {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(data)?;
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Sends `req` from `sock` to `to` up to `tries` times, one second apart,
/// until a datagram comes back; returns it and its sender.
pub fn udp_ask(
    sock: &UdpSocket,
    to: SocketAddrV4,
    req: &[u8],
    tries: u32,
) -> Option<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut buf = vec![0u8; 65536];
    for _ in 0..tries {
        sock.send_to(req, to).ok()?;
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            return Some((buf[..n].to_vec(), from));
        }
    }
    None
}

/// One IPv4 packet seen by a capture.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Sent by the captured host (else received).
    pub outgoing: bool,
    /// The IPv4 packet, from its header on.
    pub ip: Vec<u8>,
}

impl Captured {
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.ip[12], self.ip[13], self.ip[14], self.ip[15])
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.ip[16], self.ip[17], self.ip[18], self.ip[19])
    }
    pub fn proto(&self) -> u8 {
        self.ip[9]
    }
    pub fn tos(&self) -> u8 {
        self.ip[1]
    }
    pub fn ttl(&self) -> u8 {
        self.ip[8]
    }
    pub fn id(&self) -> u16 {
        u16::from_be_bytes([self.ip[4], self.ip[5]])
    }
    pub fn df(&self) -> bool {
        self.ip[6] & 0x40 != 0
    }
    /// More-fragments set or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        u16::from_be_bytes([self.ip[6], self.ip[7]]) & 0x3fff != 0
    }
    pub fn frag_offset(&self) -> usize {
        (u16::from_be_bytes([self.ip[6], self.ip[7]]) & 0x1fff) as usize * 8
    }
    pub fn ihl(&self) -> usize {
        (self.ip[0] & 0x0f) as usize * 4
    }
    /// Everything after the IPv4 header (options included in the header).
    pub fn l4(&self) -> &[u8] {
        &self.ip[self.ihl().min(self.ip.len())..]
    }
    /// Source and destination port of a non-fragment or first fragment.
    pub fn ports(&self) -> Option<(u16, u16)> {
        let l4 = self.l4();
        (self.frag_offset() == 0 && l4.len() >= 4).then(|| {
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        })
    }
    /// (type, code) of an ICMP packet.
    pub fn icmp(&self) -> Option<(u8, u8)> {
        let l4 = self.l4();
        (self.proto() == 1 && l4.len() >= 8).then(|| (l4[0], l4[1]))
    }
    /// The packet an ICMP error quotes (its IPv4 header and what follows).
    pub fn icmp_quote(&self) -> Option<Captured> {
        let l4 = self.l4();
        (self.proto() == 1 && l4.len() >= 8 + 20).then(|| Captured {
            outgoing: self.outgoing,
            ip: l4[8..].to_vec(),
        })
    }
    /// The next-hop MTU of a "fragmentation needed" error.
    pub fn icmp_next_mtu(&self) -> Option<u16> {
        let l4 = self.l4();
        (self.icmp() == Some((3, 4))).then(|| u16::from_be_bytes([l4[6], l4[7]]))
    }
}

/// An AF_PACKET capture of the IPv4 packets one interface sends and
/// receives (the test's tcpdump). Opened before the traffic it must see.
pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    pub fn open(ns: &Netns, dev: &str) -> Result<Capture> {
        let dev = std::ffi::CString::new(dev)?;
        in_netns(ns, || {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: plain socket creation; the fd is owned right below.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
            }
            // SAFETY: raw is a fresh, valid fd we own from here on.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: dev is a valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {dev:?}");
            }
            // SAFETY: sockaddr_ll is plain data; zero is a valid start.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto as u16;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: binding our own socket to a valid sockaddr_ll.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("binding AF_PACKET");
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: tv is a valid timeval for SO_RCVTIMEO.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
            }
            Ok(Capture { fd })
        })
    }

    /// The next IPv4 packet, if one comes within ~100 ms.
    fn next(&self) -> Option<Captured> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        loop {
            // SAFETY: buf and sll are valid for the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                return None;
            }
            if u16::from_be(sll.sll_protocol) != libc::ETH_P_IP as u16 || n < 20 {
                continue;
            }
            return Some(Captured {
                outgoing: sll.sll_pkttype == libc::PACKET_OUTGOING,
                ip: buf[..n as usize].to_vec(),
            });
        }
    }

    /// Waits up to `timeout` for a packet that satisfies `pred`; packets
    /// before it are consumed.
    pub fn find(&self, timeout: Duration, pred: impl Fn(&Captured) -> bool) -> Option<Captured> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(p) = self.next() {
                if pred(&p) {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Every packet until the line has been quiet for `quiet`, bounded by
    /// `max` in total.
    pub fn drain(&self, quiet: Duration, max: Duration) -> Vec<Captured> {
        let deadline = Instant::now() + max;
        let mut last = Instant::now();
        let mut v = Vec::new();
        while Instant::now() < deadline && last.elapsed() < quiet {
            if let Some(p) = self.next() {
                v.push(p);
                last = Instant::now();
            }
        }
        v
    }
}

/// A raw IPv4 socket in `ns` that sends complete packets (IP_HDRINCL):
/// for the packets no socket API makes (a bare ACK, a lone fragment).
pub struct RawSender {
    fd: OwnedFd,
}

impl RawSender {
    pub fn open(ns: &Netns) -> Result<RawSender> {
        in_netns(ns, || {
            // SAFETY: plain socket creation; owned right below.
            let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error()).context("raw socket");
            }
            // SAFETY: raw is a fresh, valid fd we own from here on.
            Ok(RawSender {
                fd: unsafe { OwnedFd::from_raw_fd(raw) },
            })
        })
    }

    /// Sends one IPv4 packet (header included) towards its destination.
    pub fn send(&self, ip: &[u8]) -> Result<()> {
        // SAFETY: sockaddr_in is plain data.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_addr.s_addr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
        // SAFETY: ip and sin are valid for the sizes given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ip.as_ptr().cast(),
                ip.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("sendto raw");
        }
        Ok(())
    }
}

/// The path MTU `ns` has learned towards `dst` (`ip route get`'s cached
/// "mtu N"), if any.
pub fn learned_pmtu(ns: &Netns, dst: Ipv4Addr) -> Option<u32> {
    let out = ns
        .output(&["ip", "-4", "route", "get", &dst.to_string()])
        .ok()?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mtu" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// An nft counter of packets that reach local delivery in `ns` (the INPUT
/// hook) for `proto` dport `port`: "did this reach a host service?".
pub fn count_local_delivery(ns: &Netns, proto: &str, port: u16) -> Result<()> {
    ns.run(&[
        "nft",
        &format!(
            "add table ip conf; add counter ip conf local_in; \
             add chain ip conf input {{ type filter hook input priority -300; }}; \
             add rule ip conf input {proto} dport {port} counter name local_in"
        ),
    ])?;
    Ok(())
}

/// The value of the counter `count_local_delivery` installed.
pub fn local_delivered(ns: &Netns) -> Result<u64> {
    let out = ns.output(&["nft", "-j", "list", "counter", "ip", "conf", "local_in"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
        .with_context(|| format!("no counter in {out}"))
}

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// Sends UDP to the router's port 5000 from the client until an ICMP host
/// unreachable (3/1) comes back (ARP for a dead next hop gives up after
/// about 3 s, then the forwarder hears of it), and checks that it comes
/// from the address the client used and quotes the datagram as the client
/// sent it. `what` names the case in failures.
pub fn udp_gets_host_unreachable(t: &Topo, what: &str) -> Result<()> {
    let cap = Capture::open(&t.client, "eth0")?;
    let sock = udp_socket(&t.client, sa(Ipv4Addr::UNSPECIFIED, 0))?;
    let sport = sock.local_addr()?.port();
    let unreach = crate::process::wait_for(Duration::from_secs(30), || {
        let _ = sock.send_to(b"anyone?", sa(ROUTER_LAN, 5000));
        cap.find(Duration::from_secs(1), |p| {
            !p.outgoing && p.icmp() == Some((3, 1))
        })
    })
    .with_context(|| format!("{what}: no host unreachable"))?;
    anyhow::ensure!(
        (unreach.src(), unreach.dst()) == (ROUTER_LAN, CLIENT),
        "{what}: host unreachable from {} to {}",
        unreach.src(),
        unreach.dst()
    );
    let q = unreach.icmp_quote().context("quote")?;
    anyhow::ensure!(
        (q.src(), q.dst(), q.ports()) == (CLIENT, ROUTER_LAN, Some((sport, 5000))),
        "{what}: the quote is not the datagram as the client sent it"
    );
    Ok(())
}
