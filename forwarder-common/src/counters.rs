//! Counter layouts and indices.

/// A packet/byte pair. Kept per CPU; readers sum the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Where in the kernel a packet was seen. Each attached interface has one
/// counter block per hook, so ingress, egress and XDP never double count.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TC (TCX) ingress: every packet the interface receives.
    TcIngress = 0,
    /// TC (TCX) egress: every packet the interface sends.
    TcEgress = 1,
    /// XDP: packets seen by the XDP accelerator before TC.
    Xdp = 2,
}

pub const HOOKS: u32 = 3;

impl Hook {
    pub const ALL: [Hook; HOOKS as usize] = [Hook::TcIngress, Hook::TcEgress, Hook::Xdp];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
            Hook::Xdp => "xdp",
        }
    }
}

/// What the dataplane did with a packet, counted per interface and hook.
///
/// `Pass*` reasons leave the packet untouched (to the stack, the next TCX
/// program, or from XDP on to TC), `Drop*` reasons drop it, `Fwd*` reasons
/// translated it, `Reply*` reasons turned it into an answer the router
/// sends back to its sender (it is not forwarded).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4 (ARP, IPv6, LLDP...): passed untouched. (IPv6 at TC is
    /// counted by the IPv6 programs under its own reason; XDP counts it as
    /// `PassIpv6ToTc`.)
    PassNotIpv4 = 0,
    /// IPv4 that matches no listener and no tracked flow: passed untouched.
    PassNoMatch = 1,
    /// A later IPv4 fragment whose first fragment was not seen (out of
    /// order, or a datagram of the host's own): passed untouched.
    PassFragment = 2,
    /// No longer counted: packets with IP options are translated like
    /// any other (the index stays so counters keep their places).
    PassIpOptions = 3,
    /// Truncated or inconsistent header at any layer: passed untouched so
    /// the stack applies (and counts) its own validation.
    PassMalformed = 4,
    /// Matches a listener but is not a flow start (TCP without SYN and no
    /// tracked flow), `reject = "drop"` or a RST: dropped. (With `reject =
    /// "rst"` it is answered: `reply_reset`.) Never handed to the stack,
    /// where a host service on the same port would take it.
    DropUntracked = 5,
    /// Translated and handed to the stack because the target's neighbour
    /// does not answer (FAILED): the stack's ARP, netfilter (a virtual
    /// target's PREROUTING DNAT) or its ICMP host unreachable take over.
    /// (Index 6 was `pass_ttl`, never counted under this ABI.)
    FwdStackNeighDead = 6,
    /// Source not in the rule's allow-list, `reject = "drop"`: dropped.
    DropDenied = 7,
    /// Connection table full: new flow refused, dropped.
    DropTableFull = 8,
    /// No free SNAT source port: dropped.
    DropNoPort = 9,
    /// Translated and redirected straight to the egress interface.
    FwdRedirect = 10,
    /// Translated and handed to the stack (a virtual target such as a
    /// ClusterIP, a target behind a gateway, or a FIB answer we leave to it).
    FwdStack = 11,
    /// Checksum/helper failure after a match, or a first fragment too
    /// short for its ports (RFC 1858): dropped rather than mangled or left
    /// to the stack's reassembly.
    DropError = 12,
    /// XDP left an IPv6 packet to TC, whatever it was: the accelerator
    /// handles IPv4 only, NAT66 flows are translated by the TC programs.
    /// (Index 13 was `pass_denied`, never counted under this ABI: a denied
    /// source is answered or dropped, `reply_reset`, `drop_denied`.)
    PassIpv6ToTc = 13,
    /// A reply of a flow that went through the stack, translated back at
    /// egress of the listening interface.
    FwdEgress = 14,
    /// XDP left the packet to TC (first packets, anything unusual).
    PassToTc = 15,
    /// A packet of a tracked flow on an interface its direction does not
    /// arrive on (a flow is bound to the interfaces of its first packet and
    /// of the route to its target): passed untranslated.
    PassWrongIface = 16,
    /// A TCP RST or FIN outside the window the receiver advertised, or a
    /// SYN-ACK that does not acknowledge the SYN: dropped, the flow's state
    /// unchanged (see `conntrack`).
    DropOutOfWindow = 17,
    /// A new flow over its source's `new_flows_per_source` limit: dropped.
    DropRateLimited = 18,
    /// TTL would expire on forwarding: answered with ICMP time exceeded
    /// (11/0) built from the untranslated packet, sent back out of the
    /// interface it came in on.
    ReplyTimeExceeded = 19,
    /// Too big for the next hop (DF set, or a translated packet the stack
    /// cannot fragment): answered with ICMP fragmentation needed (3/4)
    /// carrying the next-hop MTU.
    ReplyFragNeeded = 20,
    /// A denied or refused datagram (`reject = "rst"`): answered with ICMP
    /// port unreachable (3/3).
    ReplyPortUnreach = 21,
    /// The target's neighbour is dead (FAILED) and the stack cannot deliver
    /// the packet (SNATed, a reply, an established redirected flow):
    /// answered with ICMP host unreachable (3/1).
    ReplyHostUnreach = 22,
    /// A denied SYN or an untracked segment for a forward's port
    /// (`reject = "rst"`): answered with a TCP RST.
    ReplyReset = 23,
}

/// Number of `Reason` values (size of one hook's counter block).
pub const REASONS: u32 = 24;

impl Reason {
    pub const ALL: [Reason; REASONS as usize] = [
        Reason::PassNotIpv4,
        Reason::PassNoMatch,
        Reason::PassFragment,
        Reason::PassIpOptions,
        Reason::PassMalformed,
        Reason::DropUntracked,
        Reason::FwdStackNeighDead,
        Reason::DropDenied,
        Reason::DropTableFull,
        Reason::DropNoPort,
        Reason::FwdRedirect,
        Reason::FwdStack,
        Reason::DropError,
        Reason::PassIpv6ToTc,
        Reason::FwdEgress,
        Reason::PassToTc,
        Reason::PassWrongIface,
        Reason::DropOutOfWindow,
        Reason::DropRateLimited,
        Reason::ReplyTimeExceeded,
        Reason::ReplyFragNeeded,
        Reason::ReplyPortUnreach,
        Reason::ReplyHostUnreach,
        Reason::ReplyReset,
    ];

    /// Stable snake_case name used by `status`, JSON and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIpv4 => "pass_not_ipv4",
            Reason::PassNoMatch => "pass_no_match",
            Reason::PassFragment => "pass_fragment",
            Reason::PassIpOptions => "pass_ip_options",
            Reason::PassMalformed => "pass_malformed",
            Reason::DropUntracked => "drop_untracked",
            Reason::FwdStackNeighDead => "fwd_stack_neigh_dead",
            Reason::DropDenied => "drop_denied",
            Reason::DropTableFull => "drop_table_full",
            Reason::DropNoPort => "drop_no_port",
            Reason::FwdRedirect => "fwd_redirect",
            Reason::FwdStack => "fwd_stack",
            Reason::DropError => "drop_error",
            Reason::PassIpv6ToTc => "pass_ipv6_to_tc",
            Reason::FwdEgress => "fwd_egress",
            Reason::PassToTc => "pass_to_tc",
            Reason::PassWrongIface => "pass_wrong_iface",
            Reason::DropOutOfWindow => "drop_out_of_window",
            Reason::DropRateLimited => "drop_rate_limited",
            Reason::ReplyTimeExceeded => "reply_time_exceeded",
            Reason::ReplyFragNeeded => "reply_frag_needed",
            Reason::ReplyPortUnreach => "reply_port_unreach",
            Reason::ReplyHostUnreach => "reply_host_unreach",
            Reason::ReplyReset => "reply_reset",
        }
    }
}

/// Index into the per-interface counter array.
#[inline(always)]
pub const fn iface_counter_index(slot: u32, hook: Hook, reason: Reason) -> u32 {
    (slot * HOOKS + hook as u32) * REASONS + reason as u32
}

/// Per-rule drop reasons, indices into `RuleCounters::drops`.
pub const RULE_DROP_DENIED: usize = 0;
pub const RULE_DROP_TABLE_FULL: usize = 1;
pub const RULE_DROP_NO_PORT: usize = 2;
pub const RULE_DROP_ERROR: usize = 3;
/// RST/FIN/SYN-ACK outside the window (`Reason::DropOutOfWindow`).
pub const RULE_DROP_OUT_OF_WINDOW: usize = 4;
/// New flow over the per-source limit (`Reason::DropRateLimited`).
pub const RULE_DROP_RATE_LIMITED: usize = 5;
/// Not a packet: a flow of this rule evicted from a full table to make
/// room for a new one (it was unassured, closing or expired).
pub const RULE_DROP_EVICTED: usize = 6;
pub const RULE_DROP_REASONS: u32 = 7;
pub const RULE_DROP_NAMES: [&str; RULE_DROP_REASONS as usize] = [
    "denied",
    "table_full",
    "no_port",
    "error",
    "out_of_window",
    "rate_limited",
    "evicted",
];

/// Per-rule counters, one array slot per rule id, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RuleCounters {
    /// Packets/bytes translated for this rule, both directions.
    pub packets: u64,
    pub bytes: u64,
    /// Flows created.
    pub new_flows: u64,
    /// Of those, flows whose source was rewritten (SNAT).
    pub snat_flows: u64,
    /// Of those, flows sent through the stack instead of redirected.
    pub stack_flows: u64,
    /// SYN/SYN-ACK packets whose MSS option was lowered.
    pub mss_clamped: u64,
    pub drops: [u64; RULE_DROP_REASONS as usize],
}
