//! The frames and flow entries bench_prog feeds the program: TCP over
//! IPv4 with correct checksums (TTL 255: room for the repeated runs'
//! decrements), and established-flow entries.
use forwarder_common::{addr_v4, FlowEntry, FlowFlags, FlowKey, Seen, AF_INET, PROTO_TCP};

use super::RULE_NAT;

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum()
}

/// An Ethernet + IPv4 (TTL 255) + TCP frame with correct checksums.
pub fn tcp_frame(
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let tot = (20 + 20 + payload) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&tot.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 255;
    ip[9] = PROTO_TCP;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum_fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20 + payload];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    for (i, b) in tcp[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, PROTO_TCP]);
    pseudo.extend_from_slice(&((20 + payload) as u16).to_be_bytes());
    let c = csum_fold(sum16(&pseudo) + sum16(&tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&tcp);
    f
}

pub const ACK_PSH: u8 = 0x18;
pub const SYN: u8 = 0x02;

pub fn key(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src: addr_v4(src),
        dst: addr_v4(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: PROTO_TCP,
        family: AF_INET,
        _pad: [0; 2],
    }
}

/// An established-flow entry translating into `to`.
pub fn entry_to(to: &FlowKey, flags: FlowFlags) -> FlowEntry {
    FlowEntry {
        new_src: to.src,
        new_dst: to.dst,
        new_sport: to.sport,
        new_dport: to.dport,
        rule_id: RULE_NAT,
        flags,
        tcp_seen: Seen::SYN | Seen::ACK,
        ..Default::default()
    }
}
