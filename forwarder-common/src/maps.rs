//! Map key and value layouts, and the map names both sides agree on.

/// Map names (also the pin file names under the pin directory).
pub const MAP_IFACES: &str = "FWD_IFACES";
pub const MAP_IFACE_COUNTERS: &str = "FWD_IFACE_CNT";
pub const MAP_LISTENERS: &str = "FWD_LISTENERS";
pub const MAP_ALLOW: &str = "FWD_ALLOW";
pub const MAP_RULE_COUNTERS: &str = "FWD_RULE_CNT";
pub const MAP_FLOWS: &str = "FWD_FLOWS";
pub const MAP_CONFIG: &str = "FWD_CONFIG";
pub const MAP_AUTO_SNAT: &str = "FWD_AUTO_SNAT";
pub const MAP_RULE_NAMES: &str = "FWD_RULE_NAMES";

/// Longest rule name (the rules file enforces it).
pub const RULE_NAME_MAX: usize = 63;

/// A rule's name, by rule id (userspace only). It lives next to the
/// counters and flows that carry the id, so a restarted daemon gives every
/// rule its old id back, and `status`/`conntrack list` name rules even
/// without a daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleName {
    /// NUL-padded UTF-8; all zero for a free id.
    pub name: [u8; RULE_NAME_MAX + 1],
}

impl Default for RuleName {
    fn default() -> Self {
        RuleName {
            name: [0; RULE_NAME_MAX + 1],
        }
    }
}

impl RuleName {
    pub fn new(name: &str) -> Self {
        let mut r = RuleName::default();
        let n = name.len().min(RULE_NAME_MAX);
        r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        r
    }

    pub fn as_str(&self) -> Option<&str> {
        let end = self
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.name.len());
        (end > 0)
            .then(|| core::str::from_utf8(&self.name[..end]).ok())
            .flatten()
    }
}

/// Per-interface configuration, keyed by ifindex. An interface without an
/// entry is not ours: the programs pass its packets without counting.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct IfaceConfig {
    /// Block index into the per-interface counter array (< MAX_IFACES).
    pub slot: u32,
    /// `IFACE_*` flags.
    pub flags: u32,
}

/// The interface has no link-layer header (tun, wireguard: ARPHRD_NONE);
/// the IP header starts at offset 0.
pub const IFACE_L3: u32 = 1;
/// Replies of stack-path flows may leave through this interface: the egress
/// program translates them. Without the flag it returns at once, so
/// interfaces whose forwards are all redirected pay nothing at egress.
pub const IFACE_EGRESS_NAT: u32 = 2;

/// Listener key: one entry per (interface, address, protocol, port). Port
/// ranges are expanded by userspace so the kernel does one exact lookup.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    pub addr: [u32; 4],
    pub ifindex: u32,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// SNAT modes in `ListenerValue::snat_mode`.
pub const SNAT_OFF: u8 = 0;
/// Rewrite the source to `snat_addr`.
pub const SNAT_FIXED: u8 = 1;
/// Rewrite the source to the egress interface's primary address (userspace
/// resolves it into `snat_addr` and keeps it current).
pub const SNAT_MASQUERADE: u8 = 2;
/// Decide per flow: keep the client address when the backend's reply routes
/// back through this host, else behave like `SNAT_MASQUERADE`.
pub const SNAT_AUTO: u8 = 3;

/// The rule has a source allow-list: look the source up in `FWD_ALLOW`.
pub const LISTEN_ALLOWLIST: u8 = 1;
/// Clamp the TCP MSS option on SYN/SYN-ACK to `mss`.
pub const LISTEN_MSS_CLAMP: u8 = 2;
/// Refused peers get a TCP RST / ICMP unreachable instead of a silent drop.
pub const LISTEN_REJECT: u8 = 4;
/// Path override (rules file `path = "stack"`): always hand translated
/// packets to the stack. Without an override the path is chosen per flow
/// from the FIB (see `FLOW_VIA_STACK`).
pub const LISTEN_VIA_STACK: u8 = 8;
/// Path override (`path = "redirect"`): redirect whenever the FIB answers.
pub const LISTEN_VIA_REDIRECT: u8 = 16;
/// The target is of the other address family than the listener key
/// (NAT64 for an `AF_INET6` key, NAT46 for an `AF_INET` one):
/// `target_addr` and `snat_addr` hold addresses of that other family, and
/// `snat_mode` is never `SNAT_OFF`/`SNAT_AUTO` (a translated flow cannot
/// keep the client's address).
pub const LISTEN_XLAT: u8 = 32;

/// What a matching packet becomes.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ListenerValue {
    pub target_addr: [u32; 4],
    /// Source address for SNAT_FIXED (and SNAT_MASQUERADE once resolved).
    pub snat_addr: [u32; 4],
    pub rule_id: u32,
    /// Network byte order.
    pub target_port: u16,
    pub snat_mode: u8,
    /// `LISTEN_*` flags.
    pub flags: u8,
    /// MSS clamp value (host order) when `LISTEN_MSS_CLAMP` is set.
    pub mss: u16,
    pub _pad: u16,
}

/// Allow-list LPM trie data (the trie key adds the prefix length in front).
/// The prefix length counts the 32 bits of `rule_id` plus the CIDR's bits.
/// IPv6 entries set `ALLOW_ID_V6` in the id word, so that one trie holds
/// both families without an IPv6 prefix ever matching an IPv4 source
/// (whose key has the same id and zeroes after word 0).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowKey {
    /// Big-endian so the trie's bitwise prefix match covers it whole.
    pub rule_id_be: u32,
    pub addr: [u32; 4],
}

/// Set in `AllowKey::rule_id_be` (before the byte swap) for IPv6 entries;
/// rule ids stay below `MAX_RULES`, far under this bit.
pub const ALLOW_ID_V6: u32 = 1 << 31;

/// Connection-tracking key: the tuple as it appears on the wire in one
/// direction. ICMP echo uses the identifier as both ports.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Network byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// The key of the opposite direction for a packet that, after the
    /// translation of `entry`, leaves with that entry's new tuple.
    #[inline(always)]
    pub fn peer_of(entry: &FlowEntry, proto: u8, family: u8) -> FlowKey {
        FlowKey {
            src: entry.new_dst,
            dst: entry.new_src,
            sport: entry.new_dport,
            dport: entry.new_sport,
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

/// `FlowEntry::flags`.
pub const FLOW_REPLY: u8 = 1;
pub const FLOW_SNAT: u8 = 2;
/// Deliver via the stack: chosen at creation when the FIB has no plain
/// on-link answer for the target and the flow is not SNATed (a ClusterIP
/// that kube-proxy DNATs in PREROUTING, a target behind a gateway, a local
/// address), or forced by `LISTEN_VIA_STACK`. Replies of such flows are
/// translated back at egress of the listening interface.
pub const FLOW_VIA_STACK: u8 = 4;
/// The SNAT decision was made per flow by `snat = "auto"` (FLOW_SNAT says
/// which way it went).
pub const FLOW_AUTO: u8 = 8;

/// `FlowEntry::tcp_seen`: TCP flags seen in this direction.
pub const SEEN_SYN: u8 = 1;
pub const SEEN_ACK: u8 = 2;
pub const SEEN_FIN: u8 = 4;
pub const SEEN_RST: u8 = 8;

/// One direction of a tracked flow: what to rewrite a packet matching the
/// key into, plus its accounting. Both directions are inserted together.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    pub new_src: [u32; 4],
    pub new_dst: [u32; 4],
    /// Network byte order.
    pub new_sport: u16,
    pub new_dport: u16,
    pub rule_id: u32,
    /// bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC at tick resolution) at
    /// creation and at the last packet.
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub flags: u8,
    pub tcp_seen: u8,
    /// Clamp the MSS option of SYN/SYN-ACK packets in this direction to
    /// this value (host order); 0: no clamping.
    pub mss: u16,
    pub _pad: [u8; 4],
}

/// `snat = "auto"` learning: a backend (per rule) whose replies did not come
/// back through this host. Keyed like this so one backend that routes
/// elsewhere does not make every backend of every rule lose client
/// addresses.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AutoSnatKey {
    pub rule_id: u32,
    pub addr: [u32; 4],
}

/// How long a learned "this backend needs SNAT" stays in force; after that
/// the next flow tries to keep the client address again, so a fixed
/// routing problem heals by itself.
pub const AUTO_SNAT_TTL_NS: u64 = 300 * 1_000_000_000;

/// A DNAT-only flow whose client retransmits its SYN, with no packet seen
/// back from the backend for at least this long, is taken as proof that
/// replies bypass this host.
pub const AUTO_SNAT_PROBE_NS: u64 = 200 * 1_000_000;

/// Global knobs, index 0 of `FWD_CONFIG`; userspace may update them live.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct GlobalConfig {
    pub abi_version: u32,
    /// SNAT source port range (host order, inclusive).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    pub flags: u32,
    pub _pad: u32,
}

/// Derived TCP state of a flow from the flags both directions have seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    SynSent,
    Established,
    /// One side has sent FIN.
    FinWait,
    /// Both sides have sent FIN.
    TimeWait,
    /// A RST was seen.
    Close,
}

impl TcpState {
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }

    /// The kernel only records per-direction flags; the state machine lives
    /// here so the sweeper, `status` and the tests share one definition.
    pub const fn derive(orig_seen: u8, reply_seen: u8) -> TcpState {
        let all = orig_seen | reply_seen;
        if all & SEEN_RST != 0 {
            TcpState::Close
        } else if orig_seen & SEEN_FIN != 0 && reply_seen & SEEN_FIN != 0 {
            TcpState::TimeWait
        } else if all & SEEN_FIN != 0 {
            TcpState::FinWait
        } else if reply_seen & SEEN_SYN != 0 && reply_seen & SEEN_ACK != 0 {
            TcpState::Established
        } else {
            TcpState::SynSent
        }
    }
}
