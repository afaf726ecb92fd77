//! The programs `primitives` times (built with `prims`), with the keys
//! and constants of the production path they stand in for.
use std::os::fd::OwnedFd;

use anyhow::Result;
use forwarder_common::PROTO_TCP;

use super::{
    primitives::{bytes_of, compact},
    prims::{self, fib_params, Expect, Maps, Prog, KEY, KEY2},
    raw::{self, helper},
    Samples, Setup, CLIENT, CLIENT_SIDE_PEER, LISTEN, RULE_NAT, SERVER, SNAT,
};

const BPF_NOEXIST: i32 = 1;
const BPF_ANY: i32 = 0;
const BPF_F_PSEUDO_HDR: i32 = 16;
const FIB_SKIP_NEIGH: i32 = 4;
const FIB_SRC: i32 = 16;
/// The TCP checksum of the bench frame: Ethernet 14 + IPv4 20 + 16.
const TCP_CSUM_OFF: i32 = 50;

/// A hand-assembled piece and its timings.
pub struct Piece {
    pub name: &'static str,
    pub what: &'static str,
    pub fd: OwnedFd,
    pub s: Samples,
}

pub fn piece(name: &'static str, what: &'static str, asm: raw::Asm) -> Result<Piece> {
    Ok(Piece {
        name,
        what,
        fd: raw::load(name, &asm)?,
        s: Samples::default(),
    })
}

impl Piece {
    pub fn time(&mut self, frame: &[u8], ctx: &[u8], repeat: u32) -> Result<()> {
        let (_, ns) = raw::test_run(&self.fd, frame, ctx, repeat)?;
        self.s.0.push(ns);
        Ok(())
    }
}

/// The keys and constants the pieces use, as the production path sees them.
pub struct Keys {
    pub flow: Vec<u8>,
    pub miss: Vec<u8>,
    pub iface: Vec<u8>,
    pub listener: Vec<u8>,
    pub nexthop: Vec<u8>,
    pub compact: [u8; 16],
    /// Templates of fresh keys (their destination word is a counter).
    pub insert: Vec<u8>,
    pub orig: Vec<u8>,
    pub reply: Vec<u8>,
    /// The SNAT reply's socket tuple (backend -> SNAT address and port).
    pub tuple: [u8; 12],
}

pub fn keys(s: &Setup) -> Keys {
    use super::packets::key;
    let k1 = key(CLIENT, CLIENT_SIDE_PEER, 40000, 80);
    let mut tuple = [0u8; 12];
    tuple[0..4].copy_from_slice(&SERVER);
    tuple[4..8].copy_from_slice(&SNAT);
    tuple[8..10].copy_from_slice(&80u16.to_be_bytes());
    tuple[10..12].copy_from_slice(&33000u16.to_be_bytes());
    Keys {
        flow: bytes_of(&k1),
        miss: bytes_of(&key(CLIENT, LISTEN, 9, 80)),
        iface: s.r0.to_ne_bytes().to_vec(),
        listener: bytes_of(&s.listener_key),
        nexthop: SERVER.to_vec(),
        compact: compact(&k1),
        insert: bytes_of(&key([198, 18, 2, 2], [0; 4], 1, 1)),
        orig: bytes_of(&key([198, 18, 3, 3], [0; 4], 1, 80)),
        reply: bytes_of(&key([198, 18, 4, 4], [0; 4], 80, 1)),
        tuple,
    }
}

/// The established path's helper calls, in the program's order: interface,
/// flow, clock, route generation, rule counter, checksums, redirect,
/// interface counter. `flow` looks the flow key up in `flows` (`key16`:
/// the compact key); `iface_array`: the interface as an array slot.
pub fn nat_helpers(
    m: &Maps,
    k: &Keys,
    s: &Setup,
    flows: i32,
    key16: bool,
    iface_array: bool,
) -> raw::Asm {
    let mut p = Prog::new(m);
    if iface_array {
        p.stack(prims::TMP, &0u32.to_ne_bytes());
        p.lookup(m.route_gen, prims::TMP, Expect::NonZero);
    } else {
        p.stack(KEY, &k.iface)
            .lookup(m.ifaces, KEY, Expect::NonZero);
    }
    if key16 {
        p.stack(KEY, &k.compact);
    } else {
        p.stack(KEY, &k.flow);
    }
    p.lookup(flows, KEY, Expect::NonZero);
    p.call0(helper::KTIME_COARSE_NS);
    p.stack(prims::TMP, &0u32.to_ne_bytes());
    p.lookup(m.route_gen, prims::TMP, Expect::NonZero);
    p.count(m.rule_counters, RULE_NAT);
    p.l4_csum(TCP_CSUM_OFF, 0x1234, BPF_F_PSEUDO_HDR);
    p.l4_csum(TCP_CSUM_OFF, 0x5678, 0);
    p.redirect_neigh(s.r1, SERVER);
    p.count(m.iface_counters, s.spare_counter);
    p.finish()
}

/// The flow-creating path's helper calls, in the program's order (see
/// `tc::process`, `path::decide`, `newflow`, `fib::flow_next_hop`), with
/// fresh keys each run.
pub fn create_helpers(m: &Maps, k: &Keys, s: &Setup) -> raw::Asm {
    let mut p = Prog::new(m);
    p.stack(KEY, &k.iface)
        .lookup(m.ifaces, KEY, Expect::NonZero);
    p.fresh_key(prims::CREATE_COUNTER, KEY, &k.orig);
    p.lookup(m.flows, KEY, Expect::Zero);
    p.stack(KEY2, &k.listener)
        .lookup(m.listeners, KEY2, Expect::NonZero);
    p.fib(
        &fib_params(s.r0, PROTO_TCP, CLIENT, SERVER, 0),
        FIB_SKIP_NEIGH | FIB_SRC,
    );
    p.stack(KEY2, &k.nexthop)
        .lookup(m.neigh, KEY2, Expect::Zero);
    p.call0(helper::KTIME_COARSE_NS)
        .call0(helper::KTIME_COARSE_NS);
    p.value_in_r9(m.scratch, 0);
    p.key_again(KEY2, &k.reply);
    p.update(m.flows, KEY2, BPF_NOEXIST, Expect::Zero);
    p.sk_lookup_tcp(&k.tuple);
    p.update(m.flows, KEY, BPF_ANY, Expect::Zero);
    p.push(m.evict, KEY);
    p.lookup(m.flows, KEY, Expect::NonZero);
    p.count(m.rule_counters, RULE_NAT);
    p.count(m.rule_counters, RULE_NAT);
    p.fib(
        &fib_params(s.r0, PROTO_TCP, SNAT, SERVER, 20),
        FIB_SKIP_NEIGH,
    );
    p.stack(KEY2, &k.iface)
        .lookup(m.ifaces, KEY2, Expect::NonZero);
    p.stack(KEY2, &k.nexthop)
        .lookup(m.neigh, KEY2, Expect::Zero);
    p.l4_csum(TCP_CSUM_OFF, 0x1234, BPF_F_PSEUDO_HDR);
    p.l4_csum(TCP_CSUM_OFF, 0x5678, 0);
    p.redirect_neigh(s.r1, SERVER);
    p.count(m.iface_counters, s.spare_counter);
    p.finish()
}

/// One lookup of `key` in `map`.
fn one_lookup(m: &Maps, map: i32, key: &[u8], e: Expect) -> raw::Asm {
    let mut p = Prog::new(m);
    p.stack(KEY, key).lookup(map, KEY, e);
    p.finish()
}

/// The pieces timed at repeat = REPEAT next to `nat` (name, what, code).
pub fn established_pieces(
    m: &Maps,
    k: &Keys,
    s: &Setup,
    key40: i32,
    key16: i32,
) -> Result<Vec<Piece>> {
    let one = |f: &dyn Fn(&mut Prog)| {
        let mut p = Prog::new(m);
        f(&mut p);
        p.finish()
    };
    Ok(vec![
        piece(
            "empty",
            "return at once: entering a program at all",
            Prog::new(m).finish(),
        )?,
        piece(
            "array_lookup",
            "FWD_ROUTE_GEN[0] (array: inlined by the verifier)",
            one(&|p| {
                p.stack(prims::TMP, &0u32.to_ne_bytes());
                p.lookup(m.route_gen, prims::TMP, Expect::NonZero);
            }),
        )?,
        piece(
            "percpu_counter",
            "a per-CPU counter slot incremented (counters::count_iface)",
            one(&|p| {
                p.count(m.iface_counters, s.spare_counter);
            }),
        )?,
        piece(
            "iface_lookup",
            "FWD_IFACES hash lookup, 4-byte key, hit",
            one_lookup(m, m.ifaces, &k.iface, Expect::NonZero),
        )?,
        piece(
            "flow_lookup",
            "FWD_FLOWS hash lookup, 40-byte key, hit",
            one_lookup(m, m.flows, &k.flow, Expect::NonZero),
        )?,
        piece(
            "flow_lookup_miss",
            "FWD_FLOWS hash lookup, 40-byte key, miss",
            one_lookup(m, m.flows, &k.miss, Expect::Zero),
        )?,
        piece(
            "key40_lookup",
            "private hash like FWD_FLOWS, 40-byte key, hit",
            one_lookup(m, key40, &k.flow, Expect::NonZero),
        )?,
        piece(
            "key16_lookup",
            "the same with a 16-byte IPv4-only key, hit",
            one_lookup(m, key16, &k.compact, Expect::NonZero),
        )?,
        piece(
            "listener_lookup",
            "FWD_LISTENERS hash lookup (no prealloc), 24-byte key, hit",
            one_lookup(m, m.listeners, &k.listener, Expect::NonZero),
        )?,
        piece(
            "neigh_lookup",
            "FWD_NEIGH hash lookup, 4-byte key, miss",
            one_lookup(m, m.neigh, &k.nexthop, Expect::Zero),
        )?,
        piece(
            "ktime_coarse",
            "bpf_ktime_get_coarse_ns",
            one(&|p| {
                p.call0(helper::KTIME_COARSE_NS);
            }),
        )?,
        piece(
            "prandom",
            "bpf_get_prandom_u32",
            one(&|p| {
                p.call0(helper::PRANDOM_U32);
            }),
        )?,
        piece(
            "csum_pair",
            "two bpf_l4_csum_replace (addresses with PSEUDO_HDR, ports without)",
            one(&|p| {
                p.l4_csum(TCP_CSUM_OFF, 0x1234, BPF_F_PSEUDO_HDR);
                p.l4_csum(TCP_CSUM_OFF, 0x5678, 0);
            }),
        )?,
        piece(
            "redirect_neigh",
            "bpf_redirect_neigh (IPv4 next hop)",
            one(&|p| {
                p.redirect_neigh(s.r1, SERVER);
            }),
        )?,
        piece(
            "fib_lookup",
            "bpf_fib_lookup SKIP_NEIGH with tot_len (a FIB-cache miss)",
            one(&|p| {
                p.fib(
                    &fib_params(s.r0, PROTO_TCP, SNAT, SERVER, 104),
                    FIB_SKIP_NEIGH,
                );
            }),
        )?,
        piece(
            "fib_lookup_src",
            "bpf_fib_lookup SKIP_NEIGH|SRC (path::decide's route)",
            one(&|p| {
                p.fib(
                    &fib_params(s.r0, PROTO_TCP, CLIENT, SERVER, 0),
                    FIB_SKIP_NEIGH | FIB_SRC,
                );
            }),
        )?,
        piece(
            "sk_lookup_tcp",
            "bpf_sk_lookup_tcp, no socket (the SNAT port's local-socket check)",
            one(&|p| {
                p.sk_lookup_tcp(&k.tuple);
            }),
        )?,
        piece(
            "queue_push",
            "FWD_CT_EVICT push, 40-byte key (newflow's eviction queue)",
            one(&|p| {
                p.stack(KEY, &k.flow).push(m.evict, KEY);
            }),
        )?,
        piece(
            "nat_helpers",
            "the nat path's helper calls in a row, no program logic",
            nat_helpers(m, k, s, m.flows, false, false),
        )?,
        piece(
            "nat_helpers_compact",
            "the same with a 16-byte flow key and the interface in an array",
            nat_helpers(m, k, s, key16, true, true),
        )?,
    ])
}

/// Fresh-key pieces (keygen baseline, insert, delete), timed as batches of
/// REPEAT new keys: inserted, then the same keys deleted.
pub fn fresh_pieces(m: &Maps, k: &Keys) -> Result<[Piece; 3]> {
    let gen = |op: u8| {
        let mut p = Prog::new(m);
        p.fresh_key(prims::INSERT_COUNTER, KEY, &k.insert)
            .value_in_r9(m.scratch, 0);
        match op {
            1 => p.update(m.flows, KEY, BPF_NOEXIST, Expect::Zero),
            2 => p.delete(m.flows, KEY, Expect::Zero),
            _ => &mut p,
        };
        p.finish()
    };
    Ok([
        piece(
            "keygen",
            "a fresh key and the scratch entry (baseline of the two below)",
            gen(0),
        )?,
        piece(
            "flow_insert",
            "FWD_FLOWS insert of a new key (BPF_NOEXIST): keygen + insert",
            gen(1),
        )?,
        piece(
            "flow_delete",
            "FWD_FLOWS delete of that key: keygen + delete",
            gen(2),
        )?,
    ])
}
