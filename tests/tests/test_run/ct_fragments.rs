//! A TCP segment in fragments through an established flow. The first
//! fragment carries the TCP header and goes through the state machine; a
//! later one (tied to the flow through the first's ports, forwarder-ebpf's
//! `frag`) carries none: what sits where a header would be is payload, and
//! reading it as sequence number and window would let any sender of
//! fragments move a flow's tracking. Through BPF_PROG_TEST_RUN.

use super::ct_support::*;
use forwarder_common::{conntrack::CtState, Hook, Reason};
use forwarder_tests::{
    require_root,
    testrun::frames::{patch_ip, ETH},
};

/// `frame` (Ethernet + IPv4) with this total length, IP ID and
/// fragment field (flags and offset in 8-byte units), checksum fixed.
fn fragment(frame: Vec<u8>, tot_len: usize, id: u16, frag: u16) -> Vec<u8> {
    let mut b = [0u8; 6];
    b[0..2].copy_from_slice(&(tot_len as u16).to_be_bytes());
    b[2..4].copy_from_slice(&id.to_be_bytes());
    b[4..6].copy_from_slice(&frag.to_be_bytes());
    patch_ip(frame, 2, &b)
}

#[test]
fn a_later_fragments_payload_is_not_read_as_a_tcp_header() {
    if !require_root("a_later_fragments_payload_is_not_read_as_a_tcp_header") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let mut c = Conn::established(&mut h, ep(CLIENT, 40100), ep(HOST_LAN, 80), ep(VM, 80));
    let (o, r) = (c.orig(), c.reply());
    // 2500 bytes of data, cut after 1480 bytes of IP payload (the TCP
    // header and 1460 bytes). Where the later fragment starts, bytes that
    // read as a TCP header: a sequence number far ahead, a full window.
    let mut data = vec![0x5au8; 2500];
    let fake_seq = c.cseq.wrapping_add(1 << 30);
    data[1460 + 4..1460 + 8].copy_from_slice(&fake_seq.to_be_bytes());
    data[1460 + 14..1460 + 16].copy_from_slice(&[0xff, 0xff]);
    let whole = c.client_sends("PA", &data);
    let ip_len = whole.len() - ETH;
    let first = fragment(whole[..ETH + 1500].to_vec(), 1500, 0x4321, 0x2000);
    let mut later = whole[..ETH + 20].to_vec();
    later.extend_from_slice(&whole[ETH + 1500..]);
    let later = fragment(later, 20 + ip_len - 1500, 0x4321, 1480 / 8);

    let ran = run(&mut h, Hook::TcIngress, LAN_IF, &first);
    assert_eq!(ran.verdict, TC_ACT_REDIRECT, "first fragment forwarded");
    let track = |snap: &Snapshot| (entry("", snap, &o).ct, entry("", snap, &r).ct);
    let before = track(&ran.after);

    let ran = run(&mut h, Hook::TcIngress, LAN_IF, &later);
    assert_eq!(
        ran.verdict,
        TC_ACT_REDIRECT,
        "later fragment forwarded: {:?}",
        ran.delta.moved()
    );
    assert_counters(
        "later fragment",
        &ran.delta,
        &one_counter(
            LAN_IF,
            Hook::TcIngress,
            Some(Reason::FwdRedirect),
            later.len(),
        ),
    );
    assert_eq!(
        &ran.out[ETH + 16..ETH + 20],
        &VM[..],
        "later fragment sent to the backend"
    );
    assert_eq!(
        track(&ran.after),
        before,
        "the later fragment moved the flow's tracking"
    );
    assert_eq!(state("after", &ran.after, &o, &r), CtState::Established);
}
