//! Independent checksum arithmetic (RFC 1071), to build the frames a test
//! expects from the frames it sent (`expect`): no code shared with the
//! programs, so a checksum bug there cannot hide in both.
use forwarder_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use super::fixture::Ep;

pub fn sum16(data: &[u8]) -> u32 {
    let mut s = 0u32;
    for c in data.chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    s
}

pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// RFC 1071 checksum of `data` (its checksum field zeroed) plus `extra`.
fn inet_csum(data: &[u8], extra: u32) -> u16 {
    !fold(sum16(data) + extra)
}

fn pseudo(ip: &[u8], proto: u8, len: usize) -> u32 {
    sum16(&ip[12..20]) + u32::from(proto) + len as u32
}

/// The pseudo-header sum of the IPv4 packet `ip` (folded, not
/// complemented): what a sender that leaves the checksum to offload
/// (CHECKSUM_PARTIAL) writes into the TCP/UDP checksum field.
pub fn pseudo_sum(ip: &[u8]) -> u16 {
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    fold(pseudo(ip, ip[9], tot - 20))
}

/// Fixes the checksum of the IPv4 header `hdr`, whatever its IHL says: the
/// checksum covers the bytes given.
pub fn fix_ip_header(hdr: &mut [u8]) {
    if hdr.len() < 12 {
        return;
    }
    hdr[10..12].copy_from_slice(&[0, 0]);
    let c = inet_csum(hdr, 0);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes every checksum of the IPv4 packet at `ip[..]`: the header,
/// then TCP / UDP (a zero UDP checksum means "none" and stays zero; a
/// computed zero is sent as all ones) / ICMP, only over what is present (a
/// quoted packet may be cut short: its L4 checksum is left alone unless the
/// whole segment is there; bytes beyond the total length, Ethernet padding,
/// are not covered). ICMP errors get their quoted packet fixed first.
pub fn fix_checksums(ip: &mut [u8]) {
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    fix_ip_header(&mut ip[..20]);
    if ip.len() < tot {
        return; // a truncated quote: the L4 checksum cannot be computed
    }
    let proto = ip[9];
    let (hdr, l4) = ip.split_at_mut(20);
    let l4 = &mut l4[..tot - 20];
    match proto {
        PROTO_TCP => {
            l4[16..18].copy_from_slice(&[0, 0]);
            let c = inet_csum(l4, pseudo(hdr, proto, l4.len()));
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        // A zero UDP checksum means "none" and stays zero.
        PROTO_UDP if l4[6..8] != [0, 0] => {
            l4[6..8].copy_from_slice(&[0, 0]);
            let c = match inet_csum(l4, pseudo(hdr, proto, l4.len())) {
                0 => 0xffff,
                c => c,
            };
            l4[6..8].copy_from_slice(&c.to_be_bytes());
        }
        PROTO_ICMP => {
            if matches!(l4[0], 3 | 11 | 12) && l4.len() >= 28 {
                fix_checksums(&mut l4[8..]);
            }
            l4[2..4].copy_from_slice(&[0, 0]);
            let c = inet_csum(l4, 0);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

/// Rewrites the tuple of the IPv4 packet `ip` (ports; for ICMP echo the
/// identifier, taken from `src.port`) without fixing checksums.
pub fn set_tuple(ip: &mut [u8], src: Ep, dst: Ep) {
    ip[12..16].copy_from_slice(&src.ip);
    ip[16..20].copy_from_slice(&dst.ip);
    match ip[9] {
        PROTO_TCP | PROTO_UDP => {
            ip[20..22].copy_from_slice(&src.port.to_be_bytes());
            ip[22..24].copy_from_slice(&dst.port.to_be_bytes());
        }
        PROTO_ICMP => ip[24..26].copy_from_slice(&src.port.to_be_bytes()),
        _ => {}
    }
}
