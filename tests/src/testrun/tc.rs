//! A TC step: one crafted frame fed to `fwd_ingress` or `fwd_egress` on an
//! interface of the fixture, and everything checked:
//!
//! * the verdict (test_run reports a redirect as TC_ACT_REDIRECT; nothing
//!   is sent);
//! * the packet the program left: parsed with etherparse, every rewritten
//!   field compared, the IPv4 header checksum and the TCP/UDP/ICMP checksum
//!   (and, in ICMP errors, the embedded ones) recomputed by etherparse and
//!   compared; then byte for byte against the frame `expect` builds;
//! * that exactly the expected interface counter moved (+1 packet, +frame
//!   bytes) and the rule counters moved by exactly the expected deltas.
//!
//! The flow entries a step added, removed or changed come back in its
//! [`Outcome`] for [`assert_flows`] and [`assert_entry`].
//!
//! Frames run as CHECKSUM_COMPLETE skbs, so the kernel also checks that
//! the program kept skb->csum consistent with its rewrites (what a missing
//! BPF_F_PSEUDO_HDR breaks); `FWD_TEST_RUN_CSUM=none` runs them as
//! CHECKSUM_NONE instead. CHECKSUM_PARTIAL (veth, local senders) cannot be
//! set up through test_run: that path is left to the end-to-end tests.
use std::{
    collections::{BTreeMap, BTreeSet},
    ops::RangeInclusive,
};

use forwarder_common::{
    conntrack::CtState, FlowEntry, FlowFlags, FlowKey, Hook, Reason, RuleCounters, Seen,
};

pub use super::expect::{expect_icmp_error, expect_xlate, redirect, via_stack, Xlate};
use super::{
    frames::{assert_bytes, ep, show, verify, Ep, Ip, ETH},
    host::Host,
    prog::{Csum, Run, TCX_NEXT, TC_ACT_REDIRECT},
    snapshot::{assert_counters, counter_name, one_counter, Delta, Snapshot},
};

/// What the program must have done to the packet.
#[derive(Clone, Debug)]
pub enum Out {
    /// Left exactly as it came.
    Untouched,
    /// Translated to this tuple.
    Xlate(Xlate),
    /// SNATed to `src` with a port from `ports` (learned from the output,
    /// returned in [`Outcome::port`]), destination and the rest as in the
    /// Xlate.
    Snat(Ip, RangeInclusive<u16>, Xlate),
    /// Exactly these bytes (ICMP errors).
    Exact(Vec<u8>),
    /// Read and checked by the caller from [`Outcome::run`] (IPv6 output,
    /// which `frames::verify` does not read: see test_run/nat66.rs).
    Checked,
    /// An answer built by the router (an ICMP error, a RST): valid
    /// checksums here; its exact bytes are test_run/replies.rs's business.
    Answer,
}

/// Expected change of one rule's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuleDelta {
    /// Counted as translated (+1 packet, +frame bytes).
    pub translated: bool,
    /// A flow was created: (SNAT, via the stack).
    pub created: Option<(bool, bool)>,
    /// An MSS option was lowered.
    pub mss_clamped: bool,
    /// One drop of this `RULE_DROP_*` kind.
    pub dropped: Option<usize>,
}

/// A packet of an existing flow, translated.
pub fn translated() -> RuleDelta {
    RuleDelta {
        translated: true,
        ..Default::default()
    }
}

/// The first packet of a new flow, translated: `snat` and `stack` say what
/// the new flow counts as.
pub fn created(snat: bool, stack: bool) -> RuleDelta {
    RuleDelta {
        translated: true,
        created: Some((snat, stack)),
        ..Default::default()
    }
}

/// Refused, counted under drop kind `which` (`RULE_DROP_*`).
pub fn dropped(which: usize) -> RuleDelta {
    RuleDelta {
        dropped: Some(which),
        ..Default::default()
    }
}

impl RuleDelta {
    /// The same, with the MSS option lowered.
    pub fn mss(self) -> RuleDelta {
        RuleDelta {
            mss_clamped: true,
            ..self
        }
    }

    fn counters(&self, len: usize) -> RuleCounters {
        let mut c = RuleCounters::default();
        if self.translated {
            c.packets = 1;
            c.bytes = len as u64;
        }
        if let Some((snat, stack)) = self.created {
            c.new_flows = 1;
            c.snat_flows = snat.into();
            c.stack_flows = stack.into();
        }
        c.mss_clamped = self.mss_clamped.into();
        if let Some(d) = self.dropped {
            c.drops[d] = 1;
        }
        c
    }
}

/// One row of a TC table: a frame, where it goes in, and what must come
/// out. Built with [`ingress`] / [`egress`] (a frame left alone, counted
/// as "no match") and the methods below.
#[derive(Clone, Debug)]
pub struct Step {
    /// What the row shows; failure messages start with it.
    pub description: String,
    pub hook: Hook,
    /// The interface the frame arrives on (ingress) or leaves by (egress);
    /// "lo" is one the dataplane does not know.
    pub iface: &'static str,
    pub input: Vec<u8>,
    /// The frame has no Ethernet header (arrives on an L3 device).
    pub l3: bool,
    /// Present it as a GSO skb: (segment size, segments).
    pub gso: Option<(u32, u32)>,
    pub verdict: i32,
    /// The one interface counter (on `iface`, `hook`) that counts it.
    /// `None`: nothing is counted at all (not one of our interfaces).
    pub counted_as: Option<Reason>,
    /// Rule (by name) and its counter delta; every other rule unchanged.
    pub rule: Option<(&'static str, RuleDelta)>,
    pub output: Out,
}

/// A frame arriving on `iface`, by default left alone (TCX_NEXT, counted
/// as "no match", untouched, no rule counter).
pub fn ingress(description: impl Into<String>, iface: &'static str, input: Vec<u8>) -> Step {
    Step {
        description: description.into(),
        hook: Hook::TcIngress,
        iface,
        input,
        l3: false,
        gso: None,
        verdict: TCX_NEXT,
        counted_as: Some(Reason::PassNoMatch),
        rule: None,
        output: Out::Untouched,
    }
}

/// A frame leaving by `iface`, with [`ingress`]'s defaults.
pub fn egress(description: impl Into<String>, iface: &'static str, input: Vec<u8>) -> Step {
    Step {
        hook: Hook::TcEgress,
        ..ingress(description, iface, input)
    }
}

impl Step {
    pub fn expect(mut self, verdict: i32, reason: Reason) -> Step {
        self.verdict = verdict;
        self.counted_as = Some(reason);
        self
    }
    /// Counted nowhere (the program does not look at it).
    pub fn uncounted(mut self) -> Step {
        self.counted_as = None;
        self
    }
    pub fn rule(mut self, rule: &'static str, delta: RuleDelta) -> Step {
        self.rule = Some((rule, delta));
        self
    }
    pub fn out(mut self, output: Out) -> Step {
        self.output = output;
        self
    }
    pub fn xlate(self, x: Xlate) -> Step {
        self.out(Out::Xlate(x))
    }
    pub fn l3(mut self) -> Step {
        self.l3 = true;
        self
    }
    pub fn gso(mut self, segment: u32, segments: u32) -> Step {
        self.gso = Some((segment, segments));
        self
    }
    /// A packet of an existing flow of `rule`, translated and redirected.
    pub fn fwd(self, rule: &'static str, x: Xlate) -> Step {
        self.expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule(rule, translated())
            .xlate(x)
    }
}

/// What a step did, for checks beyond the step's own.
pub struct Outcome {
    pub run: Run,
    pub delta: Delta,
    pub after: Snapshot,
    /// The SNAT port, for `Out::Snat`.
    pub port: u16,
}

fn ctx_of(s: &Step, d: &Delta) -> String {
    let moved: Vec<String> = d.iface.keys().map(counter_name).collect();
    format!("{} [counters that moved: {moved:?}]", s.description)
}

/// Runs one step and checks verdict, counters and output.
pub fn step(h: &mut Host, s: &Step) -> Outcome {
    let case = s.description.as_str();
    // On stderr, shown with a failure: the steps that passed before it.
    eprintln!("step: {case}");
    let before = h.snapshot().expect("snapshot");
    let ifindex = h.ifindex(s.iface);
    // CHECKSUM_COMPLETE, so the kernel also checks skb->csum, except for L3
    // frames: test_run puts their network header 14 bytes in (it assumes
    // Ethernet), so the sum it checks would start mid-header.
    // FWD_TEST_RUN_CSUM=none runs everything as CHECKSUM_NONE, to see a
    // wrong checksum as a field difference instead of EBADMSG.
    let none = std::env::var("FWD_TEST_RUN_CSUM").is_ok_and(|v| v == "none");
    // Answers (Out::Answer) too: see test_run/replies.rs.
    let csum = if s.l3 || none || matches!(s.output, Out::Answer) {
        Csum::None
    } else {
        Csum::Complete
    };
    let run = h
        .run_with(s.hook, ifindex, &s.input, csum, s.gso)
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let after = h.snapshot().expect("snapshot");
    let delta = before.delta(&after);
    assert_eq!(run.verdict, s.verdict, "{}: verdict", ctx_of(s, &delta));

    // Interface counters: exactly one moved, by one packet of this size.
    assert_counters(
        case,
        &delta,
        &one_counter(s.iface, s.hook, s.counted_as, s.input.len()),
    );

    // Rule counters: exactly the expected delta on the one rule.
    let mut want_rules = BTreeMap::new();
    if let Some((rule, exp)) = s.rule {
        let c = exp.counters(s.input.len());
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
    match &s.output {
        Out::Untouched => assert_bytes(&format!("{case} (untouched)"), &run.out, &s.input),
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
        Out::Checked => {}
        // An IPv6 answer is checked by its caller (test_run/ipv6_answers.rs):
        // `verify` reads IPv4.
        Out::Answer if !s.l3 && run.out.get(12..14) == Some(&[0x86, 0xdd][..]) => {}
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
    let ttl_in = s.input[if s.l3 { 8 } else { ETH + 8 }];
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
    assert_bytes(case, out, &expect_xlate(&s.input, s.l3, x));
}

/// Runs each step and checks that none of them changed the flow table.
pub fn steps_leave_flows_alone(h: &mut Host, steps: &[Step]) {
    for s in steps {
        let o = step(h, s);
        assert_flows(&s.description, &o.delta, &[], &[], &[]);
    }
}

/// The flow table changed by exactly these keys.
pub fn assert_flows(
    case: &str,
    d: &Delta,
    added: &[FlowKey],
    removed: &[FlowKey],
    changed: &[FlowKey],
) {
    let set = |v: &[FlowKey]| v.iter().copied().collect::<BTreeSet<_>>();
    let names = |s: &BTreeSet<FlowKey>| s.iter().map(show).collect::<Vec<_>>();
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
pub struct ExpectedEntry {
    pub new_src: Ep,
    pub new_dst: Ep,
    pub rule: u32,
    pub flags: FlowFlags,
    pub tcp_seen: Seen,
    pub packets: u64,
    pub bytes: u64,
    pub mss: u16,
}

/// The flow entry `key` of `snap`; a failure when there is none.
pub fn entry<'a>(case: &str, snap: &'a Snapshot, key: &FlowKey) -> &'a FlowEntry {
    snap.flows
        .get(key)
        .unwrap_or_else(|| panic!("{case}: no flow entry {}", show(key)))
}

/// Every field of entry `key` as `w` says, padding zero and timestamps in
/// order (created <= last seen <= now).
pub fn assert_entry(case: &str, snap: &Snapshot, key: &FlowKey, w: ExpectedEntry) {
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
    let now = Host::later_ns();
    assert!(
        e.created_ns > 0 && e.created_ns <= e.last_seen_ns && e.last_seen_ns <= now,
        "{case}: {k}: timestamps created {} last {} now {now}",
        e.created_ns,
        e.last_seen_ns
    );
}

/// The connection state, which both entries of a flow carry.
pub fn tcp_state(case: &str, snap: &Snapshot, orig: &FlowKey, reply: &FlowKey) -> CtState {
    let (o, r) = (
        entry(case, snap, orig).ct.state,
        entry(case, snap, reply).ct.state,
    );
    assert_eq!(o, r, "{case}: both directions carry the state");
    CtState::from_raw(o)
}
