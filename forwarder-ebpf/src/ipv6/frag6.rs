//! IPv6 fragments of NAT66 flows, as the IPv4 path's `frag` handles IPv4
//! fragments: a first fragment (offset 0, more to come) carries the L4
//! header and starts or continues a flow like a whole packet; its ports
//! are remembered under (source, destination, identification, protocol),
//! and a later fragment that finds them is translated like any packet of
//! that flow (addresses only: its ports and the L4 checksum, which covers
//! the whole datagram, sit in the first fragment).
//!
//! The one fact a reader would get wrong: a later fragment whose first
//! fragment was not seen passes to the stack untouched (`PassFragment`),
//! not dropped: either its datagram is the host's own, or the stack holds
//! a datagram it can never reassemble (the first fragment never reaches
//! it). ip6tables' conntrack reassembles instead (nf_defrag_ipv6), so a
//! datagram whose fragments arrive out of order is lost here and not
//! there (docs/CONFORMANCE.md). What makes IPv6 fragments common on a
//! forward's path: a sender that learned a smaller path MTU from a packet
//! too big fragments its UDP datagrams itself (routers never do).
//!
//! And a second fact: behind a bridge with br_netfilter (every Kubernetes
//! node: `bridge-nf-call-ip6tables`), conntrack's defragmentation runs in
//! the bridge's PREROUTING, before the bridge device's TC ingress: the
//! fragments a pod sent arrive here as one datagram, larger than the route
//! MTU they were cut for. ip6_forward refragments such a datagram by its
//! largest fragment (`frag_max_size`, which BPF cannot read) where we
//! would answer packet too big again, forever. `reassembled` tells them
//! apart by their shape, and such a datagram goes to the stack translated.
use aya_ebpf::{macros::map, maps::LruHashMap, programs::TcContext};
use forwarder_common::{Reason, FRAG6_KEY_SIZE, FRAG_PORTS_SIZE, MAX_FRAGMENTED6, PROTO_UDP};

use super::parse::Packet6;
use crate::{
    helpers::{ktime_coarse_ns, map_value, skb},
    parse::Packet,
    verdict::Verdict,
};

/// How long a first fragment's ports stay valid: Linux's
/// `ip6frag_time`.
const FRAG_TTL_NS: u64 = 60_000_000_000;

/// What ties fragments together (RFC 8200 4.5). Kernel-only, as
/// `frag::FragKey`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Frag6Key {
    src: [u32; 4],
    dst: [u32; 4],
    id: u32,
    proto: u8,
    _pad: [u8; 3],
}

/// The first fragment's ports, and when it was seen (`frag::FragPorts`'s
/// layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ports6 {
    sport: u16,
    dport: u16,
    _pad: u32,
    seen_ns: u64,
}

const _: () = assert!(
    core::mem::size_of::<Frag6Key>() == FRAG6_KEY_SIZE as usize
        && core::mem::size_of::<Ports6>() == FRAG_PORTS_SIZE as usize
);

#[map(name = "FWD_FRAGS6")]
static FRAGS6: LruHashMap<Frag6Key, Ports6> = LruHashMap::with_max_entries(MAX_FRAGMENTED6, 0);

#[inline(always)]
fn key_of(p: &Packet6) -> Frag6Key {
    Frag6Key {
        src: p.src,
        dst: p.dst,
        id: p.frag_id,
        proto: p.p.proto,
        _pad: [0; 3],
    }
}

/// Remembers a first fragment's ports for its later fragments. Before the
/// flow is known, as on IPv4: a first fragment that is then refused leaves
/// an entry whose later fragments find no flow (and go to the stack).
// A call of its own: the key's 40 bytes stay off the pipeline's frames.
#[inline(never)]
pub fn remember(p: &Packet6) {
    let ports = Ports6 {
        sport: p.p.sport,
        dport: p.p.dport,
        _pad: 0,
        seen_ns: ktime_coarse_ns(),
    };
    // A full LRU evicts the oldest datagram: its later fragments then go
    // to the stack, as if untracked.
    let _ = FRAGS6.insert(key_of(p), ports, 0);
}

/// Fills in a later fragment's ports from its first fragment; false when
/// its first fragment was not seen (or too long ago).
#[inline(never)]
pub fn find_ports(p: &mut Packet6) -> bool {
    let Some(ports) = map_value::get(&FRAGS6, &key_of(p)).copied() else {
        return false;
    };
    if ktime_coarse_ns().saturating_sub(ports.seen_ns) > FRAG_TTL_NS {
        return false;
    }
    p.p.sport = ports.sport;
    p.p.dport = ports.dport;
    true
}

/// Whether a UDP datagram too big for its route (`v`, from
/// `route::next_hop`) is one the kernel reassembled before this hook (see
/// the module comment): not a GSO packet, and its bytes not all in the
/// skb's linear part (the reassembled fragments hang off the first one in
/// its frag_list). A sender's own datagram of that size comes linear (its
/// stack copies it into one buffer); a TCP segment is never sent to the
/// stack this way (its sender does not fragment). The cost of a wrong
/// guess: the stack answers packet too big to the translated source,
/// which is this host, and the sender does not learn (a UDP sender that
/// forbids fragmentation and sends paged datagrams).
#[inline(always)]
pub fn reassembled(ctx: &TcContext, q: &Packet, v: Verdict) -> bool {
    v.reason() == Reason::ReplyFragNeeded
        && q.proto == PROTO_UDP
        && skb::gso_size(ctx) == 0
        && ctx.data_end().saturating_sub(ctx.data()) < ctx.len() as usize
}
