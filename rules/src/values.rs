//! Value shapes several keys of the rules file share, parsed with the same
//! messages: lists written as one string or an array of strings, and the
//! rules-file poll interval (sub-second, unlike the whole-second timeouts).
use std::time::Duration;

use toml_edit::{Item, Value};

use crate::{
    diagnostics::{Sink, Span},
    model::RulesWatch,
    parse::type_error,
};

/// What a key that takes one string or an array of strings says when the
/// value has another shape.
pub(crate) struct ListMessages {
    expected: &'static str,
    example: &'static str,
    empty: &'static str,
    empty_help: &'static str,
    not_string: &'static str,
    not_string_help: &'static str,
}

pub(crate) const ALLOW_LIST: ListMessages = ListMessages {
    expected: "an array of addresses or CIDRs",
    example: "e.g. allow = [\"100.101.92.95\", \"192.168.1.0/24\"]",
    empty: "an empty allow-list would refuse every source",
    empty_help: "remove `allow` to accept every source, or list the addresses that may connect",
    not_string: "allow-list entries must be strings",
    not_string_help: "e.g. \"100.101.92.95\" or \"192.168.1.0/24\"",
};

pub(crate) const NODE_LIST: ListMessages = ListMessages {
    expected: "an array of node names",
    example: "e.g. nodes = [\"pve-alpha\", \"pve-beta\"]",
    empty: "an empty nodes list would apply the forward on no node",
    empty_help: "remove `nodes` to apply it on every node, or name the nodes (their hostnames)",
    not_string: "node names must be strings",
    not_string_help: "e.g. nodes = [\"pve-alpha\"]",
};

/// The strings of a key that takes one string or an array of them, with
/// their spans; `None` (after reporting) for another type. An empty array
/// and non-string elements are reported; the strings still come back.
pub(crate) fn string_list<'i>(
    sink: &mut Sink,
    ctx: Option<&str>,
    key: &str,
    item: &'i Item,
    msg: &ListMessages,
) -> Option<Vec<(&'i str, Span)>> {
    let span = item.span();
    let values: Vec<&Value> = match item {
        Item::Value(Value::Array(a)) => a.iter().collect(),
        Item::Value(v @ Value::String(_)) => vec![v],
        _ => {
            type_error(sink, &span, ctx, key, item, msg.expected, Some(msg.example));
            return None;
        }
    };
    if values.is_empty() {
        sink.error(&span, ctx, msg.empty, Some(msg.empty_help.into()));
    }
    let mut out = Vec::new();
    for v in values {
        match v.as_str() {
            Some(s) => out.push((s, v.span())),
            None => sink.error(
                &v.span(),
                ctx,
                msg.not_string,
                Some(msg.not_string_help.into()),
            ),
        }
    }
    Some(out)
}

pub(crate) const DNS_SERVERS: ListMessages = ListMessages {
    expected: "an address or an array of addresses",
    example: "e.g. dns_server = \"10.43.0.10\" (k3s's CoreDNS) or [\"192.168.1.1\", \"192.168.1.2:5353\"]",
    empty: "an empty dns_server list would leave name targets without a resolver",
    empty_help: "remove `dns_server` to use the system's resolver (/etc/resolv.conf)",
    not_string: "DNS servers must be strings",
    not_string_help: "e.g. \"10.43.0.10\" or \"10.43.0.10:53\"",
};

/// `dns_server` entries: `IP` (port 53) or `IP:PORT` (`[IPv6]:PORT`).
/// Bad entries are reported; the good ones come back.
pub(crate) fn dns_servers(
    sink: &mut Sink,
    ctx: Option<&str>,
    list: &[(&str, Span)],
) -> Vec<std::net::SocketAddr> {
    use std::net::{IpAddr, SocketAddr};
    let mut out = Vec::new();
    for (s, span) in list {
        let parsed = s
            .parse::<SocketAddr>()
            .ok()
            .filter(|a| a.port() != 0)
            .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Some(a) if a.ip().is_unspecified() || a.ip().is_multicast() => sink.error(
                span,
                ctx,
                format!("DNS server {s} is not a unicast address"),
                Some("use the address of a DNS server, e.g. \"10.43.0.10\"".into()),
            ),
            Some(a) => out.push(a),
            None => sink.error(
                span,
                ctx,
                format!("DNS server `{s}` is not an address or address:port"),
                Some(DNS_SERVERS.not_string_help.into()),
            ),
        }
    }
    out
}

/// `rules_poll_interval`: a duration between the model's bounds; else the
/// message and the help.
pub(crate) fn poll_interval(s: &str) -> Result<Duration, (String, &'static str)> {
    let (min, max) = (RulesWatch::MIN_POLL_INTERVAL, RulesWatch::MAX_POLL_INTERVAL);
    match humantime::parse_duration(s) {
        Ok(d) if (min..=max).contains(&d) => Ok(d),
        Ok(_) => Err((
            format!("rules_poll_interval `{s}` is out of range"),
            "use between \"100ms\" and \"1h\"; the default \"2s\" suits pmxcfs",
        )),
        Err(e) => Err((
            format!("rules_poll_interval `{s}` is not a duration ({e})"),
            "durations look like \"2s\", \"500ms\" or \"1m\"",
        )),
    }
}
