//! Map definitions. The names and sizes are `forwarder_common::layout`'s
//! (`MAPS`; the macro takes only literals, so a test of the built object
//! checks every name, type and size against that table); the flow table's
//! size is set by the daemon at load time (`conntrack_max` x 2 entries, one
//! per direction). The accessors below are safe: the `unsafe` of reading
//! a map value is in `helpers::map_value`.
use crate::helpers::map_value;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use forwarder_common::{
    AllowKey, AutoSnatKey, Counter, FlowEntry, FlowKey, GlobalConfig, IfaceConfig, ListenerKey,
    ListenerValue, NeighFlags, RouteHint, RuleCounters, RuleName, BPF_F_NO_PREALLOC,
    DEFAULT_CONNTRACK_MAX, ENTRIES_PER_FLOW, HOOKS, MAX_ALLOW_PREFIXES, MAX_AUTO_SNAT, MAX_IFACES,
    MAX_LISTENERS, MAX_NEIGH, MAX_ROUTE_HINTS, MAX_RULES, REASONS,
};

#[map(name = "FWD_IFACES")]
pub static IFACES: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map(name = "FWD_IFACE_CNT")]
pub static IFACE_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_IFACES * HOOKS * REASONS, 0);

/// Allocated per entry as written (`BPF_F_NO_PREALLOC`; the layout table
/// says why): only the daemon writes it (loads, address changes).
#[map(name = "FWD_LISTENERS")]
pub static LISTENERS: HashMap<ListenerKey, ListenerValue> =
    HashMap::with_max_entries(MAX_LISTENERS, BPF_F_NO_PREALLOC);

#[map(name = "FWD_ALLOW")]
pub static ALLOW: LpmTrie<AllowKey, u8> = LpmTrie::with_max_entries(MAX_ALLOW_PREFIXES, 0);

#[map(name = "FWD_RULE_CNT")]
pub static RULE_COUNTERS: PerCpuArray<RuleCounters> = PerCpuArray::with_max_entries(MAX_RULES, 0);

/// A plain (preallocated) hash, not an LRU: an LRU would evict any flow,
/// possibly an idle established one. When it is full a new flow makes room
/// by evicting an unassured, closing or expired one (`evict`), else it is
/// refused and counted. Expired entries are treated as absent by the
/// kernel and reclaimed by the userspace sweeper too.
#[map(name = "FWD_FLOWS")]
pub static FLOWS: HashMap<FlowKey, FlowEntry> =
    HashMap::with_max_entries(ENTRIES_PER_FLOW * DEFAULT_CONNTRACK_MAX, 0);

/// The route generation (see `forwarder_common::MAP_ROUTE_GEN`).
#[map(name = "FWD_ROUTE_GEN")]
pub static ROUTE_GEN: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "FWD_CONFIG")]
pub static CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

/// Backends `snat = "auto"` learned to SNAT for (value: when, ktime ns).
/// An LRU is right here: losing an entry only costs one more probe.
#[map(name = "FWD_AUTO_SNAT")]
pub static AUTO_SNAT: LruHashMap<AutoSnatKey, u64> = LruHashMap::with_max_entries(MAX_AUTO_SNAT, 0);

/// Rule names by id, kept for userspace (see `forwarder_common::RuleName`).
#[map(name = "FWD_RULE_NAMES")]
pub static RULE_NAMES: Array<RuleName> = Array::with_max_entries(MAX_RULES, 0);

/// Per-CPU scratch space for building flow entries (the BPF stack is
/// 512 bytes for the whole call chain).
#[map(name = "FWD_SCRATCH")]
pub static SCRATCH: PerCpuArray<FlowEntry> = PerCpuArray::with_max_entries(2, 0);

/// Next hops that do not answer ARP (an on-link target, a target's gateway,
/// and a target behind such a gateway, for `path::auto_probe`; IPv4 address
/// word -> `NeighFlags` bits), written by the daemon from the neighbour table. A
/// FIB lookup's NO_NEIGH cannot tell "not resolved yet" from FAILED, so
/// the kernel never decides this itself (docs/CONFORMANCE.md, Neighbours).
#[map(name = "FWD_NEIGH")]
pub static NEIGH: HashMap<u32, u32> = HashMap::with_max_entries(MAX_NEIGH, 0);

/// What the daemon says about next hop `addr` (empty: nothing known, the
/// neighbour is resolved or being resolved for the first time).
#[inline(always)]
pub fn neigh(addr: u32) -> NeighFlags {
    NeighFlags::from_bits(map_value::copied(&NEIGH, addr).unwrap_or(0))
}

/// Route facts of the IPv4 targets, from the daemon (`RouteHint`): read
/// only on a kernel whose FIB lookup lacks SKIP_NEIGH or SRC (`fib`).
#[map(name = "FWD_ROUTE_HINTS")]
pub static ROUTE_HINTS: HashMap<u32, RouteHint> = HashMap::with_max_entries(MAX_ROUTE_HINTS, 0);

/// The daemon's route facts for destination `addr`; all zero when it has
/// none (a value rather than an Option: see `path::decide` on LLVM reading
/// an Option's payload before its tag).
#[inline(always)]
pub fn route_hint(addr: u32) -> RouteHint {
    // SAFETY: copied out of the map value.
    unsafe { ROUTE_HINTS.get(addr).copied() }.unwrap_or_default()
}

#[inline(always)]
pub fn iface(ifindex: u32) -> Option<IfaceConfig> {
    map_value::copied(&IFACES, ifindex)
}

/// A flow table entry in place: a pointer into the map value, not a copy
/// (a copy would cost 80 bytes of the 512-byte stack). It stays valid for
/// the rest of the program run: a deleted entry is freed only after an RCU
/// grace period.
pub type FlowRef = map_value::EntryRef<FlowEntry>;

#[inline(always)]
pub fn flow(key: FlowKey) -> Option<FlowRef> {
    map_value::entry_ref(&FLOWS, key)
}

/// The flow entry for a key that is not on the stack.
#[inline(always)]
pub fn flow_at(key: &FlowKey) -> Option<FlowRef> {
    map_value::entry_ref(&FLOWS, key)
}

/// The listener for `key`, in place (a copy would cost stack).
#[inline(always)]
pub fn listener(key: ListenerKey) -> Option<&'static ListenerValue> {
    map_value::read(&LISTENERS, key)
}

/// This CPU's slot `i` of a per-CPU array (for a counter update, say).
pub use crate::helpers::map_value::per_cpu;

#[inline(always)]
pub fn config() -> GlobalConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}
