//! Limits: what happens when something runs out or a packet may not go
//! further. A flow table full of established flows refuses new flows
//! (counted as table_full on the rule, dropped) and keeps forwarding the
//! flows it has; so does a SNAT port range whose ports established flows
//! hold (no_port). A first packet with TTL 1
//! creates its flow and is translated, but left to the stack, which sends
//! Time Exceeded from the translated packet's view.
use forwarder_common::{Reason, RULE_DROP_NO_PORT, RULE_DROP_TABLE_FULL};
use forwarder_tests::testrun::{
    frames::{ep, tcp, with_ttl, CLIENT, LAN_PEER, VM},
    tc::*,
    Host, EPHEMERAL_PORTS, HOST_LAN, HOST_VM, LAN_IF, TC_ACT_REDIRECT, TC_ACT_SHOT, VM_IF,
};

/// "web" and a forward without SNAT.
const FULL: &str = concat!(
    forwarder_tests::web_forward!(),
    r#"
[[forward]]
name = "plain"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.80:81"
snat = "off"
"#
);

#[test]
fn a_full_flow_table_refuses_new_flows_and_keeps_forwarding_the_ones_it_has() {
    // One flow: two entries.
    let Some(mut h) = Host::for_test(1, FULL) else {
        return;
    };
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
        .out(Out::Snat(HOST_VM, EPHEMERAL_PORTS, redirect(client, vm))),
    );
    let snat = ep(HOST_VM, o.port);
    assert_eq!(o.after.flows.len(), 2);
    // Established (the handshake completed): a flow eviction never takes.
    // An unanswered SYN's flow would make room for the new ones instead
    // (`ct_eviction`).
    step(
        &mut h,
        &ingress("the flow's SYN-ACK", VM_IF, tcp(vm, snat, "SA", &[]))
            .fwd("web", redirect(listen, client)),
    );
    step(
        &mut h,
        &ingress("the handshake's ACK", LAN_IF, tcp(client, listen, "A", &[]))
            .fwd("web", redirect(snat, vm)),
    );
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
    steps_leave_flows_alone(&mut h, &refused);
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

const TWO_PORTS: &str = concat!(
    r#"
[global]
snat_ports = "41000-41001"
"#,
    forwarder_tests::web_forward!()
);

/// Two ports, two flows, the third refused while the first two keep
/// working.
#[test]
fn when_snat_ports_run_out_new_flows_are_refused_and_existing_ones_keep_working() {
    let Some(mut h) = Host::for_test(64, TWO_PORTS) else {
        return;
    };
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
        // Established, so eviction cannot take its port (`ct_snat_ports`
        // has the unanswered case).
        let snat = ep(HOST_VM, o.port);
        step(
            &mut h,
            &ingress(format!("flow {i} SYN-ACK"), VM_IF, tcp(vm, snat, "SA", &[]))
                .fwd("web", redirect(listen, client)),
        );
        step(
            &mut h,
            &ingress(
                format!("flow {i} ACK"),
                LAN_IF,
                tcp(client, listen, "A", &[]),
            )
            .fwd("web", redirect(snat, vm)),
        );
    }
    ports.sort();
    assert_eq!(ports, [41000, 41001], "both ports used once");
    let name = "third flow, no port left";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, tcp(ep(CLIENT, 40002), listen, "S", &[]))
            .expect(TC_ACT_SHOT, Reason::DropNoPort)
            .rule("web", dropped(RULE_DROP_NO_PORT)),
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
        .rule("web", dropped(RULE_DROP_NO_PORT)),
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
        .rule("web", translated())
        .out(Out::Snat(
            HOST_VM,
            41000..=41001,
            redirect(ep(CLIENT, 40001), vm),
        )),
    );
}

const ON_LINK: &str = r#"
[[forward]]
name = "vm"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "auto"
"#;

#[test]
fn a_first_packet_with_ttl_1_is_answered_with_time_exceeded_and_creates_nothing() {
    let Some(mut h) = Host::for_test(64, ON_LINK) else {
        return;
    };
    // Answered before anything is created, from the untranslated packet
    // (test_run/replies.rs checks the answer byte for byte).
    let client = ep(CLIENT, 40001);
    let syn1 = with_ttl(&tcp(client, ep(HOST_LAN, 80), "S", &[]), 1);
    let o = step(
        &mut h,
        &ingress("TTL 1", LAN_IF, syn1)
            .expect(TC_ACT_REDIRECT, Reason::ReplyTimeExceeded)
            .out(Out::Answer),
    );
    assert_flows("TTL 1", &o.delta, &[], &[], &[]);
}
