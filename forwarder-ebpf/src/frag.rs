//! Fragment tracking: a datagram's later fragments carry no L4 header, so
//! they are tied to their flow through the first fragment, which does. A
//! first fragment's ports are remembered as soon as it is parsed, under
//! (source, destination, IP ID, protocol); a later fragment looks them up
//! and from then on is handled like any packet of that flow: same
//! translation (addresses only: it has no ports, and the L4 checksum sits
//! in the first fragment), same path. (A first fragment that is then
//! refused leaves an entry whose later fragments find no flow: they go to
//! the stack, as below.)
//!
//! The one fact a reader would get wrong: a later fragment without an entry
//! is passed to the stack untouched, not dropped. Either its datagram is
//! the host's own (it must get there), or its first fragment went through
//! the forwarder, arrived after it, or was refused: then the stack holds a
//! datagram it can never reassemble (the first fragment, with the ports,
//! never reaches it) and drops it after `ipfrag_time`. So no fragment can
//! smuggle a datagram past an allow-list to a host socket, and a datagram
//! whose fragments arrive out of order is lost (counted `pass_fragment`;
//! netfilter reassembles it). Entries are not removed on the last fragment
//! (fragments may be reordered among themselves); the LRU and the age
//! check retire them.
use aya_ebpf::{macros::map, maps::LruHashMap};

use forwarder_common::{FRAG_KEY_SIZE, FRAG_PORTS_SIZE, MAX_FRAGMENTED};

use crate::{
    helpers::{ktime_coarse_ns, map_value},
    parse::{Frag, Packet},
};

/// How long a first fragment's ports stay valid: Linux's `ipfrag_time`.
const FRAG_TTL_NS: u64 = 30_000_000_000;

/// What ties fragments together (RFC 791). Kernel-only: userspace never
/// reads this map, so its layout is not part of the pinned ABI (nor is
/// the map pinned: a restart loses only datagrams in flight).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FragKey {
    src: u32,
    dst: u32,
    id: u16,
    proto: u8,
    _pad: u8,
}

/// The first fragment's ports, and when it was seen.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FragPorts {
    sport: u16,
    dport: u16,
    _pad: u32,
    seen_ns: u64,
}

const _: () = assert!(
    core::mem::size_of::<FragKey>() == FRAG_KEY_SIZE as usize
        && core::mem::size_of::<FragPorts>() == FRAG_PORTS_SIZE as usize
);

#[map(name = "FWD_FRAGS")]
static FRAGS: LruHashMap<FragKey, FragPorts> = LruHashMap::with_max_entries(MAX_FRAGMENTED, 0);

#[inline(always)]
fn key_of(p: &Packet) -> FragKey {
    FragKey {
        src: p.src,
        dst: p.dst,
        id: p.ip_id,
        proto: p.proto,
        _pad: 0,
    }
}

/// Remembers a handled first fragment's ports for its later fragments.
#[inline(always)]
pub fn remember(p: &Packet) {
    if p.frag != Frag::First {
        return;
    }
    let ports = FragPorts {
        sport: p.sport,
        dport: p.dport,
        _pad: 0,
        seen_ns: ktime_coarse_ns(),
    };
    // A full LRU evicts the oldest datagram: its later fragments then go
    // to the stack, as if untracked.
    let _ = FRAGS.insert(key_of(p), ports, 0);
}

/// Fills in a later fragment's ports from its first fragment; false when
/// its first fragment was not seen (or too long ago).
#[inline(always)]
pub fn find_ports(p: &mut Packet) -> bool {
    let Some(ports) = map_value::get(&FRAGS, &key_of(p)).copied() else {
        return false;
    };
    if ktime_coarse_ns().saturating_sub(ports.seen_ns) > FRAG_TTL_NS {
        return false;
    }
    p.sport = ports.sport;
    p.dport = ports.dport;
    true
}
