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
/// Conntrack settings (`CtConfig`: timeouts, per-source limit).
pub const MAP_CT_CONFIG: &str = "FWD_CT_CONFIG";
/// Eviction candidates: original-direction keys of flows, oldest first
/// (a queue map; see `forwarder-ebpf/src/conntrack.rs`).
pub const MAP_CT_EVICT: &str = "FWD_CT_EVICT";
/// Per-source new-flow limit state (LRU, not pinned).
pub const MAP_SRC_LIMIT: &str = "FWD_SRC_LIMIT";
/// `snat = "auto"` evidence per backend (LRU, not pinned).
pub const MAP_AUTO_EVIDENCE: &str = "FWD_AUTO_EVIDENCE";

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
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowKey {
    /// Big-endian so the trie's bitwise prefix match covers it whole.
    pub rule_id_be: u32,
    pub addr: [u32; 4],
}

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

/// `FlowEntry::tcp_seen`: TCP flags this direction sent.
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
    /// `SEEN_*`: TCP flags this direction sent (who sent a FIN).
    pub tcp_seen: u8,
    /// Clamp the MSS option of SYN/SYN-ACK packets in this direction to
    /// this value (host order); 0: no clamping.
    pub mss: u16,
    pub _pad: [u8; 4],
    /// Connection state and this direction's TCP tracking.
    pub ct: FlowTrack,
}

/// The conntrack part of a `FlowEntry` (see `conntrack`): the state, kept
/// in both entries of a flow, and what this direction sent.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct FlowTrack {
    /// The interface packets of this direction arrive on (for replies of
    /// stack-path flows: the one they leave by, where the egress program
    /// sees them); 0: any. A packet of the flow arriving elsewhere is not
    /// translated.
    pub iface: u32,
    /// `conntrack::CtState` as u8.
    pub state: u8,
    /// `conntrack::CT_*`.
    pub ct_flags: u8,
    /// Window scale shift this direction announced (with `CT_WSCALE`).
    pub wscale: u8,
    pub _pad: u8,
    /// Highest sequence number + length (+1 for SYN and FIN) this direction
    /// sent, host order.
    pub seq_end: u32,
    /// Highest acknowledgement this direction sent (with `CT_ACK_SEEN`).
    pub max_ack: u32,
    /// Largest window this direction advertised, scaled.
    pub max_win: u32,
    pub _pad2: u32,
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

/// A DNAT-only flow of `snat = "auto"` whose client sends again (a
/// retransmitted SYN) at least this long after its first packet, with
/// nothing back from the backend, is one client's evidence that the
/// backend's replies bypass this host.
pub const AUTO_SNAT_PROBE_NS: u64 = 200 * 1_000_000;
/// The same for UDP, where the client's next datagram counts (DNS
/// resolvers retry after 1 s or more).
pub const AUTO_SNAT_PROBE_UDP_NS: u64 = 1_000_000_000;
/// Distinct clients whose flows must fail that way before a backend is
/// switched to SNAT, all within `AUTO_SNAT_WINDOW_NS` and with no answer
/// from the backend to any DNAT-only flow in between. One client cannot
/// steer the decision (a client the backend itself blocks would otherwise
/// get in with the host's address).
pub const AUTO_SNAT_CLIENTS: usize = 3;
pub const AUTO_SNAT_WINDOW_NS: u64 = 60 * 1_000_000_000;

/// `snat = "auto"` evidence about one backend (per rule), `FWD_AUTO_EVIDENCE`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct AutoEvidence {
    /// When the first failing client of this round was seen.
    pub first_ns: u64,
    /// When the backend last answered a DNAT-only flow (its SYN-ACK, the
    /// first reply of a UDP flow).
    pub answered_ns: u64,
    /// The failing clients so far (word 0 of their address).
    pub clients: [u32; AUTO_SNAT_CLIENTS],
    pub count: u32,
}

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
