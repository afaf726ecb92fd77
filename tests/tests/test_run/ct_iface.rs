//! Each direction of a flow is bound to the interface its packets arrive
//! on: the client's to the listening interface, the backend's to the
//! interface of the route to it. A packet of the flow arriving anywhere
//! else (a LAN host forging a backend's reply into a SNAT flow, a client's
//! tuple replayed from the tailnet) is passed on untranslated and counted
//! (`pass_wrong_iface`), and the flow does not notice.

use super::ct_support::*;
use forwarder_common::{conntrack::CtState, Hook, Reason};
use forwarder_tests::require_root;

#[test]
fn packets_of_a_flow_on_the_wrong_interface_are_not_translated() {
    if !require_root("packets_of_a_flow_on_the_wrong_interface_are_not_translated") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let mut c = Conn::established(&mut h, ep(CLIENT, 40000), ep(HOST_LAN, 80), ep(VM, 80));
    let (o, r) = (c.orig(), c.reply());
    let before = h.snapshot().unwrap();
    let snat_before = (
        entry("", &before, &o).packets,
        entry("", &before, &r).packets,
    );

    // The backend's reply direction, injected from the LAN side (the
    // attacker knows the SNAT tuple).
    let forged = seg(c.target, c.seen_as, "PA", c.sseq, c.cseq, b"injected");
    let (ran, _) = ingress(
        &mut h,
        "reply direction on vmbr0",
        LAN_IF,
        &forged,
        Out::Pass(Reason::PassWrongIface),
    );
    assert!(ran.delta.flows_changed.is_empty(), "the flow saw nothing");
    // The same with an RST in the window: it cannot close the flow either.
    let rst = seg(c.target, c.seen_as, "R", c.sseq, 0, b"");
    ingress(
        &mut h,
        "RST on vmbr0",
        LAN_IF,
        &rst,
        Out::Pass(Reason::PassWrongIface),
    );
    // The client's direction arriving from the backend's side.
    let replay = seg(c.client, c.listen, "PA", c.cseq, c.sseq, b"replayed");
    ingress(
        &mut h,
        "original direction on vmbr1",
        VM_IF,
        &replay,
        Out::Pass(Reason::PassWrongIface),
    );
    // At egress of the wrong interface (a stack-path flow's replies are
    // translated only at egress of the listening one): not ours either.
    let r2 = run(&mut h, Hook::TcEgress, VM_IF, &forged);
    assert_eq!(r2.verdict, TCX_NEXT);
    assert!(r2.delta.flows_changed.is_empty());

    let after = h.snapshot().unwrap();
    assert_eq!(
        (entry("", &after, &o).packets, entry("", &after, &r).packets),
        snat_before,
        "no packet counted on the flow"
    );
    assert_eq!(state("after", &after, &o, &r), CtState::Established);
    // The real packets still go through.
    let data = c.server_sends("PA", b"real");
    ingress(
        &mut h,
        "reply on vmbr1",
        VM_IF,
        &data,
        Out::Fwd(c.listen, c.client),
    );
    let data = c.client_sends("PA", b"real");
    ingress(
        &mut h,
        "request on vmbr0",
        LAN_IF,
        &data,
        Out::Fwd(c.seen_as, c.target),
    );
}

#[test]
fn the_binding_is_stored_per_direction() {
    if !require_root("the_binding_is_stored_per_direction") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let c = Conn::open(&mut h, ep(CLIENT, 40001), ep(HOST_LAN, 80), ep(VM, 80));
    let snap = h.snapshot().unwrap();
    assert_eq!(entry("orig", &snap, &c.orig()).ct.iface, h.ifindex(LAN_IF));
    assert_eq!(entry("reply", &snap, &c.reply()).ct.iface, h.ifindex(VM_IF));
}
