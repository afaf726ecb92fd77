//! ICMP echo: tracked by identifier (it stands in for the port on both
//! sides of the tuple) and translated both ways. No listener creates echo
//! flows (rules are TCP/UDP), so a ping to a listen address is the host's
//! own business; an echo flow in the table (as userspace could insert it)
//! is translated like any other flow.
use forwarder_common::{FlowFlags, Seen, PROTO_ICMP};
use forwarder_tests::testrun::{
    frames::{echo, ep, fkey, flow_entry, Ep, CLIENT, VM},
    tc::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, VM_IF, WEB_AND_DNS,
};

#[test]
fn an_echo_flow_in_the_table_is_translated_by_identifier_and_no_listener_creates_one() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let id = h.id("web");
    let ping = echo(CLIENT, HOST_LAN, 0x1234, true);
    let name = "echo request without a flow";
    let o = step(&mut h, &ingress(name, LAN_IF, ping.clone()));
    assert_flows(name, &o.delta, &[], &[], &[]);

    // client id 0x1234 <-> SNAT identifier 41007 toward the VM.
    let client = ep(CLIENT, 0x1234);
    let listen = ep(HOST_LAN, 0x1234);
    let snat = ep(HOST_VM, 41007);
    let vm = ep(VM, 41007);
    let orig = fkey(client, listen, PROTO_ICMP);
    let reply = fkey(vm, snat, PROTO_ICMP);
    let now = Host::now_ns();
    let mk = |src: Ep, dst: Ep, flags: FlowFlags| flow_entry(src, dst, id, now, flags);
    h.insert_flow(
        reply,
        mk(listen, client, FlowFlags::SNAT | FlowFlags::REPLY),
    )
    .unwrap();
    h.insert_flow(orig, mk(snat, vm, FlowFlags::SNAT)).unwrap();

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
    assert_eq!(e.tcp_seen, Seen::empty(), "{name}: no TCP flags on ICMP");
    // Another identifier is another (unknown) flow.
    let name = "echo request with another identifier";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, echo(CLIENT, HOST_LAN, 0x1235, true)),
    );
    assert_flows(name, &o.delta, &[], &[], &[]);
}
