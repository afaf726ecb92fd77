//! tunrelay: a stand-in for tailscaled between network namespaces.
//!
//! Creates an L3 tun device (`IFF_TUN | IFF_NO_PI`, MTU 1280, default name
//! `tailscale0`) inside each namespace named on the command line and moves
//! IPv4 packets between them by destination address, the way tailscaled
//! moves them between peers (minus WireGuard). Addresses, links and routes
//! inside the namespaces are configured by the caller with `ip`, like
//! tailscaled's own setup after it creates the device.
//!
//! ```text
//! tunrelay [--dev NAME] [--mtu N] NS[:down]...
//! ```
//!
//! A packet goes to the namespace whose device **currently** has the
//! destination address: the address -> namespace map is re-read every
//! 100 ms and on a miss, so a test can readdress a device while traffic
//! flows. Packets nobody owns are dropped and counted, as are packets a
//! namespace addresses to itself (tailscaled never hairpins them back).
//!
//! Commands on stdin, one per line; each gets one reply line on stdout
//! (`ok ...` or `err ...`):
//!
//! * `up NS`: create NS's device (closing its fd deletes a non-persistent
//!   tun, so `down NS` removes the device and `up NS` makes a new one, with
//!   a new ifindex, exactly like tailscaled restarting).
//! * `down NS`: close NS's device.
//! * `stale ADDR NS`: deliver ADDR to NS even when NS no longer has it (a
//!   peer with a stale netmap); `unstale ADDR` ends that.
//! * `stats`: counters as one JSON object.
//!
//! `ready` is printed once every initial device exists. EOF on stdin ends
//! the relay, so it never outlives the test that started it; its devices
//! go with it.
mod sys;

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    net::Ipv4Addr,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    time::{Duration, Instant},
};

use sys::{addrs_of, cvt, ifname};

/// How often the address -> namespace map is re-read without a miss.
const REFRESH: Duration = Duration::from_millis(100);
/// A miss re-reads the map at most this often (a flood of packets to a
/// dead address must not turn into a flood of ioctls).
const MISS_REFRESH: Duration = Duration::from_millis(10);

struct Member {
    ns: String,
    /// AF_INET socket created inside the namespace: ioctls on it (the
    /// address list, the MTU) act on that namespace without setns.
    sock: OwnedFd,
    netns: File,
    tun: Option<File>,
    /// Packets read from this member's device (it sent them).
    rx: u64,
    /// Packets written into it (delivered to it).
    tx: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: u64,
    no_owner: u64,
    hairpin: u64,
    not_ipv4: u64,
    write_errors: u64,
    last_no_owner: Option<Ipv4Addr>,
}

struct Relay {
    dev: String,
    mtu: i32,
    home: File,
    members: Vec<Member>,
    owners: HashMap<Ipv4Addr, usize>,
    stale: HashMap<Ipv4Addr, usize>,
    refreshed: Instant,
    c: Counters,
}

impl Relay {
    /// Runs `f` with this thread in namespace `netns`, then returns home.
    /// The relay is single-threaded, so nothing else observes the switch.
    fn in_ns<T>(&self, netns: &File, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        // SAFETY: setns on a valid namespace fd for this thread only.
        cvt(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) })?;
        let r = f();
        // SAFETY: as above; failing to return home would make every later
        // device land in the wrong namespace, so that is fatal.
        if unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "tunrelay: cannot return to the home namespace: {}",
                io::Error::last_os_error()
            );
            std::process::exit(3);
        }
        r
    }

    fn add_member(&mut self, ns: &str) -> io::Result<()> {
        let netns = File::open(format!("/run/netns/{ns}"))?;
        let sock = self.in_ns(&netns, || {
            // SAFETY: plain socket creation; the fd is owned right away.
            let fd = cvt(unsafe {
                libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
            })?;
            // SAFETY: fd is a fresh, valid descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })?;
        self.members.push(Member {
            ns: ns.to_string(),
            sock,
            netns,
            tun: None,
            rx: 0,
            tx: 0,
        });
        Ok(())
    }

    fn member(&self, ns: &str) -> io::Result<usize> {
        self.members
            .iter()
            .position(|m| m.ns == ns)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no member {ns}")))
    }

    /// Creates the member's tun device inside its namespace: the device
    /// belongs to the namespace the fd was opened in.
    fn up(&mut self, i: usize) -> io::Result<()> {
        if self.members[i].tun.is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "already up"));
        }
        let name = ifname(&self.dev)?;
        let tun = self.in_ns(&self.members[i].netns, || {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                // CLOEXEC: a copy of the fd in a child would keep the
                // device alive after `down`.
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open("/dev/net/tun")?;
            // SAFETY: ifreq is plain old data; zeroed is a valid value.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            ifr.ifr_name = name;
            ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
            // SAFETY: TUNSETIFF reads and writes one ifreq.
            cvt(unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut ifr) })?;
            Ok(f)
        })?;
        // SAFETY: as above.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = name;
        ifr.ifr_ifru.ifru_mtu = self.mtu;
        // SAFETY: SIOCSIFMTU reads one ifreq; the socket is in the namespace.
        cvt(unsafe { libc::ioctl(self.members[i].sock.as_raw_fd(), libc::SIOCSIFMTU, &ifr) })?;
        self.members[i].tun = Some(tun);
        self.refresh();
        Ok(())
    }

    fn down(&mut self, i: usize) -> io::Result<()> {
        if self.members[i].tun.take().is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "already down"));
        }
        self.refresh();
        Ok(())
    }

    /// IPv4 addresses on the device (and its `dev:label` aliases) of every
    /// member that is up.
    fn refresh(&mut self) {
        self.owners.clear();
        for (i, m) in self.members.iter().enumerate() {
            if m.tun.is_none() {
                continue;
            }
            match addrs_of(m.sock.as_raw_fd(), &self.dev) {
                Ok(addrs) => {
                    for a in addrs {
                        self.owners.insert(a, i);
                    }
                }
                Err(e) => eprintln!("tunrelay: reading addresses in {}: {e}", m.ns),
            }
        }
        self.refreshed = Instant::now();
    }

    fn owner(&mut self, dst: Ipv4Addr) -> Option<usize> {
        if let Some(&i) = self.owners.get(&dst) {
            return Some(i);
        }
        if self.refreshed.elapsed() >= MISS_REFRESH {
            self.refresh();
            if let Some(&i) = self.owners.get(&dst) {
                return Some(i);
            }
        }
        self.stale.get(&dst).copied()
    }

    fn route(&mut self, from: usize, pkt: &[u8]) {
        self.members[from].rx += 1;
        if pkt.len() < 20 || pkt[0] >> 4 != 4 {
            self.c.not_ipv4 += 1;
            return;
        }
        let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
        let to = match self.owner(dst) {
            Some(to) if to == from => {
                self.c.hairpin += 1;
                return;
            }
            Some(to) => to,
            None => {
                self.c.no_owner += 1;
                self.c.last_no_owner = Some(dst);
                return;
            }
        };
        let m = &mut self.members[to];
        let Some(tun) = m.tun.as_mut() else {
            self.c.no_owner += 1;
            self.c.last_no_owner = Some(dst);
            return;
        };
        // One write is one packet (the tun fd has datagram semantics): a
        // short write is as failed as an error.
        match tun.write(pkt) {
            Ok(n) if n == pkt.len() => {
                m.tx += 1;
                self.c.forwarded += 1;
            }
            _ => self.c.write_errors += 1,
        }
    }

    /// Reads what member `i` sent, up to a batch, and routes it.
    fn drain(&mut self, i: usize, buf: &mut [u8]) {
        for _ in 0..256 {
            let Some(tun) = self.members[i].tun.as_mut() else {
                return;
            };
            match tun.read(buf) {
                Ok(0) => return,
                Ok(n) => self.route(i, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The device was deleted under us (ip link del): the fd
                    // stays readable-with-error forever, so treat it as down
                    // instead of spinning on it.
                    eprintln!(
                        "tunrelay: read from {}: {e}; closing its device",
                        self.members[i].ns
                    );
                    self.members[i].tun = None;
                    self.refresh();
                    return;
                }
            }
        }
    }

    fn stats(&self) -> String {
        let members: serde_json::Map<String, serde_json::Value> = self
            .members
            .iter()
            .map(|m| {
                (
                    m.ns.clone(),
                    serde_json::json!({ "up": m.tun.is_some(), "rx": m.rx, "tx": m.tx }),
                )
            })
            .collect();
        let owners: serde_json::Map<String, serde_json::Value> = self
            .owners
            .iter()
            .map(|(a, i)| (a.to_string(), self.members[*i].ns.clone().into()))
            .collect();
        serde_json::json!({
            "forwarded": self.c.forwarded,
            "no_owner": self.c.no_owner,
            "hairpin": self.c.hairpin,
            "not_ipv4": self.c.not_ipv4,
            "write_errors": self.c.write_errors,
            "last_no_owner": self.c.last_no_owner.map(|a| a.to_string()),
            "owners": owners,
            "members": members,
        })
        .to_string()
    }

    fn command(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let r: io::Result<String> = match words.as_slice() {
            ["up", ns] => self
                .member(ns)
                .and_then(|i| self.up(i))
                .map(|_| String::new()),
            ["down", ns] => self
                .member(ns)
                .and_then(|i| self.down(i))
                .map(|_| String::new()),
            ["stale", addr, ns] => match addr.parse::<Ipv4Addr>() {
                Ok(a) => self.member(ns).map(|i| {
                    self.stale.insert(a, i);
                    String::new()
                }),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
            },
            ["unstale", addr] => match addr.parse::<Ipv4Addr>() {
                Ok(a) => {
                    self.stale.remove(&a);
                    Ok(String::new())
                }
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
            },
            ["stats"] => Ok(self.stats()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown command {line:?}"),
            )),
        };
        eprintln!("tunrelay: {line}: {}", if r.is_ok() { "ok" } else { "err" });
        match r {
            Ok(s) if s.is_empty() => "ok".into(),
            Ok(s) => format!("ok {s}"),
            Err(e) => format!("err {e}"),
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: tunrelay [--dev NAME] [--mtu N] NETNS[:down]...");
    std::process::exit(2);
}

fn main() {
    let mut dev = "tailscale0".to_string();
    let mut mtu = 1280;
    let mut specs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dev" => dev = args.next().unwrap_or_else(|| usage()),
            "--mtu" => {
                mtu = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            s if s.starts_with('-') => usage(),
            s => specs.push(s.to_string()),
        }
    }
    if specs.is_empty() {
        usage();
    }
    let home = File::open("/proc/self/ns/net").unwrap_or_else(|e| {
        eprintln!("tunrelay: /proc/self/ns/net: {e}");
        std::process::exit(1)
    });
    let mut relay = Relay {
        dev,
        mtu,
        home,
        members: Vec::new(),
        owners: HashMap::new(),
        stale: HashMap::new(),
        refreshed: Instant::now(),
        c: Counters::default(),
    };
    for spec in &specs {
        let (ns, up) = match spec.strip_suffix(":down") {
            Some(ns) => (ns, false),
            None => (spec.as_str(), true),
        };
        let r = relay.add_member(ns).and_then(|_| {
            if up {
                relay.up(relay.members.len() - 1)
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            eprintln!("tunrelay: {spec}: {e}");
            std::process::exit(1);
        }
    }
    let mut stdout = io::stdout();
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();
    run(&mut relay, &mut stdout);
}

fn run(relay: &mut Relay, stdout: &mut io::Stdout) {
    let mut buf = vec![0u8; 65536];
    let mut cmd = Vec::<u8>::new();
    loop {
        let mut fds = vec![libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut who = Vec::new();
        for (i, m) in relay.members.iter().enumerate() {
            if let Some(t) = &m.tun {
                fds.push(libc::pollfd {
                    fd: t.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                who.push(i);
            }
        }
        let wait = REFRESH.saturating_sub(relay.refreshed.elapsed());
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis() as libc::c_int,
            )
        };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            eprintln!("tunrelay: poll: {}", io::Error::last_os_error());
            std::process::exit(1);
        }
        if relay.refreshed.elapsed() >= REFRESH {
            relay.refresh();
        }
        for (k, &i) in who.iter().enumerate() {
            if fds[k + 1].revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
                relay.drain(i, &mut buf);
            }
        }
        if fds[0].revents != 0 {
            // SAFETY: reading into our own buffer from stdin.
            let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                // EOF: whoever started us is gone; take the devices along.
                return;
            }
            cmd.extend_from_slice(&buf[..r as usize]);
            while let Some(pos) = cmd.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = cmd.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if line.is_empty() {
                    continue;
                }
                let reply = relay.command(&line);
                let _ = writeln!(stdout, "{reply}");
                let _ = stdout.flush();
            }
        }
    }
}
