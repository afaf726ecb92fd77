//! What the XDP accelerator leaves alone: everything but a data packet of
//! an established redirect-path TCP/UDP flow. Not IPv4, IPv6 (left to TC's
//! NAT66, `pass_ipv6_to_tc`), malformed or cut
//! short at any layer are passed on counted under their reason; IPv4
//! options and fragments (which TC translates), ICMP, TCP control
//! packets, packets without a flow or of a stack-path flow, and TTL 1 or
//! 0 go on to TC. Each case is built
//! so that its reason is the only thing in the way: the tuple's flow
//! exists and its ordinary packet is redirected (the positive controls at
//! the end).
//!
//! Topology and what each step checks: `forwarder_tests::testrun::xdp`.
use etherparse::PacketBuilder;
use forwarder_common::{FlowFlags, Reason, PROTO_ICMP};
use forwarder_tests::testrun::{
    frames::{
        arp, assert_bytes, ep, fkey, flow_entry, icmp_error, ip_of, mac_of, patch_ip, tcp, tcp6,
        udp, vlan_tagged, with_ip_options, with_ttl, Ep, CLIENT, ETH, HOST_MAC, TTL, VM,
    },
    xdp::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, TCX_NEXT, TC_ACT_OK, TC_ACT_REDIRECT, VM_IF, XDP_PASS,
};

#[test]
fn everything_but_data_of_an_established_redirect_path_flow_is_passed_on_untouched() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let web = open_web(&mut h, 40000);
    let data = tcp(web.client, web.listen, "PA", b"established data");
    let dns = open_udp(
        &mut h,
        ep(CLIENT, 50000),
        ep(HOST_LAN, 5353),
        ep(VM, 53),
        b"first query",
    );

    // A stack-path flow to the same on-link VM (the FIB would answer, and
    // vmbr1 is a redirect target): its packets belong to the stack.
    let stack_client = ep(CLIENT, 40100);
    let stack_listen = ep(HOST_LAN, 8083);
    xdp_then_tc(
        &mut h,
        "stack-path SYN",
        LAN_IF,
        &tcp(stack_client, stack_listen, "S", &[]),
        TC_ACT_OK,
        Reason::FwdStack,
    );
    // Its reply at TC ingress is left alone (translated at egress).
    xdp_then_tc(
        &mut h,
        "stack-path SYN-ACK",
        VM_IF,
        &tcp(ep(VM, 80), stack_client, "SA", &[]),
        TCX_NEXT,
        Reason::PassNoMatch,
    );

    // An ICMP echo flow (userspace can insert one; TC translates it).
    let now = Host::now_ns();
    let echo_entry =
        |src: Ep, dst: Ep, flags: FlowFlags| flow_entry(src, dst, h.id("web"), now, flags);
    let (e_client, e_listen) = (ep(CLIENT, 0x1234), ep(HOST_LAN, 0x1234));
    let (e_snat, e_vm) = (ep(HOST_VM, 41100), ep(VM, 41100));
    let echo_orig = echo_entry(e_snat, e_vm, FlowFlags::SNAT);
    let echo_reply = echo_entry(e_listen, e_client, FlowFlags::SNAT | FlowFlags::REPLY);
    h.insert_flow(fkey(e_client, e_listen, PROTO_ICMP), echo_orig)
        .unwrap();
    h.insert_flow(fkey(e_vm, e_snat, PROTO_ICMP), echo_reply)
        .unwrap();
    let echo = {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(mac_of(CLIENT), HOST_MAC)
            .ipv4(CLIENT, HOST_LAN, TTL)
            .icmpv4_echo_request(0x1234, 1)
            .write(&mut v, b"ping")
            .unwrap();
        v
    };
    // Port unreachable from the VM about a datagram it got from us.
    let quoted = udp(dns.seen_as, dns.target, b"quoted");
    let icmp_error = icmp_error(VM, dns.seen_as.ip, 3, 3, [0; 4], &ip_of(&quoted));

    // Malformed and unusual frames built from the established data frame.
    let arp = arp(CLIENT);
    let ipv6 = tcp6("A", b"x");
    let vlan = vlan_tagged(&data);
    // IHL 6: one word of options (NOPs).
    let with_opts = with_ip_options(&data);
    let tot_len = |f: &[u8], tl: u16| patch_ip(f.to_vec(), 2, &tl.to_be_bytes());
    let doff = |d: u8| {
        let mut f = data.clone();
        f[ETH + 20 + 12] = d << 4;
        f
    };
    let eth_only_ip = data[..ETH].to_vec();
    let ip_cut = data[..ETH + 19].to_vec();
    let short_tcp = {
        // 30 bytes of IPv4 (10 of TCP) in a frame padded to 60 bytes.
        let mut f = tot_len(&data, 30);
        f.truncate(60);
        f
    };
    let short_udp = {
        let q = udp(dns.client, dns.listen, b"");
        let mut f = tot_len(&q, 27);
        f.resize(60, 0);
        f
    };

    let cases = [
        // Not IPv4.
        XdpCase {
            description: "ARP",
            iface: LAN_IF,
            input: arp,
            expect: pass(Reason::PassNotIpv4),
        },
        // IPv6: left to TC, whose IPv6 programs translate NAT66 flows,
        // and counted as such (not as "not IPv4", which it is not).
        XdpCase {
            description: "IPv6",
            iface: LAN_IF,
            input: ipv6,
            expect: pass(Reason::PassIpv6ToTc),
        },
        XdpCase {
            description: "VLAN-tagged data",
            iface: LAN_IF,
            input: vlan,
            expect: pass(Reason::PassNotIpv4),
        },
        // Malformed or cut short at each layer.
        XdpCase {
            description: "Ethernet header only, type IPv4",
            iface: LAN_IF,
            input: eth_only_ip,
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "IPv4 header cut at 19 bytes",
            iface: LAN_IF,
            input: ip_cut,
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "version 6 with EtherType IPv4",
            iface: LAN_IF,
            input: patch_ip(data.clone(), 0, &[0x65]),
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "IHL below 5",
            iface: LAN_IF,
            input: patch_ip(data.clone(), 0, &[0x44]),
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "total length beyond the frame",
            iface: LAN_IF,
            input: tot_len(&data, data.len() as u16 - ETH as u16 + 1),
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "total length below the IPv4 header",
            iface: LAN_IF,
            input: tot_len(&data, 16),
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "TCP segment of 10 bytes in a padded frame",
            iface: LAN_IF,
            input: short_tcp,
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "TCP data offset below 20 bytes",
            iface: LAN_IF,
            input: doff(4),
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "TCP data offset beyond the segment",
            iface: LAN_IF,
            input: doff(15),
            expect: pass(Reason::PassMalformed),
        },
        XdpCase {
            description: "UDP datagram of 7 bytes in a padded frame",
            iface: LAN_IF,
            input: short_udp,
            expect: pass(Reason::PassMalformed),
        },
        // IPv4 options and fragments: parsed, but not what the
        // fixed-offset XDP rewrite handles; TC translates them.
        XdpCase {
            description: "IP options",
            iface: LAN_IF,
            input: with_opts,
            expect: to_tc(),
        },
        XdpCase {
            description: "first fragment (MF)",
            iface: LAN_IF,
            input: patch_ip(data.clone(), 6, &[0x20, 0x00]),
            expect: to_tc(),
        },
        XdpCase {
            description: "later fragment (offset)",
            iface: LAN_IF,
            input: patch_ip(data.clone(), 6, &[0x00, 0x10]),
            expect: to_tc(),
        },
        // Left to TC.
        XdpCase {
            description: "ICMP echo of a tracked echo flow",
            iface: LAN_IF,
            input: echo.clone(),
            expect: to_tc(),
        },
        XdpCase {
            description: "ICMP error about a tracked flow",
            iface: VM_IF,
            input: icmp_error,
            expect: to_tc(),
        },
        XdpCase {
            description: "TCP SYN",
            iface: LAN_IF,
            input: tcp(web.client, web.listen, "S", &[]),
            expect: to_tc(),
        },
        XdpCase {
            description: "TCP FIN",
            iface: LAN_IF,
            input: tcp(web.client, web.listen, "FA", &[]),
            expect: to_tc(),
        },
        XdpCase {
            description: "TCP RST",
            iface: LAN_IF,
            input: tcp(web.client, web.listen, "R", &[]),
            expect: to_tc(),
        },
        XdpCase {
            description: "TCP data without a flow",
            iface: LAN_IF,
            input: tcp(ep(CLIENT, 40999), web.listen, "PA", b"who?"),
            expect: to_tc(),
        },
        XdpCase {
            description: "UDP without a flow",
            iface: LAN_IF,
            input: udp(ep(CLIENT, 50999), dns.listen, b"who is there?"),
            expect: to_tc(),
        },
        XdpCase {
            description: "data of a stack-path flow",
            iface: LAN_IF,
            input: tcp(stack_client, stack_listen, "PA", b"through the stack"),
            expect: to_tc(),
        },
        XdpCase {
            description: "reply of a stack-path flow",
            iface: VM_IF,
            input: tcp(ep(VM, 80), stack_client, "PA", b"back through the stack"),
            expect: to_tc(),
        },
        XdpCase {
            description: "TTL 1",
            iface: LAN_IF,
            input: with_ttl(&data, 1),
            expect: to_tc(),
        },
        XdpCase {
            description: "TTL 0",
            iface: LAN_IF,
            input: with_ttl(&data, 0),
            expect: to_tc(),
        },
        // Not one of our interfaces: not even counted.
        XdpCase {
            description: "data on an unregistered interface (lo)",
            iface: "lo",
            input: data.clone(),
            expect: Expect::Pass(None),
        },
    ];
    run_xdp_cases(&mut h, &cases);

    // Positive controls: the frames the cases were built from.
    xdp(
        &mut h,
        "established data",
        LAN_IF,
        &data,
        &web.out("web", VM_IF),
    );
    let q = udp(dns.client, dns.listen, b"established query");
    xdp(
        &mut h,
        "established query",
        LAN_IF,
        &q,
        &dns.out("dns", VM_IF),
    );
    // The echo XDP left alone is TC's to translate.
    let echo_key = fkey(e_client, e_listen, PROTO_ICMP);
    assert_eq!(
        h.snapshot().unwrap().flows[&echo_key],
        echo_orig,
        "XDP left the echo flow alone"
    );
    let run = tc_ingress(
        &mut h,
        "echo",
        LAN_IF,
        &echo,
        TC_ACT_REDIRECT,
        Reason::FwdRedirect,
    );
    assert_eq!(
        run.out[ETH + 16..ETH + 20],
        e_vm.ip,
        "echo (TC): translated"
    );
    assert_eq!(
        h.snapshot().unwrap().flows[&echo_key].packets,
        1,
        "echo (TC)"
    );
}

/// What the kernel makes of the XDP context: no ingress interface means
/// loopback (not ours: passed, uncounted); an interface the calling
/// thread's namespace does not have is refused; so are frames shorter than
/// an Ethernet header.
#[test]
fn a_frame_without_an_ingress_interface_arrives_on_loopback_and_is_not_ours() {
    let Some(mut h) = Host::for_xdp_test() else {
        return;
    };
    let web = open_web(&mut h, 40000);
    let data = tcp(web.client, web.listen, "PA", b"x");
    let before = h.snapshot().unwrap();
    let run = h.run_xdp(0, &data).expect("ingress_ifindex 0");
    assert_eq!(run.verdict, XDP_PASS, "on loopback");
    assert_bytes("on loopback", &run.out, &data);
    let d = before.delta(&h.snapshot().unwrap());
    assert!(
        d.iface.is_empty() && d.rules.is_empty() && d.flows_changed.is_empty(),
        "nothing counted on loopback: {:?}",
        d.moved()
    );
    let e = h.run_xdp(99_999, &data).expect_err("no such interface");
    assert!(format!("{e:#}").contains("No such device"), "{e:#}");
    let e = h.run_xdp(h.lan, &data[..ETH - 1]).expect_err("13 bytes");
    assert!(format!("{e:#}").contains("Invalid argument"), "{e:#}");
    // The same frame with the real interface: redirected.
    xdp(&mut h, "on vmbr0", LAN_IF, &data, &web.out("web", VM_IF));
}
