//! Targets whose neighbour does not answer (issue 12 item 5,
//! forwarder-ebpf path.rs/tc.rs, daemon plan_neigh.rs). The daemon writes
//! `FWD_NEIGH` from the kernel's neighbour table; here the map is written
//! by hand, as the daemon would, and each row shows what the programs then
//! do: a flow that keeps the client's address goes through the stack
//! (counted `fwd_stack_neigh_dead`), an unanswered redirected flow is
//! forgotten and created anew that way, and what cannot use the stack (a
//! SNATed flow, an answered redirected flow) is answered ICMP host
//! unreachable (3/1) quoting the packet as its sender sent it. When the
//! neighbour answers again (the entry removed) flows are redirected again.
//!
//! ```text
//! client 192.168.1.10 ─ vmbr0 192.168.1.55 [host] vmbr1 192.168.100.1 ─ vm 192.168.100.80 (dead)
//! ```
use etherparse::{Icmpv4Type, Ipv4HeaderSlice, SlicedPacket};
use forwarder_common::{FlowFlags, NeighFlags, Reason, PROTO_TCP, PROTO_UDP};
use forwarder_tests::testrun::{
    frames::{ep, fkey, tcp, udp, CLIENT, ETH, VM},
    tc::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, TC_ACT_OK, TC_ACT_REDIRECT, VM_IF,
};

const RULES: &str = r#"
[global]
snat_ports = "41000-41015"

[[forward]]
name = "keep"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "off"
mss_clamp = "off"

[[forward]]
name = "dns"
in = "vmbr0"
listen = "192.168.1.55"
proto = "udp"
port = 53
to = "192.168.100.80:53"
snat = "off"

[[forward]]
name = "snat"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.80:81"
snat = "192.168.100.1"
mss_clamp = "off"
"#;

fn dead(h: &mut Host, flags: Option<NeighFlags>) {
    h.dp.maps
        .set_neighbour(VM.into(), flags)
        .expect("writing FWD_NEIGH");
}

/// The answer `out` must be: ICMP 3/1 from the forward's address to the
/// client, quoting the untranslated `input` (IPv4 header + 8 bytes).
fn assert_host_unreach(case: &str, input: &[u8], out: &[u8]) {
    let p = SlicedPacket::from_ethernet(out).unwrap_or_else(|e| panic!("{case}: {e}"));
    let ip = Ipv4HeaderSlice::from_slice(&out[ETH..]).unwrap();
    assert_eq!(
        (ip.source(), ip.destination()),
        (HOST_LAN, CLIENT),
        "{case}: addresses"
    );
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = p.transport else {
        panic!("{case}: not ICMP");
    };
    assert!(
        matches!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host)
        ),
        "{case}: {:?}",
        icmp.icmp_type()
    );
    let ihl = ((input[ETH] & 0xf) * 4) as usize;
    assert_eq!(
        icmp.payload(),
        &input[ETH..ETH + ihl + 8],
        "{case}: the quote is the packet as the client sent it"
    );
}

#[test]
fn a_dead_neighbour_sends_flows_keeping_the_client_through_the_stack_and_answers_the_others() {
    let Some(mut h) = Host::for_test(64, RULES) else {
        return;
    };
    let client = ep(CLIENT, 40000);
    let keep = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);

    // Before the daemon knows: redirected (and lost behind ARP, in life).
    let syn = tcp(client, keep, "S", &[]);
    step(
        &mut h,
        &ingress("first SYN, neighbour not known dead", LAN_IF, syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("keep", created(false, false))
            .xlate(redirect(client, vm)),
    );
    // An answered flow of the same target (another client port).
    let answered_client = ep(CLIENT, 40001);
    step(
        &mut h,
        &ingress(
            "SYN of a flow that gets an answer",
            LAN_IF,
            tcp(answered_client, keep, "S", &[]),
        )
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("keep", created(false, false))
        .xlate(redirect(answered_client, vm)),
    );
    step(
        &mut h,
        &ingress("its SYN-ACK", VM_IF, tcp(vm, answered_client, "SA", &[]))
            .fwd("keep", redirect(keep, answered_client)),
    );
    // A datagram flow, unanswered.
    let dns_client = ep(CLIENT, 40002);
    let dns = ep(HOST_LAN, 53);
    step(
        &mut h,
        &ingress("first datagram", LAN_IF, udp(dns_client, dns, b"q1"))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("dns", created(false, false))
            .xlate(redirect(dns_client, ep(VM, 53))),
    );

    // ARP gave up: the daemon marks it.
    dead(&mut h, Some(NeighFlags::STACK | NeighFlags::UNREACHABLE));

    // The SYN retransmission: the unanswered flow is forgotten and made
    // anew through the stack (the client's address kept, TTL left to it).
    let name = "retransmitted SYN after the neighbour failed";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, syn.clone())
            .expect(TC_ACT_OK, Reason::FwdStackNeighDead)
            .rule("keep", created(false, true))
            .xlate(via_stack(client, vm)),
    );
    let orig = fkey(client, keep, PROTO_TCP);
    let reply = fkey(vm, client, PROTO_TCP);
    assert_flows(name, &o.delta, &[], &[], &[orig, reply]);
    assert_eq!(
        entry(name, &o.after, &orig).flags,
        FlowFlags::VIA_STACK | FlowFlags::NEIGH_DEAD
    );
    assert_eq!(
        entry(name, &o.after, &reply).flags,
        FlowFlags::VIA_STACK | FlowFlags::NEIGH_DEAD | FlowFlags::REPLY
    );
    // The same for the datagram flow.
    let dg = udp(dns_client, dns, b"q2");
    step(
        &mut h,
        &ingress("next datagram after the neighbour failed", LAN_IF, dg)
            .expect(TC_ACT_OK, Reason::FwdStackNeighDead)
            .rule("dns", created(false, true))
            .xlate(via_stack(dns_client, ep(VM, 53))),
    );
    let udp_orig = fkey(dns_client, dns, PROTO_UDP);
    let s = h.snapshot().unwrap();
    assert!(entry("datagram flow", &s, &udp_orig)
        .flags
        .contains(FlowFlags::VIA_STACK | FlowFlags::NEIGH_DEAD));

    // The answered flow keeps its path: its next segment cannot go through
    // the stack (the stack never saw its handshake), so it is answered.
    let ack = tcp(answered_client, keep, "A", &[]);
    let name = "segment of an answered flow";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, ack.clone())
            .expect(TC_ACT_REDIRECT, Reason::ReplyHostUnreach)
            .rule("keep", translated())
            .out(Out::Answer),
    );
    assert_host_unreach(name, &ack, &o.run.out);

    // A SNATed flow cannot use the stack (its source would be ours): a new
    // one is answered, and nothing is left behind.
    let snat_syn = tcp(ep(CLIENT, 40003), ep(HOST_LAN, 81), "S", &[]);
    let name = "SYN of a SNATed forward to the dead neighbour";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, snat_syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::ReplyHostUnreach)
            .out(Out::Answer),
    );
    assert_host_unreach(name, &snat_syn, &o.run.out);
    assert_flows(name, &o.delta, &[], &[], &[]);

    // Gone from the neighbour table after failing: flows that keep the
    // client stay on the stack path, a SNATed one is redirected again
    // (which makes the kernel probe the neighbour once more).
    dead(&mut h, Some(NeighFlags::STACK));
    step(
        &mut h,
        &ingress(
            "new SYN, neighbour entry gone",
            LAN_IF,
            tcp(ep(CLIENT, 40004), keep, "S", &[]),
        )
        .expect(TC_ACT_OK, Reason::FwdStackNeighDead)
        .rule("keep", created(false, true))
        .xlate(via_stack(ep(CLIENT, 40004), vm)),
    );
    step(
        &mut h,
        &ingress(
            "SNATed SYN, neighbour entry gone: redirected to probe it",
            LAN_IF,
            snat_syn.clone(),
        )
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("snat", created(true, false))
        .out(Out::Snat(
            HOST_VM,
            SNAT_PORTS,
            redirect(ep(CLIENT, 40003), ep(VM, 81)),
        )),
    );

    // It answers again: new flows are redirected.
    dead(&mut h, None);
    step(
        &mut h,
        &ingress(
            "new SYN, neighbour back",
            LAN_IF,
            tcp(ep(CLIENT, 40005), keep, "S", &[]),
        )
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("keep", created(false, false))
        .xlate(redirect(ep(CLIENT, 40005), vm)),
    );
}
