//! Map definitions. Names come from `forwarder_common::maps` so userspace
//! finds them; the flow table's size is set by the daemon at load time
//! (`conntrack_max` x 2 entries, one per direction).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray},
};
use forwarder_common::{
    AllowKey, Counter, FlowEntry, FlowKey, GlobalConfig, IfaceConfig, ListenerKey, ListenerValue,
    RuleCounters, MAX_ALLOW_PREFIXES, MAX_IFACES, MAX_LISTENERS, MAX_RULES, REASONS,
};

#[map(name = "FWD_IFACES")]
pub static IFACES: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map(name = "FWD_IFACE_CNT")]
pub static IFACE_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_IFACES * REASONS, 0);

#[map(name = "FWD_LISTENERS")]
pub static LISTENERS: HashMap<ListenerKey, ListenerValue> =
    HashMap::with_max_entries(MAX_LISTENERS, 0);

#[map(name = "FWD_ALLOW")]
pub static ALLOW: LpmTrie<AllowKey, u8> = LpmTrie::with_max_entries(MAX_ALLOW_PREFIXES, 0);

#[map(name = "FWD_RULE_CNT")]
pub static RULE_COUNTERS: PerCpuArray<RuleCounters> = PerCpuArray::with_max_entries(MAX_RULES, 0);

/// A plain (preallocated) hash, not an LRU: when it is full a new flow is
/// refused and counted, instead of the kernel evicting some other flow,
/// possibly an idle established one. Expired entries are reclaimed by the
/// userspace sweeper.
#[map(name = "FWD_FLOWS")]
pub static FLOWS: HashMap<FlowKey, FlowEntry> = HashMap::with_max_entries(2 * 65536, 0);

#[map(name = "FWD_CONFIG")]
pub static CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn iface(ifindex: u32) -> Option<IfaceConfig> {
    // SAFETY: the value is copied out before the map can change under us.
    unsafe { IFACES.get(ifindex).copied() }
}

#[inline(always)]
pub fn config() -> GlobalConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}
