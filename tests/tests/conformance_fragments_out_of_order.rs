//! CONFORMANCE.md row "out-of-order fragments" (RFC 4787 REQ-14): a
//! datagram whose fragments arrive last-first. netfilter defragments in
//! PREROUTING, so the order does not matter: the backend gets the
//! datagram. The forwarder translates fragments without reassembling
//! them: a non-first fragment that comes before its first fragment cannot
//! be matched to a flow, is passed to the stack untouched
//! (`pass_fragment`), and the datagram is lost, a documented difference
//! (docs/CONFORMANCE.md, Fragments). The same datagram in order then
//! arrives through both, which proves the harness.
//!
//! ```text
//! client 10.1.0.2 ── eth0 10.1.0.1:5000 [router] br1 10.2.0.1 ── backend 10.2.0.2:5000
//!   raw fragments (id 0x4242: 2nd, 1st; id 0x4343: 1st, 2nd)
//! ```
use std::time::Duration;

use anyhow::Result;
use etherparse::PacketBuilder;
use forwarder_tests::{
    conformance::{
        install, sa, Forward, Nat, RawSender, Topo, TopoOpts, UdpServer, BACKEND, CLIENT,
        ROUTER_LAN,
    },
    netns,
    process::wait_for,
    require_root,
};

const PORT: u16 = 5000;
const LEN: usize = 2000;

/// A UDP datagram of `LEN` bytes from the client to the forward, as two
/// IPv4 fragments with identification `id`, first fragment first.
fn fragments(id: u16) -> Result<[Vec<u8>; 2]> {
    let mut whole = Vec::new();
    PacketBuilder::ipv4(CLIENT.octets(), ROUTER_LAN.octets(), 64)
        .udp(41000, PORT)
        .write(&mut whole, &[0x5a; LEN])?;
    let (header, l4) = whole.split_at(20);
    // The first fragment carries 1480 bytes (a multiple of 8): the UDP
    // header and the start of the payload.
    let cut = 1480;
    let frag = |data: &[u8], offset: usize, more: bool| {
        let mut p = header.to_vec();
        p.extend_from_slice(data);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        let flags_offset = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = ip_checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    };
    Ok([frag(&l4[..cut], 0, true), frag(&l4[cut..], cut, false)])
}

/// The IPv4 header checksum (RFC 791): the ones' complement sum.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn out_of_order(nat: Nat) -> Result<()> {
    netns::sweep();
    let t = Topo::build(TopoOpts::default())?;
    let server = UdpServer::start(&t.backend, sa(BACKEND, PORT), 0)?;
    let mut f = Forward::new("udp", PORT, BACKEND, PORT);
    f.snat = false;
    let inst = install(&t, nat, &f)?;
    let raw = RawSender::open(&t.client)?;
    let arrived = |n: usize, secs: u64| {
        wait_for(Duration::from_secs(secs), || {
            (server.seen().iter().filter(|s| s.len == LEN).count() >= n).then_some(())
        })
    };

    let [first, second] = fragments(0x4242)?;
    raw.send(&second)?;
    raw.send(&first)?;
    let reversed = arrived(1, 5).is_some();

    let [first, second] = fragments(0x4343)?;
    raw.send(&first)?;
    raw.send(&second)?;
    let want = if reversed { 2 } else { 1 };
    assert!(
        arrived(want, 20).is_some(),
        "{nat:?}: in order: {:?}",
        server.seen()
    );
    match nat {
        Nat::Iptables => assert!(reversed, "netfilter reassembles any order"),
        Nat::Forwarder => {
            assert!(
                !reversed,
                "the forwarder does not reassemble: {:?}",
                server.seen()
            );
            assert!(inst.reason_count("pass_fragment")? >= 1);
        }
    }
    Ok(())
}

#[test]
fn iptables_delivers_a_datagram_whose_fragments_come_last_first() -> Result<()> {
    if !require_root("iptables_delivers_a_datagram_whose_fragments_come_last_first") {
        return Ok(());
    }
    out_of_order(Nat::Iptables)
}

#[test]
fn forwarder_loses_a_datagram_whose_fragments_come_last_first() -> Result<()> {
    if !require_root("forwarder_loses_a_datagram_whose_fragments_come_last_first") {
        return Ok(());
    }
    out_of_order(Nat::Forwarder)
}
