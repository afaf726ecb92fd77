//! Interface counters: every packet on a registered interface is counted
//! once, under exactly one reason, with its whole frame length (what the
//! kernel's own RX counters count, which `attach_counters.rs` compares on
//! real traffic); a packet on an interface the dataplane does not know is
//! not counted at all. No rules are loaded here, so every IPv4 packet that
//! is not set aside for a reason of its own is "no match".
//!
//! The IPv4 header edits below leave the header checksum stale on purpose:
//! the programs do not check it (the stack does, after them), so counting
//! must not depend on it.
use forwarder_common::Reason;
use forwarder_tests::testrun::{
    frames::{arp, ep, tcp, CLIENT, ETH},
    tc::*,
    Host, HOST_LAN, LAN_IF, TCX_NEXT,
};

/// Sets bytes of the IPv4 header (offset from its start) and nothing else.
fn with_ip_bytes(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[ETH + at..ETH + at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// `frame` with one word of IPv4 options (NOPs, IHL 6) and its total
/// length to match.
fn with_options(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[ETH] = 0x46;
    f.splice(ETH + 20..ETH + 20, [1u8, 1, 1, 1]);
    let tl = (f.len() - ETH) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&tl.to_be_bytes());
    f
}

#[test]
fn each_packet_is_counted_once_under_its_reason_with_its_frame_length() {
    let Some(mut h) = Host::for_test(64, "") else {
        return;
    };
    let syn = tcp(ep(CLIENT, 40000), ep(HOST_LAN, 80), "S", b"hello");
    let counted = |r: Reason| {
        move |description: &str, input: Vec<u8>| {
            ingress(description, LAN_IF, input).expect(TCX_NEXT, r)
        }
    };
    let rows = [
        counted(Reason::PassNoMatch)("tcp syn", syn.clone()),
        counted(Reason::PassNotIpv4)("arp", arp(CLIENT)),
        counted(Reason::PassMalformed)(
            "ihl beyond total length",
            with_ip_bytes(syn.clone(), 0, &[0x4f]),
        ),
        counted(Reason::PassMalformed)(
            "total length below header",
            with_ip_bytes(syn.clone(), 2, &[0x00, 0x10]),
        ),
        counted(Reason::PassMalformed)(
            "ip version 6 in ipv4 ethertype",
            with_ip_bytes(syn.clone(), 0, &[0x65]),
        ),
        // A first fragment has its ports: parsed, and here no listener.
        counted(Reason::PassNoMatch)(
            "first fragment",
            with_ip_bytes(syn.clone(), 6, &[0x20, 0x00]),
        ),
        counted(Reason::PassFragment)(
            "later fragment",
            with_ip_bytes(syn.clone(), 6, &[0x00, 0x10]),
        ),
        counted(Reason::PassMalformed)(
            "total length beyond frame",
            with_ip_bytes(syn.clone(), 2, &[0x05, 0xdc]),
        ),
        // Options are skipped to the L4 header: parsed, no listener.
        counted(Reason::PassNoMatch)("ip options", with_options(&syn)),
    ];
    steps_leave_flows_alone(&mut h, &rows);
}

#[test]
fn an_interface_taken_out_of_the_registry_is_no_longer_counted() {
    let Some(mut h) = Host::for_test(64, "") else {
        return;
    };
    let syn = tcp(ep(CLIENT, 40000), ep(HOST_LAN, 80), "S", b"x");
    step(&mut h, &ingress("registered: counted", LAN_IF, syn.clone()));
    h.unregister_iface(LAN_IF).unwrap();
    step(
        &mut h,
        &ingress("unregistered: not counted", LAN_IF, syn).uncounted(),
    );
}
