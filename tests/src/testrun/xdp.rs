//! An XDP step: one frame fed to the accelerator `fwd_xdp` as if it arrived
//! on an interface of the fixture (the context is an `xdp_md` naming it,
//! see `Host::run_xdp`), and everything checked:
//!
//! * the action: XDP_REDIRECT (test_run only reports it; nothing is sent)
//!   or XDP_PASS;
//! * the frame: a passed frame byte for byte as it came; a redirected one
//!   parsed with etherparse, its IPv4 header and TCP/UDP checksums
//!   recomputed by etherparse, every rewritten field compared (addresses,
//!   ports, TTL, destination MAC from the next hop's neighbour entry,
//!   source MAC of the egress device), then byte for byte against the frame
//!   `expect` builds;
//! * that exactly one interface counter moved, (interface, xdp, reason), by
//!   one packet of the frame's size: no TC counter, no other interface;
//! * the rule counters: +1 packet and +frame bytes on the flow's rule when
//!   redirected, nothing anywhere otherwise;
//! * the flow table: nothing added or removed; when redirected only the
//!   entry of the packet's direction changed, and only its packets, bytes
//!   and last_seen (nothing at all when passed).
//!
//! Flows are made the way production makes them: TC (`fwd_ingress`)
//! creates them from the first packet, which XDP leaves to it, so the
//! handshake runs through XDP (passed) and then TC ([`xdp_then_tc`],
//! [`open_tcp`]), as the kernel runs the two hooks.
//!
//! The fixture ([`Host::for_xdp_test`]) gives the next hops static
//! neighbour entries: the accelerator's bpf_fib_lookup resolves neighbours
//! (no BPF_FIB_LOOKUP_SKIP_NEIGH) and passes the frame on without one. Both
//! Ethernet interfaces are in the FWD_XDP_DEVS devmap, as
//! `Dataplane::attach_xdp` puts them there:
//!
//! ```text
//!  client 192.168.1.10 ─┐                     ┌─ vm 192.168.100.80 (nd)
//!  peer   192.168.1.20 ─┴─ vmbr0 [host] vmbr1 ─┼─ 192.168.100.81 (no nd)
//!        (nd: neighbour       (both in         └─ router 192.168.100.254 (nd)
//!         entry)               the devmap)          └─ 10.99.0.0/24
//! ```
//!
//! What test_run cannot express for XDP: the redirect itself (without
//! BPF_F_TEST_XDP_LIVE_FRAMES the action is only reported, so the devmap
//! transmit, the peer taking the frame in and what a veth does with it are
//! the end-to-end test's, `xdp_e2e.rs`); where a frame's checksum came from
//! (a frame is bytes: a CHECKSUM_PARTIAL marker is written by hand, whereas
//! real veth traffic from a local socket has it only with TX offload on);
//! multi-buffer frames (the program is not loaded with
//! BPF_F_XDP_HAS_FRAGS); generic-mode XDP, which runs on an skb; and frames
//! shorter than an Ethernet header (test_run refuses them).
use std::collections::{BTreeMap, BTreeSet};

use forwarder_common::{FlowEntry, FlowKey, Hook, Reason, PROTO_TCP};

use super::{
    expect::expect_xdp_fwd,
    frames::{
        assert_bytes, fkey, mac_of, show, tcp, verify, Ep, Ip, CLIENT, LAN_PEER, VM, VM_ROUTER,
    },
    host::{Host, LAN_IF, VM_IF, WEB_AND_DNS},
    prog::{Run, TC_ACT_REDIRECT, XDP_PASS, XDP_REDIRECT},
    snapshot::{assert_counters, one_counter},
};

/// A network behind `VM_ROUTER` (the fixture routes it there).
pub const ROUTED_NET: &str = "10.99.0.0/24";

/// Forwards the XDP fixture loads besides `WEB_AND_DNS`'s "web" and "dns".
pub const XDP_RULES: &str = r#"
[[forward]]
name = "routed"
in = "vmbr0"
listen = "192.168.1.55"
port = 8080
to = "10.99.0.5:80"
snat = "192.168.100.1"
mss_clamp = "off"

[[forward]]
name = "no-neigh"
in = "vmbr0"
listen = "192.168.1.55"
port = 8081
to = "192.168.100.81:80"
snat = "192.168.100.1"
mss_clamp = "off"

[[forward]]
name = "hairpin"
in = "vmbr0"
listen = "192.168.1.55"
port = 8082
to = "192.168.1.20:80"
snat = "192.168.1.55"
mss_clamp = "off"

[[forward]]
name = "stack"
in = "vmbr0"
listen = "192.168.1.55"
port = 8083
to = "192.168.100.80:80"
snat = "off"
path = "stack"
mss_clamp = "off"
"#;

impl Host {
    /// The XDP fixture: `WEB_AND_DNS` and `XDP_RULES` loaded, both Ethernet
    /// interfaces XDP redirect targets, neighbour entries for the client,
    /// the VM, the LAN peer and the VM-side router, and `ROUTED_NET` behind
    /// that router; `None` when not root (see [`Host::for_test`]).
    pub fn for_xdp_test() -> Option<Host> {
        let mut h = Host::for_test(64, &format!("{WEB_AND_DNS}{XDP_RULES}"))?;
        for dev in [LAN_IF, VM_IF] {
            h.xdp_dev(dev, true).expect("devmap");
        }
        for (ip, dev) in [
            (CLIENT, LAN_IF),
            (LAN_PEER, LAN_IF),
            (VM, VM_IF),
            (VM_ROUTER, VM_IF),
        ] {
            h.neigh(ip, mac_of(ip), dev).expect("neighbour");
        }
        h.ns.ip(&["route", "add", ROUTED_NET, "via", "192.168.100.254"])
            .expect("route");
        Some(h)
    }
}

/// A redirected translation.
#[derive(Clone, Debug)]
pub struct Redirected {
    pub rule: &'static str,
    /// The flow entry the frame matches: its packets, bytes and last_seen
    /// move, nothing else does.
    pub key: FlowKey,
    pub src: Ep,
    pub dst: Ep,
    /// Egress interface: the source MAC is its address.
    pub out: &'static str,
    /// The next hop (the target itself on-link, else the gateway), whose
    /// neighbour entry gives the destination MAC.
    pub next_hop: Ip,
}

/// What the accelerator must do with a frame.
#[derive(Clone, Debug)]
pub enum Expect {
    /// XDP_PASS, untouched, counted under this reason (`None`: not counted
    /// at all, the interface is not ours).
    Pass(Option<Reason>),
    /// XDP_REDIRECT, translated.
    Redirect(Redirected),
}

/// Passed on to the TC program, untouched.
pub fn to_tc() -> Expect {
    Expect::Pass(Some(Reason::PassToTc))
}

/// Passed on untouched, counted under `r`.
pub fn pass(r: Reason) -> Expect {
    Expect::Pass(Some(r))
}

/// Redirected out of `out` as `src` -> `dst`, the destination the next hop.
pub fn redirected(rule: &'static str, key: FlowKey, src: Ep, dst: Ep, out: &'static str) -> Expect {
    Expect::Redirect(Redirected {
        rule,
        key,
        src,
        dst,
        out,
        next_hop: dst.ip,
    })
}

impl Expect {
    /// The same redirect, through the gateway `gw` (its MAC).
    pub fn via(self, gw: Ip) -> Expect {
        match self {
            Expect::Redirect(r) => Expect::Redirect(Redirected { next_hop: gw, ..r }),
            e => e,
        }
    }
}

/// One row of an XDP table.
#[derive(Clone, Debug)]
pub struct XdpCase {
    /// What the row shows; failure messages start with it.
    pub description: &'static str,
    /// The interface the frame arrives on ("lo": not one of ours).
    pub iface: &'static str,
    pub input: Vec<u8>,
    pub expect: Expect,
}

/// Runs every row through [`xdp`].
pub fn run_xdp_cases(h: &mut Host, cases: &[XdpCase]) {
    for c in cases {
        xdp(h, c.description, c.iface, &c.input, &c.expect);
    }
}

/// Runs one frame through fwd_xdp on `iface` and checks action, counters,
/// flow table and output.
pub fn xdp(h: &mut Host, case: &str, iface: &'static str, frame: &[u8], want: &Expect) -> Run {
    eprintln!("xdp step: {case}");
    let ifindex = h.ifindex(iface);
    let before = h.snapshot().expect("snapshot");
    let t0 = Host::now_ns();
    let run = h
        .run(Hook::Xdp, ifindex, frame)
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let t1 = Host::later_ns();
    let after = h.snapshot().expect("snapshot");
    let d = before.delta(&after);
    let (verdict, reason) = match want {
        Expect::Pass(r) => (XDP_PASS, *r),
        Expect::Redirect(_) => (XDP_REDIRECT, Some(Reason::FwdRedirect)),
    };
    assert_eq!(
        run.verdict,
        verdict,
        "{case}: XDP action [counters that moved: {:?}]",
        d.moved()
    );

    // Exactly one interface counter, in the XDP block: TC saw nothing.
    assert_counters(
        case,
        &d,
        &one_counter(iface, Hook::Xdp, reason, frame.len()),
    );
    assert!(
        d.flows_added.is_empty() && d.flows_removed.is_empty(),
        "{case}: flows added {:?} removed {:?}",
        d.flows_added.iter().map(show).collect::<Vec<_>>(),
        d.flows_removed.iter().map(show).collect::<Vec<_>>()
    );

    match want {
        Expect::Pass(_) => {
            assert!(d.rules.is_empty(), "{case}: rule counters {:?}", d.rules);
            assert!(
                d.flows_changed.is_empty(),
                "{case}: flow entries changed: {:?}",
                d.flows_changed.iter().map(show).collect::<Vec<_>>()
            );
            assert_bytes(&format!("{case} (untouched)"), &run.out, frame);
        }
        Expect::Redirect(x) => {
            let id = h.id(x.rule);
            let mut want_rules = BTreeMap::new();
            want_rules.insert(
                id,
                forwarder_common::RuleCounters {
                    packets: 1,
                    bytes: frame.len() as u64,
                    ..Default::default()
                },
            );
            assert_eq!(d.rules, want_rules, "{case}: rule counter deltas");
            assert_eq!(
                d.flows_changed,
                BTreeSet::from([x.key]),
                "{case}: flow entries changed (expected {})",
                show(&x.key)
            );
            let old = before.flows[&x.key];
            let new = after.flows[&x.key];
            assert!(
                new.last_seen_ns >= t0 && new.last_seen_ns <= t1,
                "{case}: last_seen {} not within the run [{t0}, {t1}]",
                new.last_seen_ns
            );
            let expected = FlowEntry {
                packets: old.packets + 1,
                bytes: old.bytes + frame.len() as u64,
                last_seen_ns: new.last_seen_ns,
                ..old
            };
            assert_eq!(new, expected, "{case}: {}", show(&x.key));
            check_redirected(h, case, frame, &run.out, x);
        }
    }
    run
}

fn check_redirected(h: &Host, case: &str, frame: &[u8], out: &[u8], x: &Redirected) {
    let smac = h.mac(x.out).expect("egress MAC");
    let dmac = mac_of(x.next_hop);
    let p = verify(case, out, false);
    assert_eq!(p.src, x.src, "{case}: source address:port");
    assert_eq!(p.dst, x.dst, "{case}: destination address:port");
    assert_eq!(p.ttl, frame[14 + 8] - 1, "{case}: TTL decremented");
    assert_eq!(
        p.dmac,
        Some(dmac),
        "{case}: destination MAC (next hop's neighbour)"
    );
    assert_eq!(p.smac, Some(smac), "{case}: source MAC (egress {})", x.out);
    assert_bytes(case, out, &expect_xdp_fwd(frame, x.src, x.dst, dmac, smac));
}

/// Runs a frame through TC ingress (what follows an XDP_PASS) and checks
/// the verdict and that exactly the one TC ingress counter moved. The TC
/// program's translations are the TC files' subject; this only
/// establishes flows.
pub fn tc_ingress(
    h: &mut Host,
    case: &str,
    iface: &'static str,
    frame: &[u8],
    verdict: i32,
    r: Reason,
) -> Run {
    eprintln!("tc step: {case}");
    let before = h.snapshot().expect("snapshot");
    let run = h
        .run(Hook::TcIngress, h.ifindex(iface), frame)
        .unwrap_or_else(|e| panic!("{case} (TC): {e:#}"));
    let d = before.delta(&h.snapshot().expect("snapshot"));
    assert_eq!(run.verdict, verdict, "{case} (TC): verdict {:?}", d.moved());
    let want = one_counter(iface, Hook::TcIngress, Some(r), frame.len());
    assert_eq!(d.iface, want, "{case} (TC): counters {:?}", d.moved());
    run
}

/// A frame as the kernel handles it: XDP first, which must leave it to TC,
/// then TC ingress.
pub fn xdp_then_tc(
    h: &mut Host,
    case: &str,
    iface: &'static str,
    frame: &[u8],
    verdict: i32,
    r: Reason,
) -> Run {
    xdp(h, case, iface, frame, &to_tc());
    tc_ingress(h, case, iface, frame, verdict, r)
}

/// A flow through the forwarder, both directions' keys and translations.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub client: Ep,
    pub listen: Ep,
    /// What the backend sees as the client (SNAT address and port, or the
    /// client itself).
    pub seen_as: Ep,
    pub target: Ep,
    pub proto: u8,
}

impl Conn {
    pub fn orig(&self) -> FlowKey {
        fkey(self.client, self.listen, self.proto)
    }
    pub fn reply(&self) -> FlowKey {
        fkey(self.target, self.seen_as, self.proto)
    }
    /// A frame from the client, and what it must become.
    pub fn out(&self, rule: &'static str, out: &'static str) -> Expect {
        redirected(rule, self.orig(), self.seen_as, self.target, out)
    }
    /// A frame from the backend, and what it must become.
    pub fn back(&self, rule: &'static str) -> Expect {
        redirected(rule, self.reply(), self.listen, self.client, LAN_IF)
    }
}

/// Opens a TCP connection as production does: SYN, SYN-ACK and the
/// handshake's ACK are left to TC by XDP, TC creates the flow (SNAT port
/// learned from its output) and translates them.
pub fn open_tcp(h: &mut Host, client: Ep, listen: Ep, target: Ep, back_if: &'static str) -> Conn {
    let syn = tcp(client, listen, "S", &[]);
    let run = xdp_then_tc(h, "SYN", LAN_IF, &syn, TC_ACT_REDIRECT, Reason::FwdRedirect);
    let p = verify("SYN (TC)", &run.out, false);
    assert_eq!(p.dst, target, "SYN (TC): DNAT");
    let c = Conn {
        client,
        listen,
        seen_as: p.src,
        target,
        proto: PROTO_TCP,
    };
    let synack = tcp(target, c.seen_as, "SA", &[]);
    xdp_then_tc(
        h,
        "SYN-ACK",
        back_if,
        &synack,
        TC_ACT_REDIRECT,
        Reason::FwdRedirect,
    );
    // The handshake completes with the client's ACK (TC's: the flow is
    // ESTABLISHED only from here on, and XDP handles only that state).
    let ack = tcp(client, listen, "A", &[]);
    xdp_then_tc(h, "ACK", LAN_IF, &ack, TC_ACT_REDIRECT, Reason::FwdRedirect);
    c
}

/// The "web" forward's connection from the client's port `client_port`
/// to the VM's port 80, opened by [`open_tcp`].
pub fn open_web(h: &mut Host, client_port: u16) -> Conn {
    open_tcp(
        h,
        super::frames::ep(CLIENT, client_port),
        super::frames::ep(super::host::HOST_LAN, 80),
        super::frames::ep(VM, 80),
        VM_IF,
    )
}

/// Opens a UDP flow as production does: the first datagram is left to TC
/// by XDP, TC creates the flow (SNAT port learned from its output).
pub fn open_udp(h: &mut Host, client: Ep, listen: Ep, target: Ep, payload: &[u8]) -> Conn {
    let q = super::frames::udp(client, listen, payload);
    let run = xdp_then_tc(
        h,
        "first datagram",
        LAN_IF,
        &q,
        TC_ACT_REDIRECT,
        Reason::FwdRedirect,
    );
    let p = verify("first datagram (TC)", &run.out, false);
    assert_eq!(p.dst, target, "first datagram (TC): DNAT");
    let c = Conn {
        client,
        listen,
        seen_as: p.src,
        target,
        proto: forwarder_common::PROTO_UDP,
    };
    as_stream(h, &c);
    c
}

/// Makes a UDP flow what it is once a stream (replied, active after 2 s):
/// then its packets change nothing but their own entry's accounting. (A
/// younger flow's first reply, or its first packet after 2 s, changes the
/// state in both entries, in XDP as in TC, and a table of steps cannot
/// time that.)
pub fn as_stream(h: &mut Host, c: &Conn) {
    use forwarder_common::conntrack::{CtState, CT_ASSURED};
    for k in [c.orig(), c.reply()] {
        let mut e = h.snapshot().expect("snapshot").flows[&k];
        e.ct.state = CtState::UdpStream as u8;
        e.ct.ct_flags |= CT_ASSURED;
        h.insert_flow(k, e).expect("insert flow");
    }
}
