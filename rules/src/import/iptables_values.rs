//! Values of iptables options: targets and their `--to-*` arguments,
//! addresses, address ranges, ports.

use std::{net::IpAddr, str::FromStr};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

use super::ir::{Action, Family, PortMap};
use crate::model::PortRange;

pub(crate) fn target_action(
    target: &str,
    goto: bool,
    family: Family,
    to_dest: &[String],
    to_src: &[String],
    to_ports: Option<String>,
) -> Action {
    match target {
        "DNAT" => match to_dest {
            [one] => dnat_target(one, family),
            [] => Action::Unsupported("DNAT without --to-destination".into()),
            _ => Action::Unsupported("DNAT to several --to-destination values (load balancing): the forwarder sends a port to one target".into()),
        },
        "SNAT" => match to_src {
            [one] => {
                let (addr, ports) = split_host_port(one);
                // Source ports come from the forwarder's own `snat_ports`.
                let _ = ports;
                match addr.parse::<IpAddr>() {
                    Ok(a) => Action::Snat { addr: a },
                    Err(_) => Action::Unsupported(format!("--to-source {one}: only a single address is supported (no address ranges)")),
                }
            }
            _ => Action::Unsupported("SNAT needs exactly one --to-source".into()),
        },
        "MASQUERADE" => Action::Masquerade,
        "REDIRECT" => Action::Redirect { to: to_ports.unwrap_or_else(|| "the same port".into()) },
        "ACCEPT" | "RETURN" | "DROP" | "REJECT" => Action::Stop(target.to_owned()),
        "LOG" | "NFLOG" | "MARK" | "CONNMARK" | "CT" | "TCPMSS" | "TRACE" | "NOTRACK" | "CLASSIFY" | "DSCP" | "TOS" | "TTL" | "AUDIT" | "CHECKSUM" | "ULOG" | "SET" => Action::Continue,
        "NETMAP" | "TPROXY" | "NFQUEUE" | "TEE" | "CLUSTERIP" | "SYNPROXY" => Action::Unsupported(format!("target {target} is not a NAT the forwarder does")),
        // Anything else names a chain.
        t => Action::Jump { chain: t.to_owned(), goto },
    }
}

/// `ADDR`, `ADDR:PORT`, `ADDR:A-B`, `ADDR:A-B/BASE`, `[V6]:PORT`, `:PORT`.
fn dnat_target(to: &str, family: Family) -> Action {
    let (host, port) = split_host_port(to);
    if host.is_empty() {
        return Action::LocalPort {
            port: port.unwrap_or_default().to_owned(),
        };
    }
    if host.contains('-') {
        return Action::Unsupported(format!("--to-destination {to}: address ranges (load balancing) are not supported: one target per forward"));
    }
    let Ok(addr) = host.parse::<IpAddr>() else {
        return Action::Unsupported(format!(
            "--to-destination {to}: `{host}` is not an IP address"
        ));
    };
    if Family::of(&addr) != family {
        return Action::Unsupported(format!(
            "--to-destination {to}: address family differs from the rule's"
        ));
    }
    let Some(p) = port else {
        return Action::Dnat {
            addr,
            ports: PortMap::Shift(0),
        };
    };
    let (range, base) = match p.split_once('/') {
        Some((r, b)) => (r, b.parse::<u16>().ok()),
        None => (p, None),
    };
    let parsed = match range.split_once('-') {
        Some((a, b)) => a
            .parse::<u16>()
            .ok()
            .zip(b.parse::<u16>().ok())
            .and_then(|(a, b)| PortRange::new(a, b)),
        None => range.parse::<u16>().ok().and_then(PortRange::single),
    };
    let Some(r) = parsed else {
        return Action::Unsupported(format!(
            "--to-destination {to}: `{p}` is not a port or port range"
        ));
    };
    match base {
        Some(b) => Action::Dnat {
            addr,
            ports: PortMap::Shift(i32::from(r.start()) - i32::from(b)),
        },
        None if r.is_single() => Action::Dnat {
            addr,
            ports: PortMap::Single(r.start()),
        },
        // A range: resolve.rs decides per listen port (kept when inside).
        None => Action::Dnat {
            addr,
            ports: PortMap::Range(r),
        },
    }
}

fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            return (h, p.strip_prefix(':'));
        }
    }
    if s.matches(':').count() > 1 {
        return (s, None);
    }
    match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    }
}

pub(crate) fn nets(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(|part| {
            if let Ok(a) = IpAddr::from_str(part) {
                return Ok(IpNet::from(a));
            }
            IpNet::from_str(part).map(|n| n.trunc()).map_err(|_| {
                format!("`{part}` is not an address or network (hostnames are not resolved)")
            })
        })
        .collect()
}

pub(crate) fn range_nets(s: &str) -> Result<Vec<IpNet>, String> {
    let bad = || format!("`{s}` is not an address range");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    match (
        IpAddr::from_str(a).map_err(|_| bad())?,
        IpAddr::from_str(b).map_err(|_| bad())?,
    ) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Ok(Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect()),
        (IpAddr::V6(a), IpAddr::V6(b)) => Ok(Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect()),
        _ => Err(bad()),
    }
}

/// iptables port syntax: `80`, `30000:32767`, `:1024`, `1024:`.
pub(crate) fn iptables_ports(s: &str) -> Result<PortRange, String> {
    let bad = || format!("`{s}` is not a port or port range");
    let port = |p: &str, d: u16| {
        if p.is_empty() {
            Ok(d)
        } else {
            p.parse::<u16>().map_err(|_| bad())
        }
    };
    let (a, b) = match s.split_once(':').or_else(|| s.split_once('-')) {
        Some((a, b)) => (port(a, 1)?, port(b, 65535)?),
        None => (port(s, 0)?, port(s, 0)?),
    };
    PortRange::new(a, b).ok_or_else(bad)
}
