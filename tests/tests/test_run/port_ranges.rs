//! Port ranges: a listened range maps 1:1 onto a target range, or many
//! ports onto one (fan-in). The daemon expands a range into one listener
//! entry per port, so each port is its own exact match; the reply entry
//! names the port the client actually used.
use forwarder_common::{Reason, PROTO_TCP, RULE_DROP_NO_PORT};
use forwarder_tests::testrun::{
    frames::{ep, fkey, tcp, CLIENT, VM},
    tc::*,
    Host, HOST_LAN, LAN_IF, TC_ACT_REDIRECT, TC_ACT_SHOT, VM_IF,
};

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

/// A listened port and the target port it must map to.
struct Mapping {
    rule: &'static str,
    listened: u16,
    target: u16,
}

#[test]
fn a_range_maps_one_to_one_and_a_fan_in_maps_many_ports_onto_one() {
    let Some(mut h) = Host::for_test(64, RANGES) else {
        return;
    };
    assert_eq!(h.listener_count().unwrap(), 6, "listener entries");
    let mapping = |rule, listened, target| Mapping {
        rule,
        listened,
        target,
    };
    let table = [
        mapping("range", 8000, 9000),
        mapping("range", 8001, 9001),
        mapping("range", 8002, 9002),
        mapping("fan-in", 7000, 9100),
        mapping("fan-in", 7001, 9100),
        mapping("fan-in", 7002, 9100),
    ];
    for (i, m) in table.into_iter().enumerate() {
        let (rule, port, target) = (m.rule, m.listened, m.target);
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
    let mut refused = vec![ingress(
        "fan-in: same client port to a second listened port",
        LAN_IF,
        tcp(client, ep(HOST_LAN, 7001), "S", &[]),
    )
    .expect(TC_ACT_SHOT, Reason::DropNoPort)
    .rule("fan-in", dropped(RULE_DROP_NO_PORT))];
    for port in [7999, 8003, 7003] {
        refused.push(ingress(
            format!("SYN to {port}, outside the ranges"),
            LAN_IF,
            tcp(ep(CLIENT, 40100), ep(HOST_LAN, port), "S", &[]),
        ));
    }
    steps_leave_flows_alone(&mut h, &refused);
}
