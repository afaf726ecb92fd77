//! The frames a translation must produce, built from the input frame with
//! `frames`' own checksum arithmetic (no code shared with the programs):
//! the tests compare the programs' output with these byte for byte, after
//! etherparse has checked every field and checksum of it.
use super::frames::{fix_checksums, set_tuple, Ep, Ip, Mac, ETH};

/// What a translated packet must look like.
#[derive(Clone, Debug)]
pub struct Xlate {
    pub src: Ep,
    pub dst: Ep,
    /// Redirected past the stack: TTL decremented.
    pub dec_ttl: bool,
    /// The MSS option's new value.
    pub mss: Option<u16>,
    /// An L3 packet redirected to an Ethernet device: zeroed MAC header
    /// with EtherType IPv4 pushed in front.
    pub push_eth: bool,
}

/// Translated to `src` -> `dst` and redirected (TTL decremented).
pub fn redirect(src: Ep, dst: Ep) -> Xlate {
    Xlate {
        src,
        dst,
        dec_ttl: true,
        mss: None,
        push_eth: false,
    }
}

/// Translated to `src` -> `dst` and left to the stack (TTL untouched: the
/// stack decrements it when it forwards).
pub fn via_stack(src: Ep, dst: Ep) -> Xlate {
    Xlate {
        dec_ttl: false,
        ..redirect(src, dst)
    }
}

/// Offset of the MSS option's value in the TCP header at `tcp`.
pub fn mss_offset(tcp: &[u8]) -> Option<usize> {
    let end = usize::from(tcp[12] >> 4) * 4;
    let mut at = 20;
    while at < end {
        match tcp[at] {
            0 => return None,
            1 => at += 1,
            2 => return Some(at + 2),
            _ => at += usize::from(tcp[at + 1]),
        }
    }
    None
}

/// The expected output for input `frame` (Ethernet unless `l3_in`).
pub fn expect_xlate(frame: &[u8], l3_in: bool, x: &Xlate) -> Vec<u8> {
    let l3 = if l3_in { 0 } else { ETH };
    let mut f = frame.to_vec();
    let ip = &mut f[l3..];
    set_tuple(ip, x.src, x.dst);
    if x.dec_ttl {
        ip[8] -= 1;
    }
    if let Some(m) = x.mss {
        let at = 20 + mss_offset(&ip[20..]).expect("input has an MSS option");
        ip[at..at + 2].copy_from_slice(&m.to_be_bytes());
    }
    fix_checksums(ip);
    if x.push_eth {
        let mut e = vec![0u8; ETH];
        e[12..14].copy_from_slice(&[0x08, 0x00]);
        e.extend_from_slice(&f);
        return e;
    }
    f
}

/// The expected output for an ICMP error redirected onward: outer
/// addresses, TTL one less, the quoted packet's tuple, every checksum
/// recomputed.
pub fn expect_icmp_error(frame: &[u8], outer_src: Ip, outer_dst: Ip, inner: (Ep, Ep)) -> Vec<u8> {
    let mut f = frame.to_vec();
    let ip = &mut f[ETH..];
    ip[12..16].copy_from_slice(&outer_src);
    ip[16..20].copy_from_slice(&outer_dst);
    ip[8] -= 1;
    set_tuple(&mut ip[28..], inner.0, inner.1);
    fix_checksums(ip);
    f
}

/// What a frame redirected by the XDP accelerator must be: `frame` with
/// this tuple, TTL one less, these MACs and every checksum recomputed.
pub fn expect_xdp_fwd(frame: &[u8], src: Ep, dst: Ep, dmac: Mac, smac: Mac) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[0..6].copy_from_slice(&dmac);
    f[6..12].copy_from_slice(&smac);
    let ip = &mut f[ETH..];
    ip[8] -= 1;
    set_tuple(ip, src, dst);
    fix_checksums(ip);
    f
}
