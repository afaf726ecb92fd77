//! Per-flow decisions taken once, on the first packet: which source the
//! backend sees (SNAT), which way translated packets travel (redirect or
//! stack), and which interfaces each direction must arrive on. All come
//! from the FIB, so they follow the routing table.
//!
//! `snat = "auto"` also learns, per backend, that replies bypass this host.
//! The fact a reader gets wrong: one client's silence proves nothing (the
//! backend may simply block that client, and switching would let it in
//! with the host's address), so a backend is switched only after
//! `AUTO_SNAT_CLIENTS` distinct clients failed within `AUTO_SNAT_WINDOW_NS`
//! while the backend answered no DNAT-only flow at all.
use aya_ebpf::{macros::map, maps::LruHashMap, programs::TcContext};
use forwarder_common::{
    conntrack::CtState, AutoEvidence, AutoSnatKey, FlowEntry, FlowFlags, FlowKey, ListenFlags,
    ListenerValue, NeighFlags, Reason, SnatMode, AUTO_SNAT_CLIENTS, AUTO_SNAT_PROBE_NS,
    AUTO_SNAT_PROBE_UDP_NS, AUTO_SNAT_TTL_NS, AUTO_SNAT_WINDOW_NS, MAX_AUTO_SNAT, PROTO_TCP,
    PROTO_UDP,
};

use crate::{
    conntrack::{self, now_ns},
    evict, fib,
    hdr::{TCP_ACK, TCP_SYN},
    helpers::map_value,
    maps::{self, AUTO_SNAT, FLOWS},
    parse::Packet,
};

/// What `snat = "auto"` has seen of each backend (per rule) in the
/// current round of evidence. An LRU: losing an entry only restarts it.
#[map(name = "FWD_AUTO_EVIDENCE")]
static AUTO_EVIDENCE: LruHashMap<AutoSnatKey, AutoEvidence> =
    LruHashMap::with_max_entries(MAX_AUTO_SNAT, 0);

pub struct Decision {
    /// Source address the backend sees.
    pub src: u32,
    /// `SNAT`, `VIA_STACK`, `AUTO`.
    pub flags: FlowFlags,
    /// Where replies arrive: the interface of the route to the target, or,
    /// for flows through the stack, the listening interface (whose egress
    /// program translates them).
    pub reply_iface: u32,
}

#[inline(always)]
pub fn auto_key(rule_id: u32, target: u32) -> AutoSnatKey {
    AutoSnatKey::v4(rule_id, target)
}

/// Whether `snat = "auto"` learned that this backend's replies bypass us.
#[inline(always)]
fn learned_snat(rule_id: u32, target: u32) -> bool {
    match map_value::get(&AUTO_SNAT, &auto_key(rule_id, target)).copied() {
        Some(at) => now_ns().saturating_sub(at) < AUTO_SNAT_TTL_NS,
        None => false,
    }
}

/// `snat = "auto"` for a target with forwarding route `to`: keep the
/// client's address when a reply from the backend, arriving where the
/// backend lives, would be routed back out of the interface the client
/// came in on. That rules out hairpins (backend on the client's side) and
/// backends this host cannot route back from. What the backend itself does
/// with its replies cannot be seen from here; that is learned per backend
/// (`auto_probe`).
#[inline(always)]
fn keep_client(ctx: &TcContext, p: &Packet, in_ifindex: u32, to: fib::Route, target: u32) -> bool {
    to.oif != in_ifindex && fib::route_leaves_by(ctx, to.oif, p.proto, target, p.src, in_ifindex)
}

// A BPF-to-BPF call rather than inlined: its locals get their own frame
// instead of adding to the caller's (512-byte stack limit).
#[inline(never)]
pub fn decide(
    ctx: &TcContext,
    p: &Packet,
    l: &ListenerValue,
    in_ifindex: u32,
) -> Result<Decision, Reason> {
    let target = l.target_addr[0];
    // The route, zeroed when there is none, rather than an Option: LLVM
    // may read an Option's payload before testing it (the value is then
    // unused, which is fine for LLVM), and for None those registers were
    // never written, which the verifier refuses ("R3 !read_ok").
    // A source of 0: a kernel without BPF_FIB_LOOKUP_SRC and a target the
    // daemon has no route facts for yet (`fib::route`): as if unrouted.
    let (routed, to) = match fib::route(ctx, in_ifindex, p.proto, p.src, target) {
        Some(r) if r.src != 0 => (true, r),
        _ => (false, fib::Route::NONE),
    };
    let forced_stack = l.flags.contains(ListenFlags::VIA_STACK);
    let mut flags = FlowFlags::empty();
    let src = match l.snat_mode {
        _ if forced_stack => p.src,
        SnatMode::FIXED => l.snat_addr[0],
        SnatMode::MASQUERADE if routed => to.src,
        SnatMode::MASQUERADE => return Err(Reason::DropError),
        SnatMode::AUTO => {
            flags |= FlowFlags::AUTO;
            if !routed {
                // No forwarding route: a virtual (kube-proxy ClusterIP) or
                // local target, reached through the stack, which cannot
                // take our SNAT (it drops packets from its own addresses
                // as martians): the client's address is the only choice,
                // whichever way the stack then sends the replies. (So no
                // lookup of that way either: an output lookup needs a
                // device, which binds it to that device's routes.)
                p.src
            } else if learned_snat(l.rule_id, target) {
                to.src
            } else if keep_client(ctx, p, in_ifindex, to, target) {
                p.src
            } else {
                to.src
            }
        }
        _ => p.src,
    };
    if src != p.src {
        flags |= FlowFlags::SNAT;
    }
    // A SNATed packet must be redirected: the stack would drop it as a
    // martian (its source is one of our addresses). Otherwise redirect only
    // to on-link targets (VMs, pods, LAN hosts); anything behind a gateway
    // or without a route goes through the stack, where netfilter (e.g.
    // kube-proxy's DNAT of a ClusterIP in PREROUTING) gets to see it.
    let mut via_stack = if forced_stack {
        true
    } else if flags.contains(FlowFlags::SNAT) || l.flags.contains(ListenFlags::VIA_REDIRECT) {
        !routed
    } else {
        !routed || to.nexthop != target
    };
    if !via_stack {
        // A next hop the daemon found dead (see `maps::NEIGH`): a redirect
        // would queue behind an ARP that never answers. The stack can take
        // a flow that keeps the client's address (netfilter's DNAT of a
        // virtual target, or its own ARP and host unreachable); a SNATed
        // one it would drop as a martian, so that one is answered here.
        let n = maps::neigh(to.nexthop);
        if flags.contains(FlowFlags::SNAT) {
            if n.contains(NeighFlags::UNREACHABLE) {
                return Err(Reason::ReplyHostUnreach);
            }
        } else if n.contains(NeighFlags::STACK) {
            via_stack = true;
            flags |= FlowFlags::NEIGH_DEAD;
        }
    }
    let reply_iface = if via_stack {
        if flags.contains(FlowFlags::SNAT) {
            // SNAT with no forwarding route: nothing can deliver it.
            return Err(Reason::DropError);
        }
        flags |= FlowFlags::VIA_STACK;
        in_ifindex
    } else {
        to.oif
    };
    Ok(Decision {
        src,
        flags,
        reply_iface,
    })
}

/// A flow that never got an answer, redirected to a target the daemon has
/// since found dead (`NeighFlags::STACK`: its first packets queued behind
/// an ARP that failed), is to be forgotten: the client's next packet (a
/// SYN retransmission, the next datagram) creates it anew and `decide`
/// sends it through the stack. Only flows the stack can take (not
/// SNATed); answered flows keep their path (`translate` answers host
/// unreachable when their neighbour fails). Checked in `auto_probe`,
/// before learning, which must not read a dead neighbour's silence as
/// replies bypassing this host (and one call there, rather than two
/// checks in the caller, costs the verifier 100k instructions less).
#[inline(always)]
fn neigh_died(e: &FlowEntry) -> bool {
    if e.flags.intersects(FlowFlags::SNAT | FlowFlags::VIA_STACK) {
        return false;
    }
    match CtState::from_raw(e.ct.state) {
        CtState::SynSent | CtState::UdpUnreplied => {}
        _ => return false,
    }
    maps::neigh(e.new_dst[0]).contains(NeighFlags::STACK)
}

/// Whether a flow entry took a per-flow `snat = "auto"` decision to keep
/// the client's address on the redirect path: the flows learning watches.
#[inline(always)]
pub fn learning_watches(e: &FlowEntry) -> bool {
    e.flags
        .intersection(FlowFlags::AUTO | FlowFlags::SNAT | FlowFlags::VIA_STACK)
        == FlowFlags::AUTO
}

/// A flow to a dead neighbour that the stack can take (`neigh_died`), and
/// `snat = "auto"` learning, for a packet of an existing original-direction
/// entry: a TCP client retransmitting its SYN, or a UDP client sending
/// again, with nothing ever back from the backend. That client's failure
/// is recorded; once `AUTO_SNAT_CLIENTS` distinct clients failed (see the
/// module comment) the backend is switched to SNAT for `AUTO_SNAT_TTL_NS`.
/// Returns true when this flow must be created anew (through the stack, or
/// SNATed: the backend is switched): the caller then treats the packet as
/// a flow's first.
// Not inlined: own stack frame (see `decide`).
#[inline(never)]
// The reply key goes to the map helpers as `&*key` on purpose: the value
// itself (what clippy suggests) would be copied to the stack first.
#[allow(clippy::needless_borrows_for_generic_args)]
pub fn auto_probe(p: &Packet, e: &FlowEntry, key: &FlowKey, ifindex: u32) -> bool {
    // Only the client's own packets, where they belong, are evidence (and
    // may forget a flow: a forged one cannot).
    if e.flags.contains(FlowFlags::REPLY) || !conntrack::arrived_right(e, ifindex) {
        return false;
    }
    if neigh_died(e) {
        let _ = FLOWS.remove(conntrack::peer_key(e, key));
        let _ = FLOWS.remove(key);
        return true;
    }
    if !learning_watches(e) {
        return false;
    }
    let now = now_ns();
    // Only flows that never got an answer (their state says so without a
    // lookup of the other direction).
    let state = CtState::from_raw(e.ct.state);
    let probe_ns = match (p.proto, state) {
        (PROTO_TCP, CtState::SynSent) if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN => {
            AUTO_SNAT_PROBE_NS
        }
        (PROTO_UDP, CtState::UdpUnreplied) => AUTO_SNAT_PROBE_UDP_NS,
        _ => return false,
    };
    if now.saturating_sub(e.created_ns) < probe_ns {
        return false;
    }
    // Built off the stack (see `evict::spare_key`).
    let Some(reply_key) = evict::spare_key() else {
        return false;
    };
    *reply_key = conntrack::peer_key(e, key);
    let replied = map_value::get(&FLOWS, reply_key).is_some_and(|r| r.packets > 0);
    if replied {
        return false;
    }
    let target = e.new_dst[0];
    if !learned_snat(e.rule_id, target) && !enough_evidence(e.rule_id, target, p.src, now) {
        return false;
    }
    let _ = FLOWS.remove(&*reply_key);
    let _ = FLOWS.remove(key);
    true
}

/// Adds `client`'s failure to the evidence about `target`; when that makes
/// `AUTO_SNAT_CLIENTS` distinct clients, switches the backend to SNAT and
/// returns true.
#[inline(always)]
fn enough_evidence(rule_id: u32, target: u32, client: u32, now: u64) -> bool {
    let k = auto_key(rule_id, target);
    if AUTO_EVIDENCE.get_ptr(k).is_none() {
        let fresh = AutoEvidence {
            first_ns: now,
            ..Default::default()
        };
        let _ = AUTO_EVIDENCE.insert(k, fresh, 0);
    }
    let Some(ev) = map_value::get_mut(&AUTO_EVIDENCE, &k) else {
        return false;
    };
    // A new round when the last one is old, or when the backend answered
    // anyone since it began: then its replies do come back through here.
    if now.saturating_sub(ev.first_ns) > AUTO_SNAT_WINDOW_NS || ev.answered_ns >= ev.first_ns {
        ev.first_ns = now;
        ev.count = 0;
        ev.clients = [0; AUTO_SNAT_CLIENTS];
    }
    let n = ev.count as usize;
    let mut known = false;
    let mut i = 0;
    while i < AUTO_SNAT_CLIENTS {
        if i < n && ev.clients[i] == client {
            known = true;
        }
        i += 1;
    }
    if !known && n < AUTO_SNAT_CLIENTS {
        ev.clients[n] = client;
        ev.count += 1;
    }
    if (ev.count as usize) < AUTO_SNAT_CLIENTS {
        return false;
    }
    let _ = AUTO_SNAT.insert(k, now, 0);
    let _ = AUTO_EVIDENCE.remove(k);
    true
}

/// The backend answered a DNAT-only `snat = "auto"` flow (its SYN-ACK, the
/// first reply of a UDP flow; `e` is the reply-direction entry, keyed from
/// the backend): replies from it do come back through this host.
#[inline(always)]
pub fn backend_answered(e: &FlowEntry, key: &FlowKey, now: u64) {
    if !e.flags.contains(FlowFlags::REPLY) || !learning_watches(e) {
        return;
    }
    if let Some(ev) = map_value::get_mut(&AUTO_EVIDENCE, &auto_key(e.rule_id, key.src[0])) {
        ev.answered_ns = now;
    }
}
