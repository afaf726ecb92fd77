//! `bench_fill`: pre-fills a running daemon's pinned flow table with
//! synthetic established TCP flows, for the flow-table scale benchmark
//! (`cargo xtask bench`).
//!
//! ```text
//! bench_fill --pin-dir DIR --flows N --listen A.B.C.D --snat A.B.C.D [--rule-id ID]
//! ```
//!
//! Each flow is two entries, original and reply, shaped exactly like the
//! daemon's own SNAT flows (`FlowKey::peer_of` links them, so the sweeper
//! sees complete pairs, not orphans). The tuples can never collide with the
//! benchmark's traffic: clients come from 198.18.0.0/16 and backends from
//! 198.19.0.0/16 (the RFC 2544 benchmarking ranges), the benchmark uses
//! 10.x addresses. Timestamps are CLOCK_MONOTONIC now (the clock of
//! bpf_ktime_get_ns) and the TCP state is ESTABLISHED, so with the long
//! timeouts of the benchmark's rules file the sweeper keeps them.
//! Prints one JSON object: flows and entries inserted, seconds taken.
use std::{net::Ipv4Addr, path::PathBuf, time::Instant};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use forwarder_common::{
    addr_v4, FlowEntry, FlowFlags, FlowKey, Seen, AF_INET, MAP_FLOWS, MAX_RULES, PROTO_TCP,
};

/// Listen/target port of the synthetic flows (discard): no benchmark
/// traffic uses it, and no rule listens on it.
const SYNTH_PORT: u16 = 9;
/// Client addresses 198.18.0.0/16 x client ports from 1024.
const CLIENT_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Backend addresses 198.19.0.0/16 x SNAT ports from 32768.
const BACKEND_BASE: u32 = u32::from_be_bytes([198, 19, 0, 0]);
/// (i >> 16) is the port offset: client ports 1024.., SNAT ports 32768..=65535.
const MAX_FLOWS: u32 = 65536 * 32768;

struct Args {
    pin_dir: PathBuf,
    flows: u32,
    listen: Ipv4Addr,
    snat: Ipv4Addr,
    rule_id: u32,
}

fn parse_args() -> Result<Args> {
    let mut pin_dir = None;
    let mut flows = None;
    let mut listen = None;
    let mut snat = None;
    // An id no daemon hands out before 1023 rules exist: the synthetic flows
    // show up in the table fill but in no rule's counters.
    let mut rule_id = MAX_RULES - 1;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--pin-dir" => pin_dir = Some(PathBuf::from(val()?)),
            "--flows" => flows = Some(val()?.parse()?),
            "--listen" => listen = Some(val()?.parse()?),
            "--snat" => snat = Some(val()?.parse()?),
            "--rule-id" => rule_id = val()?.parse()?,
            _ => bail!("unknown argument {a}; usage: bench_fill --pin-dir DIR --flows N --listen IP --snat IP [--rule-id ID]"),
        }
    }
    Ok(Args {
        pin_dir: pin_dir.context("--pin-dir is required")?,
        flows: flows.context("--flows is required")?,
        listen: listen.context("--listen is required")?,
        snat: snat.context("--snat is required")?,
        rule_id,
    })
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn v4(a: u32) -> [u32; 4] {
    addr_v4(a.to_be_bytes())
}

/// Both entries of synthetic flow `i`: client 198.18.x.y:port -> listen:9,
/// translated to snat:snat_port -> backend 198.19.x.y:9.
fn flow(i: u32, a: &Args, now: u64) -> [(FlowKey, FlowEntry); 2] {
    let client = v4(CLIENT_BASE + (i & 0xffff));
    let client_port = 1024 + (i >> 16) as u16;
    let backend = v4(BACKEND_BASE + (i & 0xffff));
    let snat_port = 32768 + (i >> 16) as u16;
    let listen = addr_v4(a.listen.octets());
    let snat = addr_v4(a.snat.octets());
    let seen = Seen::SYN | Seen::ACK;
    let entry = |new_src, new_dst, new_sport: u16, new_dport: u16, flags| FlowEntry {
        new_src,
        new_dst,
        new_sport: new_sport.to_be(),
        new_dport: new_dport.to_be(),
        rule_id: a.rule_id,
        created_ns: now,
        last_seen_ns: now,
        packets: 1,
        bytes: 60,
        flags,
        tcp_seen: seen,
        // No MSS clamping, zeroed padding (and whatever the ABI adds).
        ..Default::default()
    };
    let orig_key = FlowKey {
        src: client,
        dst: listen,
        sport: client_port.to_be(),
        dport: SYNTH_PORT.to_be(),
        proto: PROTO_TCP,
        family: AF_INET,
        _pad: [0; 2],
    };
    let orig = entry(snat, backend, snat_port, SYNTH_PORT, FlowFlags::SNAT);
    let reply_key = FlowKey::peer_of(&orig, PROTO_TCP, AF_INET);
    let reply = entry(
        listen,
        client,
        SYNTH_PORT,
        client_port,
        FlowFlags::SNAT | FlowFlags::REPLY,
    );
    [(orig_key, orig), (reply_key, reply)]
}

fn main() -> Result<()> {
    let a = parse_args()?;
    ensure!(
        a.flows <= MAX_FLOWS,
        "at most {MAX_FLOWS} synthetic flows fit the address/port scheme"
    );
    let path = a.pin_dir.join(MAP_FLOWS);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned {} (is the daemon running?)", path.display()))?;
    let capacity = data.info()?.max_entries();
    let mut flows: HashMap<MapData, FlowKey, FlowEntry> = HashMap::try_from(Map::HashMap(data))?;
    let present = flows.keys().count() as u64;
    let needed = present + 2 * a.flows as u64;
    ensure!(
        needed <= capacity as u64,
        "the flow table holds {capacity} entries, {present} are used and {} more are needed: raise [global] conntrack_max",
        2 * a.flows
    );
    let t0 = Instant::now();
    let now = monotonic_ns();
    for i in 0..a.flows {
        for (k, e) in flow(i, &a, now) {
            // BPF_NOEXIST: a clash with an existing entry is a bug in the
            // scheme above, never something to overwrite silently.
            flows
                .insert(k, e, 1)
                .with_context(|| format!("inserting synthetic flow {i} ({k:?})"))?;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "flows": a.flows,
            "entries": 2 * a.flows as u64,
            "entries_before": present,
            "capacity_entries": capacity,
            "secs": t0.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
