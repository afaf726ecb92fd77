//! Connection tracking: one entry per direction, inserted together (the
//! reply entry first, since inserting it is what reserves the SNAT port).
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::TcContext,
};
use forwarder_common::{
    FlowEntry, FlowKey, ListenerValue, Reason, AF_INET, FLOW_REPLY, FLOW_SNAT, FLOW_VIA_STACK,
    LISTEN_VIA_STACK, PROTO_TCP, SEEN_ACK, SEEN_FIN, SEEN_RST, SEEN_SYN, SNAT_AUTO, SNAT_FIXED,
    SNAT_MASQUERADE,
};

use crate::{
    fib,
    maps::{self, FLOWS},
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

const EEXIST: i32 = 17;
/// Candidate SNAT ports tried per new flow: enough to find a free port in
/// a table far fuller than real use, small enough for the verifier.
const PORT_TRIES: u32 = 16;
const DEFAULT_PORT_MIN: u16 = 32768;
const DEFAULT_PORT_MAX: u16 = 60999;

#[inline(always)]
pub fn key_of(p: &Packet) -> FlowKey {
    FlowKey {
        src: [p.src, 0, 0, 0],
        dst: [p.dst, 0, 0, 0],
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        family: AF_INET,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn seen_bits(tcp_flags: u8) -> u8 {
    let mut s = 0;
    if tcp_flags & TCP_SYN != 0 {
        s |= SEEN_SYN;
    }
    if tcp_flags & TCP_ACK != 0 {
        s |= SEEN_ACK;
    }
    if tcp_flags & TCP_FIN != 0 {
        s |= SEEN_FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        s |= SEEN_RST;
    }
    s
}

/// Accounts a packet on an existing entry and records TCP flags.
#[inline(always)]
pub fn touch(e: *mut FlowEntry, p: &Packet, len: u32) {
    // SAFETY: e points into a map value that stays valid for this run.
    // The bpfel target has no atomic read-modify-write in `core`, so these
    // are plain adds: exact while one CPU handles a flow direction at a time
    // (RSS/RPS keep a flow on one queue), approximate otherwise.
    unsafe {
        (*e).last_seen_ns = bpf_ktime_get_ns();
        (*e).packets += 1;
        (*e).bytes += len as u64;
        if p.proto == PROTO_TCP {
            let seen = seen_bits(p.tcp_flags);
            let old = (*e).tcp_seen;
            // A new SYN on a tuple whose previous connection closed starts
            // over (the peer reuses the port): forget the old FIN/RST.
            let restart = p.tcp_flags & TCP_SYN != 0 && old & (SEEN_FIN | SEEN_RST) != 0;
            let new = if restart { seen } else { old | seen };
            if new != old {
                (*e).tcp_seen = new;
            }
        }
    }
}

/// Creates both directions of a flow for a packet that matched listener `l`
/// and returns the original-direction entry.
#[inline(always)]
pub fn create(
    ctx: &TcContext,
    p: &Packet,
    l: &ListenerValue,
    in_ifindex: u32,
) -> Result<FlowEntry, Reason> {
    let target = l.target_addr[0];
    let mut src = p.src;
    match l.snat_mode {
        SNAT_FIXED => src = l.snat_addr[0],
        SNAT_MASQUERADE | SNAT_AUTO => {
            src = fib::source_for(ctx, in_ifindex, p.proto, target).ok_or(Reason::DropError)?;
        }
        _ => {}
    }
    let snat = src != p.src;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let tcp_seen = if p.proto == PROTO_TCP {
        seen_bits(p.tcp_flags)
    } else {
        0
    };
    let mut flags = 0;
    if snat {
        flags |= FLOW_SNAT;
    }
    if l.flags & LISTEN_VIA_STACK != 0 {
        flags |= FLOW_VIA_STACK;
    }
    let reply = FlowEntry {
        new_src: [p.dst, 0, 0, 0],
        new_dst: [p.src, 0, 0, 0],
        new_sport: p.dport,
        new_dport: p.sport,
        rule_id: l.rule_id,
        created_ns: now,
        last_seen_ns: now,
        packets: 0,
        bytes: 0,
        flags: flags | FLOW_REPLY,
        tcp_seen: 0,
        _pad: [0; 6],
    };
    let mut reply_key = FlowKey {
        src: [target, 0, 0, 0],
        dst: [src, 0, 0, 0],
        sport: l.target_port,
        dport: p.sport,
        proto: p.proto,
        family: AF_INET,
        _pad: [0; 2],
    };

    if snat {
        let cfg = maps::config();
        let (min, max) = if cfg.snat_port_min != 0 && cfg.snat_port_max >= cfg.snat_port_min {
            (cfg.snat_port_min, cfg.snat_port_max)
        } else {
            (DEFAULT_PORT_MIN, DEFAULT_PORT_MAX)
        };
        let span = (max - min) as u32 + 1;
        // SAFETY: plain helper call.
        let start = unsafe { bpf_get_prandom_u32() } % span;
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
                // SAFETY: copied out immediately.
                let old = unsafe { FLOWS.get(reply_key).copied() };
                match old {
                    Some(o)
                        if o.new_dst == reply.new_dst
                            && o.new_dport == reply.new_dport
                            && o.new_src == reply.new_src
                            && o.new_sport == reply.new_sport =>
                    {
                        let _ = FLOWS.insert(reply_key, reply, 0);
                    }
                    _ => return Err(Reason::DropNoPort),
                }
            }
            Err(_) => return Err(Reason::DropTableFull),
        }
    }

    let orig = FlowEntry {
        new_src: [src, 0, 0, 0],
        new_dst: [target, 0, 0, 0],
        new_sport: reply_key.dport,
        new_dport: l.target_port,
        rule_id: l.rule_id,
        created_ns: now,
        last_seen_ns: now,
        packets: 0,
        bytes: 0,
        flags,
        tcp_seen,
        _pad: [0; 6],
    };
    // Any existing original entry (a stale one, or another CPU racing on a
    // retransmitted SYN) is replaced: the reply entry we just reserved is the
    // one that matches this translation.
    if FLOWS.insert(key_of(p), orig, 0).is_err() {
        let _ = FLOWS.remove(reply_key);
        return Err(Reason::DropTableFull);
    }
    Ok(orig)
}
