//! The `to` of a forward: an IPv4 address or a DNS name, and the port(s).
//!
//! `to = "immich-server.immich.svc.cluster.local:80"` names a backend whose
//! address may change (a Kubernetes Service re-created with a new
//! ClusterIP, a VM that got a new DHCP lease): the daemon resolves the name
//! and follows its answers (`forwarder/src/daemon/resolve.rs`). The file
//! only says *that* it is a name; what it resolves to is a fact of run time,
//! so everything offline (`check`, `explain`, validation) treats the address
//! as unknown. The one fact a reader gets wrong: a name is checked for being
//! a well-formed DNS name here, and whether its *answer* can be a target
//! (not loopback, not the listen address...) is checked by the daemon on
//! every answer with [`unusable_target`], the same rules validation applies
//! to a written address.
//!
//! IPv4 only: a name is resolved for A records (the rules format translates
//! IPv4; AAAA answers are ignored until dual-stack lands).

use std::{fmt, net::Ipv4Addr, str::FromStr};

use crate::model::{Forward, Listen, PortRange, Snat};

/// Where translated packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    /// `None`: the same port(s) as the listener. A single port takes every
    /// listened port; a range maps a same-size listen range 1:1.
    pub ports: Option<PortRange>,
}

/// The host part of a target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    Addr(Ipv4Addr),
    /// A DNS name as written (validated by [`dns_name`]), resolved by the
    /// daemon at run time.
    Name(String),
}

impl Target {
    pub fn ip(addr: Ipv4Addr, ports: Option<PortRange>) -> Target {
        Target {
            host: Host::Addr(addr),
            ports,
        }
    }

    /// The written address; `None` for a name.
    pub fn fixed_addr(&self) -> Option<Ipv4Addr> {
        match &self.host {
            Host::Addr(a) => Some(*a),
            Host::Name(_) => None,
        }
    }

    /// The DNS name, for a name target.
    pub fn name(&self) -> Option<&str> {
        match &self.host {
            Host::Addr(_) => None,
            Host::Name(n) => Some(n),
        }
    }

    /// The target port for a packet that arrived on `port` of `listen`.
    pub fn port_for(&self, listen: PortRange, port: u16) -> u16 {
        match self.ports {
            None => port,
            Some(t) if t.is_single() => t.start(),
            // Same-size ranges are a validation invariant; saturate rather
            // than wrap should an unvalidated set get here.
            Some(t) => t.start().saturating_add(port - listen.start()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Addr(a) => a.fmt(f),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ports {
            None => self.host.fmt(f),
            Some(p) => write!(f, "{}:{}", self.host, p),
        }
    }
}

/// Whether `s` is a DNS name a resolver can be asked for: dot-separated
/// labels of 1-63 letters, digits, `-` (not first or last) and `_` (found
/// in Docker's and some internal zones' names, which resolvers accept), at
/// most 253 bytes, an optional final dot (absolute: no search domains).
/// The last label must not be all digits (RFC 3696 section 2), so a
/// mistyped address such as `10.0.0` or `10.0.0.256` is not taken for a
/// name.
pub fn dns_name(s: &str) -> bool {
    let body = s.strip_suffix('.').unwrap_or(s);
    if body.is_empty() || body.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = body.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// Names that always mean this host (RFC 6761 section 6.3): a target there
/// can never be forwarded to, like a loopback address.
pub fn loopback_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    s == "localhost" || s.ends_with(".localhost")
}

/// Why `a` cannot be where packets are sent or come from, or `None`.
pub fn unusable_addr(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

/// Why `a` cannot be the target of `f`, or `None`: the checks validation
/// makes on a written target, which the daemon makes on every answer for a
/// name (an answer of 127.0.0.1, or the listen address itself, would
/// otherwise install a listener that loops or goes nowhere).
pub fn unusable_target(f: &Forward, a: Ipv4Addr) -> Option<String> {
    if let Some(why) = unusable_addr(a) {
        return Some(format!("{a} is {why}"));
    }
    if f.listen == Listen::Addr(a) {
        return Some(format!("{a} is the listen address itself"));
    }
    if f.snat == Snat::Fixed(a) {
        return Some(format!("{a} is the forward's own SNAT address"));
    }
    None
}

/// Why a `to` value did not parse.
pub(crate) enum TargetError {
    V6,
    Other { message: String, help: String },
}

const HELP: &str = "write the target as \"IPv4\", \"IPv4:port\" or \"IPv4:first-last\", or a host \
                    name the daemon resolves, e.g. \"immich-server.immich.svc.cluster.local:80\"";

/// `"10.0.0.5"`, `"10.0.0.5:80"`, `"10.0.0.5:30000-32767"`, and the same
/// with a DNS name in place of the address.
pub(crate) fn parse(s: &str) -> Result<Target, TargetError> {
    let other = |message: String| TargetError::Other {
        message,
        help: HELP.into(),
    };
    // IPv6 forms: bare (several colons) or bracketed with a port.
    if s.starts_with('[') || s.matches(':').count() > 1 {
        let host = s
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map_or(s, |(h, _)| h);
        return match std::net::Ipv6Addr::from_str(host) {
            Ok(_) => Err(TargetError::V6),
            Err(_) => Err(other(format!("target `{s}` is not an address"))),
        };
    }
    let (host, ports) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let host = match Ipv4Addr::from_str(host) {
        Ok(a) => Host::Addr(a),
        Err(_) if dns_name(host) => Host::Name(host.to_owned()),
        Err(_) if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            return Err(other(format!("target `{host}` is not an IPv4 address")))
        }
        Err(_) => {
            return Err(other(format!(
                "target `{host}` is neither an IPv4 address nor a valid DNS name"
            )))
        }
    };
    let ports = match ports {
        None => None,
        Some(p) => Some(
            crate::parse::parse_port_spec(p).map_err(|e| TargetError::Other {
                message: format!("target {}", e.message),
                help: e.help,
            })?,
        ),
    };
    Ok(Target { host, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Result<String, String> {
        match parse(s) {
            Ok(t) => Ok(t.to_string()),
            Err(TargetError::V6) => Err("v6".into()),
            Err(TargetError::Other { message, .. }) => Err(message),
        }
    }

    #[test]
    fn names_and_addresses_print_back_as_written() {
        for s in [
            "10.0.0.5",
            "10.0.0.5:80",
            "10.0.0.5:30000-32767",
            "immich-server.immich.svc.cluster.local:80",
            "immich-server",
            "nas.lan.:445",
            "my_app_1:8080",
            "vm-101.pve.example.org:1000-1010",
        ] {
            assert_eq!(target(s).as_deref(), Ok(s), "{s}");
        }
        assert_eq!(
            parse("web.lan:80").ok().map(|t| t.host),
            Some(Host::Name("web.lan".into()))
        );
    }

    #[test]
    fn malformed_names_and_addresses_are_refused_with_what_they_look_like() {
        let err = |s: &str| target(s).unwrap_err();
        assert_eq!(err("10.0.0:80"), "target `10.0.0` is not an IPv4 address");
        assert_eq!(
            err("10.0.0.256"),
            "target `10.0.0.256` is not an IPv4 address"
        );
        for bad in [
            "web..lan",
            "-web.lan",
            "web-.lan",
            "we b",
            "web.lan/x",
            ".web",
            "a.123",
        ] {
            assert_eq!(
                err(bad),
                format!("target `{bad}` is neither an IPv4 address nor a valid DNS name"),
                "{bad}"
            );
        }
        let long_label = "a".repeat(64);
        assert!(err(&format!("{long_label}.lan")).contains("nor a valid DNS name"));
        let long_name = ["abcdefghi"; 26].join(".");
        assert!(long_name.len() > 253);
        assert!(err(&long_name).contains("nor a valid DNS name"));
        assert_eq!(err("web.lan:0"), "target port 0 is not a valid port");
        assert_eq!(target("[fd00::1]:80"), Err("v6".into()));
    }

    #[test]
    fn localhost_names_are_loopback() {
        for n in ["localhost", "LOCALHOST.", "db.localhost"] {
            assert!(loopback_name(n), "{n}");
        }
        assert!(!loopback_name("localhost.lan"));
        assert!(!loopback_name("mylocalhost"));
    }
}
