//! Creating an IPv6 flow: both directions inserted together, the reply
//! entry first (inserting it is what reserves the SNAT port), exactly as
//! `conntrack::create` does for IPv4, with `AF_INET6` keys.
use aya_ebpf::bindings::BPF_NOEXIST;
use forwarder_common::{
    FlowEntry, FlowFlags, FlowKey, ListenFlags, ListenerValue, Reason, Seen, AF_INET6,
    DEFAULT_SNAT_PORT_MAX, DEFAULT_SNAT_PORT_MIN, PROTO_TCP,
};

use super::{parse::Packet6, route::Decision6};
use crate::{
    hdr::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    helpers::{ktime_coarse_ns, prandom_u32},
    maps::{self, FLOWS},
};

const EEXIST: i32 = 17;
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

/// Resets `e` for a fresh entry rewriting to the given tuple.
#[inline(always)]
fn fill(e: &mut FlowEntry, src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16, rule_id: u32) {
    e.reset_v4(0, 0, sport, dport, rule_id, ktime_coarse_ns());
    e.new_src = *src;
    e.new_dst = *dst;
}

/// Creates both directions of a flow for a packet that matched listener
/// `l`, with the source `d` decided.
// Own stack frame (see `conntrack::create`).
#[inline(never)]
pub fn create(p: &Packet6, l: &ListenerValue, d: &Decision6) -> Result<(), Reason> {
    let q = &p.p;
    let snat = d.flags.contains(FlowFlags::SNAT);
    let mss = if q.proto == PROTO_TCP && l.flags.contains(ListenFlags::MSS_CLAMP) {
        l.mss
    } else {
        0
    };
    let (Some(reply), Some(orig)) = (maps::SCRATCH.get_ptr_mut(0), maps::SCRATCH.get_ptr_mut(1))
    else {
        return Err(Reason::DropError);
    };
    // SAFETY: per-CPU scratch slots, ours for the duration of this run.
    let (reply, orig) = unsafe { (&mut *reply, &mut *orig) };
    fill(reply, &p.dst, &p.src, q.dport, q.sport, l.rule_id);
    reply.flags = d.flags | FlowFlags::REPLY;
    reply.mss = mss;
    let reply: &FlowEntry = reply;
    let mut reply_key = key(l.target_addr, d.src, l.target_port, q.sport, q.proto);
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
                // As in `conntrack::create`: a leftover of this same client
                // tuple is reused, anything else is a clash.
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
        &d.src,
        &l.target_addr,
        reply_key.dport,
        l.target_port,
        l.rule_id,
    );
    orig.flags = d.flags;
    orig.tcp_seen = if q.proto == PROTO_TCP {
        seen_bits(q.tcp_flags)
    } else {
        Seen::empty()
    };
    orig.mss = mss;
    let orig: &FlowEntry = orig;
    if FLOWS
        .insert(key(p.src, p.dst, q.sport, q.dport, q.proto), orig, 0)
        .is_err()
    {
        let _ = FLOWS.remove(reply_key);
        return Err(Reason::DropTableFull);
    }
    Ok(())
}
