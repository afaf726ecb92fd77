//! Making room in a full flow table, in the kernel: flows that may go
//! (not assured, closing, or expired) are found through `FWD_CT_EVICT`, a
//! queue of original-direction keys in the order flows became candidates
//! (created, or started closing). A flow popped from it that is established
//! goes to the back again, so expired ones are found too.
//!
//! The fact a reader gets wrong: the queue is a hint, not the truth. Keys
//! of flows long gone, or queued twice, are skipped; whether a flow may be
//! evicted is decided from its entries when it comes up, so an established
//! flow is never taken, whatever the queue says.
// Keys and values are passed to map helpers as `&*x` on purpose: the
// value itself (what clippy suggests) would be copied to the stack first,
// and the whole call chain has 512 bytes.
#![allow(clippy::needless_borrows_for_generic_args)]
use aya_ebpf::{
    bindings::BPF_EXIST,
    macros::map,
    maps::{PerCpuArray, Queue},
};
use forwarder_common::{
    conntrack::CtState, FlowEntry, FlowFlags, FlowKey, DEFAULT_CONNTRACK_MAX, RULE_DROP_EVICTED,
};

use crate::{
    conntrack::{over, peer_key},
    counters,
    helpers::map_value,
    maps::FLOWS,
};

/// Eviction candidates: original-direction keys, pushed when a flow is
/// created and when it starts closing, popped oldest first by a full
/// table. A popped flow that is established goes to the back again, so
/// expired ones are found too. Sized by the daemon like the flow table;
/// pushing onto a full queue drops its oldest key (BPF_EXIST), which only
/// leaves that flow to expire instead.
#[map(name = "FWD_CT_EVICT")]
pub static CT_EVICT: Queue<FlowKey> = Queue::with_max_entries(DEFAULT_CONNTRACK_MAX, 0);

/// Candidates looked at per eviction: enough to get past established
/// flows queued in front of the unassured ones, bounded for the verifier.
const EVICT_TRIES: u32 = 8;

/// Whether a flow may be evicted for a new one (`ct::evictable`, with the
/// state as stored for the timeout lookup).
#[inline(always)]
fn evictable(proto: u8, state: u8, last: u64, now: u64) -> bool {
    match CtState::from_raw(state) {
        CtState::Established | CtState::UdpStream | CtState::Untracked => {
            over(proto, state, last, now)
        }
        _ => true,
    }
}

/// Puts a flow (by its original-direction key) at the back of the
/// eviction queue.
#[inline(always)]
pub fn queue(entry: &FlowEntry, key: &FlowKey, orig: bool) {
    if orig {
        let _ = CT_EVICT.push(key, BPF_EXIST as u64);
    } else {
        let _ = CT_EVICT.push(peer_key(entry, key), BPF_EXIST as u64);
    }
}

/// Queues a new flow as an eviction candidate.
#[inline(always)]
pub fn queue_new(orig_key: &FlowKey) {
    let _ = CT_EVICT.push(orig_key, BPF_EXIST as u64);
}

/// The key an eviction looks at and its partner's: per-CPU scratch, not
/// the stack (eviction runs three calls deep in flow creation, and the
/// whole call chain has 512 bytes).
#[map(name = "FWD_CT_KEYS")]
static CT_KEYS: PerCpuArray<FlowKey> = PerCpuArray::with_max_entries(2, 0);

/// Slot 0 of `FWD_CT_KEYS` for a flow key that callers deep in the call
/// chain (`icmp::error`, `path::auto_probe`) would otherwise build on their
/// stack: 40 bytes that made those chains too deep for 6.1, whose
/// verifier rounds each frame up to 32 bytes of the 512 a chain may use.
/// Free for them: eviction, its only other user, never runs while they
/// hold it. Never held across another call that takes it.
#[inline(always)]
pub fn spare_key() -> Option<&'static mut FlowKey> {
    map_value::per_cpu(&CT_KEYS, 0)
}

/// Makes room in a full table: evicts the first queued flow that is not
/// assured, closing or expired; established flows met on the way go to
/// the back of the queue. Returns whether a flow was evicted. Inlined:
/// a call of its own between flow creation and `evict` made that chain
/// one frame too deep for 6.1 (its verifier rounds each frame up to 32
/// bytes of the 512 the chain may use).
#[inline(always)]
pub fn evict_one(now: u64) -> bool {
    // Popped into a per-CPU slot: aya's Queue::pop returns the key on the
    // stack.
    let Some(slot) = map_value::per_cpu(&CT_KEYS, 0) else {
        return false;
    };
    let mut i = 0;
    while i < EVICT_TRIES {
        i += 1;
        if !map_value::pop_into(&CT_EVICT, slot) {
            return false;
        }
        if evict(slot, Evict::Queued, now) {
            return true;
        }
    }
    false
}

/// What `evict` is asked to free.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Evict {
    /// A queued candidate (an original-direction key): evicted when
    /// `evictable`, else queued again.
    Queued,
    /// A SNAT port (a reply-direction key) held by a flow that is
    /// `evictable`: port pressure is table pressure for one backend.
    Port,
    /// A reply tuple a new DNAT-only flow needs, held by another flow:
    /// freed only when that flow is closing or expired (a clash with a live
    /// handshake stays a clash, as in netfilter).
    Clash,
}

/// Evicts the flow whose entry `key` is (see `Evict`). Returns whether it
/// did.
#[inline(never)]
pub fn evict(key: &FlowKey, why: Evict, now: u64) -> bool {
    let Some(e) = map_value::get(&FLOWS, key) else {
        return false;
    };
    let Some(peer) = map_value::per_cpu(&CT_KEYS, 1) else {
        return false;
    };
    let orig = why == Evict::Queued;
    if e.flags.contains(FlowFlags::REPLY) == orig {
        return false;
    }
    // Not assignments: between two map values those are memmove calls
    // (see map_value::copy).
    map_value::copy(&e.new_dst, &mut peer.src);
    map_value::copy(&e.new_src, &mut peer.dst);
    peer.sport = e.new_dport;
    peer.dport = e.new_sport;
    peer.proto = key.proto;
    peer.family = key.family;
    peer._pad = [0; 2];
    let peer_seen = map_value::get(&FLOWS, peer).map_or(0, |p| p.last_seen_ns);
    let last = if peer_seen > e.last_seen_ns {
        peer_seen
    } else {
        e.last_seen_ns
    };
    let state = e.ct.state;
    let may = if why == Evict::Clash {
        CtState::from_raw(state).is_closing() || over(key.proto, state, last, now)
    } else {
        evictable(key.proto, state, last, now)
    };
    if !may {
        if orig {
            let _ = CT_EVICT.push(key, BPF_EXIST as u64);
        }
        return false;
    }
    counters::count_rule_drop(e.rule_id, RULE_DROP_EVICTED);
    let _ = FLOWS.remove(&*peer);
    let _ = FLOWS.remove(key);
    true
}
