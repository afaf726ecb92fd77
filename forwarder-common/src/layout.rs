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
//!
//! The names are in `names`, the size defaults in `sizes` (both re-exported
//! here), the compile-time field offset checks in `offsets`; this file holds
//! the table.

mod names;
mod offsets;
mod sizes;

use core::mem::size_of;

pub use names::*;
pub use sizes::*;

use crate::{
    conntrack::CtConfig, AllowKey, AutoEvidence, AutoSnatKey, Counter, FlowEntry, FlowKey,
    GlobalConfig, IfaceConfig, ListenerKey, ListenerValue, RuleCounters, RuleName, HOOKS, REASONS,
};

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
        Capacity::Fixed(PROG_SLOTS),
        // Pinned although no state lives in it: the kernel empties a
        // program array when its last user reference goes, so a private
        // one empties when the daemon exits, and the still-attached
        // programs would pass IPv6 untranslated until the next one loads.
        true,
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
        MAP_DECISION6_SCRATCH,
        MapKind::PerCpuArray,
        size_of::<u32>(),
        DECISION6_SCRATCH_SIZE as usize,
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
        MAP_FRAGS6,
        MapKind::LruHash,
        FRAG6_KEY_SIZE as usize,
        FRAG_PORTS_SIZE as usize,
        Capacity::Limit(MAX_FRAGMENTED6),
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
        assert_eq!(pinned_maps().count(), 13);
    }
}
