//! Internet checksum arithmetic (RFC 1071, RFC 1624) for the XDP path,
//! where the kernel's skb checksum helpers do not exist, and for TC's
//! combined updates (one summed diff per checksum instead of a helper call
//! per field; the IPv4 header checksum, which always covers complete data,
//! updated by hand). Pure functions so they are unit-tested on the host
//! against full recomputation.
//!
//! All 16-bit values are as they sit in the packet, read with
//! `u16::from_be_bytes`; 32-bit values likewise (`u32::from_be_bytes`).
//! (Ones'-complement sums do not depend on byte order, so values loaded
//! natively work as well when the checksum field is loaded the same way.)

/// Folds a 32-bit ones'-complement accumulator to 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 eqn. 3: the checksum field `check` after a 16-bit word of the
/// covered data changes from `old` to `new`: HC' = ~(~HC + ~m + m').
#[inline(always)]
pub const fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u32 + (!old) as u32 + new as u32)
}

/// The same for a 32-bit value (two adjacent, 16-bit aligned words).
#[inline(always)]
pub const fn replace32(check: u16, old: u32, new: u32) -> u16 {
    let c = replace16(check, (old >> 16) as u16, (new >> 16) as u16);
    replace16(c, old as u16, new as u16)
}

/// 32-bit ones'-complement addition (end-around carry): the kernel's
/// `csum_add`. The result is the integer sum reduced into 1..=u32::MAX (0
/// only for two zeros), so any order of additions gives the same bits.
#[inline(always)]
pub const fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(carry as u32)
}

/// What changing a 32-bit value of the covered data from `old` to `new`
/// adds to its ones'-complement sum: `~old + new`, the `diff` that
/// `bpf_l4_csum_replace` takes with a size of 0 (and `csum_diff` of one
/// word). Sum several with `add` to update a checksum once for them all.
/// Values as loaded from the packet (any byte order, as long as the
/// checksum field is read the same way).
#[inline(always)]
pub const fn diff32(old: u32, new: u32) -> u32 {
    add(!old, new)
}

/// `diff32` for a 16-bit value at an even offset of the covered data.
#[inline(always)]
pub const fn diff16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// The checksum field `check` after changes whose `diff`s were summed:
/// the kernel's `csum_replace_by_diff` (`~fold(~check + diff)`), for a
/// checksum that always covers complete data (the IPv4 header's).
#[inline(always)]
pub const fn apply_diff(check: u16, diff: u32) -> u16 {
    !fold(add((!check) as u32, diff))
}

/// What the L4 checksum field holds when the sender left the checksum to
/// offload (CHECKSUM_PARTIAL): the folded, *uncomplemented* pseudo-header
/// sum (`~csum_tcpudp_magic(saddr, daddr, len, proto, 0)` in the kernel).
/// A complete checksum equals this only by a 1-in-65536 coincidence, so a
/// field with this value marks a frame XDP must leave to TC: incremental
/// updates of a partial sum go the wrong way, and a redirected XDP frame
/// loses the "finish the checksum" note the skb carried.
#[inline(always)]
pub const fn pseudo_header_sum(saddr: u32, daddr: u32, proto: u8, l4_len: u16) -> u16 {
    fold(
        (saddr >> 16)
            + (saddr & 0xffff)
            + (daddr >> 16)
            + (daddr & 0xffff)
            + proto as u32
            + l4_len as u32,
    )
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    /// Full RFC 1071 checksum of `data` (the reference).
    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += w as u32;
        }
        !fold(sum)
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn incremental_updates_match_recomputation() {
        let mut seed = 7;
        for _ in 0..2000 {
            let mut data: Vec<u8> = (0..40).map(|_| lcg(&mut seed) as u8).collect();
            let check = checksum(&data);
            // A 16-bit word at an even offset.
            let at = (lcg(&mut seed) as usize % 20) * 2;
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            let new = lcg(&mut seed) as u16;
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let inc = replace16(check, old, new);
            // ±0 are the same ones'-complement number; verification is what
            // matters: the data with the new checksum sums to all ones.
            assert_eq!(
                checksum(&data),
                inc,
                "replace16 at {at}: {old:#x} -> {new:#x}"
            );
            // A 32-bit value.
            let at = (lcg(&mut seed) as usize % 9) * 4;
            let check = checksum(&data);
            let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            let new = lcg(&mut seed) as u32 ^ 0xdead_beef;
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            assert_eq!(checksum(&data), replace32(check, old, new), "replace32");
        }
    }

    /// One summed diff gives the checksum the per-field updates give (the
    /// kernel helpers' sequence that `nat::apply` replaced), bit for bit.
    #[test]
    fn summed_diffs_match_per_field_updates() {
        let mut seed = 11;
        for _ in 0..20000 {
            let mut data: Vec<u8> = (0..40).map(|_| lcg(&mut seed) as u8).collect();
            let check = checksum(&data);
            let (a, b, w) = (
                (lcg(&mut seed) as usize % 5) * 4,
                20 + (lcg(&mut seed) as usize % 5) * 4,
                (lcg(&mut seed) as usize % 20) * 2,
            );
            let old_a = u32::from_be_bytes(data[a..a + 4].try_into().unwrap());
            let old_b = u32::from_be_bytes(data[b..b + 4].try_into().unwrap());
            let (new_a, new_b) = (lcg(&mut seed) as u32, lcg(&mut seed) as u32 ^ 0x5a5a_0f0f);
            // Sometimes unchanged (the no-NAT case: a zero-effect diff).
            let new_a = if lcg(&mut seed).is_multiple_of(4) {
                old_a
            } else {
                new_a
            };
            data[a..a + 4].copy_from_slice(&new_a.to_be_bytes());
            data[b..b + 4].copy_from_slice(&new_b.to_be_bytes());
            let old_w = u16::from_be_bytes([data[w], data[w + 1]]);
            let new_w = lcg(&mut seed) as u16;
            data[w..w + 2].copy_from_slice(&new_w.to_be_bytes());
            let stepwise = replace16(
                replace32(replace32(check, old_a, new_a), old_b, new_b),
                old_w,
                new_w,
            );
            let diff = add(
                add(diff32(old_a, new_a), diff32(old_b, new_b)),
                diff16(old_w, new_w),
            );
            assert_eq!(apply_diff(check, diff), stepwise);
            // And it verifies: the data's sum plus the checksum is all ones.
            let v = apply_diff(check, diff);
            assert_eq!(fold((!checksum(&data)) as u32 + v as u32), 0xffff);
        }
    }

    #[test]
    fn add_carries_around() {
        assert_eq!(add(0xffff_ffff, 1), 1);
        assert_eq!(add(0x8000_0000, 0x8000_0000), 1);
        assert_eq!(add(0, 0), 0);
        assert_eq!(diff32(7, 7), 0xffff_ffff, "no change: a zero (all ones)");
        assert_eq!(apply_diff(0x1234, diff32(9, 9)), 0x1234);
    }

    #[test]
    fn pseudo_header_sum_is_the_partial_value_linux_writes() {
        // 10.0.0.1 -> 10.0.0.2, TCP, 20 bytes: 0x0a00+0x0001+0x0a00+0x0002+6+20
        let s = pseudo_header_sum(0x0a00_0001, 0x0a00_0002, 6, 20);
        assert_eq!(s, 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 20);
        // Carries fold.
        let s = pseudo_header_sum(0xffff_ffff, 0xffff_ffff, 17, 0xffff);
        assert_eq!(
            s,
            fold(0xffff * 4 + 17 + 0xffff),
            "folded with end-around carry"
        );
    }
}
