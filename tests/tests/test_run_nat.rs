//! Table-driven BPF_PROG_TEST_RUN tests of the NAT dataplane.
//!
//! Every step feeds one crafted frame to `fwd_ingress` or `fwd_egress` on an
//! interface of a namespace that stands in for the Proxmox host (see
//! `forwarder_tests::testrun`), and checks:
//!
//! * the verdict (test_run reports a redirect as TC_ACT_REDIRECT; nothing
//!   is sent);
//! * the packet the program left: parsed with etherparse, every rewritten
//!   field compared, the IPv4 header checksum and the TCP/UDP/ICMP checksum
//!   (and, in ICMP errors, the embedded ones) recomputed by etherparse and
//!   compared; then byte for byte against an expected frame built here with
//!   `forwarder_tests::frames`' own RFC 1071 arithmetic (no code shared with
//!   the program);
//! * that exactly the expected interface counter moved (+1 packet, +frame
//!   bytes) and the rule counters moved by exactly the expected deltas;
//! * the flow entries (both directions, every field that matters) and which
//!   entries were added, removed or changed.
//!
//! Frames run as CHECKSUM_COMPLETE skbs, so the kernel also checks that
//! the program kept skb->csum consistent with its rewrites (what a missing
//! BPF_F_PSEUDO_HDR breaks); `FWD_TEST_RUN_CSUM=none` runs them as
//! CHECKSUM_NONE instead. CHECKSUM_PARTIAL (veth, local senders) cannot be
//! set up through test_run: that path is left to the end-to-end tests.
//!
//! Each test builds its own namespace and loads its own dataplane; nextest
//! runs each test in its own process, and the namespace switch is per
//! thread anyway.
use std::{ops::RangeInclusive, time::Duration};

use etherparse::PacketBuilder;
use forwarder_common::{
    addr_v4, FlowEntry, FlowKey, Hook, Reason, RuleCounters, TcpState, AUTO_SNAT_PROBE_NS,
    AUTO_SNAT_TTL_NS, FLOW_AUTO, FLOW_REPLY, FLOW_SNAT, FLOW_VIA_STACK, PROTO_ICMP, PROTO_TCP,
    PROTO_UDP, RULE_DROP_DENIED, RULE_DROP_ERROR, RULE_DROP_TABLE_FULL, SEEN_ACK, SEEN_FIN,
    SEEN_RST, SEEN_SYN,
};
use forwarder_tests::{
    frames::{
        arp, assert_bytes, ep, fix_checksums, fkey, flow_entry, icmp_error, ip_of, mac_of,
        patch_ip, set_l4_check, set_tuple, show, tcp, tcp6, tcp_opts, udp, verify, vlan_tagged,
        with_ip_csum, with_ttl, Ep, Ip, CLIENT, ETH, HOST_MAC, LAN_PEER, TTL, VM, VM_ROUTER,
    },
    require_root,
    testrun::{
        assert_counters, counter_name, one_counter, Csum, Delta, Host, Run, Snapshot, HOST_LAN,
        HOST_TS, HOST_VM, LAN_IF, SNAT_PORTS, TCX_NEXT, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
        TS_IF, VM_IF, WEB_AND_DNS,
    },
};

// ---------------------------------------------------------------------------
// Addresses (besides `frames`' CLIENT, LAN_PEER, VM and VM_ROUTER)

/// A LAN address no allow-list admits.
const STRANGER: Ip = [192, 168, 1, 200];
const VM81: Ip = [192, 168, 100, 81];
/// A kube-proxy ClusterIP: the host has no route to 10.43.0.0/16.
const CLUSTER_IP: Ip = [10, 43, 0, 10];
/// A tailnet peer behind tailscale0 (see `l3()` for why 8.0.0.0/16).
const TS_CLIENT: Ip = [8, 0, 0, 7];
/// A ClusterIP the tailnet forwards to. No route (only 8.0.0.0/24 is
/// routed, to tailscale0); in 8.0.0.0/16 so that its replies, which leave
/// by tailscale0, can be expressed as L3 frames too.
const TS_CLUSTER_IP: Ip = [8, 0, 43, 10];

// ---------------------------------------------------------------------------
// Frames (besides `frames`' builders)

/// A UDP datagram without checksum (0: "none").
fn udp_nocsum(src: Ep, dst: Ep, payload: &[u8]) -> Vec<u8> {
    set_l4_check(udp(src, dst, payload), 0)
}

fn echo(src: Ip, dst: Ip, id: u16, request: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_of(src), HOST_MAC).ipv4(src, dst, TTL);
    let b = if request {
        b.icmpv4_echo_request(id, 7)
    } else {
        b.icmpv4_echo_reply(id, 7)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"ping payload 0123456789").unwrap();
    v
}

/// The frame as an L3 device (tun, wireguard) delivers it: no Ethernet
/// header, the IPv4 header at offset 0.
///
/// BPF_PROG_TEST_RUN builds every tc skb as Ethernet, whatever the device:
/// eth_type_trans takes skb->protocol from bytes 12-13, and ctx_in cannot
/// set it. The program reads an L3 interface's packets from offset 0 and
/// trusts skb->protocol, so an L3 packet can be expressed when its bytes
/// 12-13, the first half of the IPv4 source address, read 0x0800: with a
/// source in 8.0.0.0/16 the program sees exactly what a tun device would
/// hand it (data at the IPv4 header, protocol ETH_P_IP). That is why the
/// tailnet peer is 8.0.0.7. (The skb's network header still sits 14 bytes
/// in, which only matters for the CHECKSUM_COMPLETE check; see `step`.)
fn l3(frame: &[u8]) -> Vec<u8> {
    let ip = ip_of(frame);
    assert_eq!(
        &ip[12..14],
        &[8, 0],
        "an L3 test frame needs a source in 8.0.0.0/16"
    );
    ip
}

// ---------------------------------------------------------------------------
// Expected frames (with `frames`' independent checksum arithmetic)

/// Offset of the MSS option's value in the TCP header at `tcp`.
fn mss_offset(tcp: &[u8]) -> Option<usize> {
    let end = usize::from(tcp[12] >> 4) * 4;
    let mut at = 20;
    while at < end {
        match tcp[at] {
            0 => return None,
            1 => at += 1,
            2 => return Some(at + 2),
            _ => at += usize::from(tcp[at + 1]),
        }
    }
    None
}

/// What a translated packet must look like.
#[derive(Clone, Debug)]
struct Xlate {
    src: Ep,
    dst: Ep,
    /// Redirected past the stack: TTL decremented.
    dec_ttl: bool,
    /// The MSS option's new value.
    mss: Option<u16>,
    /// An L3 packet redirected to an Ethernet device: zeroed MAC header
    /// with EtherType IPv4 pushed in front.
    push_eth: bool,
}

fn redirect(src: Ep, dst: Ep) -> Xlate {
    Xlate {
        src,
        dst,
        dec_ttl: true,
        mss: None,
        push_eth: false,
    }
}

fn via_stack(src: Ep, dst: Ep) -> Xlate {
    Xlate {
        dec_ttl: false,
        ..redirect(src, dst)
    }
}

/// The expected output for input `frame` (Ethernet unless `l3_in`).
fn expect_xlate(frame: &[u8], l3_in: bool, x: &Xlate) -> Vec<u8> {
    let l3 = if l3_in { 0 } else { ETH };
    let mut f = frame.to_vec();
    let ip = &mut f[l3..];
    set_tuple(ip, x.src, x.dst);
    if x.dec_ttl {
        ip[8] -= 1;
    }
    if let Some(m) = x.mss {
        let at = 20 + mss_offset(&ip[20..]).expect("input has an MSS option");
        ip[at..at + 2].copy_from_slice(&m.to_be_bytes());
    }
    fix_checksums(ip);
    if x.push_eth {
        let mut e = vec![0u8; ETH];
        e[12..14].copy_from_slice(&[0x08, 0x00]);
        e.extend_from_slice(&f);
        return e;
    }
    f
}

/// The expected output for an ICMP error: outer addresses, the quoted
/// packet's tuple, every checksum recomputed.
fn expect_icmp_error(frame: &[u8], outer_src: Ip, outer_dst: Ip, inner: (Ep, Ep)) -> Vec<u8> {
    let mut f = frame.to_vec();
    let ip = &mut f[ETH..];
    ip[12..16].copy_from_slice(&outer_src);
    ip[16..20].copy_from_slice(&outer_dst);
    ip[8] -= 1;
    set_tuple(&mut ip[28..], inner.0, inner.1);
    fix_checksums(ip);
    f
}

// ---------------------------------------------------------------------------
// Steps

/// What the program must have done to the packet.
#[derive(Clone, Debug)]
enum Out {
    /// Left exactly as it came.
    Untouched,
    /// Translated to this tuple.
    Xlate(Xlate),
    /// SNATed to `src` with a port from `ports` (learned from the output,
    /// returned by `step`), destination and the rest as in the Xlate.
    Snat(Ip, RangeInclusive<u16>, Xlate),
    /// Exactly these bytes (ICMP errors).
    Exact(Vec<u8>),
    /// An answer built by the router (an ICMP error, a RST): valid
    /// checksums here; its exact bytes are test_run_replies.rs's business.
    Answer,
}

/// Expected per-rule counter delta.
#[derive(Clone, Copy, Debug, Default)]
struct RuleExp {
    /// Counted as translated (+1 packet, +frame bytes).
    fwd: bool,
    /// A flow was created: (snat, via stack).
    new: Option<(bool, bool)>,
    mss: bool,
    drop: Option<usize>,
}

fn fwd() -> RuleExp {
    RuleExp {
        fwd: true,
        ..Default::default()
    }
}

fn created(snat: bool, stack: bool) -> RuleExp {
    RuleExp {
        fwd: true,
        new: Some((snat, stack)),
        ..Default::default()
    }
}

fn dropped(which: usize) -> RuleExp {
    RuleExp {
        drop: Some(which),
        ..Default::default()
    }
}

impl RuleExp {
    fn mss(self) -> RuleExp {
        RuleExp { mss: true, ..self }
    }

    fn counters(&self, len: usize) -> RuleCounters {
        let mut c = RuleCounters::default();
        if self.fwd {
            c.packets = 1;
            c.bytes = len as u64;
        }
        if let Some((snat, stack)) = self.new {
            c.new_flows = 1;
            c.snat_flows = snat.into();
            c.stack_flows = stack.into();
        }
        c.mss_clamped = self.mss.into();
        if let Some(d) = self.drop {
            c.drops[d] = 1;
        }
        c
    }
}

struct Step {
    name: String,
    hook: Hook,
    iface: &'static str,
    frame: Vec<u8>,
    /// The frame has no Ethernet header (arrives on an L3 device).
    l3: bool,
    /// Present it as a GSO skb: (segment size, segments).
    gso: Option<(u32, u32)>,
    verdict: i32,
    /// The one interface counter (on `iface`, `hook`) that counts it.
    /// `None`: nothing is counted at all (not one of our interfaces).
    reason: Option<Reason>,
    /// Rule (by name) and its counter delta; every other rule unchanged.
    rule: Option<(&'static str, RuleExp)>,
    out: Out,
}

fn ingress(name: impl Into<String>, iface: &'static str, frame: Vec<u8>) -> Step {
    Step {
        name: name.into(),
        hook: Hook::TcIngress,
        iface,
        frame,
        l3: false,
        gso: None,
        verdict: TCX_NEXT,
        reason: Some(Reason::PassNoMatch),
        rule: None,
        out: Out::Untouched,
    }
}

fn egress(name: impl Into<String>, iface: &'static str, frame: Vec<u8>) -> Step {
    Step {
        hook: Hook::TcEgress,
        ..ingress(name, iface, frame)
    }
}

impl Step {
    fn expect(mut self, verdict: i32, reason: Reason) -> Step {
        self.verdict = verdict;
        self.reason = Some(reason);
        self
    }
    fn rule(mut self, rule: &'static str, exp: RuleExp) -> Step {
        self.rule = Some((rule, exp));
        self
    }
    fn out(mut self, out: Out) -> Step {
        self.out = out;
        self
    }
    fn xlate(self, x: Xlate) -> Step {
        self.out(Out::Xlate(x))
    }
    fn l3(mut self) -> Step {
        self.l3 = true;
        self
    }
    /// A redirected translation.
    fn fwd(self, rule: &'static str, x: Xlate) -> Step {
        self.expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule(rule, fwd())
            .xlate(x)
    }
}

struct Outcome {
    run: Run,
    delta: Delta,
    after: Snapshot,
    /// The SNAT port, for `Out::Snat`.
    port: u16,
}

fn ctx_of(s: &Step, d: &Delta) -> String {
    let moved: Vec<String> = d.iface.keys().map(counter_name).collect();
    format!("{} [counters that moved: {moved:?}]", s.name)
}

/// Runs one step and checks verdict, counters and output.
fn step(h: &mut Host, s: &Step) -> Outcome {
    let case = s.name.as_str();
    let before = h.snapshot().expect("snapshot");
    let ifindex = if s.iface == "lo" {
        1
    } else {
        h.ifindex(s.iface)
    };
    // CHECKSUM_COMPLETE, so the kernel also checks skb->csum, except for L3
    // frames: test_run puts their network header 14 bytes in (it assumes
    // Ethernet), so the sum it checks would start mid-header.
    // FWD_TEST_RUN_CSUM=none runs everything as CHECKSUM_NONE, to see a
    // wrong checksum as a field difference instead of EBADMSG.
    let none = std::env::var("FWD_TEST_RUN_CSUM").is_ok_and(|v| v == "none");
    // Answers (Out::Answer) too: see test_run_replies.rs.
    let csum = if s.l3 || none || matches!(s.out, Out::Answer) {
        Csum::None
    } else {
        Csum::Complete
    };
    let run = h
        .run_with(s.hook, ifindex, &s.frame, csum, s.gso)
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let after = h.snapshot().expect("snapshot");
    let delta = before.delta(&after);
    assert_eq!(run.verdict, s.verdict, "{}: verdict", ctx_of(s, &delta));

    // Interface counters: exactly one moved, by one packet of this size.
    assert_counters(
        case,
        &delta,
        &one_counter(s.iface, s.hook, s.reason, s.frame.len()),
    );

    // Rule counters: exactly the expected delta on the one rule.
    let mut want_rules = std::collections::BTreeMap::new();
    if let Some((rule, exp)) = s.rule {
        let c = exp.counters(s.frame.len());
        if c != RuleCounters::default() {
            want_rules.insert(h.id(rule), c);
        }
    }
    assert_eq!(
        delta.rules, want_rules,
        "{case}: rule counter deltas (by rule id; ids {:?})",
        h.ids
    );

    // The packet.
    let mut port = 0;
    match &s.out {
        Out::Untouched => assert_bytes(&format!("{case} (untouched)"), &run.out, &s.frame),
        Out::Xlate(x) => check_xlate(case, s, &run.out, x),
        Out::Snat(src, ports, x) => {
            let l3_out = s.l3 && !x.push_eth;
            let p = verify(case, &run.out, l3_out);
            assert_eq!(p.src.ip, *src, "{case}: SNAT source address");
            assert!(
                ports.contains(&p.src.port),
                "{case}: SNAT port {} outside the configured {ports:?}",
                p.src.port
            );
            port = p.src.port;
            let x = Xlate {
                src: ep(*src, port),
                ..x.clone()
            };
            check_xlate(case, s, &run.out, &x);
        }
        Out::Exact(want) => {
            verify(case, &run.out, false);
            assert_bytes(case, &run.out, want);
        }
        Out::Answer => {
            verify(case, &run.out, s.l3);
        }
    }
    Outcome {
        run,
        delta,
        after,
        port,
    }
}

fn check_xlate(case: &str, s: &Step, out: &[u8], x: &Xlate) {
    let l3_out = s.l3 && !x.push_eth;
    let p = verify(case, out, l3_out);
    assert_eq!(p.src, x.src, "{case}: source address:port");
    assert_eq!(p.dst, x.dst, "{case}: destination address:port");
    let ttl_in = s.frame[if s.l3 { 8 } else { ETH + 8 }];
    let ttl_want = if x.dec_ttl { ttl_in - 1 } else { ttl_in };
    assert_eq!(p.ttl, ttl_want, "{case}: TTL (decremented: {})", x.dec_ttl);
    if let Some(m) = x.mss {
        assert_eq!(p.mss, Some(m), "{case}: MSS option");
    }
    if x.push_eth {
        assert_eq!(
            &out[..ETH],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0],
            "{case}: pushed Ethernet header"
        );
    }
    assert_bytes(case, out, &expect_xlate(&s.frame, s.l3, x));
}

/// The flow table changed by exactly these keys.
fn assert_flows(
    case: &str,
    d: &Delta,
    added: &[FlowKey],
    removed: &[FlowKey],
    changed: &[FlowKey],
) {
    let set = |v: &[FlowKey]| v.iter().copied().collect::<std::collections::BTreeSet<_>>();
    let names = |s: &std::collections::BTreeSet<FlowKey>| s.iter().map(show).collect::<Vec<_>>();
    assert_eq!(
        names(&d.flows_added),
        names(&set(added)),
        "{case}: flow entries added"
    );
    assert_eq!(
        names(&d.flows_removed),
        names(&set(removed)),
        "{case}: flow entries removed"
    );
    assert_eq!(
        names(&d.flows_changed),
        names(&set(changed)),
        "{case}: flow entries changed"
    );
}

/// A flow entry's expected fields.
#[derive(Clone, Copy, Debug)]
struct Want {
    new_src: Ep,
    new_dst: Ep,
    rule: u32,
    flags: u8,
    tcp_seen: u8,
    packets: u64,
    bytes: u64,
    mss: u16,
}

fn entry<'a>(case: &str, snap: &'a Snapshot, key: &FlowKey) -> &'a FlowEntry {
    snap.flows
        .get(key)
        .unwrap_or_else(|| panic!("{case}: no flow entry {}", show(key)))
}

fn assert_entry(case: &str, snap: &Snapshot, key: &FlowKey, w: Want) {
    let e = entry(case, snap, key);
    let k = show(key);
    let epo = |a: &[u32; 4], p: u16| ep(forwarder_common::addr_v4_octets(a), u16::from_be(p));
    assert_eq!(
        epo(&e.new_src, e.new_sport),
        w.new_src,
        "{case}: {k}: new source"
    );
    assert_eq!(
        epo(&e.new_dst, e.new_dport),
        w.new_dst,
        "{case}: {k}: new destination"
    );
    assert_eq!(
        e.new_src[1..],
        [0, 0, 0],
        "{case}: {k}: IPv4 uses word 0 only"
    );
    assert_eq!(
        e.new_dst[1..],
        [0, 0, 0],
        "{case}: {k}: IPv4 uses word 0 only"
    );
    assert_eq!(e.rule_id, w.rule, "{case}: {k}: rule id");
    assert_eq!(e.flags, w.flags, "{case}: {k}: flags");
    assert_eq!(e.tcp_seen, w.tcp_seen, "{case}: {k}: tcp_seen");
    assert_eq!(e.packets, w.packets, "{case}: {k}: packets");
    assert_eq!(e.bytes, w.bytes, "{case}: {k}: bytes");
    assert_eq!(e.mss, w.mss, "{case}: {k}: mss");
    assert_eq!(e._pad, [0; 4], "{case}: {k}: padding");
    let now = Host::now_ns();
    assert!(
        e.created_ns > 0 && e.created_ns <= e.last_seen_ns && e.last_seen_ns <= now,
        "{case}: {k}: timestamps created {} last {} now {now}",
        e.created_ns,
        e.last_seen_ns
    );
}

fn tcp_state(case: &str, snap: &Snapshot, orig: &FlowKey, reply: &FlowKey) -> TcpState {
    TcpState::derive(
        entry(case, snap, orig).tcp_seen,
        entry(case, snap, reply).tcp_seen,
    )
}

// ---------------------------------------------------------------------------
// The cases

/// SYN creating a flow (DNAT + fixed SNAT), the reply's SYN-ACK, data both
/// ways, FIN both ways, then a second connection closed by RST and
/// restarted by a new SYN on the same tuple.
#[test]
fn test_run_nat_tcp_fixed_snat_lifecycle() {
    if !require_root("test_run_nat_tcp_fixed_snat_lifecycle") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let id = h.id("web");
    let client = ep(CLIENT, 40000);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);

    // SYN: DNAT to the VM, SNAT to the fixed address and a port of the range.
    let syn = tcp(client, listen, "S", &[]);
    let s = ingress("SYN creates the flow", LAN_IF, syn.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web", created(true, false))
        .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, vm)));
    let o = step(&mut h, &s);
    let snat = ep(HOST_VM, o.port);
    let orig = fkey(client, listen, PROTO_TCP);
    let reply = fkey(vm, snat, PROTO_TCP);
    assert_flows(&s.name, &o.delta, &[orig, reply], &[], &[]);
    let mut ow = Want {
        new_src: snat,
        new_dst: vm,
        rule: id,
        flags: FLOW_SNAT,
        tcp_seen: SEEN_SYN,
        packets: 1,
        bytes: syn.len() as u64,
        mss: 0,
    };
    let mut rw = Want {
        new_src: listen,
        new_dst: client,
        flags: FLOW_SNAT | FLOW_REPLY,
        tcp_seen: 0,
        packets: 0,
        bytes: 0,
        ..ow
    };
    assert_entry(&s.name, &o.after, &orig, ow);
    assert_entry(&s.name, &o.after, &reply, rw);
    assert_eq!(
        tcp_state(&s.name, &o.after, &orig, &reply),
        TcpState::SynSent
    );

    // Then each packet of the connection, with the entry it touches, the
    // tcp_seen bits it leaves there and the derived state.
    let from_client = |flags: &str, payload: &[u8]| tcp(client, listen, flags, payload);
    let from_vm = |flags: &str, payload: &[u8]| tcp(vm, snat, flags, payload);
    let table: Vec<(&str, Vec<u8>, bool, u8, TcpState)> = vec![
        (
            "SYN-ACK un-NATed on the backend side",
            from_vm("SA", &[]),
            false,
            SEEN_SYN | SEEN_ACK,
            TcpState::Established,
        ),
        (
            "client ACK",
            from_client("A", &[]),
            true,
            SEEN_SYN | SEEN_ACK,
            TcpState::Established,
        ),
        (
            "client data",
            from_client("PA", b"GET / HTTP/1.1\r\nHost: vm80\r\n\r\n"),
            true,
            SEEN_SYN | SEEN_ACK,
            TcpState::Established,
        ),
        (
            "backend data",
            from_vm("PA", &[b'x'; 700]),
            false,
            SEEN_SYN | SEEN_ACK,
            TcpState::Established,
        ),
        (
            "client FIN",
            from_client("FA", &[]),
            true,
            SEEN_SYN | SEEN_ACK | SEEN_FIN,
            TcpState::FinWait,
        ),
        (
            "backend FIN",
            from_vm("FA", &[]),
            false,
            SEEN_SYN | SEEN_ACK | SEEN_FIN,
            TcpState::TimeWait,
        ),
        (
            "client last ACK",
            from_client("A", &[]),
            true,
            SEEN_SYN | SEEN_ACK | SEEN_FIN,
            TcpState::TimeWait,
        ),
    ];
    for (name, frame, client_side, seen, state) in table {
        let (iface, x, key) = if client_side {
            (LAN_IF, redirect(snat, vm), orig)
        } else {
            (VM_IF, redirect(listen, client), reply)
        };
        let len = frame.len() as u64;
        let o = step(&mut h, &ingress(name, iface, frame).fwd("web", x));
        assert_flows(name, &o.delta, &[], &[], &[key]);
        let w = if client_side { &mut ow } else { &mut rw };
        w.packets += 1;
        w.bytes += len;
        w.tcp_seen = seen;
        assert_entry(name, &o.after, &key, *w);
        assert_eq!(
            tcp_state(name, &o.after, &orig, &reply),
            state,
            "{name}: state"
        );
    }

    // A second connection: its own SNAT port; a RST closes it; a new SYN
    // on the same tuple starts it over (the old FIN/RST bits forgotten).
    let client2 = ep(CLIENT, 40001);
    let syn2 = tcp(client2, listen, "S", &[]);
    let s = ingress("second SYN", LAN_IF, syn2.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web", created(true, false))
        .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client2, vm)));
    let o = step(&mut h, &s);
    assert_ne!(o.port, snat.port, "two flows share a SNAT port");
    let snat2 = ep(HOST_VM, o.port);
    let orig2 = fkey(client2, listen, PROTO_TCP);
    let reply2 = fkey(vm, snat2, PROTO_TCP);
    assert_flows(&s.name, &o.delta, &[orig2, reply2], &[], &[]);

    let rst = tcp(vm, snat2, "RA", &[]);
    let name = "backend RST";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, rst.clone()).fwd("web", redirect(listen, client2)),
    );
    assert_flows(name, &o.delta, &[], &[], &[reply2]);
    assert_eq!(entry(name, &o.after, &reply2).tcp_seen, SEEN_RST | SEEN_ACK);
    assert_eq!(tcp_state(name, &o.after, &orig2, &reply2), TcpState::Close);

    let name = "new SYN on the closed tuple";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, syn2.clone()).fwd("web", redirect(snat2, vm)),
    );
    assert_flows(name, &o.delta, &[], &[], &[orig2]);
    assert_entry(
        name,
        &o.after,
        &orig2,
        Want {
            new_src: snat2,
            new_dst: vm,
            rule: id,
            flags: FLOW_SNAT,
            tcp_seen: SEEN_SYN,
            packets: 2,
            bytes: 2 * syn2.len() as u64,
            mss: 0,
        },
    );
    let name = "SYN-ACK of the restarted connection";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, tcp(vm, snat2, "SA", &[])).fwd("web", redirect(listen, client2)),
    );
    assert_eq!(entry(name, &o.after, &reply2).tcp_seen, SEEN_SYN | SEEN_ACK);
    assert_eq!(
        tcp_state(name, &o.after, &orig2, &reply2),
        TcpState::Established
    );
    // The first flow is untouched by all of this.
    assert_entry("at the end", &o.after, &orig, ow);
    assert_entry("at the end", &o.after, &reply, rw);
}

/// UDP both ways, with a checksum and with a zero checksum (which must stay
/// zero: it means "no checksum").
#[test]
fn test_run_nat_udp() {
    if !require_root("test_run_nat_udp") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let id = h.id("dns");
    let listen = ep(HOST_LAN, 5353);
    let vm = ep(VM, 53);
    for (client, zero, pad) in [
        (ep(CLIENT, 50000), false, false),
        (ep(CLIENT, 50001), true, false),
        (ep(CLIENT, 50002), false, true),
    ] {
        let what = match (zero, pad) {
            (true, _) => "zero checksum",
            (_, true) => "checksum, frame padded to 60 bytes",
            _ => "checksum",
        };
        let build = if zero { udp_nocsum } else { udp };
        let mut q = build(
            client,
            listen,
            if pad {
                b"q"
            } else {
                b"\x12\x34 dns query bytes"
            },
        );
        if pad {
            // Ethernet minimum size: the IPv4 total length says where the
            // packet ends; the padding is carried, never summed.
            q.resize(60, 0xa5);
        }
        let s = ingress(format!("UDP query, {what}"), LAN_IF, q.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("dns", created(true, false))
            .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, vm)));
        let o = step(&mut h, &s);
        if zero {
            assert_eq!(
                &o.run.out[ETH + 26..ETH + 28],
                &[0, 0],
                "{}: checksum",
                s.name
            );
        }
        let snat = ep(HOST_VM, o.port);
        let orig = fkey(client, listen, PROTO_UDP);
        let reply = fkey(vm, snat, PROTO_UDP);
        assert_flows(&s.name, &o.delta, &[orig, reply], &[], &[]);
        let ow = Want {
            new_src: snat,
            new_dst: vm,
            rule: id,
            flags: FLOW_SNAT,
            tcp_seen: 0,
            packets: 1,
            bytes: q.len() as u64,
            mss: 0,
        };
        assert_entry(&s.name, &o.after, &orig, ow);

        let a = build(vm, snat, b"\x12\x34 dns answer bytes, a bit longer");
        let name = format!("UDP answer, {what}");
        let o = step(
            &mut h,
            &ingress(&name, VM_IF, a.clone()).fwd("dns", redirect(listen, client)),
        );
        if zero {
            assert_eq!(&o.run.out[ETH + 26..ETH + 28], &[0, 0], "{name}: checksum");
        }
        assert_flows(&name, &o.delta, &[], &[], &[reply]);
        assert_entry(
            &name,
            &o.after,
            &reply,
            Want {
                new_src: listen,
                new_dst: client,
                flags: FLOW_SNAT | FLOW_REPLY,
                packets: 1,
                bytes: a.len() as u64,
                ..ow
            },
        );
    }
}

/// ICMP echo: tracked by identifier, translated both ways. No listener
/// creates echo flows (rules are TCP/UDP), so a ping to a listen address
/// is the host's own business; an echo flow in the table (as userspace
/// could insert it) is translated like any other flow.
#[test]
fn test_run_nat_icmp_echo() {
    if !require_root("test_run_nat_icmp_echo") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let id = h.id("web");
    let ping = echo(CLIENT, HOST_LAN, 0x1234, true);
    let o = step(
        &mut h,
        &ingress("echo request without a flow", LAN_IF, ping.clone()),
    );
    assert_flows("echo request without a flow", &o.delta, &[], &[], &[]);

    // client id 0x1234 <-> SNAT identifier 41007 toward the VM.
    let client = ep(CLIENT, 0x1234);
    let listen = ep(HOST_LAN, 0x1234);
    let snat = ep(HOST_VM, 41007);
    let vm = ep(VM, 41007);
    let orig = fkey(client, listen, PROTO_ICMP);
    let reply = fkey(vm, snat, PROTO_ICMP);
    let now = Host::now_ns();
    let mk = |src: Ep, dst: Ep, flags: u8| flow_entry(src, dst, id, now, flags);
    h.insert_flow(reply, mk(listen, client, FLOW_SNAT | FLOW_REPLY))
        .unwrap();
    h.insert_flow(orig, mk(snat, vm, FLOW_SNAT)).unwrap();

    let name = "echo request, identifier and addresses translated";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, ping.clone()).fwd("web", redirect(snat, vm)),
    );
    assert_flows(name, &o.delta, &[], &[], &[orig]);
    assert_eq!(entry(name, &o.after, &orig).packets, 1);
    let pong = echo(VM, HOST_VM, 41007, false);
    let name = "echo reply, translated back";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, pong.clone()).fwd("web", redirect(listen, client)),
    );
    assert_flows(name, &o.delta, &[], &[], &[reply]);
    let e = entry(name, &o.after, &reply);
    assert_eq!((e.packets, e.bytes), (1, pong.len() as u64), "{name}");
    assert_eq!(e.tcp_seen, 0, "{name}: no TCP flags on ICMP");
    // Another identifier is another (unknown) flow.
    step(
        &mut h,
        &ingress(
            "echo request with another identifier",
            LAN_IF,
            echo(CLIENT, HOST_LAN, 0x1235, true),
        ),
    );
}

/// ICMP errors about a translated flow, from the backend side, carry the
/// header as the backend saw it: translated back entirely.
#[test]
fn test_run_nat_icmp_errors() {
    if !require_root("test_run_nat_icmp_errors") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let client = ep(CLIENT, 40000);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let o = step(
        &mut h,
        &ingress("SYN", LAN_IF, tcp(client, listen, "S", &[]))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("web", created(true, false))
            .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, vm))),
    );
    let snat = ep(HOST_VM, o.port);
    // What the VM received: a full-size data segment, translated.
    let mut big = tcp(snat, vm, "PA", &[b'd'; 1400]);
    big[ETH + 8] = TTL - 1;
    fix_checksums(&mut big[ETH..]);
    let quoted_full = ip_of(&big);
    let unchanged = h.snapshot().unwrap();

    // Fragmentation needed, from the VM itself, quoting all of it (Linux
    // quotes up to 576 bytes; this one is short enough to quote whole).
    let small = {
        let mut f = tcp(snat, vm, "PA", &[b'd'; 200]);
        f[ETH + 8] = TTL - 1;
        fix_checksums(&mut f[ETH..]);
        ip_of(&f)
    };
    let mtu = 1280u16.to_be_bytes();
    let frag = icmp_error(VM, HOST_VM, 3, 4, [0, 0, mtu[0], mtu[1]], &small);
    let want = expect_icmp_error(&frag, HOST_LAN, CLIENT, (client, listen));
    let name = "frag needed from the backend, whole packet quoted";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, frag.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .out(Out::Exact(want.clone())),
    );
    // Spelled out, on top of the byte comparison: what PMTUD on the client
    // needs.
    let quote = &o.run.out[ETH + 28..];
    assert_eq!(&quote[12..16], &CLIENT, "{name}: quoted source");
    assert_eq!(&quote[16..20], &HOST_LAN, "{name}: quoted destination");
    assert_eq!(
        &quote[20..22],
        &40000u16.to_be_bytes(),
        "{name}: quoted source port"
    );
    assert_eq!(
        &quote[22..24],
        &80u16.to_be_bytes(),
        "{name}: quoted destination port"
    );
    assert_eq!(
        &o.run.out[ETH + 26..ETH + 28],
        &mtu,
        "{name}: next-hop MTU kept"
    );
    assert_flows(name, &o.delta, &[], &[], &[]);

    // The same from a router on the VM side, quoting only 8 bytes of TCP
    // (RFC 792 minimum): outer source stays the router's, the quoted ports
    // are translated, the quoted TCP checksum is not there to fix.
    let short = &quoted_full[..28];
    let te = icmp_error(VM_ROUTER, HOST_VM, 11, 0, [0; 4], short);
    let want = expect_icmp_error(&te, VM_ROUTER, CLIENT, (client, listen));
    let name = "time exceeded from a router, 8 bytes quoted";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, te)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .out(Out::Exact(want)),
    );
    assert_flows(name, &o.delta, &[], &[], &[]);

    // Quoting the first 548 bytes (what fits in 576): L4 checksum quoted
    // but not the whole segment; the quoted header and ports are still
    // translated, the ICMP checksum right.
    let part = &quoted_full[..548];
    let fe = icmp_error(VM, HOST_VM, 3, 4, [0, 0, mtu[0], mtu[1]], part);
    // What the client must get: the quote of its own segment as it sent
    // it, whose TCP checksum (of the whole segment) we can compute because
    // we built the whole segment.
    let mut whole = quoted_full.clone();
    set_tuple(&mut whole, client, listen);
    fix_checksums(&mut whole);
    let mut want = fe.clone();
    want[ETH + 28..].copy_from_slice(&whole[..548]);
    let want = expect_icmp_error(&want, HOST_LAN, CLIENT, (client, listen));
    let name = "frag needed, partial quote";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, fe.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .out(Out::Exact(want)),
    );
    let quote = &o.run.out[ETH + 28..];
    assert_eq!(
        &quote[12..20],
        &[CLIENT, HOST_LAN].concat(),
        "{name}: quoted addresses"
    );
    assert_eq!(&quote[20..24], &[0x9c, 0x40, 0, 80], "{name}: quoted ports");
    assert_eq!(
        &quote[36..38],
        &whole[36..38],
        "{name}: quoted TCP checksum"
    );

    // UDP: port unreachable from the VM about a translated query.
    let qc = ep(CLIENT, 50000);
    let dl = ep(HOST_LAN, 5353);
    let dv = ep(VM, 53);
    for zero in [false, true] {
        let qc = ep(qc.ip, qc.port + zero as u16);
        let build = if zero { udp_nocsum } else { udp };
        let o = step(
            &mut h,
            &ingress("UDP query", LAN_IF, build(qc, dl, b"query"))
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .rule("dns", created(true, false))
                .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(qc, dv))),
        );
        let usnat = ep(HOST_VM, o.port);
        let mut sent = build(usnat, dv, b"query");
        sent[ETH + 8] = TTL - 1;
        fix_checksums(&mut sent[ETH..]);
        let pu = icmp_error(VM, HOST_VM, 3, 3, [0; 4], &ip_of(&sent));
        let want = expect_icmp_error(&pu, HOST_LAN, CLIENT, (qc, dl));
        let name = format!("port unreachable for UDP (zero checksum: {zero})");
        let o = step(
            &mut h,
            &ingress(&name, VM_IF, pu)
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .out(Out::Exact(want)),
        );
        if zero {
            assert_eq!(&o.run.out[ETH + 28 + 26..ETH + 28 + 28], &[0, 0], "{name}");
        }
    }

    // From the client side about a reply it got (the client's port is
    // closed): the error travels like the original direction.
    let mut got = tcp(listen, client, "SA", &[]);
    got[ETH + 8] = TTL - 2;
    fix_checksums(&mut got[ETH..]);
    let ce = icmp_error(CLIENT, HOST_LAN, 3, 3, [0; 4], &ip_of(&got));
    let want = expect_icmp_error(&ce, snat.ip, VM, (vm, snat));
    let name = "port unreachable from the client";
    step(
        &mut h,
        &ingress(name, LAN_IF, ce)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .out(Out::Exact(want)),
    );

    // An error about a flow we do not know, or too short to tell: not ours.
    let mut other = tcp(ep(HOST_VM, 41999), vm, "S", &[]);
    other[ETH + 8] = TTL - 1;
    fix_checksums(&mut other[ETH..]);
    let unknown = icmp_error(VM, HOST_VM, 3, 4, [0, 0, mtu[0], mtu[1]], &ip_of(&other));
    step(
        &mut h,
        &ingress("error about an unknown flow", VM_IF, unknown),
    );
    let cut = icmp_error(
        VM,
        HOST_VM,
        3,
        4,
        [0, 0, mtu[0], mtu[1]],
        &quoted_full[..24],
    );
    step(&mut h, &ingress("error quoting 4 bytes of L4", VM_IF, cut));
    // Unchanged flows: errors neither create nor touch entries.
    let end = h.snapshot().unwrap();
    for (k, e) in &unchanged.flows {
        assert_eq!(end.flows.get(k), Some(e), "ICMP errors touched {}", show(k));
    }
}

const ALLOW: &str = r#"
[[forward]]
name = "web-rst"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "192.168.100.1"
allow = ["192.168.1.0/28", "10.0.0.0/8"]
reject = "rst"

[[forward]]
name = "web-drop"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.80:81"
snat = "192.168.100.1"
allow = "192.168.1.0/28"
reject = "drop"
"#;

/// Sources outside a rule's allow-list: with reject = "rst" the router
/// answers like a closed port (a RST built here, never the stack, where a
/// host service may listen on the same port), with "drop" it is dropped;
/// both count a per-rule denial.
#[test]
fn test_run_nat_allow_list() {
    if !require_root("test_run_nat_allow_list") {
        return;
    }
    let mut h = Host::with_rules(64, ALLOW);
    let stranger = ep(STRANGER, 40000);
    // A segment from `src` denied by web-rst (port 80): answered with a RST.
    let deny_rst = |name: &str, src: Ep, flags: &str| {
        ingress(name, LAN_IF, tcp(src, ep(HOST_LAN, 80), flags, &[]))
            .expect(TC_ACT_REDIRECT, Reason::ReplyReset)
            .rule("web-rst", dropped(RULE_DROP_DENIED))
            .out(Out::Answer)
    };
    // A SYN from `src` denied by web-drop (port 81): dropped.
    let deny_drop = |name: &str, src: Ep| {
        ingress(name, LAN_IF, tcp(src, ep(HOST_LAN, 81), "S", &[]))
            .expect(TC_ACT_SHOT, Reason::DropDenied)
            .rule("web-drop", dropped(RULE_DROP_DENIED))
    };
    let cases = vec![
        deny_rst("denied SYN, reject rst", stranger, "S"),
        deny_rst("denied ACK, reject rst", stranger, "A"),
        deny_rst(
            "denied SYN, just outside the /28",
            ep([192, 168, 1, 16], 40000),
            "S",
        ),
        deny_drop("denied SYN, reject drop", stranger),
        // 10.0.0.0/8 is in web-rst's list, not web-drop's: lists are per rule.
        deny_drop(
            "source allowed by another rule only",
            ep([10, 1, 2, 3], 40000),
        ),
    ];
    for s in &cases {
        let o = step(&mut h, s);
        assert_flows(&s.name, &o.delta, &[], &[], &[]);
    }
    for (rule, port) in [("web-rst", 80), ("web-drop", 81)] {
        let client = ep(CLIENT, 40000);
        let s = ingress(
            format!("allowed SYN ({rule})"),
            LAN_IF,
            tcp(client, ep(HOST_LAN, port), "S", &[]),
        )
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule(rule, created(true, false))
        .out(Out::Snat(
            HOST_VM,
            32768..=60999,
            redirect(client, ep(VM, port)),
        ));
        let o = step(&mut h, &s);
        assert_eq!(o.delta.flows_added.len(), 2, "{}: both entries", s.name);
    }
}

/// Everything the NAT must not touch: it goes on untouched (TCX_NEXT),
/// counted under its reason, with no rule counter and no flow change.
#[test]
fn test_run_nat_untouched_packets() {
    if !require_root("test_run_nat_untouched_packets") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let client = ep(CLIENT, 40000);
    let web = ep(HOST_LAN, 80);
    let syn = tcp(client, web, "S", &[]);

    let arp = arp(CLIENT);
    let ipv6 = tcp6("S", &[]);
    let vlan = vlan_tagged(&syn);
    // The shortest frame test_run accepts: an Ethernet header alone.
    let mut eth_only = arp[..14].to_vec();
    eth_only[12..14].copy_from_slice(&[0x88, 0xcc]);

    let later_frag = patch_ip(syn.clone(), 6, &[0x00, 0x10]);
    let df_only = patch_ip(syn.clone(), 6, &[0x40, 0x00]);

    // Truncation at each layer. test_run itself refuses (EINVAL) frames
    // shorter than an Ethernet header and IPv4 frames whose fixed IPv4
    // header is cut short (checked at the end, so a kernel that starts
    // accepting them is noticed); from the IPv4 options on, every layer can
    // be cut short here.
    let ip_opts_cut = patch_ip(syn.clone(), 0, &[0x4f]); // IHL 60 > tot_len
    let tot_below_hdr = patch_ip(syn.clone(), 2, &[0x00, 0x10]);
    let tot_beyond_frame = patch_ip(syn.clone(), 2, &[0x05, 0xdc]);
    let version6 = patch_ip(syn.clone(), 0, &[0x65]);
    let tcp_cut = truncate_l4(&syn, 10);
    let tcp_cut_padded = patch_ip(syn.clone(), 2, &[0x00, 30]);
    let tcp_doff_beyond = {
        let mut f = syn.clone();
        f[ETH + 20 + 12] = 0xf0; // 60-byte header in a 20-byte segment
        f
    };
    let tcp_doff_short = {
        let mut f = syn.clone();
        f[ETH + 20 + 12] = 0x40; // 16 bytes: below the minimum
        f
    };
    let udp_cut = truncate_l4(&udp(client, ep(HOST_LAN, 5353), b"q"), 4);
    let icmp_cut = truncate_l4(&echo(CLIENT, HOST_LAN, 1, true), 4);

    let gre = patch_ip(syn.clone(), 9, &[47]);

    // Every case but one arrives on vmbr0: a row per case, named by the
    // reason it must be counted under.
    let on_lan =
        |r: Reason| move |name: &str, f: Vec<u8>| ingress(name, LAN_IF, f).expect(TCX_NEXT, r);
    let no_match = on_lan(Reason::PassNoMatch);
    let fragment = on_lan(Reason::PassFragment);
    let not_ipv4 = on_lan(Reason::PassNotIpv4);
    let malformed = on_lan(Reason::PassMalformed);
    let cases = vec![
        no_match(
            "SYN to a port without rule",
            tcp(client, ep(HOST_LAN, 81), "S", &[]),
        ),
        no_match(
            "SYN to another address",
            tcp(client, ep([192, 168, 1, 56], 80), "S", &[]),
        ),
        no_match("UDP to a TCP-only port", udp(client, web, b"x")),
        no_match(
            "TCP to a UDP-only port",
            tcp(client, ep(HOST_LAN, 5353), "S", &[]),
        ),
        ingress("listened tuple on another interface", VM_IF, syn.clone())
            .expect(TCX_NEXT, Reason::PassNoMatch),
        no_match(
            "echo request to the listen address",
            echo(CLIENT, HOST_LAN, 9, true),
        ),
        no_match("GRE", gre),
        // Untracked segments for a listener are answered with a RST
        // (test_run_replies.rs); a RST is never answered.
        ingress("RST without a flow", LAN_IF, tcp(client, web, "R", &[]))
            .expect(TC_ACT_SHOT, Reason::DropUntracked),
        fragment("later fragment", later_frag),
        not_ipv4("ARP", arp),
        not_ipv4("IPv6 SYN", ipv6),
        not_ipv4("VLAN-tagged SYN", vlan),
        not_ipv4("Ethernet header only (LLDP type)", eth_only),
        malformed("IHL beyond total length", ip_opts_cut),
        malformed("total length below the header", tot_below_hdr),
        malformed("total length beyond the frame", tot_beyond_frame),
        malformed("version 6 with EtherType IPv4", version6),
        malformed("TCP header cut at 10 bytes", tcp_cut),
        malformed("TCP segment of 10 bytes in a padded frame", tcp_cut_padded),
        malformed("TCP data offset beyond the segment", tcp_doff_beyond),
        malformed("TCP data offset below 20 bytes", tcp_doff_short),
        malformed("UDP header cut at 4 bytes", udp_cut),
        malformed("ICMP header cut at 4 bytes", icmp_cut),
        // Not one of our interfaces: not even counted.
        Step {
            reason: None,
            ..ingress("SYN on an unregistered interface (lo)", "lo", syn.clone())
        },
    ];
    for s in &cases {
        let o = step(&mut h, s);
        assert_flows(&s.name, &o.delta, &[], &[], &[]);
    }

    // The same at egress: never a translation there for these. Without
    // IFACE_EGRESS_NAT (no forward of the interface can take the stack
    // path) the egress program does not even look.
    step(
        &mut h,
        &Step {
            reason: None,
            ..egress("SYN at egress, no egress NAT", LAN_IF, syn.clone())
        },
    );
    h.egress_nat(LAN_IF, true).unwrap();
    let o = step(&mut h, &egress("SYN at egress", LAN_IF, syn.clone()));
    assert_flows("SYN at egress", &o.delta, &[], &[], &[]);

    // Below what test_run accepts, so not testable here: frames shorter
    // than an Ethernet header, and IPv4 frames shorter than ETH + 20.
    for (what, len) in [
        ("13-byte frame", 13),
        ("IPv4 header cut at 19 bytes", ETH + 19),
    ] {
        let r = h.run(Hook::TcIngress, h.lan, &syn[..len]);
        assert!(
            r.is_err(),
            "{what}: test_run accepted it now ({r:?}): add it to the table above"
        );
    }
    // A DF-flagged SYN is not a fragment: positive control for the table.
    ingress_ok(&mut h, "DF SYN", df_only);
}

fn ingress_ok(h: &mut Host, name: &str, f: Vec<u8>) {
    let s = ingress(name, LAN_IF, f)
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web", created(true, false))
        .out(Out::Snat(
            HOST_VM,
            SNAT_PORTS,
            redirect(ep(CLIENT, 40000), ep(VM, 80)),
        ));
    step(h, &s);
}

/// The frame cut `keep` bytes into its L4 header, total length to match.
fn truncate_l4(f: &[u8], keep: usize) -> Vec<u8> {
    let mut f = f[..ETH + 20 + keep].to_vec();
    let tl = (20 + keep) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tl.to_be_bytes());
    with_ip_csum(f)
}

const RANGES: &str = r#"
[[forward]]
name = "range"
in = "vmbr0"
listen = "192.168.1.55"
port = "8000-8002"
to = "192.168.100.80:9000-9002"
snat = "off"

[[forward]]
name = "fan-in"
in = "vmbr0"
listen = "192.168.1.55"
port = "7000-7002"
to = "192.168.100.80:9100"
snat = "off"
"#;

/// Port ranges: a range mapped 1:1 onto another, and a range onto one port.
#[test]
fn test_run_nat_port_ranges() {
    if !require_root("test_run_nat_port_ranges") {
        return;
    }
    let mut h = Host::with_rules(64, RANGES);
    assert_eq!(h.listener_count().unwrap(), 6, "listener entries");
    let table: [(&'static str, u16, u16); 6] = [
        ("range", 8000, 9000),
        ("range", 8001, 9001),
        ("range", 8002, 9002),
        ("fan-in", 7000, 9100),
        ("fan-in", 7001, 9100),
        ("fan-in", 7002, 9100),
    ];
    for (i, (rule, port, target)) in table.into_iter().enumerate() {
        let client = ep(CLIENT, 40000 + i as u16);
        let listen = ep(HOST_LAN, port);
        let vm = ep(VM, target);
        let name = format!("{rule}: SYN to {port}");
        let s = ingress(&name, LAN_IF, tcp(client, listen, "S", &[]))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule(rule, created(false, false))
            .xlate(redirect(client, vm));
        let o = step(&mut h, &s);
        let orig = fkey(client, listen, PROTO_TCP);
        let reply = fkey(vm, client, PROTO_TCP);
        assert_flows(&name, &o.delta, &[orig, reply], &[], &[]);
        assert_eq!(
            entry(&name, &o.after, &reply).new_sport,
            port.to_be(),
            "{name}: the reply entry names the listened port"
        );
        let name = format!("{rule}: reply from {target}");
        step(
            &mut h,
            &ingress(&name, VM_IF, tcp(vm, client, "SA", &[])).fwd(rule, redirect(listen, client)),
        );
    }
    // Many ports onto one without SNAT: the same client port toward two
    // listened ports would give two flows one reply tuple; the second is
    // refused rather than answered from the wrong port.
    let client = ep(CLIENT, 40003); // already has a flow via 7000 -> 9100
    step(
        &mut h,
        &ingress(
            "fan-in: same client port to a second listened port",
            LAN_IF,
            tcp(client, ep(HOST_LAN, 7001), "S", &[]),
        )
        .expect(TC_ACT_SHOT, Reason::DropNoPort)
        .rule("fan-in", dropped(forwarder_common::RULE_DROP_NO_PORT)),
    );
    for port in [7999, 8003, 7003] {
        step(
            &mut h,
            &ingress(
                format!("SYN to {port}, outside the ranges"),
                LAN_IF,
                tcp(ep(CLIENT, 40100), ep(HOST_LAN, port), "S", &[]),
            ),
        );
    }
}

const SNAT_MODES: &str = r#"
[[forward]]
name = "off"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "off"

[[forward]]
name = "masq"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.81:81"
snat = "masquerade"

[[forward]]
name = "auto"
in = "vmbr0"
listen = "192.168.1.55"
port = 82
to = "192.168.100.80:82"
snat = "auto"

[[forward]]
name = "hairpin"
in = "vmbr0"
listen = "192.168.1.55"
port = 83
to = "192.168.1.20:83"
snat = "auto"
"#;

/// SNAT off keeps the client; masquerade takes the source the FIB picks;
/// auto keeps the client when the reply routes back out of the listening
/// interface, and SNATs a hairpin (target behind the listening interface).
#[test]
fn test_run_nat_snat_modes() {
    if !require_root("test_run_nat_snat_modes") {
        return;
    }
    let mut h = Host::with_rules(64, SNAT_MODES);
    // The route to vm81 prefers a secondary address: masquerade must take
    // it from the FIB, not from the interface's first address.
    h.ns.ip(&["addr", "add", "192.168.100.2/24", "dev", VM_IF])
        .unwrap();
    h.ns.ip(&[
        "route",
        "add",
        "192.168.100.81/32",
        "dev",
        VM_IF,
        "src",
        "192.168.100.2",
    ])
    .unwrap();
    let client = ep(CLIENT, 40000);
    let ephemeral = 32768..=60999;

    struct Case {
        rule: &'static str,
        port: u16,
        target: Ep,
        /// Source the backend sees; None: the client.
        snat: Option<Ip>,
        flags: u8,
        /// Interface the target (and its replies) are on.
        back: &'static str,
    }
    let cases = [
        Case {
            rule: "off",
            port: 80,
            target: ep(VM, 80),
            snat: None,
            flags: 0,
            back: VM_IF,
        },
        Case {
            rule: "masq",
            port: 81,
            target: ep(VM81, 81),
            snat: Some([192, 168, 100, 2]),
            flags: FLOW_SNAT,
            back: VM_IF,
        },
        Case {
            rule: "auto",
            port: 82,
            target: ep(VM, 82),
            snat: None,
            flags: FLOW_AUTO,
            back: VM_IF,
        },
        Case {
            rule: "hairpin",
            port: 83,
            target: ep(LAN_PEER, 83),
            snat: Some(HOST_LAN),
            flags: FLOW_AUTO | FLOW_SNAT,
            back: LAN_IF,
        },
    ];
    for c in cases {
        let listen = ep(HOST_LAN, c.port);
        let syn = tcp(client, listen, "S", &[]);
        let name = format!("{}: SYN", c.rule);
        let s = ingress(&name, LAN_IF, syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule(c.rule, created(c.snat.is_some(), false));
        let s = match c.snat {
            Some(ip) => s.out(Out::Snat(ip, ephemeral.clone(), redirect(client, c.target))),
            None => s.xlate(redirect(client, c.target)),
        };
        let o = step(&mut h, &s);
        let seen_src = c.snat.map_or(client, |ip| ep(ip, o.port));
        let orig = fkey(client, listen, PROTO_TCP);
        let reply = fkey(c.target, seen_src, PROTO_TCP);
        assert_flows(&name, &o.delta, &[orig, reply], &[], &[]);
        let ow = Want {
            new_src: seen_src,
            new_dst: c.target,
            rule: h.id(c.rule),
            flags: c.flags,
            tcp_seen: SEEN_SYN,
            packets: 1,
            bytes: syn.len() as u64,
            mss: 0,
        };
        assert_entry(&name, &o.after, &orig, ow);
        assert_entry(
            &name,
            &o.after,
            &reply,
            Want {
                new_src: listen,
                new_dst: client,
                flags: c.flags | FLOW_REPLY,
                tcp_seen: 0,
                packets: 0,
                bytes: 0,
                ..ow
            },
        );
        let name = format!("{}: SYN-ACK", c.rule);
        let o = step(
            &mut h,
            &ingress(&name, c.back, tcp(c.target, seen_src, "SA", &[]))
                .fwd(c.rule, redirect(listen, client)),
        );
        assert_flows(&name, &o.delta, &[], &[], &[reply]);
    }

    // Without SNAT the reply tuple is the client's own: when only the
    // original entry is gone (swept first), the client's next SYN on the
    // same tuple reuses the leftover reply entry instead of being refused.
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let orig = fkey(client, listen, PROTO_TCP);
    let reply = fkey(vm, client, PROTO_TCP);
    h.dp.flows().unwrap().remove(&orig).unwrap();
    let syn = tcp(client, listen, "S", &[]);
    let name = "off: SYN over a leftover reply entry";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("off", created(false, false))
            .xlate(redirect(client, vm)),
    );
    assert_flows(name, &o.delta, &[orig], &[], &[reply]);
    let e = entry(name, &o.after, &reply);
    assert_eq!((e.packets, e.tcp_seen), (0, 0), "{name}: reply entry fresh");

    // Without SNAT the backend addresses its ICMP errors to the client
    // itself: only the VM's side of the tuple changes back.
    let mut sent = tcp(client, vm, "PA", &[b'u'; 64]);
    sent[ETH + 8] = TTL - 1;
    fix_checksums(&mut sent[ETH..]);
    let err = icmp_error(VM, CLIENT, 3, 4, [0, 0, 0x05, 0x00], &ip_of(&sent));
    let want = expect_icmp_error(&err, HOST_LAN, CLIENT, (client, listen));
    let name = "off: frag needed from the backend to the client";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, err)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .out(Out::Exact(want)),
    );
    assert_flows(name, &o.delta, &[], &[], &[]);
}

const MSS: &str = r#"
[[forward]]
name = "clamped"
in = "vmbr0"
listen = "192.168.1.55"
port = 443
to = "192.168.100.80:443"
snat = "192.168.100.1"
mss_clamp = 1240
"#;

/// MSS clamping on SYN and SYN-ACK: a larger MSS is lowered (wherever the
/// option sits, odd offsets included), a smaller one left alone.
#[test]
fn test_run_nat_mss_clamp() {
    if !require_root("test_run_nat_mss_clamp") {
        return;
    }
    let mut h = Host::with_rules(64, MSS);
    let id = h.id("clamped");
    let listen = ep(HOST_LAN, 443);
    let vm = ep(VM, 443);
    let ephemeral = 32768..=60999;
    // Options: [NOP, MSS 1460] puts the MSS value at TCP offset 23 (odd).
    let odd = [1u8, 2, 4, 0x05, 0xb4, 1, 1, 0];
    // Window scale (3 bytes), then MSS at offset 25, then SACK permitted.
    let after_wscale = [3u8, 3, 7, 2, 4, 0x05, 0xb4, 4, 2, 0, 0, 0];
    // Timestamps first, MSS last at an even offset.
    let after_ts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 2, 4, 0x05, 0xb4];
    // MSS 1200, below the clamp.
    let small = [2u8, 4, 0x04, 0xb0, 1, 1, 4, 2];
    // MSS as the 9th option element (RFC 9293 allows any order; 24 of the
    // 40 option bytes).
    let ninth = [
        1u8, 3, 3, 7, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 4, 2, 2, 4, 0x05, 0xb4,
    ];
    // A malformed option: a kind byte without its length at the very end
    // of the header (and no payload after it). Left alone, not clamped,
    // and the SYN still forwarded.
    let cut = [1u8, 1, 1, 2];
    struct MssCase<'a> {
        what: &'a str,
        opts: &'a [u8],
        /// The value the program must lower the MSS to, if any.
        clamp: Option<u16>,
        /// The MSS the forwarded SYN carries.
        out: Option<u16>,
    }
    let lowered = |what, opts| MssCase {
        what,
        opts,
        clamp: Some(1240),
        out: Some(1240),
    };
    let cases = [
        lowered("MSS 1460 at an odd offset after a NOP", &odd),
        lowered("MSS 1460 after window scale", &after_wscale),
        lowered("MSS 1460 after timestamps", &after_ts),
        lowered("MSS 1460 as the 9th option", &ninth),
        MssCase {
            what: "MSS 1200 below the clamp",
            opts: &small,
            clamp: None,
            out: Some(1200),
        },
        MssCase {
            what: "option kind cut at the header's end",
            opts: &cut,
            clamp: None,
            out: None,
        },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let MssCase {
            what,
            opts,
            clamp,
            out: out_mss,
        } = c;
        let client = ep(CLIENT, 40000 + i as u16);
        let syn = tcp_opts(client, listen, "S", opts, &[]);
        let exp = created(true, false);
        let s = ingress(format!("SYN, {what}"), LAN_IF, syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("clamped", if clamp.is_some() { exp.mss() } else { exp })
            .out(Out::Snat(
                HOST_VM,
                ephemeral.clone(),
                Xlate {
                    mss: clamp,
                    ..redirect(client, vm)
                },
            ));
        let o = step(&mut h, &s);
        let p = verify(&s.name, &o.run.out, false);
        assert_eq!(p.mss, out_mss, "{}: MSS", s.name);
        let snat = ep(HOST_VM, o.port);
        let orig = fkey(client, listen, PROTO_TCP);
        let reply = fkey(vm, snat, PROTO_TCP);
        for k in [orig, reply] {
            assert_eq!(
                entry(&s.name, &o.after, &k).mss,
                1240,
                "{}: entry mss",
                s.name
            );
        }
        assert_eq!(entry(&s.name, &o.after, &orig).rule_id, id);

        // The SYN-ACK is clamped too (the backend's MSS toward a narrow
        // client); standard layout, MSS value at offset 22.
        let synack = tcp_opts(vm, snat, "SA", &[2, 4, 0x05, 0xb4, 1, 1, 4, 2], &[]);
        let name = format!("SYN-ACK, {what}");
        step(
            &mut h,
            &ingress(&name, VM_IF, synack)
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .rule("clamped", fwd().mss())
                .xlate(Xlate {
                    mss: Some(1240),
                    ..redirect(listen, client)
                }),
        );
        // Segments without SYN keep their options: no MSS there to clamp,
        // and nothing counted.
        step(
            &mut h,
            &ingress(
                format!("ACK, {what}"),
                LAN_IF,
                tcp(client, listen, "A", &[]),
            )
            .fwd("clamped", redirect(snat, vm)),
        );
    }
}

const PATHS: &str = r#"
[[forward]]
name = "vm"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "auto"

[[forward]]
name = "svc"
in = "vmbr0"
listen = "192.168.1.55"
port = 8443
to = "10.43.0.10:443"
snat = "auto"

[[forward]]
name = "svc-fixed"
in = "vmbr0"
listen = "192.168.1.55"
port = 8444
to = "10.43.0.11:443"
snat = "192.168.100.1"

[[forward]]
name = "gw"
in = "vmbr0"
listen = "192.168.1.55"
port = 8080
to = "10.50.0.5:80"
snat = "auto"

[[forward]]
name = "gw-fixed"
in = "vmbr0"
listen = "192.168.1.55"
port = 8081
to = "10.50.0.6:80"
snat = "192.168.100.1"

[[forward]]
name = "vm-stack"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.80:81"
snat = "auto"
path = "stack"

[[forward]]
name = "gw-redirect"
in = "vmbr0"
listen = "192.168.1.55"
port = 8082
to = "10.50.0.7:80"
snat = "auto"
path = "redirect"

[[forward]]
name = "svc-redirect"
in = "vmbr0"
listen = "192.168.1.55"
port = 8445
to = "10.43.0.12:443"
snat = "auto"
path = "redirect"
"#;

/// The per-flow path: an on-link target is redirected; a target without a
/// route (a ClusterIP) or behind a gateway goes through the stack with
/// FLOW_VIA_STACK on both entries, and its replies are translated at
/// egress of the listening interface (never at ingress).
#[test]
fn test_run_nat_path_stack_and_egress() {
    if !require_root("test_run_nat_path_stack_and_egress") {
        return;
    }
    let mut h = Host::with_rules(64, PATHS);
    h.ns.ip(&["route", "add", "10.50.0.0/16", "via", "192.168.100.254"])
        .unwrap();
    let client = ep(CLIENT, 40000);

    // On-link VM: redirected, TTL decremented.
    let web = ep(HOST_LAN, 80);
    let o = step(
        &mut h,
        &ingress("on-link target", LAN_IF, tcp(client, web, "S", &[]))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("vm", created(false, false))
            .xlate(redirect(client, ep(VM, 80))),
    );
    let vm_reply = fkey(ep(VM, 80), client, PROTO_TCP);
    assert_eq!(
        entry("on-link target", &o.after, &vm_reply).flags,
        FLOW_AUTO | FLOW_REPLY
    );

    // ClusterIP: no route, so through the stack (kube-proxy DNATs it in
    // PREROUTING); the client address is kept, TTL left to the stack.
    let svc = ep(HOST_LAN, 8443);
    let cip = ep(CLUSTER_IP, 443);
    let syn = tcp(client, svc, "S", &[]);
    let name = "ClusterIP target";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, syn.clone())
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("svc", created(false, true))
            .xlate(via_stack(client, cip)),
    );
    let orig = fkey(client, svc, PROTO_TCP);
    let reply = fkey(cip, client, PROTO_TCP);
    assert_flows(name, &o.delta, &[orig, reply], &[], &[]);
    let ow = Want {
        new_src: client,
        new_dst: cip,
        rule: h.id("svc"),
        flags: FLOW_AUTO | FLOW_VIA_STACK,
        tcp_seen: SEEN_SYN,
        packets: 1,
        bytes: syn.len() as u64,
        mss: 0,
    };
    assert_entry(name, &o.after, &orig, ow);
    let rw = Want {
        new_src: svc,
        new_dst: client,
        flags: FLOW_AUTO | FLOW_VIA_STACK | FLOW_REPLY,
        tcp_seen: 0,
        packets: 0,
        bytes: 0,
        ..ow
    };
    assert_entry(name, &o.after, &reply, rw);

    // The reply, once netfilter has undone kube-proxy's DNAT, leaves by
    // the listening interface: translated at its egress, once the daemon
    // has turned egress translation on there (it does for forwards that
    // may take the stack path). Before that it leaves untouched.
    let synack = tcp(cip, client, "SA", &[]);
    step(
        &mut h,
        &Step {
            reason: None,
            ..egress(
                "ClusterIP reply at egress, no egress NAT",
                LAN_IF,
                synack.clone(),
            )
        },
    );
    h.egress_nat(LAN_IF, true).unwrap();
    let name = "ClusterIP reply at egress";
    let o = step(
        &mut h,
        &egress(name, LAN_IF, synack.clone())
            .expect(TC_ACT_OK, Reason::FwdEgress)
            .rule("svc", fwd())
            .xlate(via_stack(svc, client)),
    );
    assert_flows(name, &o.delta, &[], &[], &[reply]);
    assert_entry(
        name,
        &o.after,
        &reply,
        Want {
            tcp_seen: SEEN_SYN | SEEN_ACK,
            packets: 1,
            bytes: synack.len() as u64,
            ..rw
        },
    );
    // An ICMP error from the service about the client's packet leaves by
    // the same egress (netfilter undid kube-proxy's DNAT on it too): its
    // quote names the ClusterIP and must name the listener again.
    let mut sent = tcp(client, cip, "PA", &[b'q'; 100]);
    fix_checksums(&mut sent[ETH..]);
    let err = icmp_error(CLUSTER_IP, CLIENT, 3, 4, [0, 0, 0x05, 0x00], &ip_of(&sent));
    let want = {
        // At egress nothing is decremented: the stack already routed it.
        let mut w = expect_icmp_error(&err, HOST_LAN, CLIENT, (client, svc));
        w[ETH + 8] += 1;
        fix_checksums(&mut w[ETH..]);
        w
    };
    let name = "ICMP error about a ClusterIP flow at egress";
    let o = step(
        &mut h,
        &egress(name, LAN_IF, err)
            .expect(TC_ACT_OK, Reason::FwdEgress)
            .out(Out::Exact(want)),
    );
    assert_flows(name, &o.delta, &[], &[], &[]);

    // At ingress the same reply is not ours (the stack must see it).
    for iface in [VM_IF, LAN_IF] {
        let name = format!("ClusterIP reply at {iface} ingress");
        let o = step(&mut h, &ingress(&name, iface, synack.clone()));
        assert_flows(&name, &o.delta, &[], &[], &[]);
    }
    // Original-direction packets are never translated at egress, of this
    // flow nor of a redirected one; nor are redirected flows' replies.
    for (name, f) in [
        ("client packet at egress", tcp(client, svc, "A", &[])),
        (
            "redirected flow's reply at egress",
            tcp(ep(VM, 80), client, "SA", &[]),
        ),
        (
            "redirected flow's client packet at egress",
            tcp(client, web, "A", &[]),
        ),
    ] {
        let o = step(&mut h, &egress(name, LAN_IF, f));
        assert_flows(name, &o.delta, &[], &[], &[]);
    }
    // The client's next packets keep going through the stack.
    let ack = tcp(client, svc, "A", &[]);
    step(
        &mut h,
        &ingress("ClusterIP flow, client ACK", LAN_IF, ack)
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("svc", fwd())
            .xlate(via_stack(client, cip)),
    );

    // SNAT toward a target without route: nothing could deliver it.
    let o = step(
        &mut h,
        &ingress(
            "fixed SNAT to a ClusterIP",
            LAN_IF,
            tcp(client, ep(HOST_LAN, 8444), "S", &[]),
        )
        .expect(TC_ACT_SHOT, Reason::DropError)
        .rule("svc-fixed", dropped(RULE_DROP_ERROR)),
    );
    assert_flows("fixed SNAT to a ClusterIP", &o.delta, &[], &[], &[]);

    // Behind a gateway: without SNAT through the stack, with SNAT
    // redirected (the stack would drop our own source as a martian).
    let gw = ep(HOST_LAN, 8080);
    let o = step(
        &mut h,
        &ingress("target behind a gateway", LAN_IF, tcp(client, gw, "S", &[]))
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("gw", created(false, true))
            .xlate(via_stack(client, ep([10, 50, 0, 5], 80))),
    );
    let k = fkey(client, gw, PROTO_TCP);
    assert_eq!(
        entry("target behind a gateway", &o.after, &k).flags,
        FLOW_AUTO | FLOW_VIA_STACK
    );
    step(
        &mut h,
        &ingress(
            "SNATed target behind a gateway",
            LAN_IF,
            tcp(client, ep(HOST_LAN, 8081), "S", &[]),
        )
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("gw-fixed", created(true, false))
        .out(Out::Snat(
            HOST_VM,
            32768..=60999,
            redirect(client, ep([10, 50, 0, 6], 80)),
        )),
    );

    // Path overrides. "stack": even an on-link VM goes through the stack
    // (with the client kept; no per-flow SNAT decision to record).
    let name = "path = stack, on-link target";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, tcp(client, ep(HOST_LAN, 81), "S", &[]))
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("vm-stack", created(false, true))
            .xlate(via_stack(client, ep(VM, 81))),
    );
    for k in [
        fkey(client, ep(HOST_LAN, 81), PROTO_TCP),
        fkey(ep(VM, 81), client, PROTO_TCP),
    ] {
        assert_eq!(
            entry(name, &o.after, &k).flags & !FLOW_REPLY,
            FLOW_VIA_STACK,
            "{name}: {}",
            show(&k)
        );
    }
    // "redirect": through a gateway too, client kept...
    let name = "path = redirect, target behind a gateway";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, tcp(client, ep(HOST_LAN, 8082), "S", &[]))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("gw-redirect", created(false, false))
            .xlate(redirect(client, ep([10, 50, 0, 7], 80))),
    );
    assert_eq!(
        entry(name, &o.after, &fkey(client, ep(HOST_LAN, 8082), PROTO_TCP)).flags,
        FLOW_AUTO,
        "{name}"
    );
    // ... but without a route there is nothing to redirect to.
    step(
        &mut h,
        &ingress(
            "path = redirect, target without route",
            LAN_IF,
            tcp(client, ep(HOST_LAN, 8445), "S", &[]),
        )
        .expect(TC_ACT_OK, Reason::FwdStack)
        .rule("svc-redirect", created(false, true))
        .xlate(via_stack(client, ep([10, 43, 0, 12], 443))),
    );

    // TTL 1: answered with Time Exceeded before anything is created
    // (test_run_replies.rs checks the answer byte for byte).
    let syn1 = with_ttl(&tcp(ep(CLIENT, 40001), web, "S", &[]), 1);
    let o = step(
        &mut h,
        &ingress("TTL 1", LAN_IF, syn1)
            .expect(TC_ACT_REDIRECT, Reason::ReplyTimeExceeded)
            .out(Out::Answer),
    );
    assert_flows("TTL 1", &o.delta, &[], &[], &[]);
}

const AUTO: &str = r#"
[[forward]]
name = "auto80"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "auto"

[[forward]]
name = "auto81"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.81:81"
snat = "auto"
"#;

/// snat = "auto" learning: a SYN retransmitted more than 200 ms after its
/// flow began, with nothing ever back from the backend, switches the flow
/// to SNAT and remembers the backend; a flow that did get a reply stays.
#[test]
fn test_run_nat_auto_snat_learning() {
    if !require_root("test_run_nat_auto_snat_learning") {
        return;
    }
    let mut h = Host::with_rules(64, AUTO);
    let client = ep(CLIENT, 40000);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let syn = tcp(client, listen, "S", &[]);
    let orig = fkey(client, listen, PROTO_TCP);
    let dnat_reply = fkey(vm, client, PROTO_TCP);
    let o = step(
        &mut h,
        &ingress("first SYN keeps the client", LAN_IF, syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("auto80", created(false, false))
            .xlate(redirect(client, vm)),
    );
    assert_flows("first SYN", &o.delta, &[orig, dnat_reply], &[], &[]);
    assert_eq!(entry("first SYN", &o.after, &orig).flags, FLOW_AUTO);
    let created_at = entry("first SYN", &o.after, &orig).created_ns;

    // Answered flow on the other rule: SYN, SYN-ACK.
    let c81 = ep(CLIENT, 40100);
    let l81 = ep(HOST_LAN, 81);
    let v81 = ep(VM81, 81);
    let syn81 = tcp(c81, l81, "S", &[]);
    step(
        &mut h,
        &ingress("auto81 SYN", LAN_IF, syn81.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("auto81", created(false, false))
            .xlate(redirect(c81, v81)),
    );
    step(
        &mut h,
        &ingress("auto81 SYN-ACK", VM_IF, tcp(v81, c81, "SA", &[]))
            .fwd("auto81", redirect(l81, c81)),
    );

    // An early retransmission is just another packet of the flow.
    let o = step(
        &mut h,
        &ingress("SYN retransmitted at once", LAN_IF, syn.clone())
            .fwd("auto80", redirect(client, vm)),
    );
    assert_flows("SYN retransmitted at once", &o.delta, &[], &[], &[orig]);
    assert!(o.after.auto_snat.is_empty(), "nothing learned yet");

    let wait = Duration::from_nanos(AUTO_SNAT_PROBE_NS) + Duration::from_millis(50);
    std::thread::sleep(wait);

    // Late retransmission without any reply: forget the DNAT-only flow,
    // learn the backend, create the flow anew with SNAT.
    let name = "SYN retransmitted after 200 ms, no reply";
    let s = ingress(name, LAN_IF, syn.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("auto80", created(true, false))
        .out(Out::Snat(HOST_VM, 32768..=60999, redirect(client, vm)));
    let o = step(&mut h, &s);
    let snat = ep(HOST_VM, o.port);
    let snat_reply = fkey(vm, snat, PROTO_TCP);
    assert_flows(name, &o.delta, &[snat_reply], &[dnat_reply], &[orig]);
    let e = entry(name, &o.after, &orig);
    assert!(
        e.created_ns > created_at,
        "{name}: the flow was created anew"
    );
    assert_entry(
        name,
        &o.after,
        &orig,
        Want {
            new_src: snat,
            new_dst: vm,
            rule: h.id("auto80"),
            flags: FLOW_AUTO | FLOW_SNAT,
            tcp_seen: SEEN_SYN,
            packets: 1,
            bytes: syn.len() as u64,
            mss: 0,
        },
    );
    let learned = forwarder_common::AutoSnatKey {
        rule_id: h.id("auto80"),
        addr: addr_v4(VM),
    };
    assert_eq!(
        o.after.auto_snat.keys().copied().collect::<Vec<_>>(),
        vec![learned],
        "{name}: FWD_AUTO_SNAT"
    );
    let at = o.after.auto_snat[&learned];
    assert!(
        at > created_at && at <= Host::now_ns(),
        "{name}: learned at {at}"
    );

    // The answered flow is not probed: its retransmitted SYN is just a
    // packet, nothing learned for its backend.
    let name = "answered flow's SYN retransmitted after 200 ms";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, syn81).fwd("auto81", redirect(c81, v81)),
    );
    assert_flows(name, &o.delta, &[], &[], &[fkey(c81, l81, PROTO_TCP)]);
    assert!(
        o.delta.auto_snat_changed.is_empty(),
        "{name}: nothing learned"
    );

    // New flows to the learned backend are SNATed from the start.
    let c2 = ep(CLIENT, 40001);
    let name = "new flow to the learned backend";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, tcp(c2, listen, "S", &[]))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("auto80", created(true, false))
            .out(Out::Snat(HOST_VM, 32768..=60999, redirect(c2, vm))),
    );
    assert_eq!(
        entry(name, &o.after, &fkey(c2, listen, PROTO_TCP)).flags,
        FLOW_AUTO | FLOW_SNAT
    );
    // ... and the new flow's replies come back through the SNAT address.
    let name = "SYN-ACK of the SNATed flow";
    step(
        &mut h,
        &ingress(name, VM_IF, tcp(vm, snat, "SA", &[])).fwd("auto80", redirect(listen, client)),
    );

    // What was learned holds for AUTO_SNAT_TTL_NS; after that the next
    // flow tries to keep the client again. Aged here by rewriting the
    // learned timestamp (CLOCK_MONOTONIC_COARSE, like bpf_ktime_get_coarse_ns).
    let now = Host::now_ns();
    if now > AUTO_SNAT_TTL_NS + 2_000_000_000 {
        h.dp.auto_snat()
            .unwrap()
            .insert(learned, now - AUTO_SNAT_TTL_NS - 1_000_000_000, 0)
            .unwrap();
        let c3 = ep(CLIENT, 40002);
        let name = "new flow after the learned SNAT expired";
        let o = step(
            &mut h,
            &ingress(name, LAN_IF, tcp(c3, listen, "S", &[]))
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .rule("auto80", created(false, false))
                .xlate(redirect(c3, vm)),
        );
        assert_eq!(
            entry(name, &o.after, &fkey(c3, listen, PROTO_TCP)).flags,
            FLOW_AUTO,
            "{name}"
        );
    } else {
        eprintln!("uptime below AUTO_SNAT_TTL_NS: the expiry case needs an older timestamp");
    }
}

const FULL: &str = r#"
[[forward]]
name = "web"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "192.168.100.1"

[[forward]]
name = "plain"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.80:81"
snat = "off"
"#;

/// A full flow table refuses new flows (counted) and keeps forwarding the
/// flows it has.
#[test]
fn test_run_nat_table_full() {
    if !require_root("test_run_nat_table_full") {
        return;
    }
    // One flow: two entries.
    let mut h = Host::with_rules(1, FULL);
    let client = ep(CLIENT, 40000);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let o = step(
        &mut h,
        &ingress(
            "the one flow that fits",
            LAN_IF,
            tcp(client, listen, "S", &[]),
        )
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web", created(true, false))
        .out(Out::Snat(HOST_VM, 32768..=60999, redirect(client, vm))),
    );
    let snat = ep(HOST_VM, o.port);
    assert_eq!(o.after.flows.len(), 2);
    let refused = [
        ingress(
            "SNAT flow refused",
            LAN_IF,
            tcp(ep(CLIENT, 40001), listen, "S", &[]),
        )
        .expect(TC_ACT_SHOT, Reason::DropTableFull)
        .rule("web", dropped(RULE_DROP_TABLE_FULL)),
        ingress(
            "DNAT-only flow refused",
            LAN_IF,
            tcp(ep(CLIENT, 40002), ep(HOST_LAN, 81), "S", &[]),
        )
        .expect(TC_ACT_SHOT, Reason::DropTableFull)
        .rule("plain", dropped(RULE_DROP_TABLE_FULL)),
    ];
    for s in &refused {
        let o = step(&mut h, s);
        assert_flows(&s.name, &o.delta, &[], &[], &[]);
    }
    step(
        &mut h,
        &ingress("established flow, reply", VM_IF, tcp(vm, snat, "SA", &[]))
            .fwd("web", redirect(listen, client)),
    );
    step(
        &mut h,
        &ingress(
            "established flow, data",
            LAN_IF,
            tcp(client, listen, "PA", b"data"),
        )
        .fwd("web", redirect(snat, vm)),
    );
}

const TAILNET: &str = r#"
[[forward]]
name = "ts-web"
in = "tailscale0"
port = 443
to = "192.168.100.80:443"
snat = "auto"
mss_clamp = "off"

[[forward]]
name = "ts-svc"
in = "tailscale0"
port = 8443
to = "8.0.43.10:443"
snat = "auto"
mss_clamp = "off"
"#;

/// An L3 ingress interface (tun: no Ethernet header): parsed at offset 0;
/// redirected to an Ethernet device with a MAC header pushed; replies
/// toward it redirected as they are; the narrow MTU leaves big packets to
/// the stack.
#[test]
fn test_run_nat_l3_ingress() {
    if !require_root("test_run_nat_l3_ingress") {
        return;
    }
    let mut h = Host::with_rules(64, TAILNET);
    let client = ep(TS_CLIENT, 40000);
    let listen = ep(HOST_TS, 443);
    let vm = ep(VM, 443);
    let syn = l3(&tcp(client, listen, "S", &[]));
    let name = "SYN on tailscale0";
    let o = step(
        &mut h,
        &ingress(name, TS_IF, syn.clone())
            .l3()
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("ts-web", created(false, false))
            .xlate(Xlate {
                push_eth: true,
                ..redirect(client, vm)
            }),
    );
    let orig = fkey(client, listen, PROTO_TCP);
    let reply = fkey(vm, client, PROTO_TCP);
    assert_flows(name, &o.delta, &[orig, reply], &[], &[]);
    assert_eq!(
        entry(name, &o.after, &orig).flags,
        FLOW_AUTO,
        "{name}: the route back to the tailnet peer leaves by tailscale0: client kept"
    );
    assert_eq!(entry(name, &o.after, &orig).bytes, syn.len() as u64);

    // Toward the L3 device: a plain redirect; the Ethernet header stays in
    // the skb until the redirect strips it (not visible in test_run).
    step(
        &mut h,
        &ingress(
            "SYN-ACK toward tailscale0",
            VM_IF,
            tcp(vm, client, "SA", &[]),
        )
        .fwd("ts-web", redirect(listen, client)),
    );
    step(
        &mut h,
        &ingress(
            "data from the peer",
            TS_IF,
            l3(&tcp(client, listen, "PA", b"hello")),
        )
        .l3()
        .fwd(
            "ts-web",
            Xlate {
                push_eth: true,
                ..redirect(client, vm)
            },
        ),
    );
    // Bigger than tailscale0's MTU (1280) with DF: answered with
    // fragmentation needed (test_run_replies.rs checks it byte for byte),
    // never handed translated to the stack, which drops it as a martian.
    let big = tcp(vm, client, "PA", &[b'x'; 1300]);
    step(
        &mut h,
        &ingress("reply above tailscale0's MTU", VM_IF, big)
            .expect(TC_ACT_REDIRECT, Reason::ReplyFragNeeded)
            .rule("ts-web", fwd())
            .out(Out::Answer),
    );
    // The same as a GSO skb (GRO on the VM side, or a TSO sender): it is
    // segmented to gso_size on the way out, so its length says nothing
    // about the MTU and it is redirected.
    let big = tcp(vm, client, "PA", &[b'x'; 2 * 1200]);
    step(
        &mut h,
        &Step {
            gso: Some((1200, 2)),
            ..ingress("GSO reply above tailscale0's MTU", VM_IF, big)
                .fwd("ts-web", redirect(listen, client))
        },
    );
    // Exactly the MTU still fits.
    let fits = tcp(vm, client, "PA", &[b'x'; 1280 - 40]);
    step(
        &mut h,
        &ingress("reply of exactly the MTU", VM_IF, fits).fwd("ts-web", redirect(listen, client)),
    );
    // Tailnet to a ClusterIP (the socat replacement): through the stack,
    // still L3 (no MAC header pushed), and the replies translated at
    // tailscale0's egress, also at offset 0.
    let svc = ep(HOST_TS, 8443);
    let cip = ep(TS_CLUSTER_IP, 443);
    h.egress_nat(TS_IF, true).unwrap();
    let name = "SYN on tailscale0 to a ClusterIP";
    let o = step(
        &mut h,
        &ingress(name, TS_IF, l3(&tcp(client, svc, "S", &[])))
            .l3()
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("ts-svc", created(false, true))
            .xlate(via_stack(client, cip)),
    );
    for k in [fkey(client, svc, PROTO_TCP), fkey(cip, client, PROTO_TCP)] {
        assert_ne!(
            entry(name, &o.after, &k).flags & FLOW_VIA_STACK,
            0,
            "{name}: {} via stack",
            show(&k)
        );
    }
    step(
        &mut h,
        &egress(
            "ClusterIP reply at tailscale0 egress",
            TS_IF,
            l3(&tcp(cip, client, "SA", &[])),
        )
        .l3()
        .expect(TC_ACT_OK, Reason::FwdEgress)
        .rule("ts-svc", fwd())
        .xlate(via_stack(svc, client)),
    );

    // L3 and no listener: untouched.
    step(
        &mut h,
        &ingress(
            "L3 SYN to another port",
            TS_IF,
            l3(&tcp(client, ep(HOST_TS, 444), "S", &[])),
        )
        .l3(),
    );
}

const TWO_PORTS: &str = r#"
[global]
snat_ports = "41000-41001"

[[forward]]
name = "web"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "192.168.100.1"
"#;

/// SNAT source ports run out: two ports, two flows, the third refused
/// (and counted) while the first two keep working.
#[test]
fn test_run_nat_snat_ports_exhausted() {
    if !require_root("test_run_nat_snat_ports_exhausted") {
        return;
    }
    let mut h = Host::with_rules(64, TWO_PORTS);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let mut ports = Vec::new();
    for i in 0..2 {
        let client = ep(CLIENT, 40000 + i);
        let o = step(
            &mut h,
            &ingress(format!("flow {i}"), LAN_IF, tcp(client, listen, "S", &[]))
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .rule("web", created(true, false))
                .out(Out::Snat(HOST_VM, 41000..=41001, redirect(client, vm))),
        );
        ports.push(o.port);
    }
    ports.sort();
    assert_eq!(ports, [41000, 41001], "both ports used once");
    let name = "third flow, no port left";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, tcp(ep(CLIENT, 40002), listen, "S", &[]))
            .expect(TC_ACT_SHOT, Reason::DropNoPort)
            .rule("web", dropped(forwarder_common::RULE_DROP_NO_PORT)),
    );
    assert_flows(name, &o.delta, &[], &[], &[]);
    // The same client port toward the same backend from another client
    // address still needs a port of its own: refused too.
    let o = step(
        &mut h,
        &ingress(
            "another client, same port",
            LAN_IF,
            tcp(ep(LAN_PEER, 40000), listen, "S", &[]),
        )
        .expect(TC_ACT_SHOT, Reason::DropNoPort)
        .rule("web", dropped(forwarder_common::RULE_DROP_NO_PORT)),
    );
    assert_flows("another client, same port", &o.delta, &[], &[], &[]);
    step(
        &mut h,
        &ingress(
            "existing flow still forwarded",
            LAN_IF,
            tcp(ep(CLIENT, 40001), listen, "A", &[]),
        )
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web", fwd())
        .out(Out::Snat(
            HOST_VM,
            41000..=41001,
            redirect(ep(CLIENT, 40001), vm),
        )),
    );
}
