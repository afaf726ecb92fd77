//! `[[forward]]` sections (or `forward = [{...}]` written inline): one
//! forward each, with the span of every value.
//!
//! A forward with any bad or missing value is not dropped: it goes to
//! `Parsed::partial` with its good values, so the checks between forwards
//! still report everything in one pass.

use std::{collections::HashMap, net::Ipv4Addr};

use toml_edit::{Item, TableLike, Value};

use super::{
    items::{bad_keyword, entries, expect_str, type_error, type_name, unknown_key},
    names::{valid_iface, valid_name},
    ports::{parse_port_int, parse_port_spec, PortError},
    Parsed,
};
use crate::{
    addrs::{parse_addr, parse_cidr},
    diagnostics::{Sink, Span},
    model::*,
    values::{string_list, ALLOW_LIST, NODE_LIST},
};

pub(crate) const FORWARD_KEYS: [&str; 14] = [
    "name",
    "description",
    "in",
    "listen",
    "family",
    "proto",
    "port",
    "to",
    "snat",
    "allow",
    "mss_clamp",
    "reject",
    "path",
    "nodes",
];

/// Where each value of a forward came from.
#[derive(Clone, Debug, Default)]
pub(crate) struct ForwardSpans {
    /// The `[[forward]]` header (or inline table); used for missing keys.
    pub table: Span,
    pub(crate) fields: HashMap<&'static str, Span>,
    pub allow: Vec<Span>,
    /// One per `nodes` entry.
    pub nodes: crate::nodes::NodeSpans,
}

impl ForwardSpans {
    /// The value span of `key`, or the table's when the key was defaulted.
    pub fn field(&self, key: &str) -> Span {
        self.fields
            .get(key)
            .cloned()
            .unwrap_or_else(|| self.table.clone())
    }
}

pub(super) fn parse_forwards(item: &Item, sink: &mut Sink, parsed: &mut Parsed) {
    match item {
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                parse_forward(i + 1, t, t.span(), sink, parsed);
            }
        }
        // `forward = [{...}, {...}]` is the same thing written inline.
        Item::Value(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                match v.as_inline_table() {
                    Some(t) => parse_forward(i + 1, t, v.span(), sink, parsed),
                    None => sink.error(
                        &v.span(),
                        None,
                        "each `forward` must be a table",
                        Some("write each forward as a [[forward]] section".into()),
                    ),
                }
            }
        }
        _ => sink.error(
            &item.span(),
            None,
            format!(
                "`forward` must be an array of tables, found {}",
                type_name(item)
            ),
            Some("write each forward as a [[forward]] section (two brackets)".into()),
        ),
    }
}

fn parse_forward(
    index: usize,
    t: &dyn TableLike,
    table_span: Span,
    sink: &mut Sink,
    parsed: &mut Parsed,
) {
    let mut spans = ForwardSpans {
        table: table_span.clone(),
        ..Default::default()
    };
    let errors_before = sink.items.iter().filter(|d| d.is_error()).count();

    // The name first: every other message about this forward carries it.
    let name = t
        .get("name")
        .and_then(|i| i.as_str())
        .filter(|n| valid_name(n).is_ok());
    let ctx_owned = match name {
        Some(n) => format!("forward \"{n}\""),
        None => format!("forward #{index}"),
    };
    let ctx = Some(ctx_owned.as_str());

    let mut f = Forward::new(
        String::new(),
        String::new(),
        PortRange::single(1).expect("1 is a port"),
        Target::ip(Ipv4Addr::UNSPECIFIED, None),
    );
    let seen = |k: &str| t.get(k).is_some_and(|i| !i.is_none());
    let required = ["name", "in", "port", "to"];
    for key in required {
        if !seen(key) {
            let example = match key {
                "name" => "name = \"web-http\"",
                "in" => "in = \"eth0\" (the interface packets arrive on)",
                "port" => "port = 80 or port = \"30000-32767\"",
                _ => "to = \"192.168.100.80:80\"",
            };
            sink.error(
                &table_span,
                ctx,
                format!("missing `{key}`"),
                Some(format!("add {example}")),
            );
        }
    }
    let mut family = None;
    let mut failed = crate::partial::Failed::missing(&required, seen);

    for (key, key_span, item) in entries(t) {
        failed.after_key(sink);
        let span = item.span();
        if let Some(k) = FORWARD_KEYS.iter().find(|k| **k == key) {
            spans.fields.insert(k, span.clone());
            failed.before_key(k, sink);
        }
        match key {
            "name" => {
                if let Some(s) = expect_str(sink, ctx, key, item, "e.g. name = \"web-http\"") {
                    match valid_name(s) {
                        Ok(()) => f.name = s.to_owned(),
                        Err(help) => sink.error(
                            &span,
                            ctx,
                            format!("`{s}` is not a valid forward name"),
                            Some(help),
                        ),
                    }
                }
            }
            "description" => {
                if let Some(s) = expect_str(
                    sink,
                    ctx,
                    key,
                    item,
                    "e.g. description = \"ingress controller\"",
                ) {
                    f.description = Some(s.to_owned());
                }
            }
            "in" => {
                if let Some(s) = expect_str(sink, ctx, key, item, "e.g. in = \"vmbr0\"") {
                    match valid_iface(s) {
                        Ok(()) => f.iface = s.to_owned(),
                        Err(msg) => sink.error(&span, ctx, msg, Some("use the interface name as `ip link` shows it, e.g. \"vmbr0\" or \"tailscale0\"".into())),
                    }
                }
            }
            "listen" => {
                if let Some(s) = expect_str(
                    sink,
                    ctx,
                    key,
                    item,
                    "listen = \"interface\" or a fixed IP address",
                ) {
                    if s == "interface" {
                        f.listen = Listen::Interface;
                    } else {
                        match parse_addr(s) {
                            Some(a) => f.listen = Listen::Addr(a),
                            None => sink.error(
                                &span,
                                ctx,
                                format!("listen `{s}` is neither an IP address nor \"interface\""),
                                Some("use \"interface\" to follow the interface's own addresses, or one fixed IPv4 or IPv6 address".into()),
                            ),
                        }
                    }
                }
            }
            "family" => {
                let names: Vec<&str> = Family::ALL.iter().map(|(n, _)| *n).collect();
                if let Some(s) = expect_str(
                    sink,
                    ctx,
                    key,
                    item,
                    "family = \"ipv4\", \"ipv6\" or \"both\"",
                ) {
                    match Family::ALL.iter().find(|(n, _)| *n == s) {
                        Some((_, fam)) => family = Some(*fam),
                        None => bad_keyword(sink, &span, ctx, key, s, &names),
                    }
                }
            }
            "proto" => {
                if let Some(s) =
                    expect_str(sink, ctx, key, item, "proto = \"tcp\", \"udp\" or \"both\"")
                {
                    match s {
                        "tcp" => f.proto = Proto::Tcp,
                        "udp" => f.proto = Proto::Udp,
                        "both" => f.proto = Proto::Both,
                        _ => bad_keyword(sink, &span, ctx, key, s, &["tcp", "udp", "both"]),
                    }
                }
            }
            "port" => {
                let r = match item {
                    Item::Value(Value::Integer(n)) => parse_port_int(*n.value()),
                    Item::Value(Value::String(s)) => parse_port_spec(s.value()),
                    _ => Err(PortError::new(
                        format!(
                            "`port` must be an integer or a range string, found {}",
                            type_name(item)
                        ),
                        "e.g. port = 80 or port = \"30000-32767\"",
                    )),
                };
                match r {
                    Ok(r) => f.ports = r,
                    Err(e) => sink.error(&span, ctx, e.message, Some(e.help)),
                }
            }
            "to" => {
                if let Some(s) = expect_str(sink, ctx, key, item, "e.g. to = \"192.168.100.80:80\"")
                {
                    match crate::target::parse(s) {
                        Ok(tgt) => f.target = tgt,
                        Err(e) => sink.error(&span, ctx, e.message, Some(e.help)),
                    }
                }
            }
            "snat" => {
                if let Some(s) = expect_str(
                    sink,
                    ctx,
                    key,
                    item,
                    "snat = \"off\", \"auto\", \"masquerade\" or an address of this host",
                ) {
                    match s {
                        "off" => f.snat = Snat::Off,
                        "auto" => f.snat = Snat::Auto,
                        "masquerade" => f.snat = Snat::Masquerade,
                        _ => match parse_addr(s) {
                            Some(a) => f.snat = Snat::Fixed(a),
                            None => sink.error(
                                &span,
                                ctx,
                                format!("snat `{s}` is neither a keyword nor an IP address"),
                                Some(match crate::diagnostics::did_you_mean(s, ["off", "auto", "masquerade"]) {
                                    Some(k) => format!("did you mean `{k}`?"),
                                    None => "use \"off\", \"auto\", \"masquerade\" or an address of this host".into(),
                                }),
                            ),
                        },
                    }
                }
            }
            "allow" => {
                let Some(values) = string_list(sink, ctx, key, item, &ALLOW_LIST) else {
                    continue;
                };
                for (s, vspan) in values {
                    match parse_cidr(s) {
                        Ok(net) => {
                            f.allow.push(net);
                            spans.allow.push(vspan);
                        }
                        Err(e) => sink.error(&vspan, ctx, e.message, Some(e.help)),
                    }
                }
            }
            "mss_clamp" => match item {
                Item::Value(Value::String(s)) => match s.value().as_str() {
                    "auto" => f.mss_clamp = MssClamp::Auto,
                    "off" => f.mss_clamp = MssClamp::Off,
                    other => bad_keyword(sink, &span, ctx, key, other, &["auto", "off"]),
                },
                Item::Value(Value::Integer(n)) => match u16::try_from(*n.value()) {
                    Ok(m) if (MssClamp::MIN..=MssClamp::MAX).contains(&m) => {
                        f.mss_clamp = MssClamp::Fixed(m)
                    }
                    _ => sink.error(
                        &span,
                        ctx,
                        format!("mss_clamp {} is out of range", n.value()),
                        Some(format!(
                            "use an MSS between {} and {}, or \"auto\"",
                            MssClamp::MIN,
                            MssClamp::MAX
                        )),
                    ),
                },
                _ => type_error(
                    sink,
                    &span,
                    ctx,
                    key,
                    item,
                    "\"auto\", \"off\" or an integer",
                    Some("e.g. mss_clamp = 1240"),
                ),
            },
            "reject" => {
                if let Some(s) = expect_str(sink, ctx, key, item, "reject = \"rst\" or \"drop\"") {
                    match s {
                        "rst" => f.reject = Reject::Rst,
                        "drop" => f.reject = Reject::Drop,
                        _ => bad_keyword(sink, &span, ctx, key, s, &["rst", "drop"]),
                    }
                }
            }
            "path" => {
                if let Some(s) = expect_str(
                    sink,
                    ctx,
                    key,
                    item,
                    "path = \"auto\", \"redirect\" or \"stack\"",
                ) {
                    match s {
                        "auto" => f.path = PathMode::Auto,
                        "redirect" => f.path = PathMode::Redirect,
                        "stack" => f.path = PathMode::Stack,
                        _ => bad_keyword(sink, &span, ctx, key, s, &["auto", "redirect", "stack"]),
                    }
                }
            }
            "nodes" => {
                let Some(values) = string_list(sink, ctx, key, item, &NODE_LIST) else {
                    continue;
                };
                for (s, vspan) in values {
                    match crate::nodes::valid_node_name(s) {
                        Ok(()) => {
                            f.nodes.push(s.to_owned());
                            spans.nodes.push(vspan);
                        }
                        Err(help) => sink.error(
                            &vspan,
                            ctx,
                            format!("`{s}` is not a valid node name"),
                            Some(help),
                        ),
                    }
                }
            }
            _ => unknown_key(sink, &key_span, ctx, key, &FORWARD_KEYS, "[[forward]]"),
        }
    }

    failed.after_key(sink);
    // Without `family`, a fixed address's own or the target's (what a file
    // written before dual-stack meant); a contradiction is for `validate`.
    f.family = family.unwrap_or_else(|| f.default_family());

    let errors_after = sink.items.iter().filter(|d| d.is_error()).count();
    if errors_after == errors_before {
        parsed.rules.forwards.push(f);
        parsed.spans.push(spans);
    } else {
        parsed.partial.push(crate::partial::Partial {
            forward: f,
            spans,
            failed,
        });
    }
}
