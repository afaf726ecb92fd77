//! The `to` of a forward: an IPv4 or IPv6 address or a DNS name, and the
//! port(s).
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
//! A name is resolved for A records only: a name target is an IPv4 target
//! ([`Target::af`]), and AAAA answers are ignored. An IPv6 target is
//! written as an address (`fd00::5`, `[fd00::5]:80`); the brackets are
//! needed with a port because `fd00::5:80` is itself an IPv6 address.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use crate::model::{Af, Forward, Listen, PortRange, Snat};

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
    Addr(IpAddr),
    /// A DNS name as written (validated by [`dns_name`]), resolved by the
    /// daemon at run time.
    Name(String),
}

impl Target {
    pub fn ip(addr: impl Into<IpAddr>, ports: Option<PortRange>) -> Target {
        Target {
            host: Host::Addr(addr.into()),
            ports,
        }
    }

    /// The written address; `None` for a name.
    pub fn fixed_addr(&self) -> Option<IpAddr> {
        match &self.host {
            Host::Addr(a) => Some(*a),
            Host::Name(_) => None,
        }
    }

    /// The written IPv4 address; `None` for a name or an IPv6 address.
    pub fn fixed_v4(&self) -> Option<Ipv4Addr> {
        match self.host {
            Host::Addr(IpAddr::V4(a)) => Some(a),
            _ => None,
        }
    }

    /// The target's family: its address's, and IPv4 for a name (the
    /// daemon asks for A records only).
    pub fn af(&self) -> Af {
        match self.host {
            Host::Addr(a) => Af::of(a),
            Host::Name(_) => Af::V4,
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
    /// IPv6 with ports in brackets, like a socket address: `[fd00::5]:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ports, &self.host) {
            (None, h) => h.fmt(f),
            (Some(p), Host::Addr(IpAddr::V6(a))) => write!(f, "[{a}]:{p}"),
            (Some(p), h) => write!(f, "{h}:{p}"),
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
/// (IPv6 addresses are checked in `validate_addrs`, which also knows
/// link-local and IPv4-mapped forms.)
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
    if f.listen == Listen::Addr(a.into()) {
        return Some(format!("{a} is the listen address itself"));
    }
    if f.snat == Snat::Fixed(a.into()) {
        return Some(format!("{a} is the forward's own SNAT address"));
    }
    None
}

/// Why a `to` value did not parse.
pub(crate) struct TargetError {
    pub message: String,
    pub help: String,
}

const HELP: &str = "write the target as \"IPv4\", \"IPv4:port\" or \"IPv4:first-last\", \
                    \"IPv6\", \"[IPv6]:port\" or \"[IPv6]:first-last\", or a host name the \
                    daemon resolves, e.g. \"immich-server.immich.svc.cluster.local:80\"";

/// `"10.0.0.5"`, `"10.0.0.5:80"`, `"10.0.0.5:30000-32767"`, the same with
/// a DNS name in place of the address, and `"fd00::5"`, `"[fd00::5]:80"`,
/// `"[fd00::5]:30000-32767"`.
pub(crate) fn parse(s: &str) -> Result<Target, TargetError> {
    let other = |message: String| TargetError {
        message,
        help: HELP.into(),
    };
    let (host, ports) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(other(format!("target `{s}` has no closing `]`")));
        };
        let ports = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| other(format!("target `{s}`: expected `:port` after `]`")))?,
            ),
        };
        match std::net::Ipv6Addr::from_str(host) {
            Ok(a) => (Host::Addr(a.into()), ports),
            Err(_) => return Err(other(format!("target `{host}` is not an IPv6 address"))),
        }
    } else if s.matches(':').count() > 1 {
        // Several colons and no brackets: all of it is an IPv6 address.
        match std::net::Ipv6Addr::from_str(s) {
            Ok(a) => (Host::Addr(a.into()), None),
            Err(_) => {
                return Err(other(format!(
                    "target `{s}` is not an address (an IPv6 target with a port is written \"[IPv6]:port\")"
                )))
            }
        }
    } else {
        let (host, ports) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        (v4_or_name(host).map_err(other)?, ports)
    };
    let ports = match ports {
        None => None,
        Some(p) => Some(crate::parse::parse_port_spec(p).map_err(|e| TargetError {
            message: format!("target {}", e.message),
            help: e.help,
        })?),
    };
    Ok(Target { host, ports })
}

/// The host of a target written without brackets or colons.
fn v4_or_name(host: &str) -> Result<Host, String> {
    match Ipv4Addr::from_str(host) {
        Ok(a) => Ok(Host::Addr(a.into())),
        Err(_) if dns_name(host) => Ok(Host::Name(host.to_owned())),
        Err(_) if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            Err(format!("target `{host}` is not an IPv4 address"))
        }
        Err(_) => Err(format!(
            "target `{host}` is neither an IP address nor a valid DNS name"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Result<String, String> {
        parse(s).map(|t| t.to_string()).map_err(|e| e.message)
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
                format!("target `{bad}` is neither an IP address nor a valid DNS name"),
                "{bad}"
            );
        }
        let long_label = "a".repeat(64);
        assert!(err(&format!("{long_label}.lan")).contains("nor a valid DNS name"));
        let long_name = ["abcdefghi"; 26].join(".");
        assert!(long_name.len() > 253);
        assert!(err(&long_name).contains("nor a valid DNS name"));
        assert_eq!(err("web.lan:0"), "target port 0 is not a valid port");
    }

    #[test]
    fn ipv6_targets_print_back_as_written() {
        for s in [
            "fd00::5",
            "[fd00::5]:80",
            "[fd00::5]:30000-32767",
            // An address in its own right: no port is split off.
            "fd00::5:80",
        ] {
            assert_eq!(target(s).as_deref(), Ok(s), "{s}");
        }
        assert_eq!(target("[fd00::5]").as_deref(), Ok("fd00::5"));
        assert_eq!(parse("[fd00::5]:80").ok().map(|t| t.af()), Some(Af::V6));
        assert_eq!(parse("web.lan:80").ok().map(|t| t.af()), Some(Af::V4));
    }

    #[test]
    fn bad_ipv6_targets() {
        let err = |s: &str| target(s).unwrap_err();
        assert_eq!(err("[fd00::5"), "target `[fd00::5` has no closing `]`");
        assert_eq!(
            err("[fd00::5]80"),
            "target `[fd00::5]80`: expected `:port` after `]`"
        );
        assert_eq!(err("[fd00::5]:0"), "target port 0 is not a valid port");
        assert_eq!(
            err("[web.lan]:80"),
            "target `web.lan` is not an IPv6 address"
        );
        assert!(err("fd00::5::80").contains("written \"[IPv6]:port\""));
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
