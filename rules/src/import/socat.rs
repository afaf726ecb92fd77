//! socat command lines to candidate forwards.
//!
//! `socat TCP-LISTEN:8080,bind=100.118.5.68,fork TCP:10.43.126.136:80` is a
//! forward of port 8080 on 100.118.5.68 to 10.43.126.136:80.
//!
//! The fact a reader would get wrong: socat binds to an address, not an
//! interface. The interface comes from `so-bindtodevice`, `--in`, the
//! interface that owns the address (an interfaces file, `--iface-net`, or
//! the live system), in that order; otherwise `in` is left empty for the
//! user to fill (the file does not validate until then) with a hint, since
//! guessing would forward on the wrong interface. `bind=0.0.0.0` (or none)
//! listened on every address, which is `listen = "interface"`: the
//! interface's addresses, followed as they change.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::{
    ir::{Candidate, Family, PortMap, SnatChoice},
    shell::Command,
    Entry, HostView,
};
use crate::model::{PortRange, L4};

/// Options that only tune socat's own sockets or processes: nothing to carry
/// over, since the kernel forwards without a socket or process per connection.
const NO_EQUIVALENT_NEEDED: [&str; 22] = [
    "fork",
    "reuseaddr",
    "reuseport",
    "nodelay",
    "keepalive",
    "backlog",
    "su",
    "su-d",
    "setuid",
    "setgid",
    "user",
    "group",
    "max-children",
    "rcvbuf",
    "sndbuf",
    "linger",
    "keepidle",
    "keepintvl",
    "keepcnt",
    "cloexec",
    "nonblock",
    "ignoreeof",
];

/// socat global options that take a value.
const GLOBAL_OPTS_WITH_VALUE: [&str; 8] = ["-b", "-t", "-T", "-lf", "-lp", "-L", "-W", "-S"];

pub fn command(cmd: &Command, view: &HostView, entries: &mut Vec<Entry>) -> Vec<Candidate> {
    match translate(cmd, view, entries) {
        Ok(c) => c,
        Err(reason) => {
            entries.push(Entry::left(cmd.origin.clone(), reason));
            Vec::new()
        }
    }
}

struct Side<'a> {
    kind: String,
    main: &'a str,
    opts: Vec<(&'a str, Option<&'a str>)>,
}

fn side(addr: &str) -> Result<Side<'_>, String> {
    let (kind, rest) = addr
        .split_once(':')
        .ok_or_else(|| format!("`{addr}` is not a network address"))?;
    let mut parts = rest.split(',');
    let main = parts.next().unwrap_or("");
    // An IPv6 literal in brackets may contain no commas, so this split is safe.
    let opts = parts
        .map(|o| o.split_once('=').map_or((o, None), |(k, v)| (k, Some(v))))
        .collect();
    Ok(Side {
        kind: kind.to_ascii_uppercase(),
        main,
        opts,
    })
}

fn translate(
    cmd: &Command,
    view: &HostView,
    entries: &mut Vec<Entry>,
) -> Result<Vec<Candidate>, String> {
    let mut args = cmd.words[1..].iter();
    let mut addrs = Vec::new();
    while let Some(a) = args.next() {
        if a.starts_with('-') && a.len() > 1 {
            if GLOBAL_OPTS_WITH_VALUE.contains(&a.as_str()) {
                args.next();
            }
            continue;
        }
        addrs.push(a.as_str());
    }
    let [listen, connect] = addrs[..] else {
        return Err(format!(
            "expected two socat addresses, found {}",
            addrs.len()
        ));
    };
    let l = side(listen)?;
    let (l4, mut family) = match l.kind.as_str() {
        "TCP-LISTEN" | "TCP-L" | "TCP4-LISTEN" | "TCP4-L" => (L4::Tcp, Some(Family::V4)),
        "TCP6-LISTEN" | "TCP6-L" => (L4::Tcp, Some(Family::V6)),
        "UDP-LISTEN" | "UDP-L" | "UDP4-LISTEN" | "UDP4-L" | "UDP-RECVFROM" | "UDP4-RECVFROM" => {
            (L4::Udp, Some(Family::V4))
        }
        "UDP6-LISTEN" | "UDP6-L" | "UDP6-RECVFROM" => (L4::Udp, Some(Family::V6)),
        k => {
            return Err(format!(
                "`{k}` is not a TCP or UDP listening address: not a port forward"
            ))
        }
    };
    let port = l
        .main
        .parse::<u16>()
        .ok()
        .and_then(PortRange::single)
        .ok_or_else(|| format!("`{}` is not a port", l.main))?;
    let mut bind: Option<IpAddr> = None;
    let mut allow: Vec<IpNet> = Vec::new();
    let mut device = None;
    let mut v6only = None;
    let mut comments = Vec::new();
    let mut left = Vec::new();
    for (k, v) in &l.opts {
        match (*k, *v) {
            ("bind", Some(v)) => {
                bind = Some(parse_addr(v).ok_or_else(|| {
                    format!("bind={v}: not an IP address (hostnames are not resolved)")
                })?)
            }
            ("range", Some(v)) => allow.push(parse_range(v)?),
            ("so-bindtodevice" | "bindtodevice" | "if", Some(v)) => device = Some(v.to_owned()),
            ("ipv6only" | "ipv6-v6only", v) => v6only = Some(v != Some("0")),
            ("pf", Some(v)) => {
                family = if v.contains('6') {
                    Some(Family::V6)
                } else {
                    Some(Family::V4)
                }
            }
            (k, _) if NO_EQUIVALENT_NEEDED.contains(&k) => {
                if k.starts_with("su") || k.starts_with("set") || k == "user" || k == "group" {
                    comments.push(format!(
                        "`{k}=` needs no equivalent: no process handles the connections"
                    ));
                }
            }
            (k, _) => left.push(format!(
                "option `{k}` of {} has no equivalent and was left out",
                l.kind
            )),
        }
    }
    let c = side(connect)?;
    let (cl4, cfam) = match c.kind.as_str() {
        "TCP" | "TCP4" | "TCP-CONNECT" | "TCP4-CONNECT" => (L4::Tcp, Some(Family::V4)),
        "TCP6" | "TCP6-CONNECT" => (L4::Tcp, Some(Family::V6)),
        "UDP" | "UDP4" | "UDP-CONNECT" | "UDP4-CONNECT" | "UDP-SENDTO" | "UDP4-SENDTO" => (L4::Udp, Some(Family::V4)),
        "UDP6" | "UDP6-CONNECT" | "UDP6-SENDTO" => (L4::Udp, Some(Family::V6)),
        k => return Err(format!("`{k}` is not a TCP or UDP connecting address: not a port forward (socat relays to something else)")),
    };
    if cl4 != l4 {
        return Err(format!(
            "{} to {}: the forwarder does not convert between TCP and UDP",
            l.kind, c.kind
        ));
    }
    let (host, tport) = c
        .main
        .rsplit_once(':')
        .ok_or_else(|| format!("`{}` is not host:port", c.main))?;
    // socat resolves a name when it connects, for every connection: the
    // forward gets the name, which the daemon resolves and follows (A
    // records only, like `TCP4:`).
    let (target, target_name) = match parse_addr(host) {
        Some(a) => (a, None),
        None if crate::target::loopback_name(host) => {
            return Err(format!("target {host} is this host's loopback: socat relays to a local service, which is not a forward; keep socat for it"))
        }
        None if crate::target::dns_name(host) => {
            if cfam == Some(Family::V6) {
                return Err(format!(
                    "{} resolves {host} to IPv6 addresses: {}",
                    c.kind,
                    super::emit::IPV6_REASON
                ));
            }
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), Some(host.to_owned()))
        }
        None => return Err(format!("target `{host}` is neither an IP address nor a DNS name")),
    };
    if target_name.is_none()
        && cfam.is_some_and(|f| f != Family::of(&target))
        && !(cfam == Some(Family::V6) && target.is_ipv4())
    {
        return Err(format!("{} with {host}: address family mismatch", c.kind));
    }
    if target.is_loopback() {
        return Err(format!("target {target} is this host's loopback: socat relays to a local service, which is not a forward; keep socat for it"));
    }
    let tport = tport
        .parse::<u16>()
        .ok()
        .and_then(PortRange::single)
        .ok_or_else(|| format!("`{tport}` is not a port"))?;
    let mut snat = SnatChoice::Auto;
    for (k, v) in &c.opts {
        match (*k, *v) {
            // The source address of the outgoing connection is what SNAT sets.
            ("bind", Some(v)) => {
                snat = SnatChoice::Addr(
                    parse_addr(v.split(':').next().unwrap_or(v))
                        .ok_or_else(|| format!("bind={v}: not an IP address"))?,
                )
            }
            (k, _) if NO_EQUIVALENT_NEEDED.contains(&k) || k == "connect-timeout" => {}
            (k, _) => left.push(format!(
                "option `{k}` of {} has no equivalent and was left out",
                c.kind
            )),
        }
    }
    for reason in left {
        entries.push(Entry::left(cmd.origin.clone(), reason));
    }

    // The listening socket: a wildcard follows the interface.
    let wildcard = bind.is_none_or(|b| b.is_unspecified());
    let listen = bind.filter(|b| !b.is_unspecified());
    let iface = device
        .or_else(|| view.default_iface.clone())
        .or_else(|| listen.and_then(|a| view.owner(a)))
        .unwrap_or_default();
    let mut comments_all = comments;
    if iface.is_empty() {
        comments_all.push(match listen {
            Some(a) => format!("`in` is empty: set it to the interface that owns {a}{}, or import with --in IFACE", hint(a)),
            None => "`in` is empty: socat listened on every interface; set it to the one clients connect through, or import with --in IFACE".into(),
        });
    } else if wildcard {
        comments_all.push(format!(
            "socat listened on every address (bind={}): this forward follows {iface}'s addresses",
            bind.map_or("none".to_owned(), |b| b.to_string())
        ));
    }
    if let Some(n) = &target_name {
        comments_all.push(format!("socat resolved {n} for every connection; the daemon resolves it (A records) and follows its answers as their TTL expires"));
    }
    comments_all.push("socat connected from this host's address; snat = \"auto\" keeps the client's address when replies route back through this host (write \"masquerade\" to keep socat's behaviour)".into());
    let map = if tport == port {
        PortMap::Shift(0)
    } else {
        PortMap::Single(tport.start())
    };
    let make = |fam: Family, listen: Option<IpAddr>| Candidate {
        family: fam,
        iface: iface.clone(),
        listen,
        l4,
        ports: port,
        target,
        target_name: target_name.clone(),
        map,
        allow: allow.clone(),
        snat,
        origins: vec![cmd.origin.clone()],
        comments: comments_all.clone(),
        name_hint: cmd.label.clone(),
        description: cmd.description.clone(),
        local: true,
    };
    let family = family.unwrap_or(Family::V4);
    let mut out = Vec::new();
    if family == Family::V6 {
        // A wildcard IPv6 socket also takes IPv4 unless ipv6only is set
        // (Linux's bindv6only is 0): its IPv4 half is a forward today.
        let dual = wildcard && v6only != Some(true) && target.is_ipv4();
        if dual {
            out.push(make(Family::V4, None));
            entries.push(Entry::left(
                cmd.origin.clone(),
                format!(
                    "the IPv6 half of this dual-stack listener: {}; the IPv4 half is translated",
                    super::emit::IPV6_REASON
                ),
            ));
        } else {
            out.push(make(Family::V6, listen));
        }
    } else {
        out.push(make(
            Family::of(&target).max(listen.map_or(Family::V4, |a| Family::of(&a))),
            listen,
        ));
    }
    Ok(out)
}

fn parse_addr(s: &str) -> Option<IpAddr> {
    s.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// A likely interface for an address, for the comment only.
fn hint(a: IpAddr) -> &'static str {
    let cgnat: Ipv4Net = "100.64.0.0/10".parse().expect("valid constant");
    match a {
        IpAddr::V4(v) if cgnat.contains(&v) => {
            " (100.64.0.0/10 is Tailscale's range: probably tailscale0)"
        }
        _ => "",
    }
}

/// socat `range=`: `ADDR/BITS` or `ADDR:MASK`.
fn parse_range(v: &str) -> Result<IpNet, String> {
    let bad = || format!("range={v}: expected ADDR/BITS or ADDR:MASK");
    if let Some((a, m)) = v
        .split_once(':')
        .filter(|(a, _)| a.parse::<Ipv4Addr>().is_ok())
    {
        let mask: Ipv4Addr = m.parse().map_err(|_| bad())?;
        let len = ipnet::ipv4_mask_to_prefix(mask).map_err(|_| bad())?;
        return Ok(IpNet::V4(
            Ipv4Net::new(a.parse().map_err(|_| bad())?, len)
                .map_err(|_| bad())?
                .trunc(),
        ));
    }
    let v = v.trim_start_matches('[').replace("]", "");
    if let Some(a) = parse_addr(&v) {
        return Ok(IpNet::from(a));
    }
    v.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| bad())
}
