//! Flag and mode fields of the shared structs, as newtypes.
//!
//! Each is `#[repr(transparent)]` over the integer the field always had, so
//! the layouts (and the pinned maps) are unchanged; what changes is that a
//! `FlowFlags` cannot be tested against a `ListenFlags` constant by mistake,
//! and a test reads `flags.contains(FlowFlags::SNAT)` instead of a mask.
//! Every method is `#[inline(always)]` and `const` where it can be: the
//! kernel programs compile to the same instructions as with plain masks.
//!
//! The one fact a reader gets wrong: the kernel reads these from map values
//! that userspace (or an older daemon) wrote, so any bit pattern must be
//! accepted. That is why these are not enums.

macro_rules! flag_type {
    (
        $(#[$meta:meta])*
        $name:ident($int:ty) {
            $( $(#[$fmeta:meta])* $flag:ident = $bit:expr; )*
        }
    ) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($int);

        impl $name {
            $( $(#[$fmeta])* pub const $flag: $name = $name($bit); )*

            /// No flag set.
            #[inline(always)]
            pub const fn empty() -> Self {
                $name(0)
            }

            /// The field as stored (any bit pattern is valid).
            #[inline(always)]
            pub const fn from_bits(bits: $int) -> Self {
                $name(bits)
            }

            #[inline(always)]
            pub const fn bits(self) -> $int {
                self.0
            }

            #[inline(always)]
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// Every flag of `other` is set.
            #[inline(always)]
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// At least one flag of `other` is set.
            #[inline(always)]
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            #[inline(always)]
            pub const fn union(self, other: Self) -> Self {
                $name(self.0 | other.0)
            }

            /// The flags of `self` that are also in `other`.
            #[inline(always)]
            pub const fn intersection(self, other: Self) -> Self {
                $name(self.0 & other.0)
            }

            /// `self` with the flags of `other` cleared.
            #[inline(always)]
            pub const fn without(self, other: Self) -> Self {
                $name(self.0 & !other.0)
            }

            #[inline(always)]
            pub fn insert(&mut self, other: Self) {
                self.0 |= other.0;
            }

            #[inline(always)]
            pub fn remove(&mut self, other: Self) {
                self.0 &= !other.0;
            }

            /// Sets or clears the flags of `other`.
            #[inline(always)]
            pub fn set(&mut self, other: Self, on: bool) {
                if on {
                    self.insert(other)
                } else {
                    self.remove(other)
                }
            }
        }

        impl core::ops::BitOr for $name {
            type Output = $name;
            #[inline(always)]
            fn bitor(self, other: $name) -> $name {
                self.union(other)
            }
        }

        impl core::ops::BitOrAssign for $name {
            #[inline(always)]
            fn bitor_assign(&mut self, other: $name) {
                self.insert(other)
            }
        }

        impl core::ops::BitAnd for $name {
            type Output = $name;
            #[inline(always)]
            fn bitand(self, other: $name) -> $name {
                self.intersection(other)
            }
        }

        impl core::ops::Not for $name {
            type Output = $name;
            /// Every other bit, for masks (`flags & !FlowFlags::REPLY`).
            #[inline(always)]
            fn not(self) -> $name {
                $name(!self.0)
            }
        }
    };
}

flag_type! {
    /// `IfaceConfig::flags`: how the programs treat an interface.
    IfaceFlags(u32) {
        /// No link-layer header (tun, wireguard: ARPHRD_NONE); the IP header
        /// starts at offset 0.
        L3 = 1;
        /// Replies of stack-path flows may leave through this interface: the
        /// egress program translates them. Without the flag it returns at
        /// once, so interfaces whose forwards are all redirected pay nothing
        /// at egress.
        EGRESS_NAT = 2;
        /// The NAT64 pool's device (`NAT64_DEV`): nothing arrives on it;
        /// the replies of NAT64 flows through the stack leave by it, where
        /// `fwd_ingress64` runs at egress.
        NAT64_DEV = 4;
    }
}

flag_type! {
    /// `ListenerValue::flags`: per-rule options the kernel acts on.
    ListenFlags(u8) {
        /// The rule has a source allow-list: look the source up in `FWD_ALLOW`.
        ALLOWLIST = 1;
        /// Clamp the TCP MSS option on SYN/SYN-ACK to `ListenerValue::mss`.
        MSS_CLAMP = 2;
        /// Refused peers get a TCP RST / ICMP unreachable instead of a silent
        /// drop.
        REJECT = 4;
        /// Path override (rules file `path = "stack"`): always hand
        /// translated packets to the stack. Without an override the path is
        /// chosen per flow from the FIB (see `FlowFlags::VIA_STACK`).
        VIA_STACK = 8;
        /// Path override (`path = "redirect"`): redirect whenever the FIB
        /// answers.
        VIA_REDIRECT = 16;
        /// The target is of the other address family than the listener
        /// key (NAT64 for an `AF_INET6` key, NAT46 for an `AF_INET` one):
        /// `target_addr` and `snat_addr` hold addresses of that other
        /// family, and the SNAT mode is never OFF or AUTO (a translated
        /// flow cannot keep the client's address).
        XLAT = 32;
    }
}

flag_type! {
    /// `FlowEntry::flags`: what was decided when the flow was created.
    FlowFlags(u8) {
        /// This entry is the reply direction (backend -> client).
        REPLY = 1;
        /// The source was rewritten (SNAT).
        SNAT = 2;
        /// Deliver via the stack: chosen at creation when the FIB has no
        /// plain on-link answer for the target and the flow is not SNATed (a
        /// ClusterIP that kube-proxy DNATs in PREROUTING, a target behind a
        /// gateway, a local address), or forced by `ListenFlags::VIA_STACK`.
        /// Replies of such flows are translated back at egress of the
        /// listening interface.
        VIA_STACK = 4;
        /// The SNAT decision was made per flow by `snat = "auto"` (`SNAT`
        /// says which way it went).
        AUTO = 8;
        /// `VIA_STACK` because the target's neighbour was dead when the
        /// flow started (`NeighFlags::STACK`): counted `fwd_stack_neigh_dead`.
        NEIGH_DEAD = 16;
        /// A NAT64 flow (`ListenFlags::XLAT`): this entry's packets change
        /// family when translated, so `new_src`/`new_dst` are of the other
        /// family than its key, and so is the other direction's key
        /// (`FlowKey::peer_of`). The IPv4 direction is translated by
        /// `fwd_ingress64`, never by fwd_ingress or XDP.
        XLAT = 32;
    }
}

flag_type! {
    /// `FWD_NEIGH` values: what the kernel does for a target (an on-link
    /// next hop) whose neighbour does not answer. Decided by the daemon
    /// from the neighbour table (`daemon::plan::neighbours`).
    NeighFlags(u32) {
        /// Flows that keep the client's address go through the stack
        /// (translated), where netfilter (a PREROUTING DNAT of a virtual
        /// address) or the stack's own ARP takes over: set from the first
        /// FAILED until the neighbour answers again.
        STACK = 1;
        /// The neighbour is FAILED (or being probed again after failing):
        /// packets that cannot use the stack (SNATed, replies, established
        /// redirected flows) are answered ICMP host unreachable (3/1).
        UNREACHABLE = 2;
    }
}

flag_type! {
    /// `FibCache::flags`: what the kernel looked up about the cached next
    /// hop together with the route, so that a packet of the flow reads it
    /// from the entry instead of a map (issue 19). Valid as long as the
    /// cached answer: the daemon bumps the route generation after every
    /// write of `FWD_NEIGH` and `FWD_IFACES` too.
    FibFlags(u16) {
        /// The egress interface is an L3 device (`IfaceFlags::L3`): a plain
        /// redirect, no neighbour.
        L3_OIF = 1;
        /// The next hop is `NeighFlags::UNREACHABLE`: packets that cannot
        /// use the stack are answered host unreachable.
        NEIGH_UNREACHABLE = 2;
    }
}

flag_type! {
    /// `FlowEntry::tcp_seen`: TCP flags seen in this direction.
    Seen(u8) {
        SYN = 1;
        ACK = 2;
        FIN = 4;
        RST = 8;
    }
}

/// `ListenerValue::snat_mode`: which source address the backend sees. A
/// newtype over the stored byte rather than an enum, like the flags (any
/// value may be found in a map; unknown ones mean "off").
#[repr(transparent)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnatMode(u8);

impl SnatMode {
    /// Keep the client's address.
    pub const OFF: SnatMode = SnatMode(0);
    /// Rewrite the source to `ListenerValue::snat_addr`.
    pub const FIXED: SnatMode = SnatMode(1);
    /// Rewrite the source to the egress interface's address (the kernel
    /// asks the FIB for it per flow).
    pub const MASQUERADE: SnatMode = SnatMode(2);
    /// Decide per flow: keep the client address when the backend's reply
    /// routes back through this host, else behave like `MASQUERADE`.
    pub const AUTO: SnatMode = SnatMode(3);

    #[inline(always)]
    pub const fn from_bits(bits: u8) -> Self {
        SnatMode(bits)
    }

    #[inline(always)]
    pub const fn bits(self) -> u8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_needs_every_flag_intersects_any() {
        let f = FlowFlags::SNAT | FlowFlags::REPLY;
        assert!(f.contains(FlowFlags::SNAT));
        assert!(f.contains(FlowFlags::SNAT | FlowFlags::REPLY));
        assert!(!f.contains(FlowFlags::SNAT | FlowFlags::AUTO));
        assert!(f.intersects(FlowFlags::SNAT | FlowFlags::AUTO));
        assert!(!f.intersects(FlowFlags::AUTO | FlowFlags::VIA_STACK));
        assert_eq!(f.without(FlowFlags::REPLY), FlowFlags::SNAT);
        assert_eq!(f.intersection(FlowFlags::REPLY), FlowFlags::REPLY);
    }

    #[test]
    fn set_insert_remove() {
        let mut f = IfaceFlags::L3;
        f.set(IfaceFlags::EGRESS_NAT, true);
        assert_eq!(f.bits(), 3);
        f.set(IfaceFlags::EGRESS_NAT, false);
        assert_eq!(f, IfaceFlags::L3);
        f.remove(IfaceFlags::L3);
        assert!(f.is_empty());
        f |= IfaceFlags::from_bits(1);
        assert_eq!(f, IfaceFlags::L3);
    }

    #[test]
    fn the_bits_are_the_abi() {
        // These values are in pinned maps: changing one needs an ABI bump.
        assert_eq!(IfaceFlags::EGRESS_NAT.bits(), 2);
        assert_eq!(ListenFlags::VIA_REDIRECT.bits(), 16);
        assert_eq!(FlowFlags::AUTO.bits(), 8);
        assert_eq!(FlowFlags::XLAT.bits(), 32);
        assert_eq!(Seen::RST.bits(), 8);
        assert_eq!(SnatMode::AUTO.bits(), 3);
    }
}
