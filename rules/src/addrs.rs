//! Address values of the rules file: `listen`, `snat`, `allow` (`to`,
//! which may also be a DNS name, is parsed in `target.rs`).
//!
//! Both families are written the way socket addresses and CIDRs are
//! written elsewhere: `192.168.100.80:80`, `[fd00:100::80]:80`,
//! `fd00:100::80` (no port), `2001:db8::/32`. The fact a reader gets
//! wrong: an IPv6 target with a port needs the brackets, because
//! `fd00::80:80` is itself a valid IPv6 address (and is read as one).
//! Whether an address fits its place (family, loopback, ...) is checked in
//! `validate`, which sees the whole forward.

use std::{net::IpAddr, str::FromStr};

use ipnet::IpNet;

use crate::parse::PortError;

/// One address, IPv6 optionally in brackets.
pub(crate) fn parse_addr(s: &str) -> Option<IpAddr> {
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    IpAddr::from_str(inner).ok()
}

/// A bare address (a /32 or /128) or a CIDR without host bits.
pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, PortError> {
    let help =
        "use an address or CIDR, e.g. \"100.101.92.95\", \"192.168.1.0/24\" or \"fd7a:115c:a1e0::/48\"";
    if let Some(a) = parse_addr(s) {
        return Ok(IpNet::from(a));
    }
    match s.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => Err(PortError::new(
            format!("allow-list entry {s} has host bits set"),
            format!("write the network address: \"{}\"", net.trunc()),
        )),
        Ok(net) => Ok(net),
        Err(_) => Err(PortError::new(
            format!("allow-list entry `{s}` is not an IP address or CIDR"),
            help,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_of_both_families() {
        assert_eq!(
            parse_cidr("fd7a:115c:a1e0::/48").unwrap().to_string(),
            "fd7a:115c:a1e0::/48"
        );
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_cidr("[2001:db8::1]").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_cidr("2001:db8::1/32").unwrap_err().help,
            "write the network address: \"2001:db8::/32\""
        );
        assert_eq!(
            parse_cidr("10.0.0.1/24").unwrap_err().help,
            "write the network address: \"10.0.0.0/24\""
        );
    }
}
