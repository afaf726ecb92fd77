//! The XDP accelerator forwards the packets of established TCP/UDP flows
//! of the redirect path: every field TC would rewrite (addresses, ports,
//! TTL, checksums) plus the MACs from the FIB's answer, then a devmap
//! redirect. TCP control packets (SYN, FIN, RST) drive the flow's state
//! and go on to TC, as does a frame whose checksum its sender left to
//! offload (CHECKSUM_PARTIAL: XDP cannot finish it).
//!
//! Topology and what each step checks: `forwarder_tests::testrun::xdp`.
use forwarder_common::FlowFlags;
use forwarder_tests::testrun::{
    frames::{
        ep, l4_check, pseudo_sum, set_l4_check, show, tcp, udp, with_ttl, zero_sum_payload, CLIENT,
        ETH, VM,
    },
    xdp::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, VM_IF,
};

#[test]
fn established_tcp_data_is_redirected_and_control_packets_go_on_to_tc() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let web = open_web(&mut h, 40000);
    assert_eq!(web.seen_as.ip, HOST_VM, "fixed SNAT address");
    assert!(SNAT_PORTS.contains(&web.seen_as.port), "{web:?}");
    let orig_flags = h.snapshot().unwrap().flows[&web.orig()].flags;
    assert_eq!(orig_flags, FlowFlags::SNAT, "a redirect-path SNAT flow");

    let from_client = |flags: &str, payload: &[u8]| tcp(web.client, web.listen, flags, payload);
    let from_vm = |flags: &str, payload: &[u8]| tcp(web.target, web.seen_as, flags, payload);
    let out = web.out("web", VM_IF);
    let back = web.back("web");
    let case = |description, iface, input, expect: &Expect| XdpCase {
        description,
        iface,
        input,
        expect: expect.clone(),
    };
    let cases = [
        case("client ACK", LAN_IF, from_client("A", &[]), &out),
        case(
            "client request",
            LAN_IF,
            from_client("PA", b"GET / HTTP/1.1\r\nHost: vm80\r\n\r\n"),
            &out,
        ),
        case("backend data", VM_IF, from_vm("A", &[b'x'; 1400]), &back),
        case(
            "backend data with PSH",
            VM_IF,
            from_vm("PA", &[b'y'; 333]),
            &back,
        ),
        case(
            "client ACK of the data",
            LAN_IF,
            from_client("A", &[]),
            &out,
        ),
        case(
            "client data, odd length",
            LAN_IF,
            from_client("PA", b"odd"),
            &out,
        ),
        // TTL 2 is the lowest that may be forwarded: it leaves with 1.
        case(
            "client data with TTL 2",
            LAN_IF,
            with_ttl(&from_client("PA", b"ttl"), 2),
            &out,
        ),
        // Control packets drive the TCP state: TC's.
        case("client FIN", LAN_IF, from_client("FA", &[]), &to_tc()),
        case("backend FIN", VM_IF, from_vm("FA", &[]), &to_tc()),
        case("backend RST", VM_IF, from_vm("RA", &[]), &to_tc()),
        case("retransmitted SYN-ACK", VM_IF, from_vm("SA", &[]), &to_tc()),
        case(
            "client SYN on the tuple",
            LAN_IF,
            from_client("S", &[]),
            &to_tc(),
        ),
    ];
    run_xdp_cases(&mut h, &cases);

    // The second connection of the same client gets its own SNAT port and
    // its own entries; the first one's stay as they were.
    let snap = h.snapshot().unwrap();
    let web2 = open_web(&mut h, 40001);
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

/// With a checksum, without one (zero stays zero), one that becomes zero
/// when computed (sent as 0xffff), one that was sent as 0xffff, and a
/// frame carrying Ethernet padding.
#[test]
fn udp_datagrams_are_redirected_with_every_form_of_checksum_kept_right() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let listen = ep(HOST_LAN, 5353);
    let vm = ep(VM, 53);
    let client = ep(CLIENT, 50000);
    // The first datagram has no flow: XDP leaves it to TC, which creates it.
    let dns = open_udp(&mut h, client, listen, vm, b"\x12\x34 first query");
    let seen_as = dns.seen_as;
    let out = dns.out("dns", VM_IF);
    let back = dns.back("dns");

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
    let case = |description, iface, input, expect: &Expect| XdpCase {
        description,
        iface,
        input,
        expect: expect.clone(),
    };
    let cases = [
        case("query", LAN_IF, query(b"\x12\x34 dns query"), &out),
        case(
            "answer",
            VM_IF,
            answer(b"\x12\x34 dns answer, somewhat longer"),
            &back,
        ),
        case(
            "query without checksum",
            LAN_IF,
            set_l4_check(query(b"no checksum, none"), 0),
            &out,
        ),
        case(
            "answer without checksum",
            VM_IF,
            set_l4_check(answer(b"no checksum either"), 0),
            &back,
        ),
        case("query summing to zero", LAN_IF, query(&zero_out), &out),
        case("answer summing to zero", VM_IF, answer(&zero_back), &back),
        case("query sent with 0xffff", LAN_IF, sent_as_ffff, &out),
        case("query padded to 60 bytes", LAN_IF, padded, &out),
        // Less than 20 bytes of L4 in the frame (no padding, as on a
        // veth): the accelerator reads a fixed 20-byte window and leaves
        // such a datagram to TC.
        case(
            "query of 9 L4 bytes, unpadded",
            LAN_IF,
            query(b"q"),
            &to_tc(),
        ),
    ];
    for c in &cases {
        let run = xdp(&mut h, c.description, c.iface, &c.input, &c.expect);
        if matches!(c.expect, Expect::Redirect(_)) {
            let name = c.description;
            let (i, o) = (l4_check(&c.input), l4_check(&run.out));
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
/// socket).
#[test]
fn a_frame_with_a_partial_checksum_is_left_to_tc_and_its_full_form_redirected() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let web = open_web(&mut h, 40000);
    let dns = open_udp(
        &mut h,
        ep(CLIENT, 50000),
        ep(HOST_LAN, 5353),
        ep(VM, 53),
        b"first",
    );
    let partial = |f: Vec<u8>| {
        let p = pseudo_sum(&f[ETH..]);
        set_l4_check(f, p)
    };
    let frames = [
        XdpCase {
            description: "TCP from the client",
            iface: LAN_IF,
            input: tcp(web.client, web.listen, "PA", b"request"),
            expect: web.out("web", VM_IF),
        },
        XdpCase {
            description: "TCP from the backend",
            iface: VM_IF,
            input: tcp(web.target, web.seen_as, "PA", &[b'r'; 900]),
            expect: web.back("web"),
        },
        XdpCase {
            description: "UDP from the client",
            iface: LAN_IF,
            input: udp(dns.client, dns.listen, b"query, 20 bytes of L4"),
            expect: dns.out("dns", VM_IF),
        },
        XdpCase {
            description: "UDP from the backend",
            iface: VM_IF,
            input: udp(dns.target, dns.seen_as, b"answer answer"),
            expect: dns.back("dns"),
        },
    ];
    for c in frames {
        let name = c.description;
        let marked = partial(c.input.clone());
        assert_ne!(
            l4_check(&marked),
            l4_check(&c.input),
            "{name}: test frames differ"
        );
        xdp(
            &mut h,
            &format!("{name}, partial checksum"),
            c.iface,
            &marked,
            &to_tc(),
        );
        xdp(
            &mut h,
            &format!("{name}, full checksum"),
            c.iface,
            &c.input,
            &c.expect,
        );
    }
}
