//! The fixture's addresses and MACs, and the flow keys and entries tests
//! look up or write: built from `Ep`s (address and port, host order), so a
//! table row reads like the tuple it means.
use forwarder_common::{addr_v4, addr_v4_octets, FlowEntry, FlowFlags, FlowKey, AF_INET};

pub type Ip = [u8; 4];
pub type Mac = [u8; 6];

/// An address and a port (for ICMP echo, the identifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ep {
    pub ip: Ip,
    pub port: u16,
}

pub const fn ep(ip: Ip, port: u16) -> Ep {
    Ep { ip, port }
}

/// A LAN client (the host is `testrun::HOST_LAN` there).
pub const CLIENT: Ip = [192, 168, 1, 10];
/// Another LAN host: a hairpin target (reached through the listening
/// interface, vmbr0, itself).
pub const LAN_PEER: Ip = [192, 168, 1, 20];
/// The VM the forwards' targets live on (on-link behind vmbr1).
pub const VM: Ip = [192, 168, 100, 80];
/// A second VM, on-link behind vmbr1 too.
pub const VM81: Ip = [192, 168, 100, 81];
/// A router on the VM side that is not the backend.
pub const VM_ROUTER: Ip = [192, 168, 100, 254];

/// The destination MAC of the frames the tests send to the host.
pub const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];

/// The MAC of `ip`: what frames from it carry, and what its neighbour
/// entry holds where a test makes one (`Host::neigh`).
pub fn mac_of(ip: Ip) -> Mac {
    [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]]
}

/// The key of the flow entry a packet from `src` to `dst` matches.
pub fn fkey(src: Ep, dst: Ep, proto: u8) -> FlowKey {
    FlowKey {
        src: addr_v4(src.ip),
        dst: addr_v4(dst.ip),
        sport: src.port.to_be(),
        dport: dst.port.to_be(),
        proto,
        family: AF_INET,
        _pad: [0; 2],
    }
}

/// A flow key for messages.
pub fn show(k: &FlowKey) -> String {
    let a = |x: &[u32; 4]| std::net::Ipv4Addr::from(addr_v4_octets(x));
    format!(
        "{}:{} -> {}:{} proto {}",
        a(&k.src),
        u16::from_be(k.sport),
        a(&k.dst),
        u16::from_be(k.dport),
        k.proto
    )
}

/// A flow entry as userspace can insert it (the dataplane never creates
/// ICMP echo flows): packets matching it are translated to
/// `new_src` -> `new_dst`; created and last seen at `now`, nothing counted.
pub fn flow_entry(new_src: Ep, new_dst: Ep, rule_id: u32, now: u64, flags: FlowFlags) -> FlowEntry {
    FlowEntry {
        new_src: addr_v4(new_src.ip),
        new_dst: addr_v4(new_dst.ip),
        new_sport: new_src.port.to_be(),
        new_dport: new_dst.port.to_be(),
        rule_id,
        created_ns: now,
        last_seen_ns: now,
        flags,
        ..Default::default()
    }
}
