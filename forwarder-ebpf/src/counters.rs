//! Per-CPU counters: no atomics needed, userspace sums the CPUs.
use forwarder_common::{iface_counter_index, Hook, Reason, RuleCounters, MAX_RULES};

use crate::maps::{per_cpu, IFACE_COUNTERS, RULE_COUNTERS};

#[inline(always)]
pub fn count_iface(slot: u32, hook: Hook, reason: Reason, bytes: u32) {
    if let Some(c) = per_cpu(&IFACE_COUNTERS, iface_counter_index(slot, hook, reason)) {
        c.packets += 1;
        c.bytes += bytes as u64;
    }
}

#[inline(always)]
fn rule(rule_id: u32) -> Option<&'static mut RuleCounters> {
    if rule_id >= MAX_RULES {
        return None;
    }
    per_cpu(&RULE_COUNTERS, rule_id)
}

/// A translated packet of rule `rule_id`.
#[inline(always)]
pub fn count_rule(rule_id: u32, bytes: u32) {
    if let Some(c) = rule(rule_id) {
        c.packets += 1;
        c.bytes += bytes as u64;
    }
}

/// A flow of rule `rule_id` was created.
#[inline(always)]
pub fn count_new_flow(rule_id: u32, snat: bool, via_stack: bool) {
    if let Some(c) = rule(rule_id) {
        c.new_flows += 1;
        if snat {
            c.snat_flows += 1;
        }
        if via_stack {
            c.stack_flows += 1;
        }
    }
}

/// An MSS option of rule `rule_id` was lowered.
#[inline(always)]
pub fn count_mss_clamped(rule_id: u32) {
    if let Some(c) = rule(rule_id) {
        c.mss_clamped += 1;
    }
}

/// A packet of rule `rule_id` dropped for `drop` (a RULE_DROP_* index).
#[inline(always)]
pub fn count_rule_drop(rule_id: u32, drop: usize) {
    if drop >= forwarder_common::RULE_DROP_REASONS as usize {
        return;
    }
    if let Some(c) = rule(rule_id) {
        c.drops[drop] += 1;
    }
}
