//! Address values of the rules file: `listen`, `to`, `snat`, `allow`.
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

use crate::{
    model::{PortRange, Target},
    parse::{parse_port_spec, PortError},
};

/// One address, IPv6 optionally in brackets.
pub(crate) fn parse_addr(s: &str) -> Option<IpAddr> {
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    IpAddr::from_str(inner).ok()
}

const TARGET_HELP: &str = "write the target as \"IPv4\", \"IPv4:port\" or \"IPv4:first-last\", or for IPv6 \"IPv6\", \"[IPv6]:port\" or \"[IPv6]:first-last\"";

/// `"10.0.0.5"`, `"10.0.0.5:80"`, `"10.0.0.5:30000-32767"`, `"fd00::5"`,
/// `"[fd00::5]:80"`, `"[fd00::5]:30000-32767"`.
pub(crate) fn parse_target(s: &str) -> Result<Target, PortError> {
    let (host, ports) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(PortError::new(
                format!("target `{s}` has no closing `]`"),
                TARGET_HELP,
            ));
        };
        let ports = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                PortError::new(
                    format!("target `{s}`: expected `:port` after `]`"),
                    TARGET_HELP,
                )
            })?),
        };
        (host, ports)
    } else if s.matches(':').count() > 1 {
        // Several colons and no brackets: all of it is an IPv6 address.
        (s, None)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let addr = IpAddr::from_str(host).map_err(|_| {
        let msg = if !host.contains(':') && host.chars().any(|c| c.is_ascii_alphabetic()) {
            format!("target `{host}` is not an IP address (hostnames are not resolved)")
        } else if s.matches(':').count() > 1 && !s.starts_with('[') {
            format!("target `{s}` is not an address (an IPv6 target with a port is written \"[IPv6]:port\")")
        } else {
            format!("target `{host}` is not an IP address")
        };
        PortError::new(msg, TARGET_HELP)
    })?;
    let ports: Option<PortRange> = match ports {
        None => None,
        Some(p) => Some(
            parse_port_spec(p)
                .map_err(|e| PortError::new(format!("target {}", e.message), e.help))?,
        ),
    };
    Ok(Target { addr, ports })
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

    fn target(s: &str) -> Result<String, String> {
        parse_target(s)
            .map(|t| t.to_string())
            .map_err(|e| e.message)
    }

    #[test]
    fn targets_of_both_families_print_back_as_written() {
        for s in [
            "10.0.0.5",
            "10.0.0.5:80",
            "10.0.0.5:30000-32767",
            "fd00::5",
            "[fd00::5]:80",
            "[fd00::5]:30000-32767",
        ] {
            assert_eq!(target(s).as_deref(), Ok(s));
        }
        // Brackets without a port are accepted and dropped.
        assert_eq!(target("[fd00::5]").as_deref(), Ok("fd00::5"));
    }

    #[test]
    fn an_unbracketed_ipv6_target_never_takes_a_port() {
        // fd00::5:80 is an address in its own right: no port is split off.
        assert_eq!(target("fd00::5:80").as_deref(), Ok("fd00::5:80"));
        assert!(target("fd00::5::80")
            .unwrap_err()
            .contains("written \"[IPv6]:port\""));
    }

    #[test]
    fn bad_targets() {
        assert_eq!(
            target("[fd00::5"),
            Err("target `[fd00::5` has no closing `]`".into())
        );
        assert_eq!(
            target("[fd00::5]80"),
            Err("target `[fd00::5]80`: expected `:port` after `]`".into())
        );
        assert_eq!(
            target("[fd00::5]:0"),
            Err("target port 0 is not a valid port".into())
        );
        assert_eq!(
            target("backend.lan:80"),
            Err("target `backend.lan` is not an IP address (hostnames are not resolved)".into())
        );
        assert_eq!(
            target("10.0.0.300"),
            Err("target `10.0.0.300` is not an IP address".into())
        );
    }

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
