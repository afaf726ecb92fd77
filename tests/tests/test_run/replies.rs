//! Table-driven BPF_PROG_TEST_RUN cases for every answer the router builds
//! in BPF (forwarder-ebpf/src/reply.rs): ICMP time exceeded, fragmentation
//! needed and port unreachable, and TCP resets. Each case feeds one frame
//! to `fwd_ingress` and compares the frame the program sends back with one
//! built independently here with etherparse from the input (addresses and
//! link addresses swapped, the quote, every checksum), byte for byte, then
//! has etherparse verify the checksums again. Plus the fragment and IP
//! option cases of issue 12: a later fragment follows its first fragment's
//! translation; one whose first fragment was not seen is left alone.
//!
//! ```text
//! client 192.168.1.10 ─ vmbr0 192.168.1.55 [host] vmbr1 192.168.100.1 ─ vm 192.168.100.80
//! peer 8.0.0.5 ─ tailscale0 100.100.1.1 (MTU 1280, no link header)
//! ```
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Dscp, Ipv4Header,
    Ipv4HeaderSlice, TcpHeader,
};
use forwarder_common::{Hook, Reason};
use forwarder_tests::testrun::{
    assert_counters,
    frames::{assert_bytes, ep, tcp, udp, verify, with_ip_options, with_ttl, Ip, CLIENT, ETH, VM},
    one_counter, Csum, Host, Run, HOST_LAN, HOST_VM, LAN_IF, TCX_NEXT, TC_ACT_REDIRECT,
    TC_ACT_SHOT, VM_IF,
};

/// `WEB_AND_DNS` with allow-lists, and "ts" on the tunnel.
const RULES: &str = concat!(
    r#"
[global]
snat_ports = "41000-41015"
"#,
    forwarder_tests::web_forward!(),
    r#"allow = ["192.168.1.10"]
"#,
    forwarder_tests::dns_forward!(),
    r#"allow = ["192.168.1.10"]

[[forward]]
name = "ts"
in = "tailscale0"
listen = "100.100.1.1"
port = 443
to = "192.168.100.80:443"
snat = "192.168.100.1"
mss_clamp = "off"
"#
);

/// Not in any allow-list.
const STRANGER: Ip = [192, 168, 1, 200];
const PEER: Ip = [8, 0, 0, 5];
const TS_LISTEN: Ip = [100, 100, 1, 1];
/// Precedence "internetwork control": what Linux's ICMP errors carry.
const TOS_CONTROL: u8 = 0xc0;

/// The ICMP error the host must send back for `frame` (an Ethernet frame
/// that arrived from `mac_of(its source)`): from `from`, quoting the IPv4
/// header and 8 bytes.
fn icmp_answer(frame: &[u8], from: Ip, ty: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let ip = Ipv4HeaderSlice::from_slice(&frame[ETH..]).unwrap();
    let quote_len = (ip.slice().len() + 8).min(usize::from(ip.total_len()));
    let quote = &frame[ETH..ETH + quote_len];
    let icmp = Icmpv4Header::with_checksum(
        Icmpv4Type::Unknown {
            type_u8: ty,
            code_u8: code,
            bytes5to8: rest,
        },
        quote,
    );
    let mut iph = Ipv4Header::new(
        (icmp.header_len() + quote.len()) as u16,
        64,
        IpNumber::ICMP,
        from,
        ip.source(),
    )
    .unwrap();
    iph.dscp = Ipv4Dscp::try_new(TOS_CONTROL >> 2).unwrap();
    iph.dont_fragment = false;
    iph.identification = 0;
    iph.header_checksum = iph.calc_header_checksum();
    let mut v = swapped_link_header(frame);
    iph.write(&mut v).unwrap();
    icmp.write(&mut v).unwrap();
    v.extend_from_slice(quote);
    v
}

/// The TCP reset the host must send back for segment `frame` (RFC 793):
/// seq = its ACK if it has one, else ACK = its seq + length.
fn rst_answer(frame: &[u8]) -> Vec<u8> {
    let ip = Ipv4HeaderSlice::from_slice(&frame[ETH..]).unwrap();
    let l4 = &frame[ETH + ip.slice().len()..];
    let (t, payload) = TcpHeader::from_slice(l4).unwrap();
    let len = payload.len() as u32 + u32::from(t.syn) + u32::from(t.fin);
    let mut r = TcpHeader::new(t.destination_port, t.source_port, 0, 0);
    r.rst = true;
    if t.ack {
        r.sequence_number = t.acknowledgment_number;
    } else {
        r.ack = true;
        r.acknowledgment_number = t.sequence_number.wrapping_add(len);
    }
    let mut iph = Ipv4Header::new(20, 64, IpNumber::TCP, ip.destination(), ip.source()).unwrap();
    iph.dont_fragment = true;
    iph.identification = 0;
    r.checksum = r.calc_checksum_ipv4(&iph, &[]).unwrap();
    iph.header_checksum = iph.calc_header_checksum();
    let mut v = swapped_link_header(frame);
    iph.write(&mut v).unwrap();
    r.write(&mut v).unwrap();
    v
}

/// The link header of an answer to `frame`: back to where it came from.
fn swapped_link_header(frame: &[u8]) -> Vec<u8> {
    let eth = Ethernet2Header {
        source: frame[0..6].try_into().unwrap(),
        destination: frame[6..12].try_into().unwrap(),
        ether_type: EtherType::IPV4,
    };
    let mut v = Vec::new();
    eth.write(&mut v).unwrap();
    v
}

/// One case: a frame in on an interface, what must come out.
struct Case {
    name: &'static str,
    iface: &'static str,
    frame: Vec<u8>,
    /// The frame has no link header (tailscale0).
    l3: bool,
    verdict: i32,
    reason: Reason,
    /// The exact answer; `None`: the frame must come out as it went in.
    answer: Option<Vec<u8>>,
}

fn answered(
    name: &'static str,
    iface: &'static str,
    frame: Vec<u8>,
    reason: Reason,
    answer: Vec<u8>,
) -> Case {
    Case {
        name,
        iface,
        frame,
        l3: false,
        verdict: TC_ACT_REDIRECT,
        reason,
        answer: Some(answer),
    }
}

fn run(h: &mut Host, c: &Case) -> Run {
    let ifindex = h.ifindex(c.iface);
    let before = h.snapshot().unwrap();
    // CHECKSUM_NONE for answers: reshaping the skb (trim, room at the
    // link header) leaves a CHECKSUM_COMPLETE skb->csum the kernel's
    // test_run check refuses (EBADMSG); on the wire that state only
    // matters to a local receiver, which then verifies the sum itself (see
    // reply.rs). Every checksum in the packet is checked below.
    let csum = if c.answer.is_some() || c.l3 {
        Csum::None
    } else {
        Csum::Complete
    };
    let r = h
        .run_with(Hook::TcIngress, ifindex, &c.frame, csum, None)
        .unwrap_or_else(|e| panic!("{}: {e:#}", c.name));
    let d = before.delta(&h.snapshot().unwrap());
    assert_eq!(
        r.verdict,
        c.verdict,
        "{}: verdict (counters {:?})",
        c.name,
        d.moved()
    );
    let want = one_counter(c.iface, Hook::TcIngress, Some(c.reason), c.frame.len());
    assert_counters(c.name, &d, &want);
    match &c.answer {
        Some(want) => {
            verify(c.name, &r.out, c.l3);
            assert_bytes(c.name, &r.out, want);
        }
        None if c.verdict == TC_ACT_SHOT => {}
        None => assert_bytes(c.name, &r.out, &c.frame),
    }
    r
}

#[test]
fn every_answer_is_built_byte_for_byte_from_the_untranslated_packet() {
    let Some(mut h) = Host::for_test(64, RULES) else {
        return;
    };
    let client = ep(CLIENT, 40000);
    let stranger = ep(STRANGER, 40001);
    let web = ep(HOST_LAN, 80);
    let dns = ep(HOST_LAN, 5353);

    let syn_ttl1 = with_ttl(&tcp(client, web, "S", &[]), 1);
    let udp_ttl1 = with_ttl(&udp(client, dns, b"query"), 1);
    let denied_syn = tcp(stranger, web, "S", &[]);
    let denied_ack = tcp(stranger, web, "PA", b"data");
    let untracked_ack = tcp(client, web, "A", &[]);
    let untracked_fin = tcp(client, web, "FA", b"bye");
    let denied_udp = udp(stranger, dns, b"query");
    let denied_udp_opts = with_ip_options(&udp(stranger, dns, b"query"));
    let cases = vec![
        answered(
            "TTL 1 SYN: time exceeded quoting the forward's address",
            LAN_IF,
            syn_ttl1.clone(),
            Reason::ReplyTimeExceeded,
            icmp_answer(&syn_ttl1, HOST_LAN, 11, 0, [0; 4]),
        ),
        answered(
            "TTL 1 datagram: time exceeded",
            LAN_IF,
            udp_ttl1.clone(),
            Reason::ReplyTimeExceeded,
            icmp_answer(&udp_ttl1, HOST_LAN, 11, 0, [0; 4]),
        ),
        answered(
            "denied SYN: RST+ACK acknowledging it",
            LAN_IF,
            denied_syn.clone(),
            Reason::ReplyReset,
            rst_answer(&denied_syn),
        ),
        answered(
            "denied data segment: RST with its ACK as sequence",
            LAN_IF,
            denied_ack.clone(),
            Reason::ReplyReset,
            rst_answer(&denied_ack),
        ),
        answered(
            "allowed but untracked ACK: RST",
            LAN_IF,
            untracked_ack.clone(),
            Reason::ReplyReset,
            rst_answer(&untracked_ack),
        ),
        answered(
            "untracked FIN with data: RST",
            LAN_IF,
            untracked_fin.clone(),
            Reason::ReplyReset,
            rst_answer(&untracked_fin),
        ),
        answered(
            "denied datagram: port unreachable",
            LAN_IF,
            denied_udp.clone(),
            Reason::ReplyPortUnreach,
            icmp_answer(&denied_udp, HOST_LAN, 3, 3, [0; 4]),
        ),
        answered(
            "denied datagram with IP options: port unreachable quoting the options",
            LAN_IF,
            denied_udp_opts.clone(),
            Reason::ReplyPortUnreach,
            icmp_answer(&denied_udp_opts, HOST_LAN, 3, 3, [0; 4]),
        ),
        Case {
            name: "a RST is never answered",
            iface: LAN_IF,
            frame: tcp(stranger, web, "R", &[]),
            l3: false,
            verdict: TC_ACT_SHOT,
            reason: Reason::DropDenied,
            answer: None,
        },
    ];
    for c in &cases {
        run(&mut h, c);
    }
    // Nothing above created a flow.
    let st = h.snapshot().unwrap();
    assert!(
        st.flows.is_empty(),
        "flows: {:?}",
        st.flows.keys().collect::<Vec<_>>()
    );
}

/// A reply bigger than the client link (tailscale0, MTU 1280) with DF set:
/// fragmentation needed to the backend, quoting its packet as it sent it,
/// next-hop MTU 1280; nothing leaves towards the client.
#[test]
fn frag_needed_carries_the_next_hop_mtu() {
    let Some(mut h) = Host::for_test(64, RULES) else {
        return;
    };
    let peer = ep(PEER, 50000);
    let listen = ep(TS_LISTEN, 443);
    let syn = tcp(peer, listen, "S", &[])[ETH..].to_vec();
    // L3 frames run as CHECKSUM_NONE: test_run puts their network header
    // 14 bytes in (it assumes Ethernet).
    let r = h
        .run_with(Hook::TcIngress, h.ts, &syn, Csum::None, None)
        .unwrap();
    assert_eq!(r.verdict, TC_ACT_REDIRECT, "the peer's SYN is forwarded");
    // The VM's big reply, to the SNAT address and port the flow got.
    let st = h.snapshot().unwrap();
    let (snat_port, _) = st
        .flows
        .iter()
        .find_map(|(k, _)| {
            (k.src[0] == u32::from_ne_bytes(VM)).then_some((u16::from_be(k.dport), ()))
        })
        .expect("the reply entry");
    let vm = ep(VM, 443);
    let big = tcp(vm, ep(HOST_VM, snat_port), "PA", &[b'x'; 1300]);
    let c = answered(
        "DF reply above the client link's MTU",
        VM_IF,
        big.clone(),
        Reason::ReplyFragNeeded,
        icmp_answer(&big, HOST_VM, 3, 4, [0, 0, 0x05, 0x00]),
    );
    run(&mut h, &c);
}

/// Fragments: the first carries the ports and is translated with its flow;
/// a later one (no L4 header) gets the same address rewrite; one whose
/// first fragment never came is left to the stack.
#[test]
fn later_fragments_follow_their_first_and_strays_are_left_alone() {
    let Some(mut h) = Host::for_test(64, RULES) else {
        return;
    };
    let client = ep(CLIENT, 40002);
    let dns = ep(HOST_LAN, 5353);
    // A 3000-byte datagram cut by hand: the first fragment (MF, offset 0)
    // with the UDP header, a later one (offset 1480).
    let whole = udp(client, dns, &[7u8; 3000]);
    let mut first = whole[..ETH + 1500].to_vec();
    set_frag(&mut first, 1500, 0x2000, 0x1234);
    let mut later = whole[..ETH + 20].to_vec();
    later.extend_from_slice(&whole[ETH + 1500..ETH + 1500 + 400]);
    set_frag(&mut later, 420, 1480 / 8, 0x1234);
    let mut stray = later.clone();
    set_frag(&mut stray, 420, 1480 / 8, 0x9999);

    let r = h.run(Hook::TcIngress, h.lan, &first).unwrap();
    assert_eq!(r.verdict, TC_ACT_REDIRECT, "first fragment forwarded");
    let p = verify_ip("first fragment", &r.out);
    assert_eq!(p.source(), HOST_VM, "first fragment SNATed");
    let snat_src = p.source();

    let before = h.snapshot().unwrap();
    let r = h.run(Hook::TcIngress, h.lan, &later).unwrap();
    let d = before.delta(&h.snapshot().unwrap());
    assert_eq!(
        r.verdict,
        TC_ACT_REDIRECT,
        "later fragment forwarded: {:?}",
        d.moved()
    );
    let want = one_counter(
        LAN_IF,
        Hook::TcIngress,
        Some(Reason::FwdRedirect),
        later.len(),
    );
    assert_counters("later fragment", &d, &want);
    let p = verify_ip("later fragment", &r.out);
    assert_eq!(
        (p.source(), p.destination()),
        (snat_src, VM),
        "same rewrite"
    );
    assert_eq!(p.ttl(), 63, "TTL decremented");
    assert_eq!(&r.out[ETH + 20..], &later[ETH + 20..], "payload untouched");

    let before = h.snapshot().unwrap();
    let r = h.run(Hook::TcIngress, h.lan, &stray).unwrap();
    let d = before.delta(&h.snapshot().unwrap());
    assert_eq!(
        r.verdict, TCX_NEXT,
        "a fragment without its first: the stack's"
    );
    let want = one_counter(
        LAN_IF,
        Hook::TcIngress,
        Some(Reason::PassFragment),
        stray.len(),
    );
    assert_counters("stray fragment", &d, &want);
    assert_bytes("stray fragment", &r.out, &stray);
}

/// An established flow's packet with IPv4 options is translated (the L4
/// header found after the options), options carried unchanged.
#[test]
fn ip_options_do_not_stop_translation() {
    let Some(mut h) = Host::for_test(64, RULES) else {
        return;
    };
    let client = ep(CLIENT, 40003);
    let web = ep(HOST_LAN, 80);
    let r = h
        .run(Hook::TcIngress, h.lan, &tcp(client, web, "S", &[]))
        .unwrap();
    assert_eq!(r.verdict, TC_ACT_REDIRECT);
    let snat_port = tcp_ports(&r.out).0;
    let with_opts = with_ip_options(&tcp(client, web, "PA", b"mid-flow"));
    let r = h.run(Hook::TcIngress, h.lan, &with_opts).unwrap();
    assert_eq!(r.verdict, TC_ACT_REDIRECT, "translated despite options");
    let p = verify("options mid-flow", &r.out, false);
    assert_eq!(p.src, ep(HOST_VM, snat_port), "same SNAT as the flow");
    assert_eq!(p.dst, ep(VM, 80));
    assert_eq!(r.out[ETH] & 0x0f, 6, "options kept");
    assert_eq!(&r.out[ETH + 20..ETH + 24], &with_opts[ETH + 20..ETH + 24]);
}

/// Sets total length, frag_off and ID of the IPv4 header and fixes its
/// checksum.
fn set_frag(frame: &mut [u8], tot_len: u16, frag_off: u16, id: u16) {
    let ip = &mut frame[ETH..ETH + 20];
    ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let h = Ipv4HeaderSlice::from_slice(ip).unwrap().to_header();
    let c = h.calc_header_checksum();
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

fn verify_ip<'a>(case: &str, out: &'a [u8]) -> Ipv4HeaderSlice<'a> {
    let p = Ipv4HeaderSlice::from_slice(&out[ETH..]).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(
        p.header_checksum(),
        p.to_header().calc_header_checksum(),
        "{case}: IPv4 checksum"
    );
    p
}

fn tcp_ports(frame: &[u8]) -> (u16, u16) {
    let l4 = &frame[ETH + 20..];
    (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}
