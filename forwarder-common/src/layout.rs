//! Every map and program name, every size default, and the layout table
//! the daemon checks pinned maps against before it adopts them.
//!
//! The kernel side cannot use these names in `#[map(name = ...)]` (the
//! macro takes a literal), so the table is enforced from the other end: a
//! test in `forwarder` parses the built object and fails on any map that is
//! missing here, listed here but absent there, or of another type, key size,
//! value size or size. Changing a pinned map's row (or a struct it names)
//! changes what a running system has pinned: bump `ABI_VERSION`.
//!
//! The one fact a reader gets wrong: a pinned map keeps the size it was
//! created with across daemon restarts and upgrades. Only arrays indexed by
//! a slot or a rule id ([`Capacity::Fixed`]) must match exactly; the others
//! are limits, and the flow table's size is chosen at load
//! ([`Capacity::Flows`]) and kept until `forwarder down`.

use core::mem::{offset_of, size_of};

use crate::{
    conntrack::CtConfig, AllowKey, AutoEvidence, AutoSnatKey, Counter, FlowEntry, FlowKey,
    GlobalConfig, IfaceConfig, ListenerKey, ListenerValue, RuleCounters, RuleName, HOOKS, REASONS,
};

// ---- Program names (the entry points' function names). ----

/// TC (TCX) ingress, on every interface a forward uses.
pub const PROG_INGRESS: &str = "fwd_ingress";
/// TC (TCX) egress, where replies of stack-path flows leave.
pub const PROG_EGRESS: &str = "fwd_egress";
/// The XDP accelerator, on NICs with native XDP.
pub const PROG_XDP: &str = "fwd_xdp";
/// IPv6 at TC ingress: never attached, `fwd_ingress` tail-calls it
/// through `FWD_PROGS` (verified on its own: inlined it would add its
/// whole pipeline to fwd_ingress's verifier budget and 512-byte stack).
pub const PROG_INGRESS6: &str = "fwd_ingress6";
/// `FWD_PROGS`' slot of `fwd_ingress6`.
pub const PROG_SLOT_IPV6: u32 = 0;

// ---- Map names (also the pin file names under the pin directory). ----

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
/// (a queue map; see `forwarder-ebpf/src/evict.rs`).
pub const MAP_CT_EVICT: &str = "FWD_CT_EVICT";
/// The route generation (`u32`, slot 0): bumped by the daemon on every
/// rtnetlink link/address/route/rule/neighbour event; a flow's cached FIB
/// answer (`FlowEntry::fib`) of another generation is looked up again.
/// Pinned, so that a restarted daemon continues the count (it bumps it on
/// start: it cannot know what changed while it was away).
pub const MAP_ROUTE_GEN: &str = "FWD_ROUTE_GEN";
/// Per-CPU room for the keys an eviction looks at.
pub const MAP_CT_KEYS: &str = "FWD_CT_KEYS";
/// Per-CPU room for the two keys of a flow being created.
pub const MAP_KEY_SCRATCH: &str = "FWD_KEY_SCRATCH";
/// Per-CPU room for the SNAT port range of a flow being created.
pub const MAP_PORT_PLAN: &str = "FWD_PORT_PLAN";
/// `FWD_PORT_PLAN`'s value: min, span, the client's port if kept, pad.
pub const PORT_PLAN_SIZE: u32 = 16;
/// Per-source new-flow limit state (LRU, not pinned).
pub const MAP_SRC_LIMIT: &str = "FWD_SRC_LIMIT";
/// `snat = "auto"` evidence per backend (LRU, not pinned).
pub const MAP_AUTO_EVIDENCE: &str = "FWD_AUTO_EVIDENCE";
/// Per-CPU room for building the two entries of a new flow.
pub const MAP_FLOW_SCRATCH: &str = "FWD_SCRATCH";
/// Per-CPU room for the FIB lookup parameters (TC and XDP share it: a
/// program runs to completion on its CPU, so one slot serves both).
pub const MAP_FIB_SCRATCH: &str = "FWD_FIB_SCRATCH";
/// Per-CPU room for the TCP options of a SYN whose MSS may be clamped.
pub const MAP_MSS_SCRATCH: &str = "FWD_MSS_SCRATCH";
/// Programs `fwd_ingress` tail-calls (`PROG_SLOT_*`), filled at load.
pub const MAP_PROGS: &str = "FWD_PROGS";
/// Per-CPU room for a parsed IPv6 packet (TC ingress): on the stack it
/// would not fit the 512 bytes the call chain may use.
pub const MAP_PKT6_SCRATCH: &str = "FWD_PKT6_SCRATCH";
/// The size of one `FWD_PKT6_SCRATCH` slot (the kernel's `Packet6`, which
/// asserts it).
pub const PKT6_SCRATCH_SIZE: u32 = 72;
/// The XDP accelerator's redirect targets (ifindex -> ifindex).
pub const MAP_XDP_DEVS: &str = "FWD_XDP_DEVS";
/// First fragments' ports, for their later fragments (kernel-only, LRU).
pub const MAP_FRAGS: &str = "FWD_FRAGS";
/// Per-CPU room to build an answer (ICMP error, TCP reset) in.
pub const MAP_REPLY_SCRATCH: &str = "FWD_REPLY_SCRATCH";
/// Targets whose neighbour does not answer (IPv4 address word -> `NeighFlags`
/// bits), written by the daemon from the kernel's neighbour table
/// (`daemon::plan::neighbours`); not pinned: each daemon rebuilds it.
pub const MAP_NEIGH: &str = "FWD_NEIGH";
/// Route facts of the IPv4 targets (address word -> `RouteHint`) for
/// kernels whose FIB lookup lacks SKIP_NEIGH or SRC (`kernel.rs`), written
/// by the daemon from `ip route get`; not pinned: each daemon rebuilds it.
pub const MAP_ROUTE_HINTS: &str = "FWD_ROUTE_HINTS";
/// aya-log's ring buffer (defined by aya-log-ebpf, drained by aya-log).
pub const MAP_AYA_LOGS: &str = "AYA_LOGS";

/// Subdirectory of the pin directory holding the program links.
pub const PIN_LINKS_DIR: &str = "links";
/// Subdirectory of the pin directory with the markers of legacy TC
/// attachment (clsact + cls_bpf filters, which cannot be pinned).
pub const PIN_TC_DIR: &str = "tc";

// ---- Sizes. ----

/// Maximum number of interfaces the dataplane keeps counters for.
pub const MAX_IFACES: u32 = 64;
/// Maximum number of rules (size of the per-rule counter array).
pub const MAX_RULES: u32 = 1024;
/// Maximum number of listener entries (one per address x protocol x port).
pub const MAX_LISTENERS: u32 = 262_144;
/// Maximum number of allow-list prefixes over all rules.
pub const MAX_ALLOW_PREFIXES: u32 = 16_384;
/// Backends remembered by `snat = "auto"` learning (LRU).
pub const MAX_AUTO_SNAT: u32 = 4096;
/// Flow-table entries per tracked flow: one per direction.
pub const ENTRIES_PER_FLOW: u32 = 2;
/// Flows the table holds when the rules file does not say
/// (`[global] conntrack_max`): netfilter's `nf_conntrack_max` on a host
/// with 1 to 4 GiB of RAM (a larger host gets 262,144, a smaller one
/// less). netfilter allocates an entry when a connection starts, so its
/// limit costs nothing until it is used; this table is preallocated
/// (a flood must not find the kernel short of memory mid-packet), so its
/// limit is paid at load: about 28 MiB here, 112 MiB at 262,144. A handful
/// of port forwards rarely holds more than a few thousand flows; a host
/// that needs more says so with `conntrack_max` (docs/rules.md, "Sizing").
pub const DEFAULT_CONNTRACK_MAX: u32 = 65_536;
/// Flow-table entries the daemon's sweeper reads per step (one step a
/// second): its CPU and memory are bounded by this, not by the table's
/// size (issue 19). Here because the benchmark report states it.
pub const SWEEP_STEP_ENTRIES: usize = 16_384;
/// Flows of a private (unpinned) dataplane when its loader does not say:
/// BPF_PROG_TEST_RUN tests and benchmarks, which need no production table.
pub const PRIVATE_CONNTRACK_MAX: u32 = 65_536;
/// Flows of the table per source the per-source limit remembers (an LRU:
/// a source pushed out starts with a fresh allowance). A source's state
/// matters only until its allowance has refilled (`new_flows_burst` over
/// the rate: two seconds at "20/s"); forgetting it later changes nothing.
/// Real clients each hold several flows; a crowd of distinct sources
/// opening flows within seconds is a spoofed flood, which eviction, not
/// this limit, is for.
pub const FLOWS_PER_RATE_SOURCE: u32 = 4;
/// The per-source limit's LRU never holds fewer sources than this.
pub const MIN_RATE_SOURCES: u32 = 1024;

/// Sources the per-source limit remembers for a table of `conntrack_max`
/// flows.
pub const fn rate_sources(conntrack_max: u32) -> u32 {
    let n = conntrack_max / FLOWS_PER_RATE_SOURCE;
    if n < MIN_RATE_SOURCES {
        MIN_RATE_SOURCES
    } else {
        n
    }
}

/// The per-source LRU's size in the object (a daemon sizes it at load).
pub const DEFAULT_RATE_SOURCES: u32 = rate_sources(DEFAULT_CONNTRACK_MAX);
/// SNAT source ports when the rules file does not say (`[global]
/// snat_ports`), inclusive, host order; also what the kernel uses while
/// `FWD_CONFIG` holds no range. All of 1024-32767: below Linux's default
/// ephemeral range (`ip_local_port_range`, 32768-60999), from which the
/// host picks ports for its own connections; a SNAT port there could
/// collide with one of them and hijack its replies.
pub const DEFAULT_SNAT_PORT_MIN: u16 = 1024;
pub const DEFAULT_SNAT_PORT_MAX: u16 = 32_767;
/// aya-log-ebpf's ring buffer size in bytes (its `AYA_LOGS` definition).
pub const AYA_LOGS_BYTES: u32 = 1 << 17;
/// `struct bpf_fib_lookup` (include/uapi/linux/bpf.h), the value of the FIB
/// scratch maps.
pub const FIB_LOOKUP_PARAMS_SIZE: u32 = 64;
/// `FWD_MSS_SCRATCH`'s value: the at most 40 option bytes of a TCP header,
/// and room for what a walk step reads past the last byte it checks.
pub const MSS_SCRATCH_SIZE: u32 = 64;
/// `struct bpf_devmap_val` (ifindex + program fd), a devmap's value.
pub const DEVMAP_VAL_SIZE: u32 = 8;
/// Dead neighbours the kernel is told about at once (`FWD_NEIGH`): only
/// on-link targets of the rules are followed, so this bounds targets that
/// are down at the same time, not the neighbour table.
pub const MAX_NEIGH: u32 = 1024;
/// IPv4 targets with route facts at once (`FWD_ROUTE_HINTS`).
pub const MAX_ROUTE_HINTS: u32 = 4096;
/// Fragmented datagrams in flight at once (the fragment map's LRU size).
/// An entry lives for microseconds to milliseconds in practice; an LRU of
/// this size only loses one under a flood of fragments, which then pass
/// to the stack.
pub const MAX_FRAGMENTED: u32 = 8192;
/// The fragment map's key (source, destination, IP id, protocol) and value
/// (ports, when seen): kernel-only, defined in forwarder-ebpf's `frag`.
pub const FRAG_KEY_SIZE: u32 = 12;
pub const FRAG_PORTS_SIZE: u32 = 16;
/// The answer scratch: IPv4 + ICMP headers, the quote (an IPv4 header
/// with options, 8 bytes after it), then two link addresses
/// (forwarder-ebpf's `reply`).
pub const REPLY_SCRATCH_SIZE: u32 = 20 + 8 + (60 + 8) + 12;
/// `BPF_F_NO_PREALLOC` (include/uapi/linux/bpf.h): a hash map allocates an
/// element when it is written instead of all of them at creation. LPM
/// tries always carry it (the kernel requires it; aya-ebpf adds it).
pub const BPF_F_NO_PREALLOC: u32 = 1;

// ---- The layout table. ----

/// BPF map types the dataplane uses (`enum bpf_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    ProgArray = 3,
    PerCpuArray = 6,
    LruHash = 9,
    LpmTrie = 11,
    Queue = 22,
    DevMapHash = 25,
    RingBuf = 27,
}

impl MapKind {
    pub const fn bpf_map_type(self) -> u32 {
        self as u32
    }
}

/// What sets a map's number of entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// An index space (interface slots x hooks x reasons, rule ids): part of
    /// the layout, a pinned map of another size is refused.
    Fixed(u32),
    /// A limit compiled into the object; a pinned map keeps its own.
    Limit(u32),
    /// The flow table: `ENTRIES_PER_FLOW` x `conntrack_max`, set at load;
    /// the object carries `ENTRIES_PER_FLOW` x `DEFAULT_CONNTRACK_MAX`.
    Flows,
    /// One slot per flow (`conntrack_max`, set at load like the flow
    /// table); the object carries `DEFAULT_CONNTRACK_MAX`.
    PerFlow,
    /// The per-source limit's sources: [`rate_sources`] of `conntrack_max`,
    /// set at load; the object carries [`DEFAULT_RATE_SOURCES`].
    RateSources,
}

impl Capacity {
    /// max_entries as compiled into the object.
    pub const fn in_object(self) -> u32 {
        self.at_load(DEFAULT_CONNTRACK_MAX)
    }

    /// max_entries of a map a daemon creates for `conntrack_max` flows:
    /// what the loader asks for and what `check` prices.
    pub const fn at_load(self, conntrack_max: u32) -> u32 {
        let flows = if conntrack_max == 0 { 1 } else { conntrack_max };
        match self {
            Capacity::Fixed(n) | Capacity::Limit(n) => n,
            Capacity::Flows => flows.saturating_mul(ENTRIES_PER_FLOW),
            Capacity::PerFlow => flows,
            Capacity::RateSources => rate_sources(flows),
        }
    }

    /// Whether the loader sets this map's size from `conntrack_max`.
    pub const fn follows_conntrack_max(self) -> bool {
        matches!(
            self,
            Capacity::Flows | Capacity::PerFlow | Capacity::RateSources
        )
    }
}

/// One map of the kernel object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    pub capacity: Capacity,
    /// `map_flags` as compiled into the object (`BPF_F_NO_PREALLOC` or 0).
    /// A pinned map keeps the flags it was created with, like its size.
    pub flags: u32,
    /// Pinned under the pin directory and adopted by the next daemon.
    /// Unpinned maps are per-load: scratch space, or state each daemon
    /// rebuilds before it uses it.
    pub pinned: bool,
}

const fn spec(
    name: &'static str,
    kind: MapKind,
    key_size: usize,
    value_size: usize,
    capacity: Capacity,
    pinned: bool,
) -> MapSpec {
    MapSpec {
        name,
        kind,
        key_size: key_size as u32,
        value_size: value_size as u32,
        capacity,
        flags: 0,
        pinned,
    }
}

impl MapSpec {
    /// The same row, created with `BPF_F_NO_PREALLOC`.
    const fn no_prealloc(self) -> MapSpec {
        MapSpec {
            flags: BPF_F_NO_PREALLOC,
            ..self
        }
    }
}

/// LPM trie keys carry the prefix length (u32) in front of the data.
const LPM_PREFIX_LEN_SIZE: usize = 4;

/// Every map of the kernel object. ARCHITECTURE.md's map table says who
/// writes and reads each.
pub const MAPS: &[MapSpec] = &[
    spec(
        MAP_IFACES,
        MapKind::Hash,
        size_of::<u32>(),
        size_of::<IfaceConfig>(),
        Capacity::Limit(MAX_IFACES),
        true,
    ),
    spec(
        MAP_IFACE_COUNTERS,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        size_of::<Counter>(),
        Capacity::Fixed(MAX_IFACES * HOOKS * REASONS),
        true,
    ),
    // Not preallocated: the limit is for the largest files, while a
    // handful of forwards uses a few dozen entries. Preallocated, its
    // 262144 elements took 34 MiB at creation; allocated as written, it
    // costs its buckets (4 MiB) and 128 B per entry in use. Lookups are the
    // same hash walk; only writes allocate, and the map is written only on
    // loads and interface changes, never on the packet path.
    spec(
        MAP_LISTENERS,
        MapKind::Hash,
        size_of::<ListenerKey>(),
        size_of::<ListenerValue>(),
        Capacity::Limit(MAX_LISTENERS),
        true,
    )
    .no_prealloc(),
    spec(
        MAP_ALLOW,
        MapKind::LpmTrie,
        LPM_PREFIX_LEN_SIZE + size_of::<AllowKey>(),
        size_of::<u8>(),
        Capacity::Limit(MAX_ALLOW_PREFIXES),
        true,
    )
    .no_prealloc(),
    spec(
        MAP_RULE_COUNTERS,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        size_of::<RuleCounters>(),
        Capacity::Fixed(MAX_RULES),
        true,
    ),
    spec(
        MAP_FLOWS,
        MapKind::Hash,
        size_of::<FlowKey>(),
        size_of::<FlowEntry>(),
        Capacity::Flows,
        true,
    ),
    spec(
        MAP_CONFIG,
        MapKind::Array,
        size_of::<u32>(),
        size_of::<GlobalConfig>(),
        Capacity::Fixed(1),
        true,
    ),
    spec(
        MAP_AUTO_SNAT,
        MapKind::LruHash,
        size_of::<AutoSnatKey>(),
        size_of::<u64>(),
        Capacity::Limit(MAX_AUTO_SNAT),
        true,
    ),
    spec(
        MAP_RULE_NAMES,
        MapKind::Array,
        size_of::<u32>(),
        size_of::<RuleName>(),
        Capacity::Fixed(MAX_RULES),
        true,
    ),
    spec(
        MAP_CT_CONFIG,
        MapKind::Array,
        size_of::<u32>(),
        size_of::<CtConfig>(),
        Capacity::Fixed(1),
        true,
    ),
    spec(
        MAP_ROUTE_GEN,
        MapKind::Array,
        size_of::<u32>(),
        size_of::<u32>(),
        Capacity::Fixed(1),
        true,
    ),
    spec(
        MAP_CT_EVICT,
        MapKind::Queue,
        // A queue map has no key.
        0,
        size_of::<FlowKey>(),
        Capacity::PerFlow,
        true,
    ),
    spec(
        MAP_CT_KEYS,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        size_of::<FlowKey>(),
        Capacity::Fixed(2),
        false,
    ),
    spec(
        MAP_KEY_SCRATCH,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        size_of::<FlowKey>(),
        // Slot 0: the reply key, slot 1: the original.
        Capacity::Fixed(2),
        false,
    ),
    spec(
        MAP_PORT_PLAN,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        PORT_PLAN_SIZE as usize,
        Capacity::Fixed(1),
        false,
    ),
    spec(
        MAP_SRC_LIMIT,
        MapKind::LruHash,
        size_of::<[u32; 4]>(),
        size_of::<u64>(),
        Capacity::RateSources,
        false,
    ),
    spec(
        MAP_AUTO_EVIDENCE,
        MapKind::LruHash,
        size_of::<AutoSnatKey>(),
        size_of::<AutoEvidence>(),
        Capacity::Limit(MAX_AUTO_SNAT),
        false,
    ),
    spec(
        MAP_FLOW_SCRATCH,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        size_of::<FlowEntry>(),
        // Slot 0: the reply entry, slot 1: the original.
        Capacity::Fixed(2),
        false,
    ),
    spec(
        MAP_FIB_SCRATCH,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        FIB_LOOKUP_PARAMS_SIZE as usize,
        Capacity::Fixed(1),
        false,
    ),
    spec(
        MAP_MSS_SCRATCH,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        MSS_SCRATCH_SIZE as usize,
        Capacity::Fixed(1),
        false,
    ),
    spec(
        MAP_PROGS,
        MapKind::ProgArray,
        size_of::<u32>(),
        size_of::<u32>(),
        Capacity::Fixed(1),
        false,
    ),
    spec(
        MAP_PKT6_SCRATCH,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        PKT6_SCRATCH_SIZE as usize,
        Capacity::Fixed(1),
        false,
    ),
    spec(
        MAP_XDP_DEVS,
        MapKind::DevMapHash,
        size_of::<u32>(),
        DEVMAP_VAL_SIZE as usize,
        Capacity::Limit(MAX_IFACES),
        false,
    ),
    spec(
        MAP_FRAGS,
        MapKind::LruHash,
        FRAG_KEY_SIZE as usize,
        FRAG_PORTS_SIZE as usize,
        Capacity::Limit(MAX_FRAGMENTED),
        false,
    ),
    spec(
        MAP_REPLY_SCRATCH,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        REPLY_SCRATCH_SIZE as usize,
        Capacity::Fixed(1),
        false,
    ),
    spec(
        MAP_NEIGH,
        MapKind::Hash,
        size_of::<u32>(),
        size_of::<u32>(),
        Capacity::Limit(MAX_NEIGH),
        false,
    ),
    spec(
        MAP_ROUTE_HINTS,
        MapKind::Hash,
        size_of::<u32>(),
        size_of::<crate::RouteHint>(),
        Capacity::Limit(MAX_ROUTE_HINTS),
        false,
    ),
    spec(
        MAP_AYA_LOGS,
        MapKind::RingBuf,
        0,
        0,
        Capacity::Fixed(AYA_LOGS_BYTES),
        false,
    ),
];

/// The row of the map called `name`.
pub fn map_spec(name: &str) -> Option<&'static MapSpec> {
    MAPS.iter().find(|m| m.name.as_bytes() == name.as_bytes())
}

/// The maps a daemon pins and the next one adopts.
pub fn pinned_maps() -> impl Iterator<Item = &'static MapSpec> {
    MAPS.iter().filter(|m| m.pinned)
}

// ---- Field offsets of the shared structs. ----
//
// Checked at compile time on both sides: the kernel object and userspace
// agree on every field's place, and a field moved by accident (or a field
// added without an ABI bump) stops the build here rather than misreading
// live maps. The sizes are pinned in the tests of lib.rs.

const _: () = {
    use crate::FlowTrack;
    assert!(offset_of!(IfaceConfig, slot) == 0);
    assert!(offset_of!(IfaceConfig, flags) == 4);

    assert!(offset_of!(ListenerKey, addr) == 0);
    assert!(offset_of!(ListenerKey, ifindex) == 16);
    assert!(offset_of!(ListenerKey, port) == 20);
    assert!(offset_of!(ListenerKey, proto) == 22);
    assert!(offset_of!(ListenerKey, family) == 23);

    assert!(offset_of!(ListenerValue, target_addr) == 0);
    assert!(offset_of!(ListenerValue, snat_addr) == 16);
    assert!(offset_of!(ListenerValue, rule_id) == 32);
    assert!(offset_of!(ListenerValue, target_port) == 36);
    assert!(offset_of!(ListenerValue, snat_mode) == 38);
    assert!(offset_of!(ListenerValue, flags) == 39);
    assert!(offset_of!(ListenerValue, mss) == 40);

    assert!(offset_of!(AllowKey, rule_id_be) == 0);
    assert!(offset_of!(AllowKey, addr) == 4);

    assert!(offset_of!(FlowKey, src) == 0);
    assert!(offset_of!(FlowKey, dst) == 16);
    assert!(offset_of!(FlowKey, sport) == 32);
    assert!(offset_of!(FlowKey, dport) == 34);
    assert!(offset_of!(FlowKey, proto) == 36);
    assert!(offset_of!(FlowKey, family) == 37);

    assert!(offset_of!(FlowEntry, new_src) == 0);
    assert!(offset_of!(FlowEntry, new_dst) == 16);
    assert!(offset_of!(FlowEntry, new_sport) == 32);
    assert!(offset_of!(FlowEntry, new_dport) == 34);
    assert!(offset_of!(FlowEntry, rule_id) == 36);
    assert!(offset_of!(FlowEntry, created_ns) == 40);
    assert!(offset_of!(FlowEntry, last_seen_ns) == 48);
    assert!(offset_of!(FlowEntry, packets) == 56);
    assert!(offset_of!(FlowEntry, bytes) == 64);
    assert!(offset_of!(FlowEntry, flags) == 72);
    assert!(offset_of!(FlowEntry, tcp_seen) == 73);
    assert!(offset_of!(FlowEntry, mss) == 74);
    assert!(offset_of!(FlowEntry, ct) == 80);

    assert!(offset_of!(FlowTrack, iface) == 0);
    assert!(offset_of!(FlowTrack, state) == 4);
    assert!(offset_of!(FlowTrack, ct_flags) == 5);
    assert!(offset_of!(FlowTrack, wscale) == 6);
    assert!(offset_of!(FlowTrack, seq_end) == 8);
    assert!(offset_of!(FlowTrack, max_ack) == 12);
    assert!(offset_of!(FlowTrack, max_win) == 16);

    assert!(offset_of!(AutoSnatKey, rule_id) == 0);
    assert!(offset_of!(AutoSnatKey, addr) == 4);

    assert!(offset_of!(GlobalConfig, abi_version) == 0);
    assert!(offset_of!(GlobalConfig, snat_port_min) == 4);
    assert!(offset_of!(GlobalConfig, snat_port_max) == 6);
    assert!(offset_of!(GlobalConfig, flags) == 8);

    assert!(offset_of!(Counter, packets) == 0);
    assert!(offset_of!(Counter, bytes) == 8);

    assert!(offset_of!(RuleCounters, packets) == 0);
    assert!(offset_of!(RuleCounters, bytes) == 8);
    assert!(offset_of!(RuleCounters, new_flows) == 16);
    assert!(offset_of!(RuleCounters, snat_flows) == 24);
    assert!(offset_of!(RuleCounters, stack_flows) == 32);
    assert!(offset_of!(RuleCounters, mss_clamped) == 40);
    assert!(offset_of!(RuleCounters, drops) == 48);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, a) in MAPS.iter().enumerate() {
            for b in &MAPS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn bpffs_accepts_every_pinned_name() {
        // bpffs refuses dots; the kernel truncates map names to 15 bytes.
        for m in pinned_maps() {
            assert!(!m.name.contains('.'), "{}", m.name);
            assert!(m.name.len() < 16, "{}", m.name);
        }
    }

    #[test]
    fn lookup_by_name() {
        assert_eq!(map_spec(MAP_FLOWS).unwrap().capacity, Capacity::Flows);
        assert!(map_spec("nope").is_none());
        assert_eq!(pinned_maps().count(), 12);
    }
}
