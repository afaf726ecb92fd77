//! The values `explain` takes on its command line, parsed with errors
//! that say what was expected.
use std::net::{IpAddr, Ipv4Addr};

/// Parses `NAME=IP` as given to `--resolve`: what a target's DNS name is
/// taken to resolve to (IPv4: the daemon asks for A records only).
pub fn parse_resolve(s: &str) -> Result<(String, Ipv4Addr), String> {
    let (name, addr) = s.split_once('=').ok_or_else(|| {
        format!("`{s}`: expected NAME=IPv4, e.g. immich-server.immich.svc.cluster.local=10.43.12.7")
    })?;
    if !crate::target::dns_name(name) {
        return Err(format!("`{name}` is not a DNS name"));
    }
    let addr = addr.parse().map_err(|_| {
        format!("`{addr}` is not an IPv4 address (names are resolved for A records only)")
    })?;
    Ok((name.to_owned(), addr))
}

/// Parses `NAME=IP` as given to `--iface-addr` (either family).
pub fn parse_iface_addr(s: &str) -> Result<(String, IpAddr), String> {
    let (name, addr) = s.split_once('=').ok_or_else(|| {
        format!(
            "`{s}`: expected NAME=IP, e.g. tailscale0=100.118.5.68 or tailscale0=fd7a:115c:a1e0::1"
        )
    })?;
    let addr =
        crate::addrs::parse_addr(addr).ok_or_else(|| format!("`{addr}` is not an IP address"))?;
    Ok((name.to_owned(), addr))
}
