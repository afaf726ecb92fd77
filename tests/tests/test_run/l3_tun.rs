//! An L3 ingress interface (tun, like tailscale0: no Ethernet header).
//! Its packets are parsed at offset 0; redirected to an Ethernet device
//! they get a MAC header pushed in front (bpf_redirect_neigh fills it);
//! replies toward it are redirected as they are (the redirect strips the
//! Ethernet header). Its narrow MTU leaves replies too big for it to the
//! stack, unless they are GSO (segmented to size on the way out). A
//! ClusterIP target goes through the stack, still L3, and its replies are
//! translated at the tun's egress, also at offset 0.
//!
//! See `frames::l3` for how an L3 frame gets through test_run (tailnet
//! peers in 8.0.0.0/16).
//!
//! ```text
//!  peer 8.0.0.7 ── tailscale0 100.100.1.1 (tun, MTU 1280) [host] vmbr1 ── vm 192.168.100.80
//!   (route 8.0.0.0/24 dev tailscale0)   no route to 8.0.43.10 (a ClusterIP)
//! ```
use forwarder_common::{FlowFlags, Reason, PROTO_TCP};
use forwarder_tests::testrun::{
    frames::{ep, fkey, l3, show, tcp, Ep, Ip, VM},
    tc::*,
    Host, HOST_TS, TC_ACT_OK, TC_ACT_REDIRECT, TS_IF, VM_IF,
};

/// A tailnet peer behind tailscale0 (see `frames::l3` for why 8.0.0.0/16).
const TS_CLIENT: Ip = [8, 0, 0, 7];
/// A ClusterIP the tailnet forwards to. No route (only 8.0.0.0/24 is
/// routed, to tailscale0); in 8.0.0.0/16 so that its replies, which leave
/// by tailscale0, can be expressed as L3 frames too.
const TS_CLUSTER_IP: Ip = [8, 0, 43, 10];

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

/// The peer's connection to the VM: its SYN on tailscale0, the VM's
/// SYN-ACK.
fn open_ts_web(h: &mut Host) -> (Ep, Ep, Ep) {
    let client = ep(TS_CLIENT, 40000);
    let listen = ep(HOST_TS, 443);
    let vm = ep(VM, 443);
    let syn = l3(&tcp(client, listen, "S", &[]));
    let name = "SYN on tailscale0";
    let o = step(
        h,
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
        FlowFlags::AUTO,
        "{name}: the route back to the tailnet peer leaves by tailscale0: client kept"
    );
    assert_eq!(entry(name, &o.after, &orig).bytes, syn.len() as u64);
    // Toward the L3 device: a plain redirect; the Ethernet header stays in
    // the skb until the redirect strips it (not visible in test_run).
    step(
        h,
        &ingress(
            "SYN-ACK toward tailscale0",
            VM_IF,
            tcp(vm, client, "SA", &[]),
        )
        .fwd("ts-web", redirect(listen, client)),
    );
    (client, listen, vm)
}

#[test]
fn a_tun_peer_is_forwarded_to_an_ethernet_backend_with_a_mac_header_pushed() {
    let Some(mut h) = Host::for_test(64, TAILNET) else {
        return;
    };
    let (client, listen, vm) = open_ts_web(&mut h);
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

#[test]
fn a_reply_above_the_tun_mtu_is_answered_with_frag_needed_unless_it_is_gso() {
    let Some(mut h) = Host::for_test(64, TAILNET) else {
        return;
    };
    let (client, listen, vm) = open_ts_web(&mut h);
    // Bigger than tailscale0's MTU (1280) with DF: answered with
    // fragmentation needed (test_run/replies.rs checks it byte for byte),
    // never handed translated to the stack, which drops it as a martian.
    let big = tcp(vm, client, "PA", &[b'x'; 1300]);
    step(
        &mut h,
        &ingress("reply above tailscale0's MTU", VM_IF, big)
            .expect(TC_ACT_REDIRECT, Reason::ReplyFragNeeded)
            .rule("ts-web", translated())
            .out(Out::Answer),
    );
    // The same as a GSO skb (GRO on the VM side, or a TSO sender): it is
    // segmented to gso_size on the way out, so its length says nothing
    // about the MTU and it is redirected.
    let big = tcp(vm, client, "PA", &[b'x'; 2 * 1200]);
    step(
        &mut h,
        &ingress("GSO reply above tailscale0's MTU", VM_IF, big)
            .gso(1200, 2)
            .fwd("ts-web", redirect(listen, client)),
    );
    // Exactly the MTU still fits.
    let fits = tcp(vm, client, "PA", &[b'x'; 1280 - 40]);
    step(
        &mut h,
        &ingress("reply of exactly the MTU", VM_IF, fits).fwd("ts-web", redirect(listen, client)),
    );
}

#[test]
fn a_tun_peer_reaches_a_clusterip_through_the_stack_and_replies_are_translated_at_its_egress() {
    let Some(mut h) = Host::for_test(64, TAILNET) else {
        return;
    };
    // Tailnet to a ClusterIP (the socat replacement): through the stack,
    // still L3 (no MAC header pushed), and the replies translated at
    // tailscale0's egress, also at offset 0.
    let client = ep(TS_CLIENT, 40000);
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
        assert!(
            entry(name, &o.after, &k)
                .flags
                .contains(FlowFlags::VIA_STACK),
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
        .rule("ts-svc", translated())
        .xlate(via_stack(svc, client)),
    );
}
