//! `bench_prog`: micro-benchmarks of the TC ingress program with
//! BPF_PROG_TEST_RUN, for `cargo xtask bench` (usable alone as root).
//!
//! ```text
//! bench_prog [--batches N] [--creates N] [--primitives] [--spin CASE --seconds S]
//! ```
//!
//! The program's FIB lookup needs routes and forwarding in the network
//! namespace of the calling thread, so this creates a private namespace
//! (two veth pairs, forwarding on), moves itself into it, loads the
//! dataplane there with private maps and registers the interfaces. It
//! times, each as kernel-measured ns per program run:
//!
//! * `nat`: an established DNAT+SNAT flow that keeps the port (like the
//!   benchmark's rules: both addresses and the source port rewritten), then
//!   FIB + TTL + `bpf_redirect_neigh`;
//! * `nat_port_map`: the same with the destination port mapped as well
//!   (all four fields rewritten);
//! * `no_nat`: the same path on an established flow whose translation is
//!   the identity (no rewrite): the "no-NAT forward" baseline;
//! * `create`: the first packet (SYN) of a new flow: listener match, SNAT
//!   port allocation, both entries inserted, then the same NAT + forward;
//! * `floor`: a packet on an interface the forwarder does not handle (one
//!   map lookup and return): the cost of entering the program at all;
//! * `egress`: the egress program on the outgoing interface, which every
//!   redirected packet also passes through, where no stack-path flow can
//!   reply (returns at once); `egress_nat`: the same where one can
//!   (`IfaceFlags::EGRESS_NAT`: parse, lookup, no flow of its own, passed on).
//!
//! BPF_PROG_TEST_RUN runs the program `repeat` times on the *same* skb, so
//! rewrites accumulate. `no_nat` stays on its path by itself (only the TTL
//! moves: 255 leaves room for `REPEAT` decrements); `nat` uses two entries
//! that translate into each other, so every run is a full rewrite of an
//! established flow. A first packet can only be first once, so `create`
//! (and, to compare with it, `nat_single`) use repeat = 1, whose duration
//! also holds the kernel's timer reads. Counters prove every run took the
//! intended path (redirected, flows created); otherwise it exits non-zero.
//! Prints one JSON object.
//!
//! `--primitives` times instead each kernel primitive those paths call,
//! alone, next to the cases (`primitives`: where the time goes, issue 19);
//! `--spin CASE --seconds S` runs one case (`nat`, `no_nat`, `create`)
//! for S seconds and prints nothing, for `perf record` (`spin`).
mod packets;
mod pieces;
mod primitives;
mod prims;
mod raw;
mod setup;
mod spin;

use std::{fs::File, os::fd::AsRawFd};

use anyhow::{bail, ensure, Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use forwarder::{dataplane::Dataplane, observe::pinned::sum_cpus};
use forwarder_common::{
    iface_counter_index, Counter, Hook, IfaceFlags, Reason, PROG_EGRESS, PROG_INGRESS,
};
use forwarder_tests::{require_root, Netns};
use packets::{tcp_frame, ACK_PSH, SYN};
use serde_json::json;
use setup::{set_iface_flags, setup, Frames, Setup};

/// Program runs per test_run call for the established-flow cases. Each run
/// decrements the TTL once; starting at 255 keeps it above 1 throughout.
const REPEAT: u32 = 200;
const TC_ACT_REDIRECT: u32 = 7;
/// TCX_NEXT (-1) as the u32 the kernel reports.
const TCX_NEXT: u32 = forwarder_common::TCX_NEXT as u32;
/// The kernel's `struct __sk_buff` is 192 bytes; `ifindex` is at offset 40.
/// Passing it as ctx_in makes the skb arrive on that device.
const SKB_CTX_LEN: usize = 192;
const SKB_IFINDEX_OFF: usize = 40;

const CLIENT: [u8; 4] = [10, 77, 1, 2];
const LISTEN: [u8; 4] = [10, 77, 1, 1];
/// A neighbour on the client side: the NAT cycle translates back to it.
const CLIENT_SIDE_PEER: [u8; 4] = [10, 77, 1, 3];
const SNAT: [u8; 4] = [10, 77, 2, 1];
const SERVER: [u8; 4] = [10, 77, 2, 2];

const RULE_NAT: u32 = 1;
const RULE_CREATE: u32 = 2;

struct Args {
    batches: usize,
    creates: usize,
    primitives: bool,
    spin: Option<String>,
    seconds: usize,
}

const USAGE: &str =
    "usage: bench_prog [--batches N] [--creates N] [--primitives] [--spin CASE --seconds S]";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        batches: 2000,
        creates: 5000,
        primitives: false,
        spin: None,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--primitives" {
            a.primitives = true;
            continue;
        }
        if k == "--spin" {
            a.spin = Some(it.next().context("--spin needs a case")?);
            continue;
        }
        let v: usize = it
            .next()
            .with_context(|| format!("{k} needs a value"))?
            .parse()?;
        match k.as_str() {
            "--batches" => a.batches = v,
            "--creates" => a.creates = v,
            "--seconds" => a.seconds = v,
            _ => bail!("unknown argument {k}; {USAGE}"),
        }
    }
    ensure!(a.batches > 0 && a.creates > 0, "counts must be positive");
    Ok(a)
}

/// While alive, this thread is in `ns`; dropping it moves back. It must
/// drop before the namespace guard, whose cleanup kills every process
/// inside the namespace.
struct Entered {
    home: File,
}

impl Entered {
    fn new(ns: &Netns) -> Result<Entered> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(format!("/run/netns/{}", ns.name))?;
        // SAFETY: setns on valid namespace fds; this program is single-threaded.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "setns into {}: {}",
                ns.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(Entered { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: setns back to the namespace we came from.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

fn ifindex(name: &str) -> Result<u32> {
    forwarder::ifaces::ifindex(name)
        .with_context(|| format!("no interface {name} in this namespace"))
}

fn mac_of(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let v: serde_json::Value =
        serde_json::from_str(&ns.output(&["ip", "-j", "link", "show", dev])?)?;
    let s = v[0]["address"].as_str().context("no MAC")?;
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(s.split(':')) {
        *m = u8::from_str_radix(p, 16)?;
    }
    Ok(mac)
}

struct Bench {
    dp: Dataplane,
    ctx: Vec<u8>,
}

/// A `__sk_buff` context that makes the test skb arrive on `ifindex`.
fn ctx_for(ifindex: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; SKB_CTX_LEN];
    ctx[SKB_IFINDEX_OFF..SKB_IFINDEX_OFF + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

impl Bench {
    /// One test_run call of the ingress program on the default interface:
    /// (verdict of the last run, mean ns per run).
    fn run(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        let ctx = self.ctx.clone();
        self.run_prog(PROG_INGRESS, &ctx, frame, repeat)
    }

    fn run_prog(
        &mut self,
        prog: &str,
        ctx: &[u8],
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, u64)> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(ctx),
            repeat,
            ..Default::default()
        };
        let p: &mut SchedClassifier = self.dp.program(prog)?;
        let r = p.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        Ok((r.return_value, r.duration.as_nanos() as u64))
    }

    fn iface_counter(&self, slot: u32, hook: Hook, reason: Reason) -> Result<Counter> {
        let m = &self.dp.maps.iface_counters;
        Ok(sum_cpus(
            m.get(&iface_counter_index(slot, hook, reason), 0)?
                .iter()
                .copied(),
        ))
    }

    fn new_flows(&self, rule: u32) -> Result<u64> {
        let m = &self.dp.maps.rule_counters;
        Ok(m.get(&rule, 0)?.iter().map(|c| c.new_flows).sum())
    }
}

#[derive(Default)]
struct Samples(Vec<u64>);

impl Samples {
    fn summary(&self) -> serde_json::Value {
        let mut v = self.0.clone();
        v.sort_unstable();
        let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
        let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
        json!({"median": q(0.5), "p10": q(0.1), "p90": q(0.9), "min": v[0], "max": v[v.len()-1], "mean": mean, "samples": v.len()})
    }

    fn median(&self) -> i64 {
        let mut v = self.0.clone();
        v.sort_unstable();
        v[v.len() / 2] as i64
    }
}

fn expect_redirect(what: &str, verdict: u32) -> Result<()> {
    ensure!(
        verdict == TC_ACT_REDIRECT,
        "{what}: verdict {verdict}, expected TC_ACT_REDIRECT ({TC_ACT_REDIRECT}): the packet did not take the forwarding path (FIB lookup failed or flow not matched)"
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if !require_root("bench_prog") {
        std::process::exit(1);
    }
    let ns = Netns::new("prog")?;
    for (dev, peer, cidr) in [("r0", "r0p", "10.77.1.1/24"), ("r1", "r1p", "10.77.2.1/24")] {
        ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", peer])?;
        ns.ip(&["link", "set", peer, "up"])?;
        ns.addr(dev, cidr)?;
    }
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    let r0_mac = mac_of(&ns, "r0")?;
    let entered = Entered::new(&ns)?;
    let result = setup().and_then(|(mut b, s)| {
        let frames = Frames::new(r0_mac);
        if let Some(case) = &args.spin {
            spin::run(&mut b, &s, &frames, case, args.seconds).map(|()| None)
        } else if args.primitives {
            let f = primitives::Frames {
                nat: &frames.nat,
                ident: &frames.ident,
                syn: &|sport| tcp_frame(r0_mac, CLIENT, LISTEN, sport, 80, SYN, 0),
            };
            primitives::run(&mut b, &s, &f, args.batches, args.creates).map(Some)
        } else {
            bench(&args, &mut b, &s, &frames).map(Some)
        }
    });
    drop(entered);
    if let Some(out) = result? {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

fn bench(args: &Args, b: &mut Bench, s: &Setup, frames: &Frames) -> Result<serde_json::Value> {
    let (r1, r0_mac) = (s.r1, frames.r0_mac);
    let cases = [
        ("nat", &frames.nat),
        ("nat_port_map", &frames.map),
        ("no_nat", &frames.ident),
    ];
    let (nat_frame, ident_frame) = (&frames.nat, &frames.ident);
    // Warm up (JIT'd code, map buckets, caches), then interleave the
    // established cases so machine noise hits them alike.
    for _ in 0..50 {
        for (_, f) in cases {
            b.run(f, REPEAT)?;
        }
    }
    let redirected0 = b
        .iface_counter(0, Hook::TcIngress, Reason::FwdRedirect)?
        .packets;
    let mut est: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
    for _ in 0..args.batches {
        for ((name, f), s) in cases.iter().zip(est.iter_mut()) {
            let (v, ns) = b.run(f, REPEAT)?;
            expect_redirect(name, v)?;
            s.0.push(ns);
        }
    }
    let [nat, nat_port_map, no_nat] =
        <[Samples; 3]>::try_from(est).map_err(|_| anyhow::anyhow!("three cases"))?;
    let redirected = b
        .iface_counter(0, Hook::TcIngress, Reason::FwdRedirect)?
        .packets
        - redirected0;
    let expected = cases.len() as u64 * args.batches as u64 * REPEAT as u64;
    ensure!(
        redirected == expected,
        "only {redirected} of {expected} established-flow runs were translated and redirected"
    );

    // The cost of entering the program on an interface it does not handle
    // (ctx ifindex 0: the skb gets loopback, which is not registered).
    let mut floor = Samples::default();
    let lo_ctx = ctx_for(1);
    for _ in 0..args.batches.min(500) {
        floor
            .0
            .push(b.run_prog(PROG_INGRESS, &lo_ctx, ident_frame, REPEAT)?.1);
    }

    // What every redirected packet also costs: TCX egress of the outgoing
    // interface runs the egress program. Where no stack-path flow can reply
    // (the daemon leaves IfaceFlags::EGRESS_NAT off, as for r1 in the benchmark's
    // topology) it returns at once, uncounted by design, so only the
    // verdict can be checked. Where the flag is on it parses and looks the
    // packet up, finds no flow of its own for a translated packet (its reply
    // key is the reverse tuple) and passes it on, counted.
    let r1_ctx = ctx_for(r1);
    let out_frame = tcp_frame(r0_mac, SNAT, SERVER, 33001, 80, ACK_PSH, 64);
    let mut egress = Samples::default();
    for _ in 0..args.batches {
        let (v, ns) = b.run_prog(PROG_EGRESS, &r1_ctx, &out_frame, REPEAT)?;
        ensure!(
            v == TCX_NEXT,
            "egress: verdict {v}, expected TCX_NEXT (pass on)"
        );
        egress.0.push(ns);
    }
    set_iface_flags(&mut b.dp, r1, 1, IfaceFlags::EGRESS_NAT)?;
    let passed0 = b
        .iface_counter(1, Hook::TcEgress, Reason::PassNoMatch)?
        .packets;
    let mut egress_nat = Samples::default();
    for _ in 0..args.batches {
        let (v, ns) = b.run_prog(PROG_EGRESS, &r1_ctx, &out_frame, REPEAT)?;
        ensure!(
            v == TCX_NEXT,
            "egress_nat: verdict {v}, expected TCX_NEXT (pass on)"
        );
        egress_nat.0.push(ns);
    }
    let passed = b
        .iface_counter(1, Hook::TcEgress, Reason::PassNoMatch)?
        .packets
        - passed0;
    ensure!(
        passed == args.batches as u64 * REPEAT as u64,
        "only {passed} egress runs were looked up and passed on"
    );
    set_iface_flags(&mut b.dp, r1, 1, IfaceFlags::empty())?;

    // repeat = 1: first packets of new flows, and established NAT measured
    // the same way for comparison.
    let created0 = b.new_flows(RULE_CREATE)?;
    let (mut create, mut nat_single) = (Samples::default(), Samples::default());
    for i in 0..args.creates {
        let sport = 10000 + (i % 50000) as u16;
        let syn = tcp_frame(r0_mac, CLIENT, LISTEN, sport, 80, SYN, 0);
        let (v, ns) = b.run(&syn, 1)?;
        expect_redirect("create", v)?;
        create.0.push(ns);
        let (v, ns) = b.run(nat_frame, 1)?;
        expect_redirect("nat_single", v)?;
        nat_single.0.push(ns);
    }
    let created = b.new_flows(RULE_CREATE)? - created0;
    ensure!(
        created == args.creates as u64,
        "only {created} of {} first packets created a flow",
        args.creates
    );
    let flows_now = b.dp.maps.flows.keys().count();

    Ok(json!({
        "repeat": REPEAT,
        "batches": args.batches,
        "creates": args.creates,
        "payload_bytes": 64,
        "unit": "ns per program run (kernel-measured by BPF_PROG_TEST_RUN)",
        "nat": nat.summary(),
        "no_nat": no_nat.summary(),
        "nat_port_map": nat_port_map.summary(),
        "nat_cost": nat.median() - no_nat.median(),
        "nat_port_map_cost": nat_port_map.median() - no_nat.median(),
        "floor": floor.summary(),
        "egress": egress.summary(),
        "egress_nat": egress_nat.summary(),
        "create": create.summary(),
        "nat_single": nat_single.summary(),
        "create_cost": create.median() - nat_single.median(),
        "flow_entries_after": flows_now,
        "bpf_stats_enabled": std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .map(|s| s.trim() == "1")
            .unwrap_or(false),
    }))
}
