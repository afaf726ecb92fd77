//! The per-flow path. A target the FIB reaches on-link is redirected
//! (bpf_redirect_neigh, TTL decremented by the program). A target without
//! a route (a kube-proxy ClusterIP, DNATed again by netfilter in
//! PREROUTING) or behind a gateway goes through the stack with the client
//! kept and FlowFlags::VIA_STACK on both entries; the stack routes it (and
//! decrements the TTL), and its replies are translated at egress of the
//! listening interface, never at ingress. SNAT to the host's own address
//! cannot go through the stack (it would drop the packet as a martian), so
//! SNATed flows are redirected or, without a route, refused. `path =
//! "stack" | "redirect"` overrides the choice.
//!
//! ```text
//!  client 192.168.1.10 ── vmbr0 192.168.1.55 [host] vmbr1 ─┬─ vm 192.168.100.80
//!                                                           └─ router 192.168.100.254
//!                                                                └─ 10.50.0.0/16
//!  no route to 10.43.0.0/16 (ClusterIPs)
//! ```
use forwarder_common::{FlowFlags, Reason, Seen, PROTO_TCP, RULE_DROP_ERROR};
use forwarder_tests::testrun::{
    frames::{ep, fix_checksums, fkey, icmp_error, ip_of, show, tcp, Ip, CLIENT, ETH, VM},
    tc::*,
    Host, AUTO_MSS, EPHEMERAL_PORTS, HOST_LAN, HOST_VM, LAN_IF, TC_ACT_OK, TC_ACT_REDIRECT,
    TC_ACT_SHOT, VM_IF,
};

/// A kube-proxy ClusterIP: the host has no route to 10.43.0.0/16.
const CLUSTER_IP: Ip = [10, 43, 0, 10];

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

/// The fixture with `PATHS` and 10.50.0.0/16 behind the VM-side router.
fn host() -> Option<Host> {
    let h = Host::for_test(64, PATHS)?;
    h.ns.ip(&["route", "add", "10.50.0.0/16", "via", "192.168.100.254"])
        .unwrap();
    Some(h)
}

#[test]
fn a_target_without_a_route_goes_through_the_stack_and_its_replies_are_translated_at_egress() {
    let Some(mut h) = host() else { return };
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
        FlowFlags::AUTO | FlowFlags::REPLY
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
    let ow = ExpectedEntry {
        new_src: client,
        new_dst: cip,
        rule: h.id("svc"),
        flags: FlowFlags::AUTO | FlowFlags::VIA_STACK,
        tcp_seen: Seen::SYN,
        packets: 1,
        bytes: syn.len() as u64,
        mss: AUTO_MSS,
    };
    assert_entry(name, &o.after, &orig, ow);
    let rw = ExpectedEntry {
        new_src: svc,
        new_dst: client,
        flags: FlowFlags::AUTO | FlowFlags::VIA_STACK | FlowFlags::REPLY,
        tcp_seen: Seen::empty(),
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
        &egress(
            "ClusterIP reply at egress, no egress NAT",
            LAN_IF,
            synack.clone(),
        )
        .uncounted(),
    );
    h.egress_nat(LAN_IF, true).unwrap();
    let name = "ClusterIP reply at egress";
    let o = step(
        &mut h,
        &egress(name, LAN_IF, synack.clone())
            .expect(TC_ACT_OK, Reason::FwdEgress)
            .rule("svc", translated())
            .xlate(via_stack(svc, client)),
    );
    // SYN_SENT -> SYN_RECV, written to both entries.
    assert_flows(name, &o.delta, &[], &[], &[orig, reply]);
    assert_entry(
        name,
        &o.after,
        &reply,
        ExpectedEntry {
            tcp_seen: Seen::SYN | Seen::ACK,
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

    let not_ours = [
        // At ingress the same reply is not ours (the stack must see it).
        ingress("ClusterIP reply at vmbr1 ingress", VM_IF, synack.clone()),
        ingress("ClusterIP reply at vmbr0 ingress", LAN_IF, synack.clone()),
        // Original-direction packets are never translated at egress, of
        // this flow nor of a redirected one; nor are redirected flows'
        // replies.
        egress(
            "client packet at egress",
            LAN_IF,
            tcp(client, svc, "A", &[]),
        ),
        egress(
            "redirected flow's reply at egress",
            LAN_IF,
            tcp(ep(VM, 80), client, "SA", &[]),
        ),
        egress(
            "redirected flow's client packet at egress",
            LAN_IF,
            tcp(client, web, "A", &[]),
        ),
    ];
    steps_leave_flows_alone(&mut h, &not_ours);
    // The client's next packets keep going through the stack.
    step(
        &mut h,
        &ingress(
            "ClusterIP flow, client ACK",
            LAN_IF,
            tcp(client, svc, "A", &[]),
        )
        .expect(TC_ACT_OK, Reason::FwdStack)
        .rule("svc", translated())
        .xlate(via_stack(client, cip)),
    );
}

#[test]
fn snat_to_the_hosts_address_toward_a_target_without_a_route_is_refused() {
    let Some(mut h) = host() else { return };
    // Nothing could deliver it: the stack drops its own source as a
    // martian, and there is no route to redirect by.
    let refused = [ingress(
        "fixed SNAT to a ClusterIP",
        LAN_IF,
        tcp(ep(CLIENT, 40000), ep(HOST_LAN, 8444), "S", &[]),
    )
    .expect(TC_ACT_SHOT, Reason::DropError)
    .rule("svc-fixed", dropped(RULE_DROP_ERROR))];
    steps_leave_flows_alone(&mut h, &refused);
}

#[test]
fn a_target_behind_a_gateway_goes_through_the_stack_unless_snat_needs_a_redirect() {
    let Some(mut h) = host() else { return };
    let client = ep(CLIENT, 40000);
    // Without SNAT through the stack, with SNAT redirected (the stack would
    // drop our own source as a martian).
    let gw = ep(HOST_LAN, 8080);
    let name = "target behind a gateway";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, tcp(client, gw, "S", &[]))
            .expect(TC_ACT_OK, Reason::FwdStack)
            .rule("gw", created(false, true))
            .xlate(via_stack(client, ep([10, 50, 0, 5], 80))),
    );
    let k = fkey(client, gw, PROTO_TCP);
    assert_eq!(
        entry(name, &o.after, &k).flags,
        FlowFlags::AUTO | FlowFlags::VIA_STACK
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
            EPHEMERAL_PORTS,
            redirect(client, ep([10, 50, 0, 6], 80)),
        )),
    );
}

#[test]
fn path_stack_and_path_redirect_override_the_fibs_choice() {
    let Some(mut h) = host() else { return };
    let client = ep(CLIENT, 40000);
    // "stack": even an on-link VM goes through the stack (with the client
    // kept; no per-flow SNAT decision to record).
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
            entry(name, &o.after, &k).flags & !FlowFlags::REPLY,
            FlowFlags::VIA_STACK,
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
        FlowFlags::AUTO,
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
}
