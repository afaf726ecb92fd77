//! The IPv6 stack path (issue 13), with the IPv4 path's semantics
//! (test_run/stack_path.rs): a target without a forwarding route (a
//! Kubernetes IPv6 ClusterIP, DNATed again by kube-proxy in PREROUTING)
//! or behind a gateway goes through the stack with the client's address
//! kept and FlowFlags::VIA_STACK on both entries; the stack routes it
//! (and decrements the hop limit), and its replies are translated back at
//! egress of the listening interface (`fwd_egress6`, tail-called by
//! fwd_egress), never at ingress. SNAT to the host's own address cannot
//! go through the stack (a martian there), so SNATed flows are redirected
//! or, without a route, refused. `path = "stack" | "redirect"` overrides
//! the choice.
//!
//! ```text
//!  client 2001:db8:1::10 ── vmbr0 2001:db8:1::55 [host] vmbr1 fd00:100::1 ─┬─ vm fd00:100::80
//!                                                                          └─ router fd00:100::fe
//!                                                                               └─ fd00:50::/64
//!  no route to fd00:43::/64 (ClusterIPs)
//! ```
//!
//! Outputs are read by etherparse with the TCP/UDP checksum recomputed
//! over the IPv6 pseudo-header (`ipv6::read6`).
use forwarder_common::{
    conntrack::CtState, FlowFlags, Reason, PROTO_TCP, PROTO_UDP, RULE_DROP_ERROR,
};
use forwarder_tests::testrun::{
    ipv6::{
        ep6, ip6, ipv6_host, key6, read6, udp6, words, Ep6, Ip6, CLIENT6, HOST_LAN6,
        HOST_LAN6_CIDR, HOST_VM6, HOST_VM6_CIDR, VM6,
    },
    tc::*,
    Host, LAN_IF, TCX_NEXT, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, VM_IF,
};

use super::nat66::tcp6;

const RULES: &str = r#"
[[forward]]
name = "svc6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 8443
to = "[fd00:43::10]:443"

[[forward]]
name = "dns6"
in = "vmbr0"
listen = "2001:db8:1::55"
proto = "udp"
port = 5353
to = "[fd00:43::a]:53"

[[forward]]
name = "svc6-fixed"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 8444
to = "[fd00:43::11]:443"
snat = "fd00:100::1"

[[forward]]
name = "svc6-masq"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 8446
to = "[fd00:43::13]:443"
snat = "masquerade"

[[forward]]
name = "gw6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 8080
to = "[fd00:50::5]:80"

[[forward]]
name = "gw6-fixed"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 8081
to = "[fd00:50::6]:80"
snat = "fd00:100::1"

[[forward]]
name = "gw6-redirect"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 8082
to = "[fd00:50::7]:80"
path = "redirect"

[[forward]]
name = "vm6-stack"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 81
to = "[fd00:100::80]:81"
path = "stack"
"#;

const CLUSTER6: [u8; 8] = [0xfd, 0, 0, 0x43, 0, 0, 0, 0];
const BEHIND_GW6: [u8; 8] = [0xfd, 0, 0, 0x50, 0, 0, 0, 0];
const CLUSTER_IP6: Ip6 = ip6(CLUSTER6, 0x10);
const DNS_IP6: Ip6 = ip6(CLUSTER6, 0x0a);
/// `mss_clamp = "auto"` for IPv6 on the fixture's 1500-byte vmbr0: 1500 - 60.
const MSS6: Option<u16> = Some(1440);

/// The fixture with IPv6 on both bridges, fd00:50::/64 behind a router on
/// vmbr1, no route to the ClusterIPs, and `RULES`.
fn host() -> Option<Host> {
    let mut h = ipv6_host(
        "nat66_stack_path",
        &[(LAN_IF, HOST_LAN6_CIDR), (VM_IF, HOST_VM6_CIDR)],
    )?;
    h.ns.ip(&["-6", "route", "add", "fd00:50::/64", "via", "fd00:100::fe"])
        .expect("route behind the gateway");
    h.rules(RULES).expect("rules");
    Some(h)
}

/// Runs an ingress or egress step whose output the caller reads, and
/// checks what etherparse reads: the tuple, the hop limit, the MSS option.
fn through(h: &mut Host, s: Step, from: Ep6, to: Ep6, hop: u8, mss: Option<u16>) -> Outcome {
    let s = s.out(Out::Checked);
    let o = step(h, &s);
    let got = read6(&s.description, &o.run.out);
    assert_eq!((got.src, got.dst), (from, to), "{}: tuple", s.description);
    assert_eq!(got.hop, hop, "{}: hop limit", s.description);
    assert_eq!(got.mss, mss, "{}: MSS option", s.description);
    o
}

#[test]
fn an_ipv6_target_without_a_route_goes_through_the_stack_and_its_replies_are_translated_at_egress()
{
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 40000);
    let svc = ep6(HOST_LAN6, 8443);
    let cip = ep6(CLUSTER_IP6, 443);

    // The client's SYN: translated to the ClusterIP with the client's
    // address kept, handed to the stack (kube-proxy DNATs it in
    // PREROUTING), hop limit left to the stack.
    let name = "SYN to an IPv6 ClusterIP";
    let o = through(
        &mut h,
        ingress(name, LAN_IF, tcp6(client, svc, "S", 64, b""))
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("svc6", created(false, true).mss()),
        client,
        cip,
        64,
        MSS6,
    );
    let orig = key6(client, svc, PROTO_TCP);
    let reply = key6(cip, client, PROTO_TCP);
    assert_flows(name, &o.delta, &[orig, reply], &[], &[]);
    for (k, flags) in [
        (orig, FlowFlags::VIA_STACK),
        (reply, FlowFlags::VIA_STACK | FlowFlags::REPLY),
    ] {
        let e = entry(name, &o.after, &k);
        assert_eq!(e.flags, flags, "{name}: flags");
        assert_eq!(e.ct.iface, h.ifindex(LAN_IF), "{name}: interface");
    }
    let e = entry(name, &o.after, &orig);
    assert_eq!((e.new_src, e.new_dst), (words(CLIENT6), words(CLUSTER_IP6)));

    // The service's SYN-ACK, once netfilter undid kube-proxy's DNAT,
    // leaves by the listening interface: left alone until the daemon turns
    // egress translation on there (it does for forwards that may take the
    // stack path), then translated back to come from the listener.
    let synack = tcp6(cip, client, "SA", 64, b"");
    step(
        &mut h,
        &egress("SYN-ACK at egress, no egress NAT", LAN_IF, synack.clone()).uncounted(),
    );
    h.egress_nat(LAN_IF, true).unwrap();
    let name = "SYN-ACK at egress";
    let o = through(
        &mut h,
        egress(name, LAN_IF, synack.clone())
            .expect(TC_ACT_OK, Reason::FwdEgress)
            .rule("svc6", translated().mss()),
        svc,
        client,
        64,
        MSS6,
    );
    // The state machine moved both entries: SYN_SENT -> SYN_RECV.
    assert_flows(name, &o.delta, &[], &[], &[orig, reply]);
    for k in [orig, reply] {
        let state = CtState::from_raw(entry(name, &o.after, &k).ct.state);
        assert_eq!(state, CtState::SynRecv, "{name}: state");
    }
    let r = entry(name, &o.after, &reply);
    assert_eq!((r.packets, r.bytes), (1, synack.len() as u64), "{name}");

    // Not ours: the same reply at ingress (the stack must see it), the
    // client's packets at egress, a packet of no flow at egress.
    steps_leave_flows_alone(
        &mut h,
        &[
            ingress("SYN-ACK at vmbr1 ingress", VM_IF, synack.clone()),
            ingress("SYN-ACK at vmbr0 ingress", LAN_IF, synack.clone()),
            egress(
                "client's ACK at egress",
                LAN_IF,
                tcp6(client, svc, "A", 64, b""),
            ),
            egress(
                "another ClusterIP's packet at egress",
                LAN_IF,
                tcp6(ep6(ip6(CLUSTER6, 0x99), 443), client, "SA", 64, b""),
            ),
        ],
    );

    // The client's next packets keep going through the stack.
    through(
        &mut h,
        ingress("client's ACK", LAN_IF, tcp6(client, svc, "A", 64, b"data"))
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("svc6", translated()),
        client,
        cip,
        64,
        None,
    );
}

#[test]
fn an_ipv6_udp_flow_through_the_stack_is_translated_both_ways() {
    let Some(mut h) = host() else { return };
    h.egress_nat(LAN_IF, true).unwrap();
    let client = ep6(CLIENT6, 50000);
    let listen = ep6(HOST_LAN6, 5353);
    let dns = ep6(DNS_IP6, 53);
    let name = "DNS query to an IPv6 ClusterIP";
    let o = through(
        &mut h,
        ingress(name, LAN_IF, udp6(client, listen, b"\x12\x34 query"))
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("dns6", created(false, true)),
        client,
        dns,
        64,
        None,
    );
    let orig = key6(client, listen, PROTO_UDP);
    let reply = key6(dns, client, PROTO_UDP);
    assert_flows(name, &o.delta, &[orig, reply], &[], &[]);

    let name = "DNS answer at egress";
    let o = through(
        &mut h,
        egress(name, LAN_IF, udp6(dns, client, b"\x12\x34 answer, longer"))
            .expect(TC_ACT_OK, Reason::FwdEgress)
            .rule("dns6", translated()),
        listen,
        client,
        64,
        None,
    );
    assert_flows(name, &o.delta, &[], &[], &[orig, reply]);
    let state = CtState::from_raw(entry(name, &o.after, &reply).ct.state);
    assert_eq!(state, CtState::UdpReplied, "{name}: state");

    // The answer leaving by another interface (a reply routed elsewhere,
    // or forged there) is not translated: its flow is bound to vmbr0.
    h.egress_nat(VM_IF, true).unwrap();
    let s = egress(
        "DNS answer at vmbr1 egress",
        VM_IF,
        udp6(dns, client, b"\x12\x34 answer"),
    )
    .expect(TCX_NEXT, Reason::PassWrongIface);
    steps_leave_flows_alone(&mut h, &[s]);
}

#[test]
fn snat_toward_an_ipv6_target_without_a_route_is_refused_and_hop_limit_1_is_answered() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 40000);
    // Nothing could deliver these: the stack drops its own source as a
    // martian, and there is no route to redirect by (nor an address to
    // masquerade as).
    let refused = |what: &str, port: u16, rule: &'static str| {
        ingress(
            what,
            LAN_IF,
            tcp6(client, ep6(HOST_LAN6, port), "S", 64, b""),
        )
        .expect(TC_ACT_SHOT, Reason::DropError)
        .rule(rule, dropped(RULE_DROP_ERROR))
    };
    steps_leave_flows_alone(
        &mut h,
        &[
            refused("fixed SNAT to a ClusterIP", 8444, "svc6-fixed"),
            refused("masquerade to a ClusterIP", 8446, "svc6-masq"),
        ],
    );
    // Hop limit 1 on the way to the stack: answered as the router, no flow
    // (the stack would only decrement and drop it).
    let s = ingress(
        "SYN with hop limit 1 to a ClusterIP",
        LAN_IF,
        tcp6(client, ep6(HOST_LAN6, 8443), "S", 1, b""),
    )
    .expect(TC_ACT_REDIRECT, Reason::ReplyTimeExceeded)
    .out(Out::Answer);
    steps_leave_flows_alone(&mut h, &[s]);
}

#[test]
fn an_ipv6_target_behind_a_gateway_goes_through_the_stack_unless_snat_or_path_redirect() {
    let Some(mut h) = host() else { return };
    let client = ep6(CLIENT6, 40000);
    let syn = |port: u16| tcp6(client, ep6(HOST_LAN6, port), "S", 64, b"");
    let flags = |h: &mut Host, name: &str, port: u16| {
        let snap = h.snapshot().expect("snapshot");
        let k = key6(client, ep6(HOST_LAN6, port), PROTO_TCP);
        entry(name, &snap, &k).flags
    };

    // Client kept, target behind a gateway: through the stack.
    let gw = ep6(ip6(BEHIND_GW6, 5), 80);
    through(
        &mut h,
        ingress("target behind a gateway", LAN_IF, syn(8080))
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("gw6", created(false, true).mss()),
        client,
        gw,
        64,
        MSS6,
    );
    assert_eq!(
        flags(&mut h, "gateway", 8080),
        FlowFlags::VIA_STACK,
        "target behind a gateway"
    );
    // SNATed: redirected to the gateway (the stack would drop our source).
    let name = "SNATed target behind a gateway";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, syn(8081))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("gw6-fixed", created(true, false).mss())
            .out(Out::Checked),
    );
    let got = read6(name, &o.run.out);
    assert_eq!(got.src.ip, HOST_VM6, "{name}: source");
    assert_eq!(got.dst, ep6(ip6(BEHIND_GW6, 6), 80), "{name}: destination");
    assert_eq!(got.hop, 63, "{name}: hop limit decremented");
    // path = "redirect": through the gateway with the client kept.
    through(
        &mut h,
        ingress("path = redirect, behind a gateway", LAN_IF, syn(8082))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("gw6-redirect", created(false, false).mss()),
        client,
        ep6(ip6(BEHIND_GW6, 7), 80),
        63,
        MSS6,
    );
    assert_eq!(
        flags(&mut h, "redirect", 8082),
        FlowFlags::empty(),
        "path = redirect"
    );
    // path = "stack": even the on-link VM goes through the stack.
    through(
        &mut h,
        ingress("path = stack, on-link target", LAN_IF, syn(81))
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("vm6-stack", created(false, true).mss()),
        client,
        ep6(VM6, 81),
        64,
        MSS6,
    );
    assert_eq!(
        flags(&mut h, "stack", 81),
        FlowFlags::VIA_STACK,
        "path = stack"
    );
}
