//! Table-driven BPF_PROG_TEST_RUN tests of the XDP accelerator `fwd_xdp`.
//!
//! The accelerator forwards established TCP/UDP flows of the redirect path
//! and leaves everything else, untouched, to the TC program behind it. Each
//! step feeds one frame to `fwd_xdp` as if it arrived on an interface of the
//! namespace that stands in for the host (`forwarder_tests::testrun`; the
//! context is an `xdp_md` naming the ingress interface, see
//! `Host::run_xdp`) and checks:
//!
//! * the action: XDP_REDIRECT (test_run only reports it; nothing is sent)
//!   or XDP_PASS;
//! * the frame: a passed frame byte for byte as it came; a redirected one
//!   parsed with etherparse, its IPv4 header and TCP/UDP checksums
//!   recomputed by etherparse, every rewritten field compared (addresses,
//!   ports, TTL, destination MAC from the next hop's neighbour entry,
//!   source MAC of the egress device), then byte for byte against a frame
//!   built here with `forwarder_tests::frames`' own RFC 1071 arithmetic;
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
//! handshake runs through XDP (passed) and then TC, as the kernel runs the
//! two hooks. Every pass case is built so that the reason under test is the
//! only thing keeping the frame from being redirected: the flow exists, the
//! next hop resolves and is a redirect target, and a positive control (the
//! same flow's ordinary packet) is redirected in the same test.
//!
//! The next hops have static neighbour entries in the host namespace
//! (`Host::neigh`): the accelerator's bpf_fib_lookup resolves neighbours
//! (no BPF_FIB_LOOKUP_SKIP_NEIGH) and passes the frame on without one. The
//! egress interfaces are in the FWD_XDP_DEVS devmap (`Host::xdp_dev`), as
//! `Dataplane::attach_xdp` puts them there.
//!
//! What test_run cannot express for XDP: the redirect itself (without
//! BPF_F_TEST_XDP_LIVE_FRAMES the action is only reported, so the devmap
//! transmit, the peer taking the frame in and what a veth does with it are
//! the end-to-end test's, `xdp_e2e.rs`); where a frame's checksum came from
//! (a frame is bytes: the CHECKSUM_PARTIAL marker below is written by
//! hand, whereas real veth traffic from a local socket has it only with TX
//! offload on); multi-buffer frames (the program is not loaded with
//! BPF_F_XDP_HAS_FRAGS); generic-mode XDP, which runs on an skb; and frames
//! shorter than an Ethernet header (test_run refuses them).
use etherparse::PacketBuilder;
use forwarder_common::{
    FlowEntry, FlowKey, Hook, Reason, FLOW_REPLY, FLOW_SNAT, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use forwarder_tests::{
    frames::{
        arp, assert_bytes, ep, fix_checksums, fkey, flow_entry, fold, icmp_error, ip_of, l4_check,
        mac_of, patch_ip, pseudo_sum, set_l4_check, set_tuple, show, sum16, tcp, tcp6, udp, verify,
        vlan_tagged, with_ip_options, with_ttl, Ep, Ip, Mac, CLIENT, ETH, HOST_MAC, LAN_PEER, TTL,
        VM, VM_ROUTER,
    },
    require_root,
    testrun::{
        assert_counters, one_counter, Host, Run, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, TCX_NEXT,
        TC_ACT_OK, TC_ACT_REDIRECT, VM_IF, WEB_AND_DNS, XDP_PASS, XDP_REDIRECT,
    },
};
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------
// Addresses (besides `frames`' CLIENT, LAN_PEER, VM and VM_ROUTER)

/// An on-link VM whose neighbour entry does not exist (yet).
const VM_NO_NEIGH: Ip = [192, 168, 100, 81];
/// A host behind `VM_ROUTER`, in `ROUTED_NET` (the fixture routes it there).
const ROUTED: Ip = [10, 99, 0, 5];
const ROUTED_NET: &str = "10.99.0.0/24";

// ---------------------------------------------------------------------------
// Expected frames (with `frames`' independent checksum arithmetic)

/// What a redirected frame must be: `frame` with this tuple, TTL one less,
/// these MACs and every checksum recomputed.
fn expect_fwd(frame: &[u8], src: Ep, dst: Ep, dmac: Mac, smac: Mac) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[0..6].copy_from_slice(&dmac);
    f[6..12].copy_from_slice(&smac);
    let ip = &mut f[ETH..];
    ip[8] -= 1;
    set_tuple(ip, src, dst);
    fix_checksums(ip);
    f
}

/// A UDP payload of `len` bytes (even) whose datagram from `src` to `dst`
/// has the checksum 0 when computed: its last word makes the sum all ones.
/// Sent, such a checksum is written as 0xffff (RFC 768).
fn zero_sum_payload(src: Ep, dst: Ep, len: usize) -> Vec<u8> {
    assert!(len >= 2 && len.is_multiple_of(2));
    let mut payload = vec![b'z'; len];
    payload[len - 2..].copy_from_slice(&[0, 0]);
    let f = udp(src, dst, &payload);
    let ip = &f[ETH..];
    let mut l4 = ip[20..].to_vec();
    l4[6..8].copy_from_slice(&[0, 0]);
    let word = !fold(sum16(&l4) + u32::from(pseudo_sum(ip)));
    payload[len - 2..].copy_from_slice(&word.to_be_bytes());
    payload
}

// ---------------------------------------------------------------------------
// Steps

/// A redirected translation.
#[derive(Clone, Debug)]
struct Fwd {
    rule: &'static str,
    /// The flow entry the frame matches: its packets, bytes and last_seen
    /// move, nothing else does.
    key: FlowKey,
    src: Ep,
    dst: Ep,
    /// Egress interface: the source MAC is its address.
    out: &'static str,
    /// The next hop (the target itself on-link, else the gateway), whose
    /// neighbour entry gives the destination MAC.
    next_hop: Ip,
}

#[derive(Clone, Debug)]
enum Expect {
    /// XDP_PASS, untouched, counted under this reason (`None`: not counted
    /// at all, the interface is not ours).
    Pass(Option<Reason>),
    /// XDP_REDIRECT, translated.
    Fwd(Fwd),
}

fn to_tc() -> Expect {
    Expect::Pass(Some(Reason::PassToTc))
}

fn fwd(rule: &'static str, key: FlowKey, src: Ep, dst: Ep, out: &'static str) -> Expect {
    let next_hop = dst.ip;
    Expect::Fwd(Fwd {
        rule,
        key,
        src,
        dst,
        out,
        next_hop,
    })
}

/// Runs one frame through fwd_xdp on `iface` and checks action, counters,
/// flow table and output.
fn xdp(h: &mut Host, case: &str, iface: &'static str, frame: &[u8], want: &Expect) -> Run {
    let ifindex = if iface == "lo" { 1 } else { h.ifindex(iface) };
    let before = h.snapshot().expect("snapshot");
    let t0 = Host::now_ns();
    let run = h
        .run(Hook::Xdp, ifindex, frame)
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let t1 = Host::now_ns();
    let after = h.snapshot().expect("snapshot");
    let d = before.delta(&after);
    let (verdict, reason) = match want {
        Expect::Pass(r) => (XDP_PASS, *r),
        Expect::Fwd(_) => (XDP_REDIRECT, Some(Reason::FwdRedirect)),
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
        Expect::Fwd(x) => {
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
            check_fwd(h, case, frame, &run.out, x);
        }
    }
    run
}

fn check_fwd(h: &Host, case: &str, frame: &[u8], out: &[u8], x: &Fwd) {
    let smac = h.mac(x.out).expect("egress MAC");
    let dmac = mac_of(x.next_hop);
    let p = verify(case, out, false);
    assert_eq!(p.src, x.src, "{case}: source address:port");
    assert_eq!(p.dst, x.dst, "{case}: destination address:port");
    assert_eq!(p.ttl, frame[ETH + 8] - 1, "{case}: TTL decremented");
    assert_eq!(
        p.dmac,
        Some(dmac),
        "{case}: destination MAC (next hop's neighbour)"
    );
    assert_eq!(p.smac, Some(smac), "{case}: source MAC (egress {})", x.out);
    assert_bytes(case, out, &expect_fwd(frame, x.src, x.dst, dmac, smac));
}

/// Runs a frame through TC ingress (what follows an XDP_PASS) and checks
/// the verdict and that exactly the one TC ingress counter moved. The TC
/// program's translations are test_run_nat.rs's subject; this only
/// establishes flows.
fn tc(h: &mut Host, case: &str, iface: &'static str, frame: &[u8], verdict: i32, r: Reason) -> Run {
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
fn xdp_then_tc(
    h: &mut Host,
    case: &str,
    iface: &'static str,
    frame: &[u8],
    verdict: i32,
    r: Reason,
) -> Run {
    xdp(h, case, iface, frame, &to_tc());
    tc(h, case, iface, frame, verdict, r)
}

/// A flow through the forwarder, both directions' keys and translations.
#[derive(Clone, Copy, Debug)]
struct Conn {
    client: Ep,
    listen: Ep,
    /// What the backend sees as the client (SNAT address and port, or the
    /// client itself).
    seen_as: Ep,
    target: Ep,
    proto: u8,
}

impl Conn {
    fn orig(&self) -> FlowKey {
        fkey(self.client, self.listen, self.proto)
    }
    fn reply(&self) -> FlowKey {
        fkey(self.target, self.seen_as, self.proto)
    }
    /// The frame from the client, and what it must become.
    fn out(&self, rule: &'static str, out: &'static str) -> Expect {
        fwd(rule, self.orig(), self.seen_as, self.target, out)
    }
    /// A frame from the backend, and what it must become.
    fn back(&self, rule: &'static str) -> Expect {
        fwd(rule, self.reply(), self.listen, self.client, LAN_IF)
    }
}

/// Opens a TCP connection as production does: SYN and SYN-ACK are left to
/// TC by XDP, TC creates the flow (SNAT port learned from its output) and
/// translates both.
fn open_tcp(h: &mut Host, client: Ep, listen: Ep, target: Ep, back_if: &'static str) -> Conn {
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
    c
}

/// The fixture: the host namespace with `WEB_AND_DNS` and the rules below,
/// both Ethernet interfaces XDP redirect targets, neighbour entries for the
/// client, the VM, the LAN peer and the VM-side router, and a network
/// behind that router.
fn host() -> Host {
    let mut h = Host::with_rules(64, &format!("{WEB_AND_DNS}{MORE_RULES}"));
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
    h
}

/// Forwards besides `WEB_AND_DNS`'s "web" and "dns".
const MORE_RULES: &str = r#"
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

// ---------------------------------------------------------------------------
// The cases

/// An established connection with fixed SNAT: data both ways goes through
/// XDP, every field rewritten; TCP control packets go on to TC.
#[test]
fn test_run_xdp_tcp_established() {
    if !require_root("test_run_xdp_tcp_established") {
        return;
    }
    let mut h = host();
    let web = open_tcp(
        &mut h,
        ep(CLIENT, 40000),
        ep(HOST_LAN, 80),
        ep(VM, 80),
        VM_IF,
    );
    assert_eq!(web.seen_as.ip, HOST_VM, "fixed SNAT address");
    assert!(SNAT_PORTS.contains(&web.seen_as.port), "{web:?}");
    let orig_flags = h.snapshot().unwrap().flows[&web.orig()].flags;
    assert_eq!(orig_flags, FLOW_SNAT, "a redirect-path SNAT flow");

    let from_client = |flags: &str, payload: &[u8]| tcp(web.client, web.listen, flags, payload);
    let from_vm = |flags: &str, payload: &[u8]| tcp(web.target, web.seen_as, flags, payload);
    let table: Vec<(&str, &'static str, Vec<u8>, Expect)> = vec![
        (
            "client ACK",
            LAN_IF,
            from_client("A", &[]),
            web.out("web", VM_IF),
        ),
        (
            "client request",
            LAN_IF,
            from_client("PA", b"GET / HTTP/1.1\r\nHost: vm80\r\n\r\n"),
            web.out("web", VM_IF),
        ),
        (
            "backend data",
            VM_IF,
            from_vm("A", &[b'x'; 1400]),
            web.back("web"),
        ),
        (
            "backend data with PSH",
            VM_IF,
            from_vm("PA", &[b'y'; 333]),
            web.back("web"),
        ),
        (
            "client ACK of the data",
            LAN_IF,
            from_client("A", &[]),
            web.out("web", VM_IF),
        ),
        (
            "client data, odd length",
            LAN_IF,
            from_client("PA", b"odd"),
            web.out("web", VM_IF),
        ),
        // TTL 2 is the lowest that may be forwarded: it leaves with 1.
        (
            "client data with TTL 2",
            LAN_IF,
            with_ttl(&from_client("PA", b"ttl"), 2),
            web.out("web", VM_IF),
        ),
        // Control packets drive the TCP state: TC's.
        ("client FIN", LAN_IF, from_client("FA", &[]), to_tc()),
        ("backend FIN", VM_IF, from_vm("FA", &[]), to_tc()),
        ("backend RST", VM_IF, from_vm("RA", &[]), to_tc()),
        ("retransmitted SYN-ACK", VM_IF, from_vm("SA", &[]), to_tc()),
        (
            "client SYN on the tuple",
            LAN_IF,
            from_client("S", &[]),
            to_tc(),
        ),
    ];
    for (name, iface, frame, want) in &table {
        xdp(&mut h, name, iface, frame, want);
    }

    // The second connection of the same client gets its own SNAT port and
    // its own entries; the first one's stay as they were.
    let snap = h.snapshot().unwrap();
    let web2 = open_tcp(
        &mut h,
        ep(CLIENT, 40001),
        ep(HOST_LAN, 80),
        ep(VM, 80),
        VM_IF,
    );
    assert_ne!(web2.seen_as, web.seen_as);
    let f = tcp(web2.target, web2.seen_as, "PA", b"second");
    xdp(
        &mut h,
        "second connection, backend data",
        VM_IF,
        &f,
        &web2.back("web"),
    );
    let now = h.snapshot().unwrap();
    for k in [web.orig(), web.reply()] {
        assert_eq!(snap.flows[&k], now.flows[&k], "{}: untouched", show(&k));
    }
}

/// UDP both ways: with a checksum, without one (zero stays zero), one that
/// becomes zero when computed (sent as 0xffff), one that was sent as 0xffff,
/// and a frame carrying Ethernet padding.
#[test]
fn test_run_xdp_udp() {
    if !require_root("test_run_xdp_udp") {
        return;
    }
    let mut h = host();
    let listen = ep(HOST_LAN, 5353);
    let vm = ep(VM, 53);
    let client = ep(CLIENT, 50000);

    // The first datagram has no flow: XDP leaves it to TC, which creates it.
    let q = udp(client, listen, b"\x12\x34 first query");
    let run = xdp_then_tc(
        &mut h,
        "first query",
        LAN_IF,
        &q,
        TC_ACT_REDIRECT,
        Reason::FwdRedirect,
    );
    let seen_as = verify("first query (TC)", &run.out, false).src;
    let dns = Conn {
        client,
        listen,
        seen_as,
        target: vm,
        proto: PROTO_UDP,
    };
    let out = dns.out("dns", VM_IF);
    let back = dns.back("dns");
    let pass = to_tc();

    let query = |p: &[u8]| udp(client, listen, p);
    let answer = |p: &[u8]| udp(vm, seen_as, p);
    // Payloads whose translated datagram sums to all ones.
    let zero_out = zero_sum_payload(seen_as, vm, 20);
    let zero_back = zero_sum_payload(listen, client, 30);
    let padded = {
        let mut f = query(b"q");
        f.resize(60, 0xa5);
        f
    };
    let sent_as_ffff = {
        // The payload that makes the *input* datagram's checksum compute
        // to zero: its sender wrote 0xffff.
        let f = query(&zero_sum_payload(client, listen, 12));
        assert_eq!(
            l4_check(&f),
            0xffff,
            "etherparse sends a zero sum as 0xffff"
        );
        f
    };
    let table: Vec<(&str, &'static str, Vec<u8>, &Expect)> = vec![
        ("query", LAN_IF, query(b"\x12\x34 dns query"), &out),
        (
            "answer",
            VM_IF,
            answer(b"\x12\x34 dns answer, somewhat longer"),
            &back,
        ),
        (
            "query without checksum",
            LAN_IF,
            set_l4_check(query(b"no checksum, none"), 0),
            &out,
        ),
        (
            "answer without checksum",
            VM_IF,
            set_l4_check(answer(b"no checksum either"), 0),
            &back,
        ),
        ("query summing to zero", LAN_IF, query(&zero_out), &out),
        ("answer summing to zero", VM_IF, answer(&zero_back), &back),
        ("query sent with 0xffff", LAN_IF, sent_as_ffff, &out),
        ("query padded to 60 bytes", LAN_IF, padded, &out),
        // Less than 20 bytes of L4 in the frame (no padding, as on a
        // veth): the accelerator reads a fixed 20-byte window and leaves
        // such a datagram to TC.
        ("query of 9 L4 bytes, unpadded", LAN_IF, query(b"q"), &pass),
    ];
    for (name, iface, frame, want) in &table {
        let run = xdp(&mut h, name, iface, frame, want);
        if matches!(want, Expect::Fwd(_)) {
            let (i, o) = (l4_check(frame), l4_check(&run.out));
            if i == 0 {
                assert_eq!(o, 0, "{name}: no checksum stays no checksum");
            }
            if name.contains("summing to zero") {
                assert_eq!(o, 0xffff, "{name}: a computed zero is sent as 0xffff");
            }
        }
    }
}

/// A frame whose TCP/UDP checksum field holds the bare pseudo-header sum
/// was left to offload by its sender (CHECKSUM_PARTIAL, veth from a local
/// socket): XDP cannot finish it and leaves it to TC; the same frame with
/// its full checksum is redirected.
#[test]
fn test_run_xdp_partial_checksum() {
    if !require_root("test_run_xdp_partial_checksum") {
        return;
    }
    let mut h = host();
    let web = open_tcp(
        &mut h,
        ep(CLIENT, 40000),
        ep(HOST_LAN, 80),
        ep(VM, 80),
        VM_IF,
    );
    let q = udp(ep(CLIENT, 50000), ep(HOST_LAN, 5353), b"first");
    let run = xdp_then_tc(
        &mut h,
        "first query",
        LAN_IF,
        &q,
        TC_ACT_REDIRECT,
        Reason::FwdRedirect,
    );
    let dns = Conn {
        client: ep(CLIENT, 50000),
        listen: ep(HOST_LAN, 5353),
        seen_as: verify("first query", &run.out, false).src,
        target: ep(VM, 53),
        proto: PROTO_UDP,
    };
    let partial = |f: Vec<u8>| {
        let p = pseudo_sum(&f[ETH..]);
        set_l4_check(f, p)
    };
    let frames: Vec<(&str, &'static str, Vec<u8>, Expect)> = vec![
        (
            "TCP from the client",
            LAN_IF,
            tcp(web.client, web.listen, "PA", b"request"),
            web.out("web", VM_IF),
        ),
        (
            "TCP from the backend",
            VM_IF,
            tcp(web.target, web.seen_as, "PA", &[b'r'; 900]),
            web.back("web"),
        ),
        (
            "UDP from the client",
            LAN_IF,
            udp(dns.client, dns.listen, b"query, 20 bytes of L4"),
            dns.out("dns", VM_IF),
        ),
        (
            "UDP from the backend",
            VM_IF,
            udp(dns.target, dns.seen_as, b"answer answer"),
            dns.back("dns"),
        ),
    ];
    for (name, iface, full, want) in frames {
        let marked = partial(full.clone());
        assert_ne!(
            l4_check(&marked),
            l4_check(&full),
            "{name}: test frames differ"
        );
        xdp(
            &mut h,
            &format!("{name}, partial checksum"),
            iface,
            &marked,
            &to_tc(),
        );
        xdp(
            &mut h,
            &format!("{name}, full checksum"),
            iface,
            &full,
            &want,
        );
    }
}

/// Next hops: the MACs come from the next hop's neighbour entry (the
/// gateway's for a target behind one) and the egress device; anything but
/// a plain FIB answer for a devmap interface is left to TC.
#[test]
fn test_run_xdp_next_hops() {
    if !require_root("test_run_xdp_next_hops") {
        return;
    }
    let mut h = host();

    // Behind a gateway: the destination MAC is the router's.
    let routed = open_tcp(
        &mut h,
        ep(CLIENT, 40010),
        ep(HOST_LAN, 8080),
        ep(ROUTED, 80),
        VM_IF,
    );
    let data = tcp(routed.client, routed.listen, "PA", &[b'g'; 1000]);
    let via_router = match routed.out("routed", VM_IF) {
        Expect::Fwd(x) => Expect::Fwd(Fwd {
            next_hop: VM_ROUTER,
            ..x
        }),
        e => e,
    };
    xdp(
        &mut h,
        "target behind a gateway",
        LAN_IF,
        &data,
        &via_router,
    );
    let reply = tcp(routed.target, routed.seen_as, "A", &[]);
    xdp(
        &mut h,
        "reply from behind the gateway",
        VM_IF,
        &reply,
        &routed.back("routed"),
    );

    // The route's MTU (locked, so forwarding honours it): a frame that
    // fits is redirected, one byte more is left to TC, which hands it to
    // the stack for fragmentation needed.
    let mtu = 1000u16;
    h.ns.ip(&[
        "route",
        "replace",
        ROUTED_NET,
        "via",
        "192.168.100.254",
        "mtu",
        "lock",
        "1000",
    ])
    .unwrap();
    let sized = |tot: u16| {
        tcp(
            routed.client,
            routed.listen,
            "PA",
            &vec![b'm'; usize::from(tot) - 40],
        )
    };
    xdp(
        &mut h,
        "exactly the route MTU",
        LAN_IF,
        &sized(mtu),
        &via_router,
    );
    xdp(
        &mut h,
        "one byte over the route MTU",
        LAN_IF,
        &sized(mtu + 1),
        &to_tc(),
    );

    // No route any more (the flow outlives it): left to TC.
    h.ns.ip(&["route", "del", ROUTED_NET]).unwrap();
    xdp(&mut h, "route gone", LAN_IF, &data, &to_tc());
    xdp(
        &mut h,
        "reply, route to the client still there",
        VM_IF,
        &reply,
        &routed.back("routed"),
    );
    h.ns.ip(&["route", "add", ROUTED_NET, "via", "192.168.100.254"])
        .unwrap();
    xdp(&mut h, "route back", LAN_IF, &data, &via_router);

    // An unreachable route is no answer either.
    h.ns.ip(&["route", "replace", "unreachable", ROUTED_NET])
        .unwrap();
    xdp(&mut h, "unreachable route", LAN_IF, &data, &to_tc());
    h.ns.ip(&["route", "replace", ROUTED_NET, "via", "192.168.100.254"])
        .unwrap();

    // The gateway's neighbour entry gone: no answer.
    h.ns.ip(&["neigh", "del", "192.168.100.254", "dev", VM_IF])
        .unwrap();
    xdp(
        &mut h,
        "gateway without neighbour entry",
        LAN_IF,
        &data,
        &to_tc(),
    );
    h.neigh(VM_ROUTER, mac_of(VM_ROUTER), VM_IF).unwrap();
    xdp(&mut h, "gateway neighbour back", LAN_IF, &data, &via_router);

    // An on-link target whose neighbour was never resolved: TC's
    // bpf_redirect_neigh resolves it; until then XDP leaves the flow to TC.
    let nn = open_tcp(
        &mut h,
        ep(CLIENT, 40011),
        ep(HOST_LAN, 8081),
        ep(VM_NO_NEIGH, 80),
        VM_IF,
    );
    let nn_data = tcp(nn.client, nn.listen, "PA", b"no neighbour");
    xdp(
        &mut h,
        "target without neighbour entry",
        LAN_IF,
        &nn_data,
        &to_tc(),
    );
    let nn_reply = tcp(
        nn.target,
        nn.seen_as,
        "PA",
        b"the reply's next hop is known",
    );
    xdp(
        &mut h,
        "its reply (client neighbour known)",
        VM_IF,
        &nn_reply,
        &nn.back("no-neigh"),
    );
    h.neigh(VM_NO_NEIGH, mac_of(VM_NO_NEIGH), VM_IF).unwrap();
    xdp(
        &mut h,
        "neighbour resolved",
        LAN_IF,
        &nn_data,
        &nn.out("no-neigh", VM_IF),
    );

    // Hairpin: out through the interface it came in on, to a LAN peer.
    let hp = open_tcp(
        &mut h,
        ep(CLIENT, 40012),
        ep(HOST_LAN, 8082),
        ep(LAN_PEER, 80),
        LAN_IF,
    );
    assert_eq!(hp.seen_as.ip, HOST_LAN);
    let hp_data = tcp(hp.client, hp.listen, "PA", b"hairpin");
    xdp(
        &mut h,
        "hairpin",
        LAN_IF,
        &hp_data,
        &hp.out("hairpin", LAN_IF),
    );
    let hp_reply = tcp(hp.target, hp.seen_as, "PA", b"hairpin reply");
    xdp(
        &mut h,
        "hairpin reply",
        LAN_IF,
        &hp_reply,
        &hp.back("hairpin"),
    );

    // The egress interface runs no XDP accelerator (not in the devmap):
    // a redirect there could not be transmitted. Left to TC.
    let web = open_tcp(
        &mut h,
        ep(CLIENT, 40013),
        ep(HOST_LAN, 80),
        ep(VM, 80),
        VM_IF,
    );
    let web_data = tcp(web.client, web.listen, "PA", b"devmap");
    h.xdp_dev(VM_IF, false).unwrap();
    xdp(
        &mut h,
        "egress not in the devmap",
        LAN_IF,
        &web_data,
        &to_tc(),
    );
    let web_reply = tcp(web.target, web.seen_as, "PA", b"reply to a devmap member");
    xdp(
        &mut h,
        "reply toward a devmap member",
        VM_IF,
        &web_reply,
        &web.back("web"),
    );
    h.xdp_dev(VM_IF, true).unwrap();
    xdp(
        &mut h,
        "egress back in the devmap",
        LAN_IF,
        &web_data,
        &web.out("web", VM_IF),
    );

    // Forwarding disabled on the ingress interface: the FIB refuses.
    h.ns.sysctl("net.ipv4.conf.vmbr0.forwarding", "0").unwrap();
    xdp(
        &mut h,
        "forwarding disabled on vmbr0",
        LAN_IF,
        &web_data,
        &to_tc(),
    );
    h.ns.sysctl("net.ipv4.conf.vmbr0.forwarding", "1").unwrap();
    xdp(
        &mut h,
        "forwarding enabled again",
        LAN_IF,
        &web_data,
        &web.out("web", VM_IF),
    );
}

/// Everything else is passed on untouched, counted under its reason, with
/// an established redirect-path flow for the same tuple, so that the
/// reason is the only thing in the way.
#[test]
fn test_run_xdp_passes_untouched() {
    if !require_root("test_run_xdp_passes_untouched") {
        return;
    }
    let mut h = host();
    let web = open_tcp(
        &mut h,
        ep(CLIENT, 40000),
        ep(HOST_LAN, 80),
        ep(VM, 80),
        VM_IF,
    );
    let data = tcp(web.client, web.listen, "PA", b"established data");
    let udp_q = udp(ep(CLIENT, 50000), ep(HOST_LAN, 5353), b"first query");
    let run = xdp_then_tc(
        &mut h,
        "first query",
        LAN_IF,
        &udp_q,
        TC_ACT_REDIRECT,
        Reason::FwdRedirect,
    );
    let dns = Conn {
        client: ep(CLIENT, 50000),
        listen: ep(HOST_LAN, 5353),
        seen_as: verify("first query", &run.out, false).src,
        target: ep(VM, 53),
        proto: PROTO_UDP,
    };

    // A stack-path flow to the same on-link VM (the FIB would answer, and
    // vmbr1 is a redirect target): its packets belong to the stack.
    let stack_client = ep(CLIENT, 40100);
    let stack_listen = ep(HOST_LAN, 8083);
    xdp_then_tc(
        &mut h,
        "stack-path SYN",
        LAN_IF,
        &tcp(stack_client, stack_listen, "S", &[]),
        TC_ACT_OK,
        Reason::FwdStack,
    );
    // Its reply at TC ingress is left alone (translated at egress).
    xdp_then_tc(
        &mut h,
        "stack-path SYN-ACK",
        VM_IF,
        &tcp(ep(VM, 80), stack_client, "SA", &[]),
        TCX_NEXT,
        Reason::PassNoMatch,
    );

    // An ICMP echo flow (userspace can insert one; TC translates it).
    let now = Host::now_ns();
    let echo_entry = |src: Ep, dst: Ep, flags: u8| flow_entry(src, dst, h.id("web"), now, flags);
    let (e_client, e_listen) = (ep(CLIENT, 0x1234), ep(HOST_LAN, 0x1234));
    let (e_snat, e_vm) = (ep(HOST_VM, 41100), ep(VM, 41100));
    let echo_orig = echo_entry(e_snat, e_vm, FLOW_SNAT);
    let echo_reply = echo_entry(e_listen, e_client, FLOW_SNAT | FLOW_REPLY);
    h.insert_flow(fkey(e_client, e_listen, PROTO_ICMP), echo_orig)
        .unwrap();
    h.insert_flow(fkey(e_vm, e_snat, PROTO_ICMP), echo_reply)
        .unwrap();
    let echo = {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(mac_of(CLIENT), HOST_MAC)
            .ipv4(CLIENT, HOST_LAN, TTL)
            .icmpv4_echo_request(0x1234, 1)
            .write(&mut v, b"ping")
            .unwrap();
        v
    };
    // Port unreachable from the VM about a datagram it got from us.
    let quoted = udp(dns.seen_as, dns.target, b"quoted");
    let icmp_error = icmp_error(VM, dns.seen_as.ip, 3, 3, [0; 4], &ip_of(&quoted));

    // Malformed and unusual frames built from the established data frame.
    let arp = arp(CLIENT);
    let ipv6 = tcp6("A", b"x");
    let vlan = vlan_tagged(&data);
    // IHL 6: one word of options (NOPs).
    let with_opts = with_ip_options(&data);
    let tot_len = |f: &[u8], tl: u16| patch_ip(f.to_vec(), 2, &tl.to_be_bytes());
    let doff = |d: u8| {
        let mut f = data.clone();
        f[ETH + 20 + 12] = d << 4;
        f
    };
    let eth_only_ip = data[..ETH].to_vec();
    let ip_cut = data[..ETH + 19].to_vec();
    let short_tcp = {
        // 30 bytes of IPv4 (10 of TCP) in a frame padded to 60 bytes.
        let mut f = tot_len(&data, 30);
        f.truncate(60);
        f
    };
    let short_udp = {
        let q = udp(dns.client, dns.listen, b"");
        let mut f = tot_len(&q, 27);
        f.resize(60, 0);
        f
    };

    let pass = |r: Reason| Expect::Pass(Some(r));
    let cases: Vec<(&str, &'static str, Vec<u8>, Expect)> = vec![
        // Not IPv4.
        ("ARP", LAN_IF, arp, pass(Reason::PassNotIpv4)),
        ("IPv6", LAN_IF, ipv6, pass(Reason::PassNotIpv4)),
        ("VLAN-tagged data", LAN_IF, vlan, pass(Reason::PassNotIpv4)),
        // Malformed or cut short at each layer.
        (
            "Ethernet header only, type IPv4",
            LAN_IF,
            eth_only_ip,
            pass(Reason::PassMalformed),
        ),
        (
            "IPv4 header cut at 19 bytes",
            LAN_IF,
            ip_cut,
            pass(Reason::PassMalformed),
        ),
        (
            "version 6 with EtherType IPv4",
            LAN_IF,
            patch_ip(data.clone(), 0, &[0x65]),
            pass(Reason::PassMalformed),
        ),
        (
            "IHL below 5",
            LAN_IF,
            patch_ip(data.clone(), 0, &[0x44]),
            pass(Reason::PassMalformed),
        ),
        (
            "total length beyond the frame",
            LAN_IF,
            tot_len(&data, data.len() as u16 - ETH as u16 + 1),
            pass(Reason::PassMalformed),
        ),
        (
            "total length below the IPv4 header",
            LAN_IF,
            tot_len(&data, 16),
            pass(Reason::PassMalformed),
        ),
        (
            "TCP segment of 10 bytes in a padded frame",
            LAN_IF,
            short_tcp,
            pass(Reason::PassMalformed),
        ),
        (
            "TCP data offset below 20 bytes",
            LAN_IF,
            doff(4),
            pass(Reason::PassMalformed),
        ),
        (
            "TCP data offset beyond the segment",
            LAN_IF,
            doff(15),
            pass(Reason::PassMalformed),
        ),
        (
            "UDP datagram of 7 bytes in a padded frame",
            LAN_IF,
            short_udp,
            pass(Reason::PassMalformed),
        ),
        // IPv4 options and fragments.
        // Parsed, but not what the fixed-offset XDP rewrite handles.
        ("IP options", LAN_IF, with_opts, to_tc()),
        (
            "first fragment (MF)",
            LAN_IF,
            patch_ip(data.clone(), 6, &[0x20, 0x00]),
            to_tc(),
        ),
        (
            "later fragment (offset)",
            LAN_IF,
            patch_ip(data.clone(), 6, &[0x00, 0x10]),
            to_tc(),
        ),
        // Left to TC.
        (
            "ICMP echo of a tracked echo flow",
            LAN_IF,
            echo.clone(),
            to_tc(),
        ),
        (
            "ICMP error about a tracked flow",
            VM_IF,
            icmp_error,
            to_tc(),
        ),
        (
            "TCP SYN",
            LAN_IF,
            tcp(web.client, web.listen, "S", &[]),
            to_tc(),
        ),
        (
            "TCP FIN",
            LAN_IF,
            tcp(web.client, web.listen, "FA", &[]),
            to_tc(),
        ),
        (
            "TCP RST",
            LAN_IF,
            tcp(web.client, web.listen, "R", &[]),
            to_tc(),
        ),
        (
            "TCP data without a flow",
            LAN_IF,
            tcp(ep(CLIENT, 40999), web.listen, "PA", b"who?"),
            to_tc(),
        ),
        (
            "UDP without a flow",
            LAN_IF,
            udp(ep(CLIENT, 50999), dns.listen, b"who is there?"),
            to_tc(),
        ),
        (
            "data of a stack-path flow",
            LAN_IF,
            tcp(stack_client, stack_listen, "PA", b"through the stack"),
            to_tc(),
        ),
        (
            "reply of a stack-path flow",
            VM_IF,
            tcp(ep(VM, 80), stack_client, "PA", b"back through the stack"),
            to_tc(),
        ),
        ("TTL 1", LAN_IF, with_ttl(&data, 1), to_tc()),
        ("TTL 0", LAN_IF, with_ttl(&data, 0), to_tc()),
        // Not one of our interfaces: not even counted.
        (
            "data on an unregistered interface (lo)",
            "lo",
            data.clone(),
            Expect::Pass(None),
        ),
    ];
    for (name, iface, frame, want) in &cases {
        xdp(&mut h, name, iface, frame, want);
    }

    // Positive controls: the frames the cases were built from.
    xdp(
        &mut h,
        "established data",
        LAN_IF,
        &data,
        &web.out("web", VM_IF),
    );
    let q = udp(dns.client, dns.listen, b"established query");
    xdp(
        &mut h,
        "established query",
        LAN_IF,
        &q,
        &dns.out("dns", VM_IF),
    );
    // The echo XDP left alone is TC's to translate.
    let echo_key = fkey(e_client, e_listen, PROTO_ICMP);
    assert_eq!(
        h.snapshot().unwrap().flows[&echo_key],
        echo_orig,
        "XDP left the echo flow alone"
    );
    let run = tc(
        &mut h,
        "echo",
        LAN_IF,
        &echo,
        TC_ACT_REDIRECT,
        Reason::FwdRedirect,
    );
    assert_eq!(
        run.out[ETH + 16..ETH + 20],
        e_vm.ip,
        "echo (TC): translated"
    );
    assert_eq!(
        h.snapshot().unwrap().flows[&echo_key].packets,
        1,
        "echo (TC)"
    );
}

/// What the kernel makes of the XDP context: no ingress interface means
/// loopback (not ours: passed, uncounted); an interface the calling
/// thread's namespace does not have is refused; so are frames shorter than
/// an Ethernet header.
#[test]
fn test_run_xdp_context() {
    if !require_root("test_run_xdp_context") {
        return;
    }
    let mut h = host();
    let web = open_tcp(
        &mut h,
        ep(CLIENT, 40000),
        ep(HOST_LAN, 80),
        ep(VM, 80),
        VM_IF,
    );
    let data = tcp(web.client, web.listen, "PA", b"x");
    let before = h.snapshot().unwrap();
    let run = h.run_xdp(0, &data).expect("ingress_ifindex 0");
    assert_eq!(run.verdict, XDP_PASS, "on loopback");
    assert_bytes("on loopback", &run.out, &data);
    let d = before.delta(&h.snapshot().unwrap());
    assert!(
        d.iface.is_empty() && d.rules.is_empty() && d.flows_changed.is_empty(),
        "nothing counted on loopback: {:?}",
        d.moved()
    );
    let e = h.run_xdp(99_999, &data).expect_err("no such interface");
    assert!(format!("{e:#}").contains("No such device"), "{e:#}");
    let e = h.run_xdp(h.lan, &data[..ETH - 1]).expect_err("13 bytes");
    assert!(format!("{e:#}").contains("Invalid argument"), "{e:#}");
    // The same frame with the real interface: redirected.
    xdp(&mut h, "on vmbr0", LAN_IF, &data, &web.out("web", VM_IF));
}
