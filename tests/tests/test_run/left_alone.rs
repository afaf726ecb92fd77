//! Packets the NAT must not touch: no listener or flow for them, not
//! IPv4, later fragments of no flow of ours (only the first carries
//! ports; first fragments and IPv4 options are parsed like any packet,
//! test_run/replies.rs), and anything malformed or cut short at any
//! layer. They go on untouched (TCX_NEXT), counted under their reason
//! on the interface, with no rule counter and no flow change; a DF-flagged
//! SYN, which is not a fragment, is forwarded as the positive control.
use forwarder_common::{Hook, Reason};
use forwarder_tests::testrun::{
    frames::{arp, echo, ep, patch_ip, tcp, tcp6, truncate_l4, udp, vlan_tagged, CLIENT, ETH, VM},
    tc::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, TCX_NEXT, TC_ACT_REDIRECT, TC_ACT_SHOT, VM_IF,
    WEB_AND_DNS,
};

#[test]
fn packets_without_a_listener_or_flow_or_malformed_go_on_untouched_counted_under_their_reason() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let client = ep(CLIENT, 40000);
    let web = ep(HOST_LAN, 80);
    let syn = tcp(client, web, "S", &[]);

    let arp = arp(CLIENT);
    let ipv6 = tcp6("S", &[]);
    let vlan = vlan_tagged(&syn);
    // The shortest frame test_run accepts: an Ethernet header alone.
    let mut eth_only = arp[..14].to_vec();
    eth_only[12..14].copy_from_slice(&[0x88, 0xcc]);

    let later_frag = patch_ip(syn.clone(), 6, &[0x00, 0x10]);
    let df_only = patch_ip(syn.clone(), 6, &[0x40, 0x00]);

    // Truncation at each layer. test_run itself refuses (EINVAL) frames
    // shorter than an Ethernet header and IPv4 frames whose fixed IPv4
    // header is cut short (see the test below); from the IPv4 options on,
    // every layer can be cut short here.
    let ip_opts_cut = patch_ip(syn.clone(), 0, &[0x4f]); // IHL 60 > tot_len
    let tot_below_hdr = patch_ip(syn.clone(), 2, &[0x00, 0x10]);
    let tot_beyond_frame = patch_ip(syn.clone(), 2, &[0x05, 0xdc]);
    let version6 = patch_ip(syn.clone(), 0, &[0x65]);
    let tcp_cut = truncate_l4(&syn, 10);
    let tcp_cut_padded = patch_ip(syn.clone(), 2, &[0x00, 30]);
    let tcp_doff_beyond = {
        let mut f = syn.clone();
        f[ETH + 20 + 12] = 0xf0; // 60-byte header in a 20-byte segment
        f
    };
    let tcp_doff_short = {
        let mut f = syn.clone();
        f[ETH + 20 + 12] = 0x40; // 16 bytes: below the minimum
        f
    };
    let udp_cut = truncate_l4(&udp(client, ep(HOST_LAN, 5353), b"q"), 4);
    let icmp_cut = truncate_l4(&echo(CLIENT, HOST_LAN, 1, true), 4);

    let gre = patch_ip(syn.clone(), 9, &[47]);

    // Every case but two arrives on vmbr0: a row per case, named by the
    // reason it must be counted under.
    let on_lan =
        |r: Reason| move |name: &str, f: Vec<u8>| ingress(name, LAN_IF, f).expect(TCX_NEXT, r);
    let no_match = on_lan(Reason::PassNoMatch);
    let fragment = on_lan(Reason::PassFragment);
    let not_ipv4 = on_lan(Reason::PassNotIpv4);
    let malformed = on_lan(Reason::PassMalformed);
    let rows = [
        no_match(
            "SYN to a port without rule",
            tcp(client, ep(HOST_LAN, 81), "S", &[]),
        ),
        no_match(
            "SYN to another address",
            tcp(client, ep([192, 168, 1, 56], 80), "S", &[]),
        ),
        no_match("UDP to a TCP-only port", udp(client, web, b"x")),
        no_match(
            "TCP to a UDP-only port",
            tcp(client, ep(HOST_LAN, 5353), "S", &[]),
        ),
        ingress("listened tuple on another interface", VM_IF, syn.clone())
            .expect(TCX_NEXT, Reason::PassNoMatch),
        no_match(
            "echo request to the listen address",
            echo(CLIENT, HOST_LAN, 9, true),
        ),
        no_match("GRE", gre),
        // Untracked segments for a listener are answered with a RST
        // (test_run/replies.rs); a RST is never answered.
        ingress("RST without a flow", LAN_IF, tcp(client, web, "R", &[]))
            .expect(TC_ACT_SHOT, Reason::DropUntracked),
        fragment("later fragment", later_frag),
        not_ipv4("ARP", arp),
        // IPv6 is parsed (NAT66, see nat66.rs), and this SYN matches no
        // listener.
        no_match("IPv6 SYN", ipv6),
        not_ipv4("VLAN-tagged SYN", vlan),
        not_ipv4("Ethernet header only (LLDP type)", eth_only),
        malformed("IHL beyond total length", ip_opts_cut),
        malformed("total length below the header", tot_below_hdr),
        malformed("total length beyond the frame", tot_beyond_frame),
        malformed("version 6 with EtherType IPv4", version6),
        malformed("TCP header cut at 10 bytes", tcp_cut),
        malformed("TCP segment of 10 bytes in a padded frame", tcp_cut_padded),
        malformed("TCP data offset beyond the segment", tcp_doff_beyond),
        malformed("TCP data offset below 20 bytes", tcp_doff_short),
        malformed("UDP header cut at 4 bytes", udp_cut),
        malformed("ICMP header cut at 4 bytes", icmp_cut),
        // Not one of our interfaces: not even counted.
        ingress("SYN on an unregistered interface (lo)", "lo", syn.clone()).uncounted(),
    ];
    steps_leave_flows_alone(&mut h, &rows);

    // A DF-flagged SYN is not a fragment: positive control for the table.
    step(
        &mut h,
        &ingress("DF SYN", LAN_IF, df_only)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("web", created(true, false))
            .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, ep(VM, 80)))),
    );
}

#[test]
fn at_egress_a_packet_without_a_flow_is_left_alone_and_uncounted_without_egress_nat() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let syn = tcp(ep(CLIENT, 40000), ep(HOST_LAN, 80), "S", &[]);
    // Without IfaceFlags::EGRESS_NAT (no forward of the interface can take the
    // stack path) the egress program does not even look.
    step(
        &mut h,
        &egress("SYN at egress, no egress NAT", LAN_IF, syn.clone()).uncounted(),
    );
    h.egress_nat(LAN_IF, true).unwrap();
    steps_leave_flows_alone(&mut h, &[egress("SYN at egress", LAN_IF, syn)]);
}

/// Below what test_run accepts, so not testable in the table above: frames
/// shorter than an Ethernet header, and IPv4 frames shorter than ETH + 20.
/// When a kernel starts accepting them, this fails: add them to the table.
#[test]
fn frames_shorter_than_ethernet_or_a_fixed_ipv4_header_are_refused_by_test_run() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let syn = tcp(ep(CLIENT, 40000), ep(HOST_LAN, 80), "S", &[]);
    for (what, len) in [
        ("13-byte frame", 13),
        ("IPv4 header cut at 19 bytes", ETH + 19),
    ] {
        let r = h.run(Hook::TcIngress, h.lan, &syn[..len]);
        assert!(
            r.is_err(),
            "{what}: test_run accepted it now ({r:?}): add it to the table of packets left alone"
        );
    }
}
