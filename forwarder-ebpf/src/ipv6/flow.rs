//! Creating an IPv6 flow: both directions inserted together, the reply
//! entry first (inserting it is what reserves the SNAT port), with the
//! state, interfaces and TCP tracking `newflow` gives an IPv4 flow, so
//! `conntrack::existing` runs the same state machine on it, and eviction
//! (`evict`) makes room in a full table for it and takes it back.
#![allow(clippy::needless_borrows_for_generic_args)]
use aya_ebpf::bindings::BPF_NOEXIST;
use forwarder_common::{
    conntrack::CtState, FlowEntry, FlowFlags, FlowKey, ListenFlags, ListenerValue, Reason, AF_INET,
    AF_INET6, DEFAULT_SNAT_PORT_MAX, DEFAULT_SNAT_PORT_MIN, PROTO_TCP,
};

use super::{
    parse::Packet6,
    route::{Decision6, DECISION6},
};
use crate::{
    conntrack::{now_ns, Arrival},
    evict::{self, Evict},
    helpers::prandom_u32,
    maps::{self, FLOWS},
    newflow,
};

const EEXIST: i32 = 17;
const E2BIG: i32 = 7;
/// Candidate SNAT ports tried per new flow (as `conntrack`).
const PORT_TRIES: u32 = 16;

/// The flow key of an IPv6 packet (addresses as words, ports in network
/// byte order).
#[inline(always)]
pub fn key(src: [u32; 4], dst: [u32; 4], sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src,
        dst,
        sport,
        dport,
        proto,
        family: AF_INET6,
        _pad: [0; 2],
    }
}

/// Sets `k` field by field (a struct literal would be built on the stack
/// first).
#[inline(always)]
fn set_key(k: &mut FlowKey, src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16, proto: u8) {
    k.src = *src;
    k.dst = *dst;
    k.sport = sport;
    k.dport = dport;
    k.proto = proto;
    k.family = AF_INET6;
    k._pad = [0; 2];
}

/// Resets `e` for a fresh entry rewriting to the given tuple.
#[inline(always)]
fn fill(
    e: &mut FlowEntry,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    rule_id: u32,
    now: u64,
) {
    e.reset_v4(0, 0, sport, dport, rule_id, now);
    e.new_src = *src;
    e.new_dst = *dst;
}

/// Inserts `e` at `k` (`flags`: BPF_NOEXIST or 0), making room once by
/// eviction when the table is full (`evict`), as `newflow` does.
#[inline(always)]
fn insert(k: &FlowKey, e: &FlowEntry, flags: u64, now: u64) -> Result<(), i32> {
    match FLOWS.insert(k, e, flags) {
        Err(err) if err == -E2BIG && evict::evict_one(now) => FLOWS.insert(k, e, flags),
        r => r,
    }
}

/// Creates both directions of a flow for a packet that matched listener
/// `l`, with the decision `super::create_flow` left in `DECISION6`; the
/// packet is accounted on the original entry.
// Own stack frame (see `newflow::create`).
#[inline(never)]
pub fn create(p: &Packet6, l: &ListenerValue, a: &Arrival) -> Result<(), Reason> {
    let d: &Decision6 = maps::per_cpu(&DECISION6, 0).ok_or(Reason::DropError)?;
    let q = &p.p;
    let now = now_ns();
    let snat = d.flags.contains(FlowFlags::SNAT);
    let tcp = q.proto == PROTO_TCP;
    let state = if tcp {
        CtState::SynSent
    } else {
        CtState::UdpUnreplied
    };
    let mss = if tcp && l.flags.contains(ListenFlags::MSS_CLAMP) {
        l.mss
    } else {
        0
    };
    // The entries and keys in newflow's per-CPU scratch slots, as an IPv4
    // flow's: on this frame they would not fit the 512-byte stack.
    let (Some(reply), Some(orig), Some(reply_key), Some(orig_key)) = (
        maps::SCRATCH.get_ptr_mut(0),
        maps::SCRATCH.get_ptr_mut(1),
        newflow::KEYS.get_ptr_mut(newflow::REPLY),
        newflow::KEYS.get_ptr_mut(newflow::ORIG),
    ) else {
        return Err(Reason::DropError);
    };
    // SAFETY: per-CPU scratch slots, ours for the duration of this run.
    let (reply, orig, reply_key, orig_key) =
        unsafe { (&mut *reply, &mut *orig, &mut *reply_key, &mut *orig_key) };
    fill(reply, &p.dst, &p.src, q.dport, q.sport, l.rule_id, now);
    reply.flags = d.flags | FlowFlags::REPLY;
    reply.mss = mss;
    reply.ct.iface = d.reply_iface;
    reply.ct.state = state as u8;
    // The client's interface, for the reply's route lookup (NAT64: see
    // `nat64::back::next_hop`).
    reply.ct.out_iface = a.ifindex;
    let reply: &FlowEntry = reply;
    set_key(
        reply_key,
        &l.target_addr,
        &d.src,
        l.target_port,
        q.sport,
        q.proto,
    );
    if d.flags.contains(FlowFlags::XLAT) {
        // NAT64: the target answers in IPv4.
        reply_key.family = AF_INET;
    }
    if snat {
        let cfg = maps::config();
        let (min, max) = if cfg.snat_port_min != 0 && cfg.snat_port_max >= cfg.snat_port_min {
            (cfg.snat_port_min, cfg.snat_port_max)
        } else {
            (DEFAULT_SNAT_PORT_MIN, DEFAULT_SNAT_PORT_MAX)
        };
        let span = (max - min) as u32 + 1;
        // A SYN reopening this client's closed connection gets its old
        // port first, as on IPv4 (see `newflow::reopened`: a random one
        // can land on the backend's TIME_WAIT socket of another client).
        let first = newflow::reopened_port(&p.src, AF_INET6, q.sport, min as u32, max as u32);
        let mut found = false;
        let mut i = 0;
        while i < PORT_TRIES {
            let port = if i == 0 && first != 0 {
                first as u16
            } else {
                min + (prandom_u32() % span) as u16
            };
            reply_key.dport = port.to_be();
            match insert(reply_key, reply, BPF_NOEXIST as u64, now) {
                Ok(()) => {
                    found = true;
                    break;
                }
                Err(e) if e == -EEXIST => {}
                Err(_) => return Err(Reason::DropTableFull),
            }
            i += 1;
        }
        if !found {
            return Err(Reason::DropNoPort);
        }
    } else {
        match insert(reply_key, reply, BPF_NOEXIST as u64, now) {
            Ok(()) => {}
            Err(e) if e == -EEXIST => {
                // As in `newflow::keep_port`: a leftover of this same
                // client tuple is reused, anything else is a clash unless
                // its holder may be evicted.
                // SAFETY: a pointer into the map value, read at once.
                let same = FLOWS.get_ptr(&*reply_key).is_some_and(|o| unsafe {
                    (*o).new_dst == reply.new_dst
                        && (*o).new_dport == reply.new_dport
                        && (*o).new_src == reply.new_src
                        && (*o).new_sport == reply.new_sport
                });
                if !same && !evict::evict(reply_key, Evict::Clash, now) {
                    return Err(Reason::DropNoPort);
                }
                let _ = FLOWS.insert(&*reply_key, reply, 0);
            }
            Err(_) => return Err(Reason::DropTableFull),
        }
    }
    fill(
        orig,
        &d.src,
        &l.target_addr,
        reply_key.dport,
        l.target_port,
        l.rule_id,
        now,
    );
    // From the reply entry (map memory), not `d`: the decision's flags
    // are constants to the verifier, and kept live to here they would
    // have it walk the port choice and insertions once per value (a
    // stack-path flow and a redirected one without SNAT take the same
    // steps).
    // SAFETY: a plain read of the scratch entry written above (volatile:
    // LLVM would otherwise reuse the value it stored, kept live).
    let flags = unsafe { core::ptr::read_volatile(&reply.flags) };
    orig.flags = flags.without(FlowFlags::REPLY);
    orig.mss = mss;
    orig.packets = 1;
    orig.bytes = a.len as u64;
    orig.ct.iface = a.ifindex;
    orig.ct.state = state as u8;
    // (Its TCP tracking starts in `translate`, see there.)
    let orig: &FlowEntry = orig;
    set_key(orig_key, &p.src, &p.dst, q.sport, q.dport, q.proto);
    if insert(orig_key, orig, 0, now).is_err() {
        let _ = FLOWS.remove(&*reply_key);
        return Err(Reason::DropTableFull);
    }
    evict::queue_new(orig_key);
    Ok(())
}
