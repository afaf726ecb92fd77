//! Counter layouts and indices.

/// A packet/byte pair. Kept per CPU; readers sum the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// What the dataplane did with a packet, counted per interface.
///
/// `Pass*` reasons hand the packet to the stack untouched, `Drop*` reasons
/// drop it, `Fwd*` reasons translated it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4 (ARP, IPv6, LLDP...): passed untouched.
    PassNotIpv4 = 0,
    /// IPv4 that matches no listener and no tracked flow: passed untouched.
    PassNoMatch = 1,
    /// IPv4 fragment: passed untouched (a non-first fragment has no ports).
    PassFragment = 2,
    /// IPv4 header with options: passed untouched.
    PassIpOptions = 3,
    /// Truncated or inconsistent header at any layer: passed untouched so
    /// the stack applies (and counts) its own validation.
    PassMalformed = 4,
    /// Matches a listener but is not a flow start (TCP without SYN and no
    /// tracked flow): passed so the stack answers it as for a closed port.
    PassUntracked = 5,
    /// TTL would expire on forwarding: passed so the stack sends ICMP.
    PassTtl = 6,
    /// Source not in the rule's allow-list: dropped.
    DropDenied = 7,
    /// Connection table full: new flow refused, dropped.
    DropTableFull = 8,
    /// No free SNAT source port: dropped.
    DropNoPort = 9,
    /// Translated and redirected straight to the egress interface.
    FwdRedirect = 10,
    /// Translated and handed to the stack (FIB fallback or virtual target).
    FwdStack = 11,
    /// Checksum/helper failure after a match: dropped rather than mangled.
    DropError = 12,
}

/// Number of `Reason` values (size of one interface's counter block).
pub const REASONS: u32 = 13;

impl Reason {
    pub const ALL: [Reason; REASONS as usize] = [
        Reason::PassNotIpv4,
        Reason::PassNoMatch,
        Reason::PassFragment,
        Reason::PassIpOptions,
        Reason::PassMalformed,
        Reason::PassUntracked,
        Reason::PassTtl,
        Reason::DropDenied,
        Reason::DropTableFull,
        Reason::DropNoPort,
        Reason::FwdRedirect,
        Reason::FwdStack,
        Reason::DropError,
    ];

    /// Stable snake_case name used by `status`, JSON and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIpv4 => "pass_not_ipv4",
            Reason::PassNoMatch => "pass_no_match",
            Reason::PassFragment => "pass_fragment",
            Reason::PassIpOptions => "pass_ip_options",
            Reason::PassMalformed => "pass_malformed",
            Reason::PassUntracked => "pass_untracked",
            Reason::PassTtl => "pass_ttl",
            Reason::DropDenied => "drop_denied",
            Reason::DropTableFull => "drop_table_full",
            Reason::DropNoPort => "drop_no_port",
            Reason::FwdRedirect => "fwd_redirect",
            Reason::FwdStack => "fwd_stack",
            Reason::DropError => "drop_error",
        }
    }
}

/// Index into the per-interface counter array.
#[inline(always)]
pub const fn iface_counter_index(slot: u32, reason: Reason) -> u32 {
    slot * REASONS + reason as u32
}

/// Per-rule drop reasons, indices into `RuleCounters::drops`.
pub const RULE_DROP_DENIED: usize = 0;
pub const RULE_DROP_TABLE_FULL: usize = 1;
pub const RULE_DROP_NO_PORT: usize = 2;
pub const RULE_DROP_ERROR: usize = 3;
pub const RULE_DROP_REASONS: u32 = 4;
pub const RULE_DROP_NAMES: [&str; RULE_DROP_REASONS as usize] =
    ["denied", "table_full", "no_port", "error"];

/// Per-rule counters, one array slot per rule id, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RuleCounters {
    /// Packets/bytes translated for this rule, both directions.
    pub packets: u64,
    pub bytes: u64,
    /// Flows created.
    pub new_flows: u64,
    pub drops: [u64; RULE_DROP_REASONS as usize],
}
