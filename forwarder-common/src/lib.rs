//! The one place that defines the kernel/userspace contract: every map and
//! program name, size default, layout, flag, verdict and shared constant
//! (`layout`, `maps`, `flags`, `counters`, `verdict`). Nothing of these is
//! redefined elsewhere "for convenience".
//!
//! Everything here is `#[repr(C)]`, has explicit padding fields (the verifier
//! rejects reads of uninitialised stack bytes, and hash keys must hash the same
//! on both sides), and is shared by `forwarder-ebpf` (no_std, bpfel) and the
//! userspace crates (with the `user` feature, which adds `aya::Pod`).
//!
//! Addresses are carried as `[u32; 4]` in network byte order as they sit in the
//! packet: IPv4 uses word 0 and zeroes the rest, so IPv6 can be added later
//! without changing any layout (the `family` byte tells them apart).
#![no_std]

#[cfg(test)]
extern crate std;

pub mod conntrack;
pub mod counters;
pub mod csum;
pub mod flags;
pub mod kernel;
pub mod layout;
pub mod maps;
pub mod verdict;

pub use counters::*;
pub use flags::*;
pub use kernel::*;
pub use layout::*;
pub use maps::*;
pub use verdict::*;

/// Bumped whenever a pinned map's layout changes. A daemon that finds pinned
/// maps of another version refuses to adopt them (see `forwarder down`).
pub const ABI_VERSION: u32 = 6;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// An IPv4 address as the ABI stores it (word 0, network byte order).
#[inline(always)]
pub const fn addr_v4(octets: [u8; 4]) -> [u32; 4] {
    addr_v4_word(u32::from_ne_bytes(octets))
}

/// An IPv4 address as the ABI stores it, from the 32-bit word as it sits
/// in the packet (read without byte swapping, so network byte order).
#[inline(always)]
pub const fn addr_v4_word(word: u32) -> [u32; 4] {
    [word, 0, 0, 0]
}

/// The octets of an ABI address holding IPv4.
#[inline(always)]
pub const fn addr_v4_octets(addr: &[u32; 4]) -> [u8; 4] {
    addr[0].to_ne_bytes()
}

/// An IPv6 address as the ABI stores it: the 16 bytes as they sit in the
/// packet, read as four native words.
#[inline(always)]
pub const fn addr_v6(o: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The octets of an ABI address holding IPv6.
#[inline(always)]
pub const fn addr_v6_octets(addr: &[u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        addr[0].to_ne_bytes(),
        addr[1].to_ne_bytes(),
        addr[2].to_ne_bytes(),
        addr[3].to_ne_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// The address an ABI address of `family` (`AF_INET` or `AF_INET6`)
/// holds; anything but `AF_INET6` is read as IPv4.
#[inline(always)]
pub fn abi_ip(addr: &[u32; 4], family: u8) -> core::net::IpAddr {
    if family == AF_INET6 {
        core::net::IpAddr::from(addr_v6_octets(addr))
    } else {
        core::net::IpAddr::from(addr_v4_octets(addr))
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, contain no pointers and have
    // explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for IfaceConfig {}
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for ListenerValue {}
    unsafe impl aya::Pod for AllowKey {}
    unsafe impl aya::Pod for RuleCounters {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for GlobalConfig {}
    unsafe impl aya::Pod for AutoSnatKey {}
    unsafe impl aya::Pod for RuleName {}
    unsafe impl aya::Pod for conntrack::CtConfig {}
    unsafe impl aya::Pod for AutoEvidence {}
    unsafe impl aya::Pod for RouteHint {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The sizes are part of the pinned-map ABI: changing one must bump ABI_VERSION.
    #[test]
    fn layouts_are_stable() {
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<IfaceConfig>(), 8);
        assert_eq!(size_of::<ListenerKey>(), 24);
        assert_eq!(size_of::<ListenerValue>(), 44);
        assert_eq!(size_of::<AllowKey>(), 20);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowEntry>(), 120);
        assert_eq!(size_of::<FibCache>(), 16);
        assert_eq!(size_of::<FlowTrack>(), 24);
        assert_eq!(size_of::<conntrack::CtConfig>(), 80);
        assert_eq!(size_of::<AutoEvidence>(), 32);
        assert_eq!(size_of::<GlobalConfig>(), 16);
        assert_eq!(
            size_of::<RuleCounters>(),
            8 * (6 + RULE_DROP_REASONS as usize)
        );
        assert_eq!(REASONS, 24, "the per-interface counter map's size");
        assert_eq!(ABI_VERSION, 6);
    }

    #[test]
    fn rule_names_roundtrip() {
        assert_eq!(RuleName::new("immich").as_str(), Some("immich"));
        assert_eq!(RuleName::default().as_str(), None);
        let long = "x".repeat(80);
        assert_eq!(RuleName::new(&long).as_str().unwrap().len(), RULE_NAME_MAX);
    }

    #[test]
    fn v6_roundtrip() {
        let o = [
            0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34,
        ];
        assert_eq!(addr_v6_octets(&addr_v6(o)), o);
        // Word 0 holds the first four bytes in packet order, as addr_v4 does.
        assert_eq!(addr_v6(o)[0], addr_v4([0xfd, 0x7a, 0x11, 0x5c])[0]);
    }

    #[test]
    fn abi_ip_reads_either_family() {
        let v6 = [0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80];
        assert_eq!(abi_ip(&addr_v6(v6), AF_INET6), core::net::IpAddr::from(v6));
        assert_eq!(
            abi_ip(&addr_v4([10, 0, 0, 1]), AF_INET),
            core::net::IpAddr::from([10, 0, 0, 1])
        );
    }

    #[test]
    fn v4_roundtrip() {
        let a = addr_v4([192, 168, 100, 80]);
        assert_eq!(addr_v4_octets(&a), [192, 168, 100, 80]);
        assert_eq!(a[1..], [0, 0, 0]);
        assert_eq!(a, addr_v4_word(u32::from_ne_bytes([192, 168, 100, 80])));
    }

    /// The bytes of a value, for checking that constructors leave no byte
    /// behind.
    fn bytes<T>(v: &T) -> &[u8] {
        // SAFETY: T is a repr(C) Pod of this crate; reading its bytes
        // (padding included, which the constructors set) is sound.
        unsafe { core::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
    }

    #[test]
    fn a_nat64_entrys_peer_key_is_of_the_other_family() {
        let mut e = FlowEntry {
            new_src: addr_v4([192, 168, 100, 1]),
            new_dst: addr_v4([192, 168, 100, 80]),
            new_sport: 41000u16.to_be(),
            new_dport: 80u16.to_be(),
            ..FlowEntry::default()
        };
        // A NAT66 (or NAT44) entry: the same family both ways.
        assert_eq!(FlowKey::peer_of(&e, PROTO_TCP, AF_INET6).family, AF_INET6);
        e.flags = FlowFlags::SNAT | FlowFlags::XLAT;
        // The client's IPv6 entry: the target answers in IPv4.
        let peer = FlowKey::peer_of(&e, PROTO_TCP, AF_INET6);
        assert_eq!(
            peer,
            FlowKey::v4(
                e.new_dst[0],
                e.new_src[0],
                e.new_dport,
                e.new_sport,
                PROTO_TCP
            )
        );
        // And the reply entry's peer is the client's IPv6 key.
        e.flags |= FlowFlags::REPLY;
        assert_eq!(FlowKey::peer_of(&e, PROTO_TCP, AF_INET).family, AF_INET6);
    }

    #[test]
    fn flow_entry_reset_sets_every_byte() {
        // A scratch slot that held another flow: all ones.
        let mut e = FlowEntry::default();
        // SAFETY: every bit pattern is a valid FlowEntry.
        unsafe { core::ptr::write_bytes(&mut e as *mut FlowEntry, 0xff, 1) };
        e.reset_v4(0, 0, 0, 0, 0, 0);
        assert!(
            bytes(&e).iter().all(|b| *b == 0),
            "FlowEntry::reset_v4 leaves a field of the previous flow: {e:?}"
        );
    }

    #[test]
    fn constructors_fill_the_whole_key() {
        let k = FlowKey::v4(1, 2, 3, 4, PROTO_TCP);
        assert_eq!(k.src, [1, 0, 0, 0]);
        assert_eq!(k.family, AF_INET);
        assert_eq!(bytes(&k)[38..], [0, 0]);
        let peer = FlowKey::peer_of(
            &FlowEntry {
                new_src: [5, 0, 0, 0],
                new_dst: [6, 0, 0, 0],
                new_sport: 7,
                new_dport: 8,
                ..Default::default()
            },
            PROTO_TCP,
            AF_INET,
        );
        assert_eq!(peer, FlowKey::v4(6, 5, 8, 7, PROTO_TCP));
        let l = ListenerKey::v4(addr_v4([10, 0, 0, 1]), 3, 80u16.to_be(), PROTO_TCP);
        assert_eq!(l.family, AF_INET);
        assert_eq!(AllowKey::new(1, [9, 0, 0, 0]).rule_id_be, 1u32.to_be());
        assert_eq!(AutoSnatKey::v4(2, 9).addr, [9, 0, 0, 0]);
        let g = GlobalConfig::DEFAULT;
        assert_eq!(g.abi_version, ABI_VERSION);
        assert_eq!(
            (g.snat_port_min, g.snat_port_max),
            (DEFAULT_SNAT_PORT_MIN, DEFAULT_SNAT_PORT_MAX)
        );
    }
}
