//! `bench_prog --primitives`: where the TC program's time goes (issue 19),
//! by ablation. Each kernel primitive the established (`nat`) and the
//! flow-creating (`create`) paths call is timed alone with
//! BPF_PROG_TEST_RUN (`prims`), interleaved with the production cases, so
//! a case's time splits into: entering a program at all (`empty`), each
//! primitive over `empty`, and the rest, which is the program's own code
//! (parsing, state machine, checks, stack traffic). The helper sequences
//! of both paths with no logic between the calls (`nat_helpers`,
//! `create_helpers`) are the floor any program doing the same work
//! through the same helpers and maps would pay on this machine.
//!
//! The one fact a reader would get wrong: `create` is timed at repeat = 1
//! (a first packet is first once), and a single run's duration holds the
//! kernel's two timer reads and caches gone cold in the syscall: `empty`
//! at repeat = 1 measures exactly that part, which no program can avoid
//! in this measurement (and which real traffic does not pay).
use std::{collections::HashMap, os::fd::AsRawFd, time::Instant};

use anyhow::{ensure, Context, Result};
use aya::{
    maps::{Array, HashMap as BpfHash, Map, MapData, MapInfo},
    programs::loaded_programs,
    sys::{enable_stats, Stats},
};
use forwarder_common::{FlowEntry, FlowKey, Hook, Reason, PROG_INGRESS};
use serde_json::{json, Value};

use super::{
    expect_redirect,
    pieces::{create_helpers, established_pieces, fresh_pieces, keys, nat_helpers, piece, Piece},
    prims::{self, Maps, Prog},
    raw, Bench, Samples, Setup, REPEAT,
};

/// Entries in each of the two private tables of the key-size comparison.
const KEYSIZE_FILL: u32 = 10_000;
/// Overwritten before the `cold` runs: more than this machine's L1 data
/// cache (48 KiB per core), then twice its per-core L2 (2 MiB).
const EVICT_BYTES: [(&str, usize); 2] = [("l1", 256 << 10), ("l2", 8 << 20)];

pub fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain repr(C) map key of the shared contract; its
    // padding is zeroed by construction (`FlowKey::_pad`, `ListenerKey`).
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
}

/// A 16-byte IPv4-only flow key (src, dst, ports, proto): what a key sized
/// for IPv4 would hash, for the key-size comparison.
pub fn compact(k: &FlowKey) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0..4].copy_from_slice(&k.src[0].to_ne_bytes());
    c[4..8].copy_from_slice(&k.dst[0].to_ne_bytes());
    c[8..10].copy_from_slice(&k.sport.to_ne_bytes());
    c[10..12].copy_from_slice(&k.dport.to_ne_bytes());
    c[12] = k.proto;
    c
}

/// The production program's maps by name (owned fds).
fn production_maps(b: &mut Bench) -> Result<HashMap<String, (aya::maps::MapFd, u32)>> {
    let info = b.dp.program(PROG_INGRESS)?.info()?;
    let mut out = HashMap::new();
    for id in info.map_ids()?.unwrap_or_default() {
        let m = MapInfo::from_id(id)?;
        if let Some(name) = m.name_as_str() {
            out.insert(name.to_string(), (m.fd()?, m.max_entries()));
        }
    }
    Ok(out)
}

/// A private hash with N-byte keys, as large as the flow table, holding
/// `KEYSIZE_FILL` entries and `hit`; (its fd, the map that owns it).
type KeysizeTable<const N: usize> = BpfHash<MapData, [u8; N], FlowEntry>;
fn keysize_table<const N: usize>(
    max: u32,
    hit: [u8; N],
    make: impl Fn(u32) -> [u8; N],
) -> Result<(i32, KeysizeTable<N>)> {
    let value = size_of::<FlowEntry>() as u32;
    let fd = raw::map_create(raw::BPF_MAP_TYPE_HASH, N as u32, value, max)?;
    let raw_fd = fd.as_raw_fd();
    let mut h: KeysizeTable<N> = BpfHash::try_from(Map::HashMap(MapData::from_fd(fd)?))?;
    for i in 0..KEYSIZE_FILL {
        h.insert(make(i), FlowEntry::default(), 0)?;
    }
    h.insert(hit, FlowEntry::default(), 0)?;
    Ok((raw_fd, h))
}

/// (run_time_ns, run_cnt) of program `id` (BPF statistics).
fn prog_stats(id: u32) -> Result<(u64, u64)> {
    for p in loaded_programs() {
        let p = p?;
        if p.id() == id {
            return Ok((p.run_time().as_nanos() as u64, p.run_count()));
        }
    }
    anyhow::bail!("program {id} not loaded")
}

fn row(name: &str, what: &str, s: &Samples, empty: i64) -> Value {
    let mut v = s.summary();
    v["over_empty"] = json!(s.median() - empty);
    v["what"] = json!(what);
    v["name"] = json!(name);
    v
}

pub struct Frames<'a> {
    pub nat: &'a [u8],
    pub ident: &'a [u8],
    pub syn: &'a dyn Fn(u16) -> Vec<u8>,
}

/// Times the pieces next to the production cases; one JSON object.
pub fn run(b: &mut Bench, s: &Setup, f: &Frames, batches: usize, creates: usize) -> Result<Value> {
    let prod = production_maps(b)?;
    let fd = |n: &str| -> Result<i32> {
        let (m, _) = prod
            .get(n)
            .with_context(|| format!("fwd_ingress uses no map {n}"))?;
        Ok(std::os::fd::AsFd::as_fd(m).as_raw_fd())
    };
    let flows_max = prod.get(forwarder_common::MAP_FLOWS).map_or(0, |(_, n)| *n);
    let stats_fd = raw::map_create(raw::BPF_MAP_TYPE_ARRAY, 4, 8, prims::STATS_SLOTS)?;
    let stats_raw = stats_fd.as_raw_fd();
    let mut stats: Array<MapData, u64> = Array::try_from(Map::Array(MapData::from_fd(stats_fd)?))?;
    let m = Maps {
        flows: fd(forwarder_common::MAP_FLOWS)?,
        ifaces: fd(forwarder_common::MAP_IFACES)?,
        listeners: fd(forwarder_common::MAP_LISTENERS)?,
        neigh: fd(forwarder_common::MAP_NEIGH)?,
        route_gen: fd(forwarder_common::MAP_ROUTE_GEN)?,
        iface_counters: fd(forwarder_common::MAP_IFACE_COUNTERS)?,
        rule_counters: fd(forwarder_common::MAP_RULE_COUNTERS)?,
        scratch: fd(forwarder_common::MAP_FLOW_SCRATCH)?,
        evict: fd(forwarder_common::MAP_CT_EVICT)?,
        stats: stats_raw,
    };
    let k = keys(s);
    let (key40, _t40) = keysize_table::<40>(flows_max, k.flow.clone().try_into().unwrap(), |i| {
        bytes_of(&super::packets::key(
            [198, 18, 9, 9],
            [10, 9, (i >> 8) as u8, i as u8],
            1,
            1,
        ))
        .try_into()
        .unwrap()
    })?;
    let (key16, _t16) = keysize_table::<16>(flows_max, k.compact, |i| {
        compact(&super::packets::key(
            [198, 18, 9, 9],
            [10, 9, (i >> 8) as u8, i as u8],
            1,
            1,
        ))
    })?;
    let mut est = established_pieces(&m, &k, s, key40, key16)?;
    let mut fresh = fresh_pieces(&m, &k)?;
    let mut single = [
        piece(
            "empty_single",
            "return at once, repeat = 1",
            Prog::new(&m).finish(),
        )?,
        piece(
            "nat_helpers_single",
            "nat_helpers, repeat = 1",
            nat_helpers(&m, &k, s, m.flows, false, false),
        )?,
        piece(
            "create_helpers",
            "the creating path's helper calls in a row, fresh keys, repeat = 1",
            create_helpers(&m, &k, s),
        )?,
    ];
    let ctx = b.ctx.clone();
    let lo_ctx = super::ctx_for(1);
    let redirected0 = b
        .iface_counter(0, Hook::TcIngress, Reason::FwdRedirect)?
        .packets;
    let (mut nat, mut no_nat, mut floor) =
        (Samples::default(), Samples::default(), Samples::default());
    for round in 0..batches + 20 {
        // The first 20 rounds warm up (JIT'd code, buckets, caches).
        let keep = round >= 20;
        for p in est.iter_mut() {
            p.time(f.nat, &ctx, REPEAT)?;
        }
        for (frame, out) in [(f.nat, &mut nat), (f.ident, &mut no_nat)] {
            let (v, ns) = b.run(frame, REPEAT)?;
            expect_redirect("primitives", v)?;
            out.0.push(ns);
        }
        floor
            .0
            .push(b.run_prog(PROG_INGRESS, &lo_ctx, f.ident, REPEAT)?.1);
        for p in fresh.iter_mut() {
            stats.set(prims::INSERT_COUNTER, 0, 0)?;
            p.time(f.nat, &ctx, REPEAT)?;
        }
        if !keep {
            for p in est.iter_mut().chain(fresh.iter_mut()) {
                p.s.0.clear();
            }
            for x in [&mut nat, &mut no_nat, &mut floor] {
                x.0.clear();
            }
        }
    }
    let redirected = b
        .iface_counter(0, Hook::TcIngress, Reason::FwdRedirect)?
        .packets
        - redirected0;
    ensure!(
        redirected == 2 * (batches as u64 + 20) * REPEAT as u64,
        "only {redirected} production runs were translated and redirected"
    );
    let (mut create, mut nat_single) = (Samples::default(), Samples::default());
    for i in 0..creates {
        let (v, ns) = b.run(&(f.syn)(10000 + (i % 50000) as u16), 1)?;
        expect_redirect("create", v)?;
        create.0.push(ns);
        let (v, ns) = b.run(f.nat, 1)?;
        expect_redirect("nat_single", v)?;
        nat_single.0.push(ns);
        for p in single.iter_mut() {
            p.time(f.nat, &ctx, 1)?;
        }
    }
    let cold = cold_runs(b, &est[0], f.nat, &ctx, creates.min(1000))?;
    let stats_json = stats_overhead(b, &mut est[0], f.nat, &ctx, batches.min(300))?;
    let unexpected = stats.get(&prims::UNEXPECTED, 0)?;
    ensure!(
        unexpected == 0,
        "{unexpected} primitive calls returned what their piece does not expect"
    );
    let empty = est[0].s.median();
    let med = |name: &str| {
        est.iter()
            .find(|p| p.name == name)
            .map_or(0, |p| p.s.median() - empty)
    };
    let mut out = serde_json::Map::new();
    out.insert("repeat".into(), json!(REPEAT));
    out.insert("batches".into(), json!(batches));
    out.insert("creates".into(), json!(creates));
    out.insert(
        "established".into(),
        est.iter()
            .map(|p| row(p.name, p.what, &p.s, empty))
            .collect(),
    );
    out.insert(
        "fresh_keys".into(),
        fresh
            .iter()
            .map(|p| row(p.name, p.what, &p.s, empty))
            .collect(),
    );
    out.insert(
        "single".into(),
        single
            .iter()
            .map(|p| row(p.name, p.what, &p.s, 0))
            .collect(),
    );
    out.insert(
        "production".into(),
        json!({
            "nat": nat.summary(), "no_nat": no_nat.summary(), "floor": floor.summary(),
            "create": create.summary(), "nat_single": nat_single.summary(),
        }),
    );
    let insert = fresh[1].s.median() - fresh[0].s.median();
    let delete = fresh[2].s.median() - fresh[0].s.median();
    // The nat case, split: what each primitive it calls costs over `empty`.
    let parts = [
        ("iface_lookup", 1),
        ("flow_lookup", 1),
        ("ktime_coarse", 1),
        ("array_lookup", 1),
        ("percpu_counter", 2),
        ("csum_pair", 1),
        ("redirect_neigh", 1),
    ];
    let sum: i64 = parts.iter().map(|(n, c)| med(n) * c).sum();
    out.insert(
        "nat_split".into(),
        json!({
            "nat": nat.median(), "empty": empty,
            "primitives": parts.iter().map(|(n, c)| json!([n, c, med(n) * c])).collect::<Vec<_>>(),
            "primitives_sum": sum,
            "program_body": nat.median() - empty - sum,
            "nat_helpers_in_a_row": med("nat_helpers") + empty,
            "no_nat_minus_nat": no_nat.median() - nat.median(),
        }),
    );
    out.insert("flow_insert_ns".into(), json!(insert));
    out.insert("flow_delete_ns".into(), json!(delete));
    out.insert("bpf_stats".into(), stats_json);
    out.insert("cold".into(), cold);
    out.insert("unexpected_results".into(), json!(unexpected));
    Ok(Value::Object(out))
}

/// `nat` and `empty` at repeat = 1 right after this CPU overwrote a buffer
/// larger than its L1, then one larger than its L2. Real traffic runs the
/// program between the stack's and the applications' work, so its caches
/// are neither as warm as repeat = 200 nor as cold as after a syscall
/// alone; these bracket it (the skb itself is always warm: test_run has
/// just copied the frame in).
fn cold_runs(b: &mut Bench, empty: &Piece, frame: &[u8], ctx: &[u8], n: usize) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (level, bytes) in EVICT_BYTES {
        let mut buf = vec![0u8; bytes];
        let (mut nat, mut none) = (Samples::default(), Samples::default());
        for i in 0..n {
            for which in 0..2 {
                buf.iter_mut()
                    .step_by(64)
                    .for_each(|x| *x = x.wrapping_add(i as u8));
                std::hint::black_box(&mut buf);
                if which == 0 {
                    let (v, ns) = b.run(frame, 1)?;
                    expect_redirect("nat (cold)", v)?;
                    nat.0.push(ns);
                } else {
                    none.0.push(raw::test_run(&empty.fd, frame, ctx, 1)?.1);
                }
            }
        }
        out.insert(format!("nat_{level}_cold"), nat.summary());
        out.insert(format!("empty_{level}_cold"), none.summary());
    }
    Ok(Value::Object(out))
}

/// What BPF run-time statistics add: `empty` and `nat` alternately with
/// statistics on (BPF_ENABLE_STATS) and off; with them on, the kernel
/// times every run with two sched_clock() reads, and run_time_ns is what
/// `bpftool prog show` (and the benchmark's `bpf_ns_per_pkt`) reports.
fn stats_overhead(
    b: &mut Bench,
    empty: &mut Piece,
    frame: &[u8],
    ctx: &[u8],
    rounds: usize,
) -> Result<Value> {
    let empty_id = raw::prog_id(&empty.fd)?;
    let nat_id = b.dp.program(PROG_INGRESS)?.info()?.id();
    let (e0, n0) = (prog_stats(empty_id)?, prog_stats(nat_id)?);
    let mut t = [
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    ];
    let started = Instant::now();
    for _ in 0..rounds {
        let on = enable_stats(Stats::RunTime)?;
        t[0].0.push(raw::test_run(&empty.fd, frame, ctx, REPEAT)?.1);
        t[1].0.push(b.run(frame, REPEAT)?.1);
        drop(on);
        t[2].0.push(raw::test_run(&empty.fd, frame, ctx, REPEAT)?.1);
        t[3].0.push(b.run(frame, REPEAT)?.1);
    }
    let (e1, n1) = (prog_stats(empty_id)?, prog_stats(nat_id)?);
    let per_run = |a: (u64, u64), b: (u64, u64)| (b.0 - a.0) as f64 / (b.1 - a.1).max(1) as f64;
    let others_on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .is_ok_and(|s| s.trim() == "1");
    Ok(json!({
        "rounds": rounds,
        "seconds": started.elapsed().as_secs_f64(),
        "empty_duration_on": t[0].median(), "empty_duration_off": t[2].median(),
        "nat_duration_on": t[1].median(), "nat_duration_off": t[3].median(),
        "empty_run_time_ns_per_run": per_run(e0, e1),
        "nat_run_time_ns_per_run": per_run(n0, n1),
        "stats_left_on_by_others": others_on,
    }))
}
