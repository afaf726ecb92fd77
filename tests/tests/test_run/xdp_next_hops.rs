//! Next hops of the XDP accelerator. It rewrites the MACs itself: the
//! destination from the next hop's neighbour entry (the gateway's for a
//! target behind one), the source from the egress device; so it needs a
//! plain FIB answer (route, neighbour, forwarding on, MTU) for a devmap
//! interface. Anything else leaves the frame to TC, whose
//! bpf_redirect_neigh or the stack handles it, and the flow is redirected
//! by XDP again as soon as the answer is plain again.
//!
//! Topology and what each step checks: `forwarder_tests::testrun::xdp`.
use forwarder_tests::testrun::{
    frames::{ep, mac_of, tcp, Ip, CLIENT, LAN_PEER, VM_ROUTER},
    xdp::*,
    Host, HOST_LAN, LAN_IF, VM_IF,
};

/// An on-link VM whose neighbour entry does not exist (yet).
const VM_NO_NEIGH: Ip = [192, 168, 100, 81];
/// A host behind `VM_ROUTER`, in `ROUTED_NET`.
const ROUTED: Ip = [10, 99, 0, 5];

/// The "routed" forward's connection, to a target behind the router.
fn open_routed(h: &mut Host) -> Conn {
    open_tcp(
        h,
        ep(CLIENT, 40010),
        ep(HOST_LAN, 8080),
        ep(ROUTED, 80),
        VM_IF,
    )
}

#[test]
fn behind_a_gateway_the_destination_mac_is_the_routers_and_the_route_mtu_holds() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let routed = open_routed(&mut h);
    let data = tcp(routed.client, routed.listen, "PA", &[b'g'; 1000]);
    let via_router = routed.out("routed", VM_IF).via(VM_ROUTER);
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
    let cases = [
        XdpCase {
            description: "exactly the route MTU",
            iface: LAN_IF,
            input: sized(mtu),
            expect: via_router.clone(),
        },
        XdpCase {
            description: "one byte over the route MTU",
            iface: LAN_IF,
            input: sized(mtu + 1),
            expect: to_tc(),
        },
    ];
    run_xdp_cases(&mut h, &cases);
}

#[test]
fn without_a_route_or_the_gateways_neighbour_the_flow_is_left_to_tc_until_they_are_back() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let routed = open_routed(&mut h);
    let data = tcp(routed.client, routed.listen, "PA", &[b'g'; 1000]);
    let reply = tcp(routed.target, routed.seen_as, "A", &[]);
    let via_router = routed.out("routed", VM_IF).via(VM_ROUTER);

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
}

#[test]
fn an_on_link_target_without_a_neighbour_entry_is_left_to_tc_until_it_resolves() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    // TC's bpf_redirect_neigh resolves it; until then XDP leaves the flow
    // to TC.
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
}

#[test]
fn a_hairpin_goes_back_out_of_the_interface_it_came_in_on() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let hp = open_tcp(
        &mut h,
        ep(CLIENT, 40012),
        ep(HOST_LAN, 8082),
        ep(LAN_PEER, 80),
        LAN_IF,
    );
    assert_eq!(hp.seen_as.ip, HOST_LAN);
    let cases = [
        XdpCase {
            description: "hairpin",
            iface: LAN_IF,
            input: tcp(hp.client, hp.listen, "PA", b"hairpin"),
            expect: hp.out("hairpin", LAN_IF),
        },
        XdpCase {
            description: "hairpin reply",
            iface: LAN_IF,
            input: tcp(hp.target, hp.seen_as, "PA", b"hairpin reply"),
            expect: hp.back("hairpin"),
        },
    ];
    run_xdp_cases(&mut h, &cases);
}

#[test]
fn an_egress_without_the_accelerator_or_forwarding_off_leaves_the_frame_to_tc() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let web = open_web(&mut h, 40013);
    let web_data = tcp(web.client, web.listen, "PA", b"devmap");
    // The egress interface runs no XDP accelerator (not in the devmap): a
    // redirect there could not be transmitted.
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
