//! The one place that defines the kernel/userspace ABI.
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

pub mod counters;
pub mod csum;
pub mod maps;

pub use counters::*;
pub use maps::*;

/// Bumped whenever a pinned map's layout changes. A daemon that finds pinned
/// maps of another version refuses to adopt them (see `forwarder down`).
pub const ABI_VERSION: u32 = 3;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Maximum number of interfaces the dataplane keeps counters for.
pub const MAX_IFACES: u32 = 64;
/// Maximum number of rules (size of the per-rule counter array).
pub const MAX_RULES: u32 = 1024;
/// Maximum number of listener entries (one per address x protocol x port).
pub const MAX_LISTENERS: u32 = 262_144;
/// Maximum number of allow-list prefixes over all rules.
pub const MAX_ALLOW_PREFIXES: u32 = 16_384;
/// Backends remembered by `snat = "auto"` learning (LRU).
pub const MAX_AUTO_SNAT: u32 = 4096;

/// An IPv4 address as the ABI stores it (word 0, network byte order).
#[inline(always)]
pub const fn addr_v4(octets: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(octets), 0, 0, 0]
}

/// The octets of an ABI address holding IPv4.
#[inline(always)]
pub const fn addr_v4_octets(addr: &[u32; 4]) -> [u8; 4] {
    addr[0].to_ne_bytes()
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
        assert_eq!(size_of::<FlowEntry>(), 80);
        assert_eq!(size_of::<GlobalConfig>(), 16);
        assert_eq!(
            size_of::<RuleCounters>(),
            8 * (6 + RULE_DROP_REASONS as usize)
        );
        assert_eq!(REASONS, 21, "the per-interface counter map's size");
        assert_eq!(ABI_VERSION, 3);
    }

    #[test]
    fn rule_names_roundtrip() {
        assert_eq!(RuleName::new("immich").as_str(), Some("immich"));
        assert_eq!(RuleName::default().as_str(), None);
        let long = "x".repeat(80);
        assert_eq!(RuleName::new(&long).as_str().unwrap().len(), RULE_NAME_MAX);
    }

    #[test]
    fn v4_roundtrip() {
        let a = addr_v4([192, 168, 100, 80]);
        assert_eq!(addr_v4_octets(&a), [192, 168, 100, 80]);
        assert_eq!(a[1..], [0, 0, 0]);
    }
}
