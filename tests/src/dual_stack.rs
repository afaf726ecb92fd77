//! IPv6 in the test namespaces, which `Netns::new` creates with IPv6 off
//! (no router solicitations or neighbour discovery in the counters of the
//! IPv4 tests).
//!
//! The fact a reader gets wrong: turning IPv6 back on is not enough for a
//! test to start at once. Duplicate address detection keeps a new address
//! "tentative" (unusable as a source, ignored as a destination) for about
//! a second, so every address here is added `nodad`, and DAD is off for
//! links created later.
use anyhow::Result;

use crate::netns::Netns;

/// IPv6 on in `ns` (for existing and future links), without DAD, router
/// solicitations or autoconfiguration from stray advertisements.
pub fn enable(ns: &Netns) -> Result<()> {
    for scope in ["default", "all"] {
        ns.sysctl(&format!("net.ipv6.conf.{scope}.accept_dad"), "0")?;
        ns.sysctl(&format!("net.ipv6.conf.{scope}.router_solicitations"), "0")?;
        ns.sysctl(&format!("net.ipv6.conf.{scope}.accept_ra"), "0")?;
        ns.sysctl(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "0")?;
    }
    Ok(())
}

/// IPv6 on and forwarding in a router namespace.
pub fn enable_router(ns: &Netns) -> Result<()> {
    enable(ns)?;
    ns.sysctl("net.ipv6.conf.all.forwarding", "1")
}

/// Adds IPv6 `cidr` to `dev` (usable at once) and brings the link up.
pub fn addr6(ns: &Netns, dev: &str, cidr: &str) -> Result<()> {
    ns.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
    ns.ip(&["link", "set", dev, "up"])
}

/// The path MTU `ns`'s kernel has learned toward `dst` (from an ICMPv6
/// packet too big or an ICMP fragmentation needed), if any: the `mtu` of
/// its cached route exception.
pub fn learned_mtu(ns: &Netns, dst: &str) -> Option<u32> {
    let out = ns.output(&["ip", "route", "get", dst]).ok()?;
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "mtu")
        .and_then(|w| w[1].parse().ok())
}
