//! Address families: which clients a forward takes (`family`), and the
//! per-family decisions that follow from the target's family.
//!
//! The fact a reader gets wrong: `family` is about the *clients*. The
//! target has exactly one family (its address's); clients of the other
//! family are translated per flow (NAT64: IPv6 clients of an IPv4 target;
//! NAT46: the reverse), and those flows can never keep the client's
//! address, so their source is always an address of the target's family.

use std::{fmt, net::IpAddr};

use forwarder_common::{addr_v4, addr_v4_octets, addr_v6, addr_v6_octets, ListenerKey, AF_INET6};

use crate::model::{Forward, Listen, Snat};

impl Forward {
    /// The client families this forward listens for, IPv4 first.
    pub fn listen_afs(&self) -> &'static [Af] {
        match self.listen {
            Listen::Addr(a) => Family::from(Af::of(a)).afs(),
            Listen::Interface => self.family.afs(),
        }
    }

    /// The family `family` would have if the file did not say: a fixed
    /// address's own, else the target's (so a file written before
    /// dual-stack keeps its meaning).
    pub fn default_family(&self) -> Family {
        match self.listen {
            Listen::Addr(a) => Family::from(Af::of(a)),
            Listen::Interface => Family::from(self.target.af()),
        }
    }

    /// Whether clients of `af` are translated to the target's other
    /// family (NAT64 or NAT46).
    pub fn translates(&self, af: Af) -> bool {
        af != self.target.af()
    }

    /// The source rewriting flows of clients of family `af` get. Flows
    /// translated between families cannot keep the client's address (it
    /// has the wrong family), so `"auto"` masquerades them; `"off"` is
    /// refused by validation for such forwards.
    pub fn snat_for(&self, af: Af) -> Snat {
        match self.snat {
            Snat::Auto | Snat::Off if self.translates(af) => Snat::Masquerade,
            s => s,
        }
    }

    /// `listen` as `check` and `explain` show it: the family is added to
    /// the interface form when it is not the target's.
    pub fn listen_label(&self) -> String {
        match self.listen {
            Listen::Interface if self.family != self.default_family() => {
                format!("interface ({})", self.family.label())
            }
            l => l.to_string(),
        }
    }
}

/// One address family, as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Af {
    V4,
    V6,
}

impl Af {
    pub fn of(addr: IpAddr) -> Af {
        match addr {
            IpAddr::V4(_) => Af::V4,
            IpAddr::V6(_) => Af::V6,
        }
    }

    /// The kernel's number for it (`forwarder_common::AF_INET*`).
    pub fn number(self) -> u8 {
        match self {
            Af::V4 => forwarder_common::AF_INET,
            Af::V6 => forwarder_common::AF_INET6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Af::V4 => "IPv4",
            Af::V6 => "IPv6",
        }
    }

    /// The other family.
    pub fn other(self) -> Af {
        match self {
            Af::V4 => Af::V6,
            Af::V6 => Af::V4,
        }
    }
}

impl fmt::Display for Af {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `family` setting of a forward: which client families it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
    Both,
}

impl Family {
    pub const ALL: [(&'static str, Family); 3] = [
        ("ipv4", Family::Ipv4),
        ("ipv6", Family::Ipv6),
        ("both", Family::Both),
    ];

    pub fn afs(self) -> &'static [Af] {
        match self {
            Family::Ipv4 => &[Af::V4],
            Family::Ipv6 => &[Af::V6],
            Family::Both => &[Af::V4, Af::V6],
        }
    }

    pub fn includes(self, af: Af) -> bool {
        self.afs().contains(&af)
    }

    /// The keyword in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Both => "both",
        }
    }

    /// For messages and tables.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
            Family::Both => "IPv4+IPv6",
        }
    }
}

impl From<Af> for Family {
    fn from(af: Af) -> Family {
        match af {
            Af::V4 => Family::Ipv4,
            Af::V6 => Family::Ipv6,
        }
    }
}

/// An address as the kernel ABI stores it (`forwarder_common::addr_v4`/
/// `addr_v6`); the family travels separately.
pub fn abi_addr(a: IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(a) => addr_v4(a.octets()),
        IpAddr::V6(a) => addr_v6(a.octets()),
    }
}

/// IPv6 link-local (fe80::/10): never a listen address of the interface
/// form, since it is only reachable on one link and a forward's target is
/// on another.
pub fn is_link_local(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local())
}

/// A listener key's address (the inverse of [`abi_addr`] by the key's
/// family).
pub fn key_addr(k: &ListenerKey) -> IpAddr {
    if k.family == AF_INET6 {
        IpAddr::from(addr_v6_octets(&k.addr))
    } else {
        IpAddr::from(addr_v4_octets(&k.addr))
    }
}

/// A listener key's family.
pub fn family_of_key(k: &ListenerKey) -> Af {
    if k.family == AF_INET6 {
        Af::V6
    } else {
        Af::V4
    }
}
