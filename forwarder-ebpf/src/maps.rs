//! Map definitions. Names come from `forwarder_common::maps` so userspace
//! finds them; sizes the daemon sets at load time are marked as such.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use forwarder_common::{Counter, IfaceConfig, MAX_IFACES, REASONS};

#[map(name = "FWD_IFACES")]
pub static IFACES: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map(name = "FWD_IFACE_CNT")]
pub static IFACE_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_IFACES * REASONS, 0);

#[inline(always)]
pub fn iface(ifindex: u32) -> Option<IfaceConfig> {
    // SAFETY: the value is copied out before the map can change under us.
    unsafe { IFACES.get(ifindex).copied() }
}
