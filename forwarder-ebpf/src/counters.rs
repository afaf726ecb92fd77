//! Per-CPU counters: no atomics needed, userspace sums the CPUs.
use forwarder_common::{iface_counter_index, Hook, Reason, RuleCounters, MAX_RULES};

use crate::maps::{IFACE_COUNTERS, RULE_COUNTERS};

#[inline(always)]
pub fn count_iface(slot: u32, hook: Hook, reason: Reason, bytes: u32) {
    if let Some(c) = IFACE_COUNTERS.get_ptr_mut(iface_counter_index(slot, hook, reason)) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

#[inline(always)]
fn rule(rule_id: u32) -> Option<*mut RuleCounters> {
    if rule_id >= MAX_RULES {
        return None;
    }
    RULE_COUNTERS.get_ptr_mut(rule_id)
}

/// A translated packet of rule `rule_id`.
#[inline(always)]
pub fn count_rule(rule_id: u32, bytes: u32) {
    if let Some(c) = rule(rule_id) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

/// A flow of rule `rule_id` was created.
#[inline(always)]
pub fn count_new_flow(rule_id: u32, snat: bool, via_stack: bool) {
    if let Some(c) = rule(rule_id) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).new_flows += 1;
            if snat {
                (*c).snat_flows += 1;
            }
            if via_stack {
                (*c).stack_flows += 1;
            }
        }
    }
}

/// An MSS option of rule `rule_id` was lowered.
#[inline(always)]
pub fn count_mss_clamped(rule_id: u32) {
    if let Some(c) = rule(rule_id) {
        // SAFETY: per-CPU slot.
        unsafe { (*c).mss_clamped += 1 };
    }
}

/// A packet of rule `rule_id` dropped for `drop` (a RULE_DROP_* index).
#[inline(always)]
pub fn count_rule_drop(rule_id: u32, drop: usize) {
    if drop >= forwarder_common::RULE_DROP_REASONS as usize {
        return;
    }
    if let Some(c) = rule(rule_id) {
        // SAFETY: per-CPU slot; index bounded above.
        unsafe { (*c).drops[drop] += 1 };
    }
}
