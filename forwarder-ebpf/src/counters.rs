//! Per-CPU counters: no atomics needed, userspace sums the CPUs.
use forwarder_common::{iface_counter_index, Reason, MAX_RULES};

use crate::maps::{IFACE_COUNTERS, RULE_COUNTERS};

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

/// A translated packet of rule `rule_id`.
#[inline(always)]
pub fn count_rule(rule_id: u32, bytes: u32, new_flow: bool) {
    if rule_id >= MAX_RULES {
        return;
    }
    if let Some(c) = RULE_COUNTERS.get_ptr_mut(rule_id) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
            if new_flow {
                (*c).new_flows += 1;
            }
        }
    }
}

/// A packet of rule `rule_id` dropped for `drop` (a RULE_DROP_* index).
#[inline(always)]
pub fn count_rule_drop(rule_id: u32, drop: usize) {
    if rule_id >= MAX_RULES || drop >= forwarder_common::RULE_DROP_REASONS as usize {
        return;
    }
    if let Some(c) = RULE_COUNTERS.get_ptr_mut(rule_id) {
        // SAFETY: per-CPU slot; index bounded above.
        unsafe { (*c).drops[drop] += 1 };
    }
}
