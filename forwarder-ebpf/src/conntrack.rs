//! Connection tracking: one entry per direction, inserted together (the
//! reply entry first, since inserting it is what reserves the SNAT port).
use aya_ebpf::bindings::BPF_NOEXIST;
use forwarder_common::{
    FlowEntry, FlowFlags, FlowKey, ListenFlags, ListenerValue, Reason, Seen, AUTO_SNAT_PROBE_NS,
    DEFAULT_SNAT_PORT_MAX, DEFAULT_SNAT_PORT_MIN, PROTO_TCP,
};

use crate::{
    helpers::{ktime_coarse_ns, prandom_u32},
    maps::{self, FlowRef, AUTO_SNAT, FLOWS},
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    path,
};

const EEXIST: i32 = 17;
/// Candidate SNAT ports tried per new flow: enough to find a free port in
/// a table far fuller than real use, small enough for the verifier.
const PORT_TRIES: u32 = 16;

#[inline(always)]
pub fn key_of(p: &Packet) -> FlowKey {
    FlowKey::v4(p.src, p.dst, p.sport, p.dport, p.proto)
}

#[inline(always)]
fn seen_bits(tcp_flags: u8) -> Seen {
    let mut s = Seen::empty();
    if tcp_flags & TCP_SYN != 0 {
        s |= Seen::SYN;
    }
    if tcp_flags & TCP_ACK != 0 {
        s |= Seen::ACK;
    }
    if tcp_flags & TCP_FIN != 0 {
        s |= Seen::FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        s |= Seen::RST;
    }
    s
}

/// Accounts a packet on an existing entry and records TCP flags.
#[inline(always)]
pub fn touch(flow: FlowRef, p: &Packet, len: u32) {
    flow.account(len);
    let e = flow.as_ptr();
    // SAFETY: e points into a map value that stays valid for this run.
    unsafe {
        if p.proto == PROTO_TCP {
            let seen = seen_bits(p.tcp_flags);
            let old = (*e).tcp_seen;
            // A new SYN on a tuple whose previous connection closed starts
            // over (the peer reuses the port): forget the old FIN/RST.
            let restart = p.tcp_flags & TCP_SYN != 0 && old.intersects(Seen::FIN | Seen::RST);
            let new = if restart { seen } else { old | seen };
            if new != old {
                (*e).tcp_seen = new;
            }
        }
    }
}

/// Sets every field of `e` for a fresh entry rewriting to the given tuple.
#[inline(always)]
fn fill(e: &mut FlowEntry, src: u32, dst: u32, sport: u16, dport: u16, rule_id: u32, now: u64) {
    e.reset_v4(src, dst, sport, dport, rule_id, now);
}

/// `snat = "auto"` learning. Called when a TCP SYN hits an existing
/// original-direction entry, i.e. the client retransmits its SYN. If the
/// flow kept the client address, was redirected, and nothing ever came back
/// from the backend, its replies evidently go elsewhere (the backend's
/// default route is not this host): remember the backend as needing SNAT,
/// forget the flow and return true so the caller creates it anew, SNATed.
// Not inlined: own stack frame (see `conntrack::create`).
#[inline(never)]
pub fn auto_probe(p: &Packet, e: &FlowEntry, key: &FlowKey) -> bool {
    let unwanted = FlowFlags::SNAT | FlowFlags::VIA_STACK | FlowFlags::REPLY;
    if p.proto != PROTO_TCP
        || p.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN
        || e.flags.intersection(FlowFlags::AUTO | unwanted) != FlowFlags::AUTO
    {
        return false;
    }
    let now = ktime_coarse_ns();
    if now.saturating_sub(e.created_ns) < AUTO_SNAT_PROBE_NS {
        return false;
    }
    let reply_key = FlowKey::peer_of(e, key.proto, key.family);
    // SAFETY: copied out of the map value.
    let replied = unsafe { FLOWS.get(reply_key) }.is_some_and(|r| r.packets > 0);
    if replied {
        return false;
    }
    let _ = AUTO_SNAT.insert(path::auto_key(e.rule_id, e.new_dst[0]), now, 0);
    let _ = FLOWS.remove(reply_key);
    let _ = FLOWS.remove(key);
    true
}

/// Creates both directions of a flow for a packet that matched listener `l`.
// A BPF-to-BPF call rather than inlined: its locals get their own frame
// instead of adding to the caller's (512-byte stack limit).
#[inline(never)]
pub fn create(p: &Packet, l: &ListenerValue, d: &path::Decision) -> Result<(), Reason> {
    let target = l.target_addr[0];
    let src = d.src;
    let flags = d.flags;
    let snat = flags.contains(FlowFlags::SNAT);
    let now = ktime_coarse_ns();
    let tcp_seen = if p.proto == PROTO_TCP {
        seen_bits(p.tcp_flags)
    } else {
        Seen::empty()
    };
    let mss = if p.proto == PROTO_TCP && l.flags.contains(ListenFlags::MSS_CLAMP) {
        l.mss
    } else {
        0
    };
    // Both entries are built in per-CPU scratch space, not on the stack:
    // the call chain below the entry point must fit 512 bytes in total.
    let (Some(reply), Some(orig)) = (maps::SCRATCH.get_ptr_mut(0), maps::SCRATCH.get_ptr_mut(1))
    else {
        return Err(Reason::DropError);
    };
    // SAFETY: per-CPU scratch slots, ours for the duration of this run.
    let (reply, orig) = unsafe { (&mut *reply, &mut *orig) };
    // Field by field: a struct literal would be built on the stack first.
    fill(reply, p.dst, p.src, p.dport, p.sport, l.rule_id, now);
    reply.flags = flags | FlowFlags::REPLY;
    reply.mss = mss;
    // Inserted by reference: passing the value would copy it to the stack.
    let reply: &FlowEntry = reply;
    let mut reply_key = FlowKey::v4(target, src, l.target_port, p.sport, p.proto);

    if snat {
        let cfg = maps::config();
        let (min, max) = if cfg.snat_port_min != 0 && cfg.snat_port_max >= cfg.snat_port_min {
            (cfg.snat_port_min, cfg.snat_port_max)
        } else {
            (DEFAULT_SNAT_PORT_MIN, DEFAULT_SNAT_PORT_MAX)
        };
        let span = (max - min) as u32 + 1;
        let start = prandom_u32() % span;
        let mut found = false;
        let mut i = 0;
        while i < PORT_TRIES {
            let port = min + ((start + i) % span) as u16;
            reply_key.dport = port.to_be();
            match FLOWS.insert(reply_key, reply, BPF_NOEXIST as u64) {
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
        match FLOWS.insert(reply_key, reply, BPF_NOEXIST as u64) {
            Ok(()) => {}
            Err(e) if e == -EEXIST => {
                // A leftover of an earlier connection of this same client
                // tuple (not yet swept) is ours to reuse; anything else is a
                // real clash with another flow.
                // SAFETY: a pointer into the map value, read at once.
                let same = FLOWS.get_ptr(reply_key).is_some_and(|o| unsafe {
                    (*o).new_dst == reply.new_dst
                        && (*o).new_dport == reply.new_dport
                        && (*o).new_src == reply.new_src
                        && (*o).new_sport == reply.new_sport
                });
                if !same {
                    return Err(Reason::DropNoPort);
                }
                let _ = FLOWS.insert(reply_key, reply, 0);
            }
            Err(_) => return Err(Reason::DropTableFull),
        }
    }

    fill(
        orig,
        src,
        target,
        reply_key.dport,
        l.target_port,
        l.rule_id,
        now,
    );
    orig.flags = flags;
    orig.tcp_seen = tcp_seen;
    orig.mss = mss;
    let orig: &FlowEntry = orig;
    // Any existing original entry (a stale one, or another CPU racing on a
    // retransmitted SYN) is replaced: the reply entry we just reserved is the
    // one that matches this translation.
    if FLOWS.insert(key_of(p), orig, 0).is_err() {
        let _ = FLOWS.remove(reply_key);
        return Err(Reason::DropTableFull);
    }
    Ok(())
}
