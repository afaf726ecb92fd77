//! Creating a flow: the per-source limit, the SNAT source port, and both
//! entries (the reply entry first, since inserting it is what reserves the
//! SNAT port), making room in a full table by eviction (`conntrack`).
//!
//! The fact a reader gets wrong about SNAT ports: the table only knows our
//! own flows, not the host's sockets. A port the host uses towards the same
//! backend would make its replies look like ours and get hijacked. So a
//! port is taken only if no local socket would receive the reply
//! (bpf_sk_lookup_tcp/udp, Linux 4.20), and the default range
//! (`DEFAULT_SNAT_PORT_MIN`..`MAX`) lies below Linux's ephemeral range
//! (`ip_local_port_range`), from which the host picks ports for its own
//! connections later; the daemon warns when the two overlap.
// Keys and values are passed to map helpers as `&*x` on purpose: the
// value itself (what clippy suggests) would be copied to the stack first,
// and the whole call chain has 512 bytes.
#![allow(clippy::needless_borrows_for_generic_args)]
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    programs::TcContext,
};
use forwarder_common::{
    conntrack::{self as ct, CtState},
    FlowEntry, FlowFlags, FlowKey, ListenFlags, ListenerValue, Reason, AF_INET,
    DEFAULT_RATE_SOURCES, DEFAULT_SNAT_PORT_MAX, DEFAULT_SNAT_PORT_MIN, PROTO_TCP,
};

use crate::{
    conntrack::{self, now_ns, Arrival, CT_CONFIG},
    evict::{self, Evict},
    helpers::{map_value, prandom_u32, skb},
    maps::{self, FLOWS},
    parse::Packet,
    path,
};

const EEXIST: i32 = 17;
const E2BIG: i32 = 7;
/// Candidate SNAT ports tried per new flow, each drawn at random (not
/// consecutive: occupied ports cluster, so consecutive tries fail
/// together). At 80 % of a range in use, 32 tries fail for 1 flow in
/// 1,250; bounded for the verifier.
const PORT_TRIES: u32 = 32;

/// Per-source new-flow limit: each source's GCRA "theoretical arrival
/// time" (ktime ns). An LRU: a source pushed out starts afresh, which only
/// matters to a flood of distinct (spoofed) sources, and those are what
/// eviction is for.
#[map(name = "FWD_SRC_LIMIT")]
static SRC_LIMIT: LruHashMap<[u32; 4], u64> = LruHashMap::with_max_entries(DEFAULT_RATE_SOURCES, 0);

/// Whether `src` is over its new-flow limit (`new_flows_per_source`).
#[inline(always)]
fn over_limit(src: u32, now: u64) -> bool {
    let Some(cfg) = CT_CONFIG.get(0) else {
        return false;
    };
    let (interval, burst) = (cfg.new_flow_interval_ns, cfg.new_flow_burst_ns);
    if interval == 0 {
        return false;
    }
    let k = [src, 0, 0, 0];
    // A plain read-modify-write: racing CPUs may admit a flow or two extra.
    match map_value::get_mut(&SRC_LIMIT, &k) {
        Some(tat) => match ct::rate_admit(*tat, now, interval, burst) {
            Some(next) => {
                *tat = next;
                false
            }
            None => true,
        },
        None => {
            let _ = SRC_LIMIT.insert(k, now + interval, 0);
            false
        }
    }
}

/// The keys of the flow being created, next to its entries in
/// `maps::SCRATCH`: per-CPU scratch space, not the stack (the call chain
/// below the entry point must fit 512 bytes in total).
#[map(name = "FWD_KEY_SCRATCH")]
pub static KEYS: PerCpuArray<FlowKey> = PerCpuArray::with_max_entries(2, 0);
pub const REPLY: u32 = 0;
pub const ORIG: u32 = 1;

/// The port range `snat_port` draws from, passed through per-CPU memory on
/// purpose: read back from a map, the values are unknown to the verifier,
/// so the port loop is verified once, not once per way of computing them.
#[map(name = "FWD_PORT_PLAN")]
static PORT_PLAN: PerCpuArray<PortPlan> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct PortPlan {
    min: u32,
    span: u32,
    /// The port tried first (the reopened connection's, else the client's
    /// when it may be kept), else 0.
    keep: u32,
    /// The SNAT port of the connection a SYN just reopened (`reopened`),
    /// host order, else 0; for the client `reopened_src`:`reopened_sport`
    /// (the address as a flow key holds it: IPv4 in the first word) of
    /// `reopened_family`.
    reopened_port: u16,
    reopened_sport: u16,
    reopened_src: [u32; 4],
    reopened_family: u8,
    _pad: [u8; 3],
}

const _: () =
    assert!(core::mem::size_of::<PortPlan>() == forwarder_common::PORT_PLAN_SIZE as usize);

/// Remembers the SNAT port of the connection a client's SYN reopens (its
/// tuple closed: TIME_WAIT or CLOSE), for the new flow that SYN creates in
/// the same program run: `snat_port` tries it first. The backend keeps the
/// closed connection's socket in TIME_WAIT for that same tuple and accepts a
/// SYN there only if its sequence number is past the old connection's: true
/// for the client's own next connection on the same tuple, not for another
/// client port's that a random SNAT port would put there. A random port
/// left clients waiting a second for their SYN again (the backend's ACK of
/// the old connection, the client's RST): new HTTP connections through the
/// forward fell from 32,600/s to 2,300/s in `cargo xtask bench`. Netfilter
/// gets the same by keeping the client's port where it can.
/// Both families: IPv6 flow creation (`ipv6::flow::create`, NAT66 and
/// NAT64) asks `reopened_port` too.
#[inline(always)]
pub fn reopened(orig: &FlowEntry, key: &FlowKey) {
    if let Some(plan) = map_value::per_cpu(&PORT_PLAN, 0) {
        plan.reopened_port = u16::from_be(orig.new_sport);
        plan.reopened_sport = key.sport;
        plan.reopened_src = key.src;
        plan.reopened_family = key.family;
    }
}

/// The SNAT port `reopened` remembered, if it was for the client
/// `src`:`sport` (`family`'s address as a flow key holds it, `sport` in
/// network order) and lies in `min..=max`; else 0. Forgotten either way:
/// it is for the one SYN that reopened the tuple, in this program run.
#[inline(always)]
pub fn reopened_port(src: &[u32; 4], family: u8, sport: u16, min: u32, max: u32) -> u32 {
    let Some(plan) = map_value::per_cpu(&PORT_PLAN, 0) else {
        return 0;
    };
    let port = plan.reopened_port as u32;
    plan.reopened_port = 0;
    let same =
        plan.reopened_sport == sport && plan.reopened_family == family && plan.reopened_src == *src;
    if same && port >= min && port <= max {
        port
    } else {
        0
    }
}

/// The scratch slots of a flow being created: (reply entry, original
/// entry, reply key, original key).
#[inline(always)]
fn scratch() -> Option<(
    &'static mut FlowEntry,
    &'static mut FlowEntry,
    &'static mut FlowKey,
    &'static mut FlowKey,
)> {
    Some((
        map_value::per_cpu(&maps::SCRATCH, 0)?,
        map_value::per_cpu(&maps::SCRATCH, 1)?,
        map_value::per_cpu(&KEYS, REPLY)?,
        map_value::per_cpu(&KEYS, ORIG)?,
    ))
}

/// Sets every field of `e` for a fresh entry rewriting to the given tuple.
#[inline(always)]
fn fill(e: &mut FlowEntry, src: u32, dst: u32, sport: u16, dport: u16, rule_id: u32, now: u64) {
    e.reset_v4(src, dst, sport, dport, rule_id, now);
}

/// Creates both directions of a flow for a packet that matched a listener,
/// decided by `d`, from the entries `prepare` built; the packet is
/// accounted on the new entry.
// A BPF-to-BPF call rather than inlined, as are the steps it calls: each
// gets its own frame instead of adding to the caller's (512-byte stack for
// the whole call chain).
#[inline(never)]
pub fn create(ctx: &TcContext, p: &Packet, d: &path::Decision) -> Result<(), Reason> {
    let now = now_ns();
    if over_limit(p.src, now) {
        return Err(Reason::DropRateLimited);
    }
    let (reply, orig, reply_key, key) = scratch().ok_or(Reason::DropError)?;
    if p.proto == PROTO_TCP {
        conntrack::start_orig(ctx, p, orig);
    }
    let reserved = if !d.flags.contains(FlowFlags::SNAT) {
        keep_port(now)
    } else {
        // The local socket check for the port taken is made here, out of
        // the port loop (the verifier walks every iteration of it).
        match snat_port(ctx, p) {
            // No free port: take the first one tried from its holder, if
            // that may be evicted (kept out of the port loop: the verifier
            // walks every iteration).
            Err(Reason::DropNoPort) if reply_key.dport != 0 => {
                reclaim_held(now).and_then(|_| not_local(ctx, p.proto, reply_key))
            }
            r => r,
        }
    };
    match reserved {
        // The table is full: make room and take the port tried last.
        Err(Reason::DropTableFull) if evict::evict_one(now) => {
            if FLOWS
                .insert(&*reply_key, &*reply, BPF_NOEXIST as u64)
                .is_err()
            {
                return Err(Reason::DropTableFull);
            }
            if d.flags.contains(FlowFlags::SNAT) {
                not_local(ctx, p.proto, reply_key)?;
            }
        }
        r => r?,
    }
    orig.new_sport = reply_key.dport;
    // Any existing original entry (a stale one, or another CPU racing on a
    // retransmitted SYN) is replaced: the reply entry just reserved is the
    // one that matches this translation.
    let inserted = match FLOWS.insert(&*key, &*orig, 0) {
        Err(e) if e == -E2BIG && evict::evict_one(now) => FLOWS.insert(&*key, &*orig, 0),
        r => r,
    };
    if inserted.is_err() {
        let _ = FLOWS.remove(&*reply_key);
        return Err(Reason::DropTableFull);
    }
    evict::queue_new(key);
    Ok(())
}

/// Builds both entries and keys in the scratch slots (the reply key with
/// the client's port), for `create`. False when the scratch slots are
/// missing (never). Called by the pipeline before `create`, not from it:
/// two calls in a row instead of one inside the other keep the chain
/// under the 512-byte stack with the pipeline's own frame (304 bytes once
/// issue 12's answers joined it; nested it was 304 + 80 + 160 = 544).
// A bool, not a Result: a BPF-to-BPF call takes at most five arguments,
// and a Result<u64, _> would be returned through a sixth (a pointer).
#[inline(never)]
pub fn prepare(
    _ctx: &TcContext,
    p: &Packet,
    l: &ListenerValue,
    d: &path::Decision,
    a: &Arrival,
) -> bool {
    let now = now_ns();
    let target = l.target_addr[0];
    let tcp = p.proto == PROTO_TCP;
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
    let Some((reply, orig, reply_key, key)) = scratch() else {
        return false;
    };
    // Field by field: a struct literal would be built on the stack first.
    fill(reply, p.dst, p.src, p.dport, p.sport, l.rule_id, now);
    reply.flags = d.flags | FlowFlags::REPLY;
    reply.mss = mss;
    reply.ct.iface = d.reply_iface;
    reply.ct.out_iface = a.ifindex;
    reply.ct.state = state as u8;
    fill(orig, d.src, target, 0, l.target_port, l.rule_id, now);
    orig.flags = d.flags;
    orig.mss = mss;
    orig.packets = 1;
    orig.bytes = a.len as u64;
    orig.ct.iface = a.ifindex;
    orig.ct.out_iface = d.reply_iface;
    orig.ct.state = state as u8;
    *reply_key = FlowKey::v4(target, d.src, l.target_port, p.sport, p.proto);
    *key = conntrack::key_of(p);
    true
}

/// The reply entry of a flow that keeps the client's address and port.
#[inline(always)]
fn keep_port(now: u64) -> Result<(), Reason> {
    let (reply, _, reply_key, _) = scratch().ok_or(Reason::DropError)?;
    match FLOWS.insert(&*reply_key, &*reply, BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        Err(e) if e == -EEXIST => {
            // A leftover of an earlier connection of this same client tuple
            // (not yet expired) is ours to reuse; anything else is a real
            // clash with another flow, unless that one may be evicted.
            let same = map_value::get(&FLOWS, reply_key).is_some_and(|o| {
                o.new_dst == reply.new_dst
                    && o.new_dport == reply.new_dport
                    && o.new_src == reply.new_src
                    && o.new_sport == reply.new_sport
            });
            if !same && !evict::evict(reply_key, Evict::Clash, now) {
                return Err(Reason::DropNoPort);
            }
            let _ = FLOWS.insert(&*reply_key, &*reply, 0);
            Ok(())
        }
        // E2BIG: full (the caller evicts); anything else: as good as full.
        Err(_) => Err(Reason::DropTableFull),
    }
}

/// The SNAT source port: the client's own when it lies in the range of its
/// class and is free (RFC 4787 4.1 port preservation, as netfilter does),
/// else random within the class: below 1024 a client keeps a port below
/// 1024 (1-511 or 600-1023, netfilter's split), above it `snat_ports`.
/// A port is free when no flow holds it (or only one that may be evicted)
/// and no local socket would receive its replies. Reserves it by inserting
/// the reply entry (from the scratch slots).
// Not inlined: own stack frame (the socket tuple).
#[inline(never)]
fn snat_port(ctx: &TcContext, p: &Packet) -> Result<(), Reason> {
    let client = u16::from_be(p.sport) as u32;
    let (min, max) = if client < 512 {
        (1, 511)
    } else if client < 1024 {
        (600, 1023)
    } else {
        let cfg = maps::config();
        if cfg.snat_port_min != 0 && cfg.snat_port_max >= cfg.snat_port_min {
            (cfg.snat_port_min as u32, cfg.snat_port_max as u32)
        } else {
            (DEFAULT_SNAT_PORT_MIN as u32, DEFAULT_SNAT_PORT_MAX as u32)
        }
    };
    // Written, then read back (see PORT_PLAN).
    let plan = map_value::per_cpu(&PORT_PLAN, 0).ok_or(Reason::DropError)?;
    plan.min = min;
    plan.span = max - min + 1;
    let reopened = reopened_port(&[p.src, 0, 0, 0], AF_INET, p.sport, min, max);
    plan.keep = if reopened != 0 {
        reopened
    } else if client >= min && client <= max {
        client
    } else {
        0
    };
    let plan = &*plan;
    let (reply, _, reply_key, _) = scratch().ok_or(Reason::DropError)?;
    // The first port held by another flow (for `reclaim_held`).
    let mut held = 0u32;
    let mut i = 0;
    while i < PORT_TRIES {
        let port = if i == 0 && plan.keep != 0 {
            plan.keep
        } else {
            plan.min + prandom_u32() % plan.span.max(1)
        } as u16;
        i += 1;
        reply_key.dport = port.to_be();
        match FLOWS.insert(&*reply_key, &*reply, BPF_NOEXIST as u64) {
            Ok(()) if !local_socket(ctx, p.proto, reply_key) => return Ok(()),
            // A local socket would get its replies: give it back, go on.
            Ok(()) => {
                let _ = FLOWS.remove(&*reply_key);
            }
            Err(e) if e == -EEXIST => {
                if held == 0 {
                    held = port as u32;
                }
            }
            // Full (E2BIG, the caller evicts), or worse.
            Err(_) => return Err(Reason::DropTableFull),
        }
    }
    reply_key.dport = (held as u16).to_be();
    Err(Reason::DropNoPort)
}

/// Keeps the port just reserved in `reply_key` only if no local socket
/// would receive its replies (a listener on it, or a connection of the
/// host's own to the backend from it): else gives it back and refuses
/// the flow, whose retransmitted SYN draws another port. Checked once, for
/// the port taken, not in the port loop: the verifier walks every
/// iteration, and a socket on a port of the (by default disjoint) SNAT
/// range is rare.
#[inline(always)]
fn not_local(ctx: &TcContext, proto: u8, reply_key: &FlowKey) -> Result<(), Reason> {
    if local_socket(ctx, proto, reply_key) {
        let _ = FLOWS.remove(reply_key);
        return Err(Reason::DropNoPort);
    }
    Ok(())
}

/// After `snat_port` found no free port: takes the first port it found
/// held (left in the reply key) if its holder may be evicted. (The local
/// socket check is the caller's.)
#[inline(always)]
fn reclaim_held(now: u64) -> Result<(), Reason> {
    let (reply, _, reply_key, _) = scratch().ok_or(Reason::DropError)?;
    if evict::evict(reply_key, Evict::Port, now)
        && FLOWS
            .insert(&*reply_key, &*reply, BPF_NOEXIST as u64)
            .is_ok()
    {
        return Ok(());
    }
    Err(Reason::DropNoPort)
}

/// Whether a local socket would receive a reply of the flow whose reply
/// entry is keyed `k` (from the backend to the SNAT address and port): a
/// listener on that port or a connection of the host's own to the backend.
// Not inlined: one copy of the reference-tracked helper calls for the
// verifier, and a bool, not a Result, back (see `prepare`).
#[inline(never)]
fn local_socket(ctx: &TcContext, proto: u8, k: &FlowKey) -> bool {
    skb::local_socket_v4(ctx, proto, k.src[0], k.dst[0], k.sport, k.dport)
}
