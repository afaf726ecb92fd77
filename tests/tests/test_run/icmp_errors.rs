//! ICMP errors about a translated flow. An error quotes the packet as its
//! sender saw it, translated; the receiver matches the quote against its
//! own socket, so the quote must be translated back along with the outer
//! header: addresses, ports, TTL, and every checksum (outer IPv4, ICMP,
//! the quoted IPv4 header, and the quoted L4 checksum when all of the
//! segment is quoted). Errors never create or touch flow entries.
//!
//! ```text
//!  client 192.168.1.10:40000 ── vmbr0 [192.168.1.55:80 | 192.168.100.1:P] vmbr1 ─┬─ vm 192.168.100.80:80
//!                                                                                 └─ router 192.168.100.254
//! ```
use forwarder_common::Reason;
use forwarder_tests::testrun::{
    frames::{
        ep, fix_checksums, icmp_error, ip_of, set_tuple, show, tcp, udp, udp_nocsum, Ep, CLIENT,
        ETH, TTL, VM, VM_ROUTER,
    },
    tc::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, TCX_NEXT, TC_ACT_REDIRECT, VM_IF, WEB_AND_DNS,
};

/// The MTU the "fragmentation needed" errors announce.
const MTU: [u8; 2] = 1280u16.to_be_bytes();

/// The TCP flow the errors are about.
struct Web {
    client: Ep,
    listen: Ep,
    vm: Ep,
    /// What the VM sees as the client.
    snat: Ep,
}

fn open_web(h: &mut Host) -> Web {
    let client = ep(CLIENT, 40000);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let o = step(
        h,
        &ingress("SYN", LAN_IF, tcp(client, listen, "S", &[]))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("web", created(true, false))
            .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, vm))),
    );
    Web {
        client,
        listen,
        vm,
        snat: ep(HOST_VM, o.port),
    }
}

/// What the VM received of a data segment of `len` bytes: translated, one
/// hop down.
fn received_by_vm(w: &Web, len: usize) -> Vec<u8> {
    let mut f = tcp(w.snat, w.vm, "PA", &vec![b'd'; len]);
    f[ETH + 8] = TTL - 1;
    fix_checksums(&mut f[ETH..]);
    ip_of(&f)
}

/// Runs an error that must be redirected as exactly `want`, touching no
/// flow entry.
fn error_step(
    h: &mut Host,
    name: &str,
    iface: &'static str,
    err: Vec<u8>,
    want: Vec<u8>,
) -> Outcome {
    let o = step(
        h,
        &ingress(name, iface, err)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .out(Out::Exact(want)),
    );
    assert_flows(name, &o.delta, &[], &[], &[]);
    o
}

#[test]
fn an_error_from_the_backend_side_reaches_the_client_with_its_own_segment_quoted() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let w = open_web(&mut h);
    let (client, listen) = (w.client, w.listen);
    let quoted_full = received_by_vm(&w, 1400);
    let unchanged = h.snapshot().unwrap();

    // Fragmentation needed, from the VM itself, quoting all of it (Linux
    // quotes up to 576 bytes; this one is short enough to quote whole).
    let small = received_by_vm(&w, 200);
    let frag = icmp_error(VM, HOST_VM, 3, 4, [0, 0, MTU[0], MTU[1]], &small);
    let want = expect_icmp_error(&frag, HOST_LAN, CLIENT, (client, listen));
    let name = "frag needed from the backend, whole packet quoted";
    let o = error_step(&mut h, name, VM_IF, frag, want);
    // Spelled out, on top of the byte comparison: what PMTUD on the client
    // needs.
    let quote = &o.run.out[ETH + 28..];
    assert_eq!(&quote[12..16], &CLIENT, "{name}: quoted source");
    assert_eq!(&quote[16..20], &HOST_LAN, "{name}: quoted destination");
    assert_eq!(
        &quote[20..22],
        &40000u16.to_be_bytes(),
        "{name}: quoted source port"
    );
    assert_eq!(
        &quote[22..24],
        &80u16.to_be_bytes(),
        "{name}: quoted destination port"
    );
    assert_eq!(
        &o.run.out[ETH + 26..ETH + 28],
        &MTU,
        "{name}: next-hop MTU kept"
    );

    // The same from a router on the VM side, quoting only 8 bytes of TCP
    // (RFC 792 minimum): outer source stays the router's, the quoted ports
    // are translated, the quoted TCP checksum is not there to fix.
    let te = icmp_error(VM_ROUTER, HOST_VM, 11, 0, [0; 4], &quoted_full[..28]);
    let want = expect_icmp_error(&te, VM_ROUTER, CLIENT, (client, listen));
    error_step(
        &mut h,
        "time exceeded from a router, 8 bytes quoted",
        VM_IF,
        te,
        want,
    );

    // Quoting the first 548 bytes (what fits in 576): L4 checksum quoted
    // but not the whole segment; the quoted header and ports are still
    // translated, the ICMP checksum right.
    let fe = icmp_error(
        VM,
        HOST_VM,
        3,
        4,
        [0, 0, MTU[0], MTU[1]],
        &quoted_full[..548],
    );
    // What the client must get: the quote of its own segment as it sent
    // it, whose TCP checksum (of the whole segment) we can compute because
    // we built the whole segment.
    let mut whole = quoted_full.clone();
    set_tuple(&mut whole, client, listen);
    fix_checksums(&mut whole);
    let mut want = fe.clone();
    want[ETH + 28..].copy_from_slice(&whole[..548]);
    let want = expect_icmp_error(&want, HOST_LAN, CLIENT, (client, listen));
    let name = "frag needed, partial quote";
    let o = error_step(&mut h, name, VM_IF, fe, want);
    let quote = &o.run.out[ETH + 28..];
    assert_eq!(
        &quote[12..20],
        &[CLIENT, HOST_LAN].concat(),
        "{name}: quoted addresses"
    );
    assert_eq!(&quote[20..24], &[0x9c, 0x40, 0, 80], "{name}: quoted ports");
    assert_eq!(
        &quote[36..38],
        &whole[36..38],
        "{name}: quoted TCP checksum"
    );
    let end = h.snapshot().unwrap();
    for (k, e) in &unchanged.flows {
        assert_eq!(end.flows.get(k), Some(e), "ICMP errors touched {}", show(k));
    }
}

#[test]
fn a_port_unreachable_about_a_udp_query_is_translated_with_or_without_checksum() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let listen = ep(HOST_LAN, 5353);
    let vm = ep(VM, 53);
    for zero in [false, true] {
        let client = ep(CLIENT, 50000 + zero as u16);
        let build = if zero { udp_nocsum } else { udp };
        let o = step(
            &mut h,
            &ingress("UDP query", LAN_IF, build(client, listen, b"query"))
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .rule("dns", created(true, false))
                .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, vm))),
        );
        let snat = ep(HOST_VM, o.port);
        let mut sent = build(snat, vm, b"query");
        sent[ETH + 8] = TTL - 1;
        fix_checksums(&mut sent[ETH..]);
        let pu = icmp_error(VM, HOST_VM, 3, 3, [0; 4], &ip_of(&sent));
        let want = expect_icmp_error(&pu, HOST_LAN, CLIENT, (client, listen));
        let name = format!("port unreachable for UDP (zero checksum: {zero})");
        let o = error_step(&mut h, &name, VM_IF, pu, want);
        if zero {
            assert_eq!(&o.run.out[ETH + 28 + 26..ETH + 28 + 28], &[0, 0], "{name}");
        }
    }
}

#[test]
fn an_error_from_the_client_about_a_reply_travels_like_the_original_direction() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let w = open_web(&mut h);
    // The client's port is closed: it answers the SYN-ACK it got.
    let mut got = tcp(w.listen, w.client, "SA", &[]);
    got[ETH + 8] = TTL - 2;
    fix_checksums(&mut got[ETH..]);
    let ce = icmp_error(CLIENT, HOST_LAN, 3, 3, [0; 4], &ip_of(&got));
    let want = expect_icmp_error(&ce, w.snat.ip, VM, (w.vm, w.snat));
    error_step(&mut h, "port unreachable from the client", LAN_IF, ce, want);
}

#[test]
fn errors_about_unknown_flows_or_quoting_too_little_are_left_alone() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let w = open_web(&mut h);
    let unchanged = h.snapshot().unwrap();
    let mut other = tcp(ep(HOST_VM, 41999), w.vm, "S", &[]);
    other[ETH + 8] = TTL - 1;
    fix_checksums(&mut other[ETH..]);
    // Quoting 4 bytes of L4 of the known flow: not enough to tell the ports.
    let cut = &received_by_vm(&w, 1400)[..24];
    let errors = [
        ingress(
            "error about an unknown flow",
            VM_IF,
            icmp_error(VM, HOST_VM, 3, 4, [0, 0, MTU[0], MTU[1]], &ip_of(&other)),
        ),
        ingress(
            "error quoting 4 bytes of L4",
            VM_IF,
            icmp_error(VM, HOST_VM, 3, 4, [0, 0, MTU[0], MTU[1]], cut),
        ),
    ];
    steps_leave_flows_alone(&mut h, &errors);
    let end = h.snapshot().unwrap();
    for (k, e) in &unchanged.flows {
        assert_eq!(end.flows.get(k), Some(e), "ICMP errors touched {}", show(k));
    }
}

/// An error is bound to the interface of the flow direction it travels
/// like (as every packet of a flow is, issue 11): one about the client's
/// packets arrives where the target's route leaves, one about the replies
/// where the client came in. A forged error on another interface (a host
/// on the client side naming the backend's address) is not translated,
/// so it cannot reach the client as a frag-needed that lowers its PMTU, or
/// the backend as a port unreachable that ends its connection; it passes
/// untouched, counted `pass_wrong_iface`, and touches no flow.
#[test]
fn an_error_arriving_on_the_wrong_interface_is_left_alone() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let w = open_web(&mut h);
    let unchanged = h.snapshot().unwrap();
    let small = received_by_vm(&w, 200);
    let mut got = tcp(w.listen, w.client, "SA", &[]);
    got[ETH + 8] = TTL - 2;
    fix_checksums(&mut got[ETH..]);
    let errors = [
        ingress(
            "frag needed about the client's segment, on the client side",
            LAN_IF,
            icmp_error(VM, HOST_VM, 3, 4, [0, 0, MTU[0], MTU[1]], &small),
        )
        .expect(TCX_NEXT, Reason::PassWrongIface),
        ingress(
            "port unreachable about a reply, on the backend side",
            VM_IF,
            icmp_error(CLIENT, HOST_LAN, 3, 3, [0; 4], &ip_of(&got)),
        )
        .expect(TCX_NEXT, Reason::PassWrongIface),
    ];
    steps_leave_flows_alone(&mut h, &errors);
    let end = h.snapshot().unwrap();
    for (k, e) in &unchanged.flows {
        assert_eq!(end.flows.get(k), Some(e), "ICMP errors touched {}", show(k));
    }
    // The same errors where they belong are translated (the binding is
    // the only difference).
    let frag = icmp_error(VM, HOST_VM, 3, 4, [0, 0, MTU[0], MTU[1]], &small);
    let want = expect_icmp_error(&frag, HOST_LAN, CLIENT, (w.client, w.listen));
    error_step(
        &mut h,
        "the frag needed on the backend side",
        VM_IF,
        frag,
        want,
    );
}
