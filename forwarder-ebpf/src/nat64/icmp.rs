//! ICMP errors from the IPv4 side about a NAT64 flow (the target, or a
//! router on the way to it, about a packet we translated), turned into the
//! ICMPv6 error the client understands (RFC 7915 4.2): fragmentation
//! needed -> packet too big with the MTU + 20 (at least 1280), port
//! unreachable -> port unreachable, net/host/other unreachable -> no route,
//! administratively prohibited -> prohibited, time exceeded -> time
//! exceeded (same code). Others (protocol unreachable, parameter problem,
//! source route failed) are dropped, as RFC 7915 allows for those it
//! cannot map one to one.
//!
//! The quoted packet is translated back to what the client sent: an IPv6
//! header client -> listen address, the client's ports. The quoted L4
//! checksum is left as it was (the ICMPv6 receiver does not check it; the
//! quote is usually cut short of the data it covers anyway). The outer
//! source is the forward's listen address: an IPv4 router has no IPv6
//! address to name, and the client knows no other.
//!
//! The fact a reader gets wrong: the message grows by 40 bytes (20 in each
//! IP header), and its checksum gains a pseudo-header. Both are done in
//! one go: the first 36 bytes of the ICMP message (ICMP header, quoted
//! IPv4 header, 8 bytes of quoted L4) are replaced by 56 new ones, and the
//! checksum moves by their difference plus the pseudo-header, without
//! summing the rest of the quote.
use aya_ebpf::programs::TcContext;
use forwarder_common::{FlowFlags, FlowKey, Reason, PROTO_TCP, PROTO_UDP};

use super::{back, mtu_for_client};
use crate::{
    conntrack,
    error::{log_rewrite_failed, RewriteError},
    evict,
    hdr::{ETH_TYPE, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, IPV4_HLEN},
    helpers::{
        skb::{self, Store},
        xlat,
    },
    ipv6::parse::{ETH_P_IPV6, IPV6_HLEN},
    maps,
    parse::Packet,
    reply::{fold, scratch},
    verdict::Verdict,
};

const ICMP_HLEN: usize = 8;
/// What is read of the IPv4 error: its ICMP header, the quoted IPv4
/// header (without options) and the quoted L4 header's first 8 bytes.
const OLD_LEN: usize = ICMP_HLEN + IPV4_HLEN + 8;
/// What replaces it: ICMPv6 header, quoted IPv6 header, the same 8 bytes.
const NEW_LEN: usize = ICMP_HLEN + IPV6_HLEN + 8;
/// The new outer header and the new head of the message, in the reply
/// scratch space.
const HEAD: usize = IPV6_HLEN + NEW_LEN;
const _: () = assert!(HEAD <= crate::reply::SCRATCH_LEN);
const PROTO_ICMPV6: u8 = 58;

/// The ICMPv6 type and code for an ICMP error's, or `None` (dropped).
#[inline(always)]
fn icmpv6_type(ty: u8, code: u8) -> Option<(u8, u8)> {
    match (ty, code) {
        (ICMP_DEST_UNREACH, 4) => Some((2, 0)),
        (ICMP_DEST_UNREACH, 3) => Some((1, 4)),
        (ICMP_DEST_UNREACH, 9 | 10 | 13) => Some((1, 1)),
        (ICMP_DEST_UNREACH, 0 | 1 | 5..=8 | 11 | 12) => Some((1, 0)),
        (ICMP_TIME_EXCEEDED, 0 | 1) => Some((3, code)),
        _ => None,
    }
}

/// Translates ICMP error `p` about a NAT64 flow (see the module comment)
/// and sends it to the client; anything else is left alone.
// Own frame: its buffers stay off `back::run`'s.
#[inline(never)]
pub fn translate(ctx: &TcContext, p: &Packet, ifindex: u32) -> Verdict {
    const NOT_OURS: Verdict = Verdict::next(Reason::PassNoMatch);
    if p.l4 != p.l3 + IPV4_HLEN {
        return NOT_OURS;
    }
    let mut old = [0u8; OLD_LEN];
    if skb::load_bytes(ctx, p.l4, &mut old).is_err() {
        return NOT_OURS;
    }
    let Some((ty, code)) = icmpv6_type(old[0], old[1]) else {
        return NOT_OURS;
    };
    let inner = &old[ICMP_HLEN..ICMP_HLEN + IPV4_HLEN];
    let proto = inner[9];
    if inner[0] != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return NOT_OURS;
    }
    let word = |o: usize| u32::from_ne_bytes([old[o], old[o + 1], old[o + 2], old[o + 3]]);
    let port = |o: usize| u16::from_ne_bytes([old[o], old[o + 1]]);
    let (src, dst) = (word(ICMP_HLEN + 12), word(ICMP_HLEN + 16));
    let l4 = ICMP_HLEN + IPV4_HLEN;
    // The quote went out translated; the error travels back the way its
    // replies do: the reply entry's key (as `icmp::error`).
    // Built off the stack (see `evict::spare_key`).
    let Some(key) = evict::spare_key() else {
        return NOT_OURS;
    };
    *key = FlowKey::v4(dst, src, port(l4 + 2), port(l4), proto);
    let Some(flow) = maps::flow_at(key) else {
        return NOT_OURS;
    };
    let e = flow.entry();
    if !e.flags.contains(FlowFlags::XLAT | FlowFlags::REPLY) {
        return NOT_OURS;
    }
    if !conntrack::arrived_right(e, ifindex) {
        return Verdict::next(Reason::PassWrongIface);
    }
    if p.ttl <= 1 {
        // No error about an error (RFC 1812 4.3.2.7).
        return Verdict::shot(Reason::DropError);
    }
    let (oif, fib) = match back::next_hop(ctx, PROTO_ICMPV6, e, 0) {
        Ok(next) => next,
        Err(_) => return Verdict::shot(Reason::DropError),
    };
    let rule_id = e.rule_id;
    let built =
        build(ctx, p, &mut old, (ty, code), e).and_then(|()| back::send(ctx, p.l3, oif, &fib));
    match built {
        Ok(v) => v,
        Err(err) => {
            log_rewrite_failed(ctx, rule_id, err);
            Verdict::shot(Reason::DropError)
        }
    }
}

/// Writes the new headers (into the reply scratch space, then over the
/// packet grown by 40 bytes) with the ICMPv6 checksum.
#[inline(always)]
fn build(
    ctx: &TcContext,
    p: &Packet,
    old: &mut [u8; OLD_LEN],
    (ty, code): (u8, u8),
    e: &forwarder_common::FlowEntry,
) -> Result<(), RewriteError> {
    let buf = scratch().ok_or(RewriteError::Load)?;
    let icmp_len = p.tot_len - IPV4_HLEN as u16;
    // The ICMPv6 message: the quoted header grew by 20 bytes.
    let new_len = icmp_len + super::GROWTH;
    // Outer: listen address -> client, hop limit the TTL decremented.
    let (listen, client) = (&e.new_src, &e.new_dst);
    back::ipv6_header(
        &mut buf[..IPV6_HLEN],
        0,
        new_len,
        PROTO_ICMPV6,
        p.ttl - 1,
        listen,
        client,
    );
    // ICMPv6 header: a packet too big carries the MTU the client can use.
    let word = if ty == 2 {
        mtu_for_client(u16::from_be_bytes([old[6], old[7]])) as u32
    } else {
        0
    };
    let w = word.to_be_bytes();
    let m = IPV6_HLEN;
    buf[m..m + ICMP_HLEN].copy_from_slice(&[ty, code, 0, 0, w[0], w[1], w[2], w[3]]);
    // The quote as the client sent it: client -> listen address.
    let q = &old[ICMP_HLEN..ICMP_HLEN + IPV4_HLEN];
    let q_len = u16::from_be_bytes([q[2], q[3]]).saturating_sub(IPV4_HLEN as u16);
    let qi = m + ICMP_HLEN;
    back::ipv6_header(
        &mut buf[qi..qi + IPV6_HLEN],
        q[1],
        q_len,
        q[9],
        q[8],
        client,
        listen,
    );
    // Its first 8 L4 bytes with the client's ports.
    let l4 = qi + IPV6_HLEN;
    let o = ICMP_HLEN + IPV4_HLEN;
    buf[l4..l4 + 8].copy_from_slice(&old[o..o + 8]);
    buf[l4..l4 + 2].copy_from_slice(&e.new_dport.to_ne_bytes());
    buf[l4 + 2..l4 + 4].copy_from_slice(&e.new_sport.to_ne_bytes());

    // Checksum: the old one's sum without the replaced bytes, plus the new
    // bytes and the pseudo-header (addresses from the outer header, length
    // and next header as the seed).
    // The checksum field counts as zero in both.
    let old_sum = !u16::from_ne_bytes([old[2], old[3]]) as u32;
    old[2] = 0;
    old[3] = 0;
    let seed = old_sum
        + u32::from_ne_bytes([0, 0, (new_len >> 8) as u8, new_len as u8])
        + u32::from_ne_bytes([0, 0, 0, PROTO_ICMPV6]);
    let diff = xlat::csum_diff::<u8, u32>(&old[..], &[], seed).map_err(|_| RewriteError::L4Csum)?;
    let sum = skb::csum_sum(&buf[8..HEAD], diff).map_err(|_| RewriteError::L4Csum)?;
    buf[m + 2..m + 4].copy_from_slice(&fold(sum).to_ne_bytes());

    // Reshape: 20 bytes for the outer header (the family change), 20 for
    // the quoted one, both after the link header; the quoted L4 header
    // then sits where the new head ends.
    xlat::change_proto(ctx, ETH_P_IPV6).map_err(|_| RewriteError::ChangeProto)?;
    skb::grow_after_link_header(ctx, super::GROWTH as usize)
        .map_err(|_| RewriteError::ChangeProto)?;
    skb::store_bytes(ctx, p.l3, &buf[..HEAD], Store::RECOMPUTE_CSUM)
        .map_err(|_| RewriteError::StoreHeader)?;
    if p.l3 != 0 {
        skb::store(ctx, ETH_TYPE, &ETH_P_IPV6.to_be_bytes(), Store::PLAIN)
            .map_err(|_| RewriteError::StoreEthType)?;
    }
    Ok(())
}
