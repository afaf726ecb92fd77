//! Map key and value layouts, with the constructors that fill their
//! padding (a hash key must hash the same on both sides, and the verifier
//! rejects reads of uninitialised stack bytes): code outside this crate
//! builds keys through these, never with `_pad` literals.

use crate::{
    addr_v4_word, FibFlags, FlowFlags, IfaceFlags, ListenFlags, Seen, SnatMode, ABI_VERSION,
    AF_INET, AF_INET6, DEFAULT_SNAT_PORT_MAX, DEFAULT_SNAT_PORT_MIN,
};

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
    pub flags: IfaceFlags,
}

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

impl ListenerKey {
    /// An IPv4 listener: `addr` as the ABI stores it ([`crate::addr_v4`]),
    /// `port` in network byte order.
    #[inline(always)]
    pub const fn v4(addr: [u32; 4], ifindex: u32, port: u16, proto: u8) -> Self {
        ListenerKey {
            addr,
            ifindex,
            port,
            proto,
            family: AF_INET,
        }
    }

    /// An IPv6 listener: `addr` as the ABI stores it ([`crate::addr_v6`]).
    #[inline(always)]
    pub const fn v6(addr: [u32; 4], ifindex: u32, port: u16, proto: u8) -> Self {
        ListenerKey {
            addr,
            ifindex,
            port,
            proto,
            family: AF_INET6,
        }
    }
}

/// What a matching packet becomes.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ListenerValue {
    pub target_addr: [u32; 4],
    /// Source address for `SnatMode::FIXED`. A NAT64 listener
    /// (`ListenFlags::XLAT`, IPv4 target) also keeps in word 1 its pool
    /// source: the IPv4 address (not one of the host's) of flows to a
    /// target without a forwarding route, which go through the stack by
    /// the pool's device (`GlobalConfig::nat64_ifindex`); 0: none.
    pub snat_addr: [u32; 4],
    pub rule_id: u32,
    /// Network byte order.
    pub target_port: u16,
    pub snat_mode: SnatMode,
    pub flags: ListenFlags,
    /// MSS clamp value (host order) when `ListenFlags::MSS_CLAMP` is set.
    pub mss: u16,
    pub _pad: u16,
}

impl ListenerValue {
    /// A listener translating to `target_addr`:`target_port` (network byte
    /// order) for rule `rule_id`, without SNAT, flags or MSS clamp.
    #[inline(always)]
    pub const fn new(target_addr: [u32; 4], target_port: u16, rule_id: u32) -> Self {
        ListenerValue {
            target_addr,
            snat_addr: [0; 4],
            rule_id,
            target_port,
            snat_mode: SnatMode::OFF,
            flags: ListenFlags::empty(),
            mss: 0,
            _pad: 0,
        }
    }
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

impl AllowKey {
    /// The trie data for an IPv4 source `addr` (ABI form) of rule `rule_id`.
    #[inline(always)]
    pub const fn new(rule_id: u32, addr: [u32; 4]) -> Self {
        AllowKey {
            rule_id_be: rule_id.to_be(),
            addr,
        }
    }

    /// The trie data for an IPv6 source `addr` (ABI form) of rule
    /// `rule_id`: the id word carries `ALLOW_ID_V6`.
    #[inline(always)]
    pub const fn v6(rule_id: u32, addr: [u32; 4]) -> Self {
        AllowKey {
            rule_id_be: (rule_id | ALLOW_ID_V6).to_be(),
            addr,
        }
    }
}

/// Set in `AllowKey::rule_id_be` (before the byte swap) for IPv6 entries;
/// rule ids stay below `MAX_RULES`, far under this bit.
pub const ALLOW_ID_V6: u32 = 1 << 31;

/// The LPM trie prefix length that matches exactly one IPv4 source of one
/// rule: 32 bits of rule id and 32 of address.
pub const ALLOW_EXACT_V4_PREFIX: u32 = 64;
/// The same for one IPv6 source: 32 bits of id and 128 of address.
pub const ALLOW_EXACT_V6_PREFIX: u32 = 160;

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
    /// An IPv4 flow key from words as they sit in the packet (network byte
    /// order), like [`addr_v4_word`]; ports in network byte order too.
    #[inline(always)]
    pub const fn v4(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> Self {
        FlowKey {
            src: addr_v4_word(src),
            dst: addr_v4_word(dst),
            sport,
            dport,
            proto,
            family: AF_INET,
            _pad: [0; 2],
        }
    }

    /// The key of the opposite direction for a packet that, after the
    /// translation of `entry`, leaves with that entry's new tuple: of the
    /// other family than `family` for a NAT64 flow (`FlowFlags::XLAT`).
    #[inline(always)]
    pub fn peer_of(entry: &FlowEntry, proto: u8, family: u8) -> FlowKey {
        let family = match (entry.flags.contains(FlowFlags::XLAT), family) {
            (false, f) => f,
            (true, AF_INET6) => AF_INET,
            (true, _) => AF_INET6,
        };
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
    pub flags: FlowFlags,
    /// TCP flags this direction sent (who sent a FIN).
    pub tcp_seen: Seen,
    /// Clamp the MSS option of SYN/SYN-ACK packets in this direction to
    /// this value (host order); 0: no clamping.
    pub mss: u16,
    pub _pad: [u8; 4],
    /// Connection state and this direction's TCP tracking.
    pub ct: FlowTrack,
    /// Where the last FIB lookup sent this direction (issue 19).
    pub fib: FibCache,
}

/// A flow direction's forwarding decision, kept so that its packets skip
/// the FIB lookup: valid while `oif` is set and `gen` equals the route
/// generation (`MAP_ROUTE_GEN`), which the daemon bumps on every link,
/// address, route, rule or neighbour change it hears of over rtnetlink.
/// The fact a reader gets wrong: the cache never decides anything the FIB
/// did not, it only remembers an answer until the routing may have
/// changed; an entry from before the last bump is looked up again.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct FibCache {
    /// Egress interface; 0: nothing cached.
    pub oif: u32,
    /// Next hop (IPv4 word, network order): the destination when on-link,
    /// else the gateway.
    pub nexthop: u32,
    /// The route generation this answer belongs to.
    pub gen: u32,
    /// The route's MTU (bpf_fib_lookup's `mtu_result`).
    pub mtu: u16,
    /// Facts about `oif` and `nexthop` read with the lookup.
    pub flags: FibFlags,
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
    /// The interface this direction's packets leave by, as decided when
    /// the flow was created (the other direction's arrival interface for a
    /// reply, the route's for the original): the egress of a next hop
    /// whose neighbour is unresolved on a kernel whose FIB lookup then
    /// says none (no SKIP_NEIGH, before 6.3; `forwarder_common::kernel`).
    /// 0: not known (IPv6 flows, flows from before it existed).
    pub out_iface: u32,
}

impl FlowEntry {
    /// Resets every field for a fresh flow rewriting to the given tuple
    /// (words and ports in network byte order), with no flags, no TCP flags
    /// seen, no MSS clamp and zero counts. In place, field by field: the
    /// kernel builds entries in per-CPU scratch slots that still hold the
    /// previous flow's entry, and a struct literal would be built on the
    /// 512-byte stack first. A field added to `FlowEntry` must be reset
    /// here (the unit test of this crate catches a forgotten one).
    #[inline(always)]
    pub fn reset_v4(
        &mut self,
        new_src: u32,
        new_dst: u32,
        new_sport: u16,
        new_dport: u16,
        rule_id: u32,
        now_ns: u64,
    ) {
        self.new_src = addr_v4_word(new_src);
        self.new_dst = addr_v4_word(new_dst);
        self.new_sport = new_sport;
        self.new_dport = new_dport;
        self.rule_id = rule_id;
        self.created_ns = now_ns;
        self.last_seen_ns = now_ns;
        self.packets = 0;
        self.bytes = 0;
        self.flags = FlowFlags::empty();
        self.tcp_seen = Seen::empty();
        self.mss = 0;
        self._pad = [0; 4];
        self.ct = FlowTrack::default();
        self.fib = FibCache::default();
    }
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

impl AutoSnatKey {
    /// The learning of backend `target` (a packet word, network byte order)
    /// for rule `rule_id`.
    #[inline(always)]
    pub const fn v4(rule_id: u32, target: u32) -> Self {
        AutoSnatKey {
            rule_id,
            addr: addr_v4_word(target),
        }
    }
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

/// The NAT64 pool's device: a dummy link the daemon creates when a NAT64
/// forward's target may need the stack (an IPv4 ClusterIP that only
/// kube-proxy's DNAT reaches), with a route to each pool address through
/// it, so the target's replies to the pool leave by it, where the egress
/// program translates them back to IPv6. It outlives the daemon, as the
/// pins do.
pub const NAT64_DEV: &str = "fwd64";
/// The default NAT64 pool source: 192.0.0.2, in the IPv4 Service
/// Continuity Prefix 192.0.0.0/29 (RFC 7335), which no host owns.
pub const NAT64_POOL_DEFAULT: [u8; 4] = [192, 0, 0, 2];

/// Global knobs, index 0 of `FWD_CONFIG`; userspace may update them live.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct GlobalConfig {
    pub abi_version: u32,
    /// SNAT source port range (host order, inclusive).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    pub flags: u32,
    /// The NAT64 pool's device (`NAT64_DEV`, a dummy the daemon owns);
    /// 0: none, and NAT64 flows only the stack could deliver pass
    /// untranslated (see `ListenerValue::snat_addr`).
    pub nat64_ifindex: u32,
}

impl GlobalConfig {
    /// The knobs of this ABI version with SNAT source ports
    /// `snat_port_min..=snat_port_max` (host order).
    #[inline(always)]
    pub const fn new(snat_port_min: u16, snat_port_max: u16) -> Self {
        GlobalConfig {
            abi_version: ABI_VERSION,
            snat_port_min,
            snat_port_max,
            flags: 0,
            nat64_ifindex: 0,
        }
    }

    /// What a fresh dataplane starts with (the rules file's defaults).
    pub const DEFAULT: GlobalConfig =
        GlobalConfig::new(DEFAULT_SNAT_PORT_MIN, DEFAULT_SNAT_PORT_MAX);
}
