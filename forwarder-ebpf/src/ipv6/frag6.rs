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
use aya_ebpf::{macros::map, maps::LruHashMap};
use forwarder_common::{FRAG6_KEY_SIZE, FRAG_PORTS_SIZE, MAX_FRAGMENTED6};

use super::parse::Packet6;
use crate::helpers::{ktime_coarse_ns, map_value};

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
