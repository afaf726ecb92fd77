//! Per-CPU counters: no atomics needed, userspace sums the CPUs.
use forwarder_common::{iface_counter_index, Reason};

use crate::maps::IFACE_COUNTERS;

#[inline(always)]
pub fn count_iface(slot: u32, reason: Reason, bytes: u32) {
    if let Some(c) = IFACE_COUNTERS.get_ptr_mut(iface_counter_index(slot, reason)) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}
