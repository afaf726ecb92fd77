//! The validated rule set: what the rules file means, free of syntax.
//!
//! Addresses are `IpAddr`/`IpNet`: a forward's clients and its target each
//! have a family, and they may differ (see `family.rs` for what follows).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    time::Duration,
};

use forwarder_common::conntrack::CtConfig;
use ipnet::IpNet;

pub use crate::{
    family::{Af, Family},
    flowrate::FlowRate,
    timeouts::Timeouts,
};

pub use crate::target::{Host, Target};

/// A whole rules file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub global: Global,
    pub forwards: Vec<Forward>,
    /// `[interface.NAME]` settings, by interface name.
    pub interfaces: std::collections::BTreeMap<String, IfaceSettings>,
}

impl RuleSet {
    pub fn forward(&self, name: &str) -> Option<&Forward> {
        self.forwards.iter().find(|f| f.name == name)
    }
}

/// Daemon-wide settings (`[global]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// Connection-tracking table size (flows; each flow holds two entries).
    pub conntrack_max: u32,
    /// Source ports SNAT may allocate.
    pub snat_ports: PortRange,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    /// Prometheus endpoint; no endpoint when `None`.
    pub metrics: Option<SocketAddr>,
    pub timeouts: Timeouts,
    /// How the daemon notices edits of the rules file.
    pub rules_watch: RulesWatch,
    /// How often the file is read and compared when it is polled.
    pub rules_poll_interval: Duration,
    /// How many new flows one source address may create (`None`: no limit).
    pub new_flows_per_source: Option<FlowRate>,
    /// DNS servers for name targets (`dns_server`); empty: the system's
    /// (/etc/resolv.conf, /etc/hosts).
    pub dns_servers: Vec<SocketAddr>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            conntrack_max: forwarder_common::DEFAULT_CONNTRACK_MAX,
            // Below Linux's ephemeral range (ip_local_port_range), so a
            // SNAT port never collides with the host's own connections
            // (see forwarder_common::DEFAULT_SNAT_PORT_MIN).
            snat_ports: PortRange::new(
                forwarder_common::DEFAULT_SNAT_PORT_MIN,
                forwarder_common::DEFAULT_SNAT_PORT_MAX,
            )
            .expect("valid constant range"),
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            metrics: None,
            timeouts: Timeouts::default(),
            rules_watch: RulesWatch::Auto,
            rules_poll_interval: RulesWatch::DEFAULT_POLL_INTERVAL,
            new_flows_per_source: None,
            dns_servers: Vec::new(),
        }
    }
}

impl Global {
    /// The kernel's conntrack settings (`FWD_CT_CONFIG`).
    pub fn ct_config(&self) -> CtConfig {
        let (new_flow_interval_ns, new_flow_burst_ns) =
            self.new_flows_per_source.map_or((0, 0), |r| r.gcra_ns());
        CtConfig {
            timeouts: self.timeouts.to_ct(),
            new_flow_interval_ns,
            new_flow_burst_ns,
        }
    }
}

/// How the daemon notices edits of the rules file (`rules_watch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RulesWatch {
    /// inotify, plus polling when the file lives on a FUSE or network file
    /// system (pmxcfs /etc/pve, NFS, CIFS...), where inotify does not see
    /// writes made on other machines.
    #[default]
    Auto,
    /// inotify only.
    Inotify,
    /// inotify plus polling, wherever the file lives.
    Poll,
}

impl RulesWatch {
    pub const ALL: [(&'static str, RulesWatch); 3] = [
        ("auto", RulesWatch::Auto),
        ("inotify", RulesWatch::Inotify),
        ("poll", RulesWatch::Poll),
    ];
    /// pmxcfs replicates a write to every node well within this; reading a
    /// small file every 2 s costs nothing.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
    pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
    pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(3600);
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, w)| *w == self)
            .map(|(s, _)| *s)
            .unwrap_or("auto")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ALL: [(&'static str, LogLevel); 5] = [
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, l)| *l == self)
            .map(|(s, _)| *s)
            .unwrap_or("info")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// One `[[forward]]`: packets arriving on `iface` for `listen`:`ports` are
/// translated to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Unique, `[a-z0-9_-]`, used in the CLI and as a metrics label.
    pub name: String,
    pub description: Option<String>,
    /// The interface packets arrive on (`in` in the file).
    pub iface: String,
    pub listen: Listen,
    /// The client families it takes. With a fixed listen address this is
    /// always that address's family.
    pub family: Family,
    pub proto: Proto,
    pub ports: PortRange,
    pub target: Target,
    pub snat: Snat,
    /// Source allow-list; empty means every source may connect. Entries
    /// of a family apply to clients of that family.
    pub allow: Vec<IpNet>,
    pub mss_clamp: MssClamp,
    pub reject: Reject,
    pub path: PathMode,
    /// Cluster nodes this forward applies on (`nodes`, see `nodes.rs`);
    /// empty: every node.
    pub nodes: Vec<String>,
}

impl Forward {
    /// A forward with every optional setting at its default.
    pub fn new(
        name: impl Into<String>,
        iface: impl Into<String>,
        ports: PortRange,
        target: Target,
    ) -> Self {
        Forward {
            name: name.into(),
            description: None,
            iface: iface.into(),
            listen: Listen::Interface,
            family: Family::from(target.af()),
            proto: Proto::Tcp,
            ports,
            target,
            snat: Snat::Auto,
            allow: Vec::new(),
            mss_clamp: MssClamp::Auto,
            reject: Reject::Rst,
            path: PathMode::Auto,
            nodes: Vec::new(),
        }
    }

    /// Number of listener entries this forward needs for a given number of
    /// addresses on the listen side.
    pub fn listener_entries(&self, addrs: u64) -> u64 {
        u64::from(self.ports.len()) * self.proto.l4().len() as u64 * addrs
    }
}

/// Where a forward listens on its interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Listen {
    /// The interface's own addresses (of the forward's `family`; IPv6
    /// link-local ones excepted), followed live as they change.
    Interface,
    Addr(IpAddr),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Interface => f.write_str("interface"),
            Listen::Addr(a) => a.fmt(f),
        }
    }
}

/// The protocol setting of a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Both,
}

impl Proto {
    pub fn l4(self) -> &'static [L4] {
        match self {
            Proto::Tcp => &[L4::Tcp],
            Proto::Udp => &[L4::Udp],
            Proto::Both => &[L4::Tcp, L4::Udp],
        }
    }
    pub fn includes(self, l4: L4) -> bool {
        self.l4().contains(&l4)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Both => "both",
        }
    }
}

/// A transport protocol as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    /// The IP protocol number (`forwarder_common::PROTO_*`).
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => forwarder_common::PROTO_TCP,
            L4::Udp => forwarder_common::PROTO_UDP,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

impl fmt::Display for L4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive, non-empty range of non-zero ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// `None` for port 0 or a reversed range.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start != 0 && start <= end).then_some(PortRange { start, end })
    }
    pub fn single(port: u16) -> Option<Self> {
        Self::new(port, port)
    }
    pub fn start(self) -> u16 {
        self.start
    }
    pub fn end(self) -> u16 {
        self.end
    }
    /// Number of ports (1..=65535).
    pub fn len(self) -> u32 {
        u32::from(self.end - self.start) + 1
    }
    /// Always false: kept for the `len` convention.
    pub fn is_empty(self) -> bool {
        false
    }
    pub fn is_single(self) -> bool {
        self.start == self.end
    }
    pub fn contains(self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
    pub fn intersect(self, other: PortRange) -> Option<PortRange> {
        PortRange::new(self.start.max(other.start), self.end.min(other.end))
    }
    pub fn iter(self) -> RangeInclusive<u16> {
        self.start..=self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Source rewriting of forwarded packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snat {
    /// Keep the client's address: replies must route back via this host.
    Off,
    /// Always this address of the host (of the target's family).
    Fixed(IpAddr),
    /// The egress interface's address toward the target.
    Masquerade,
    /// Keep the client's address when the backend's reply routes back via
    /// this host, else masquerade.
    Auto,
}

impl fmt::Display for Snat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Snat::Off => f.write_str("off"),
            Snat::Fixed(a) => a.fmt(f),
            Snat::Masquerade => f.write_str("masquerade"),
            Snat::Auto => f.write_str("auto"),
        }
    }
}

/// TCP MSS clamping on SYN/SYN-ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MssClamp {
    /// Derived from the path MTU by the daemon.
    Auto,
    Off,
    Fixed(u16),
}

impl MssClamp {
    pub const MIN: u16 = 536;
    pub const MAX: u16 = 65495;
}

impl fmt::Display for MssClamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MssClamp::Auto => f.write_str("auto"),
            MssClamp::Off => f.write_str("off"),
            MssClamp::Fixed(n) => n.fmt(f),
        }
    }
}

/// What peers refused by the allow-list get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Answered like a closed port: a TCP RST or ICMP port-unreachable,
    /// built by the kernel program; never handed to the host's own stack,
    /// where a service of the host on the same port would take it.
    Rst,
    /// Silence.
    Drop,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Rst => "rst",
            Reject::Drop => "drop",
        }
    }
}

/// How translated packets travel: chosen per flow from the FIB by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMode {
    /// Redirect straight to the egress device when the flow is SNATed or
    /// the target is on-link; else through the stack (so netfilter, e.g.
    /// kube-proxy's ClusterIP DNAT, sees it).
    Auto,
    /// Redirect whenever the FIB has a route, even to targets behind a
    /// gateway (bypassing netfilter FORWARD).
    Redirect,
    /// Always through the stack (netfilter sees every packet; no SNAT).
    Stack,
}

impl PathMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PathMode::Auto => "auto",
            PathMode::Redirect => "redirect",
            PathMode::Stack => "stack",
        }
    }
}

/// Per-interface settings (`[interface.NAME]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceSettings {
    pub attach: AttachMode,
}

/// Which programs an interface gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// TC everywhere; the XDP accelerator in addition only where it helps:
    /// physical NICs with native XDP. Never on bridges (generic XDP only),
    /// L3 devices (no XDP), or veth (XDP on a veth takes GSO away from its
    /// peer: bulk TCP through it slows down several times).
    #[default]
    Auto,
    /// TC only.
    Tc,
    /// TC plus the XDP accelerator in native (driver) mode; when that
    /// fails, TC only, and `status` says why.
    Xdp,
    /// TC only, attached the legacy way (clsact qdisc + cls_bpf filter)
    /// even where the kernel has TCX: what kernels before 6.6 get anyway.
    TcLegacy,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Tc => "tc",
            AttachMode::Xdp => "xdp",
            AttachMode::TcLegacy => "tc-legacy",
        }
    }
}
