//! TOML text to the model, keeping the source span of every value.
//!
//! `toml_edit`'s `ImDocument` (the parser inside the `toml` crate) keeps byte
//! spans of keys and values, which is what error messages need; serde-based
//! deserialisation would stop at the first error and lose most spans. Every
//! key is checked by hand so that unknown keys get a "did you mean" and all
//! problems of a file are reported in one pass. Value-level problems (a bad
//! port, an unknown keyword) are reported here; relations between values and
//! between forwards are checked in `validate`.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::{
    addrs::{parse_addr, parse_cidr},
    diagnostics::{suggest, Sink, Span},
    flowrate::{default_burst, parse_flow_rate, FlowRate},
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
const GLOBAL_KEYS: [&str; 11] = [
    "conntrack_max",
    "snat_ports",
    "log_level",
    "log_format",
    "metrics",
    "timeouts",
    "rules_watch",
    "rules_poll_interval",
    "new_flows_per_source",
    "new_flows_burst",
    "dns_server",
];
const TOP_KEYS: [&str; 3] = ["global", "forward", "interface"];
const INTERFACE_KEYS: [&str; 1] = ["attach"];
pub(crate) const CONNTRACK_MAX_LIMIT: i64 = 1 << 24;

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

/// A parsed file: forwards that parsed completely, with their spans.
pub(crate) struct Parsed {
    pub rules: RuleSet,
    /// Parallel to `rules.forwards`.
    pub spans: Vec<ForwardSpans>,
    pub global_spans: HashMap<String, Span>,
    /// Forwards with a bad or missing value: left out of `rules`, but the
    /// checks between their good values still run (every problem at once).
    pub partial: Vec<crate::partial::Partial>,
}

pub(crate) fn parse(src: &str, sink: &mut Sink) -> Parsed {
    let mut parsed = Parsed {
        rules: RuleSet::default(),
        spans: Vec::new(),
        global_spans: HashMap::new(),
        partial: Vec::new(),
    };
    let doc = match ImDocument::parse(src) {
        Ok(doc) => doc,
        Err(e) => {
            let (message, help) = e
                .span()
                .and_then(|s| crate::syntax::unquoted_value(src, s.start))
                .unwrap_or_else(|| {
                    (
                        syntax_message(e.message()),
                        "the file must be valid TOML".into(),
                    )
                });
            sink.error(&e.span(), None, message, Some(help));
            return parsed;
        }
    };
    let root = doc.as_table();
    for (key, key_span, item) in entries(root) {
        match key {
            "global" => match item.as_table_like() {
                Some(t) => parse_global(t, sink, &mut parsed),
                None => type_error(
                    sink,
                    &item.span(),
                    None,
                    "global",
                    item,
                    "a table",
                    Some("write a [global] section"),
                ),
            },
            "forward" => parse_forwards(item, sink, &mut parsed),
            "interface" => match item.as_table_like() {
                Some(t) => parse_interfaces(t, sink, &mut parsed),
                None => type_error(
                    sink,
                    &item.span(),
                    None,
                    "interface",
                    item,
                    "a table of interfaces",
                    Some("write [interface.eth0] sections"),
                ),
            },
            _ => unknown_key(sink, &key_span, None, key, &TOP_KEYS, "top level"),
        }
    }
    parsed
}

/// `toml_edit` messages are multi-line with a source excerpt; the first line
/// carries the meaning and the location is reported separately.
fn syntax_message(msg: &str) -> String {
    let first = msg
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid TOML")
        .trim();
    format!("TOML syntax: {first}")
}

/// Non-empty entries of a table with their key spans.
fn entries(t: &dyn TableLike) -> Vec<(&str, Span, &Item)> {
    t.iter()
        .filter(|(_, item)| !item.is_none())
        .map(|(k, item)| (k, t.key(k).and_then(|k| k.span()), item))
        .collect()
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "a table",
        },
    }
}

pub(crate) fn type_error(
    sink: &mut Sink,
    span: &Span,
    ctx: Option<&str>,
    key: &str,
    item: &Item,
    expected: &str,
    help: Option<&str>,
) {
    sink.error(
        span,
        ctx,
        format!("`{key}` must be {expected}, found {}", type_name(item)),
        help.map(str::to_owned),
    );
}

fn unknown_key(
    sink: &mut Sink,
    span: &Span,
    ctx: Option<&str>,
    key: &str,
    known: &[&str],
    place: &str,
) {
    sink.error(
        span,
        ctx,
        format!("unknown key `{key}` in {place}"),
        Some(suggest(key, known)),
    );
}

/// `[interface.NAME]` sections.
fn parse_interfaces(t: &dyn TableLike, sink: &mut Sink, parsed: &mut Parsed) {
    for (name, name_span, item) in entries(t) {
        let ctx_owned = format!("interface {name}");
        let ctx = Some(ctx_owned.as_str());
        if let Err(why) = valid_iface(name) {
            sink.error(
                &name_span,
                ctx,
                why,
                Some("use the name `ip link` shows".into()),
            );
            continue;
        }
        let Some(tbl) = item.as_table_like() else {
            type_error(
                sink,
                &item.span(),
                ctx,
                name,
                item,
                "a table",
                Some("e.g. [interface.eth0] with attach = \"xdp\""),
            );
            continue;
        };
        let mut settings = IfaceSettings::default();
        for (key, key_span, item) in entries(tbl) {
            let span = item.span();
            match key {
                "attach" => {
                    if let Some(s) = expect_str(
                        sink,
                        ctx,
                        key,
                        item,
                        "attach = \"auto\", \"tc\", \"xdp\" or \"tc-legacy\"",
                    ) {
                        match s {
                            "auto" => settings.attach = AttachMode::Auto,
                            "tc" => settings.attach = AttachMode::Tc,
                            "xdp" => settings.attach = AttachMode::Xdp,
                            "tc-legacy" => settings.attach = AttachMode::TcLegacy,
                            _ => bad_keyword(
                                sink,
                                &span,
                                ctx,
                                key,
                                s,
                                &["auto", "tc", "xdp", "tc-legacy"],
                            ),
                        }
                    }
                }
                _ => unknown_key(
                    sink,
                    &key_span,
                    ctx,
                    key,
                    &INTERFACE_KEYS,
                    "[interface.NAME]",
                ),
            }
        }
        parsed.rules.interfaces.insert(name.to_string(), settings);
    }
}

fn parse_global(t: &dyn TableLike, sink: &mut Sink, parsed: &mut Parsed) {
    let g = &mut parsed.rules.global;
    let ctx = Some("global");
    let mut burst: Option<(u32, Span)> = None;
    for (key, key_span, item) in entries(t) {
        let span = item.span();
        parsed.global_spans.insert(key.to_owned(), span.clone());
        match key {
            "conntrack_max" => match item.as_integer() {
                Some(n) if (1..=CONNTRACK_MAX_LIMIT).contains(&n) => g.conntrack_max = n as u32,
                Some(n) => sink.error(
                    &span,
                    ctx,
                    format!("conntrack_max {n} is out of range"),
                    Some(format!(
                        "use a number of flows between 1 and {CONNTRACK_MAX_LIMIT}"
                    )),
                ),
                None => type_error(
                    sink,
                    &span,
                    ctx,
                    key,
                    item,
                    "an integer",
                    Some("e.g. conntrack_max = 262144"),
                ),
            },
            "snat_ports" => {
                let r = match item {
                    Item::Value(Value::String(s)) => parse_port_spec(s.value()),
                    Item::Value(Value::Integer(n)) => parse_port_int(*n.value()),
                    _ => Err(PortError::new(
                        format!(
                            "`snat_ports` must be a port range string, found {}",
                            type_name(item)
                        ),
                        "e.g. snat_ports = \"1024-32767\"",
                    )),
                };
                match r {
                    Ok(r) => g.snat_ports = r,
                    Err(e) => sink.error(&span, ctx, e.message, Some(e.help)),
                }
            }
            "log_level" => {
                let names: Vec<&str> = LogLevel::ALL.iter().map(|(n, _)| *n).collect();
                if let Some(s) = expect_str(sink, ctx, key, item, "e.g. log_level = \"info\"") {
                    match LogLevel::ALL.iter().find(|(n, _)| *n == s) {
                        Some((_, l)) => g.log_level = *l,
                        None => bad_keyword(sink, &span, ctx, key, s, &names),
                    }
                }
            }
            "log_format" => {
                if let Some(s) = expect_str(sink, ctx, key, item, "e.g. log_format = \"text\"") {
                    match s {
                        "text" => g.log_format = LogFormat::Text,
                        "json" => g.log_format = LogFormat::Json,
                        _ => bad_keyword(sink, &span, ctx, key, s, &["text", "json"]),
                    }
                }
            }
            "metrics" => {
                if let Some(s) =
                    expect_str(sink, ctx, key, item, "e.g. metrics = \"127.0.0.1:9750\"")
                {
                    match SocketAddr::from_str(s) {
                        Ok(a) if a.port() != 0 => g.metrics = Some(a),
                        _ => sink.error(
                            &span,
                            ctx,
                            format!("metrics endpoint `{s}` is not an address:port"),
                            Some("e.g. metrics = \"127.0.0.1:9750\"; remove the key to turn metrics off".into()),
                        ),
                    }
                }
            }
            "rules_watch" => {
                let names: Vec<&str> = RulesWatch::ALL.iter().map(|(n, _)| *n).collect();
                if let Some(s) = expect_str(sink, ctx, key, item, "e.g. rules_watch = \"auto\"") {
                    match RulesWatch::ALL.iter().find(|(n, _)| *n == s) {
                        Some((_, w)) => g.rules_watch = *w,
                        None => bad_keyword(sink, &span, ctx, key, s, &names),
                    }
                }
            }
            "rules_poll_interval" => {
                if let Some(s) =
                    expect_str(sink, ctx, key, item, "e.g. rules_poll_interval = \"2s\"")
                {
                    match crate::values::poll_interval(s) {
                        Ok(d) => g.rules_poll_interval = d,
                        Err((msg, help)) => sink.error(&span, ctx, msg, Some(help.into())),
                    }
                }
            }
            "dns_server" => {
                if let Some(list) = string_list(sink, ctx, key, item, &crate::values::DNS_SERVERS) {
                    g.dns_servers = crate::values::dns_servers(sink, ctx, &list);
                }
            }
            "timeouts" => match item.as_table_like() {
                Some(t) => {
                    parse_timeouts(t, sink, g);
                    for (k, _, v) in entries(t) {
                        parsed
                            .global_spans
                            .insert(format!("timeouts.{k}"), v.span());
                    }
                }
                None => type_error(
                    sink,
                    &span,
                    ctx,
                    key,
                    item,
                    "a table",
                    Some("write a [global.timeouts] section"),
                ),
            },
            "new_flows_per_source" => {
                let help = "e.g. new_flows_per_source = \"20/s\" (or \"/m\", \"/h\")";
                if let Some(s) = expect_str(sink, ctx, key, item, help) {
                    match parse_flow_rate(s) {
                        Ok((count, per)) => {
                            g.new_flows_per_source = Some(FlowRate {
                                count,
                                per,
                                burst: default_burst(count, per),
                            })
                        }
                        Err(msg) => sink.error(&span, ctx, msg, Some(help.into())),
                    }
                }
            }
            "new_flows_burst" => match item.as_integer() {
                Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => {
                    burst = Some((n as u32, span.clone()))
                }
                Some(n) => sink.error(
                    &span,
                    ctx,
                    format!("new_flows_burst {n} is out of range"),
                    Some("use a number of flows, at least 1".into()),
                ),
                None => type_error(
                    sink,
                    &span,
                    ctx,
                    key,
                    item,
                    "an integer",
                    Some("e.g. new_flows_burst = 40"),
                ),
            },
            _ => unknown_key(sink, &key_span, ctx, key, &GLOBAL_KEYS, "[global]"),
        }
    }
    if let Some((b, span)) = burst {
        match &mut g.new_flows_per_source {
            Some(r) => r.burst = b,
            None => sink.error(
                &span,
                ctx,
                "new_flows_burst without new_flows_per_source".to_string(),
                Some("set new_flows_per_source = \"N/s\" too, or remove new_flows_burst".into()),
            ),
        }
    }
}

fn parse_timeouts(t: &dyn TableLike, sink: &mut Sink, g: &mut Global) {
    let ctx = Some("global.timeouts");
    for (key, key_span, item) in entries(t) {
        if g.timeouts.get(key).is_none() {
            unknown_key(
                sink,
                &key_span,
                ctx,
                key,
                &Timeouts::KEYS,
                "[global.timeouts]",
            );
            continue;
        }
        let span = item.span();
        let Some(s) = item.as_str() else {
            type_error(
                sink,
                &span,
                ctx,
                key,
                item,
                "a duration string",
                Some("durations have a unit, e.g. \"30s\", \"5m\", \"6h\""),
            );
            continue;
        };
        match parse_duration(s) {
            Ok(d) => {
                g.timeouts.set(key, d);
            }
            Err(msg) => sink.error(
                &span,
                ctx,
                format!("{key}: {msg}"),
                Some(crate::advice::timeout_help(
                    key,
                    msg.contains("shorter than"),
                )),
            ),
        }
    }
}

/// Whole seconds, at least one: the sweeper works in seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e})"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("`{s}` is shorter than one second"));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!("`{s}` is not a whole number of seconds"));
    }
    Ok(d)
}

fn expect_str<'i>(
    sink: &mut Sink,
    ctx: Option<&str>,
    key: &str,
    item: &'i Item,
    help: &str,
) -> Option<&'i str> {
    let s = item.as_str();
    if s.is_none() {
        type_error(sink, &item.span(), ctx, key, item, "a string", Some(help));
    }
    s
}

fn bad_keyword(
    sink: &mut Sink,
    span: &Span,
    ctx: Option<&str>,
    key: &str,
    value: &str,
    allowed: &[&str],
) {
    sink.error(
        span,
        ctx,
        format!("`{value}` is not a valid {key}"),
        Some(suggest(value, allowed)),
    );
}

fn parse_forwards(item: &Item, sink: &mut Sink, parsed: &mut Parsed) {
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

/// Names are CLI arguments and metrics label values: keep them plain.
pub(crate) fn valid_name(s: &str) -> Result<(), String> {
    const HELP: &str =
        "use 1 to 63 characters out of a-z, 0-9, `-` and `_`, starting with a letter or digit";
    if s.is_empty() || s.len() > 63 {
        return Err(HELP.into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        let lower = s.to_ascii_lowercase();
        if lower != s && valid_name(&lower).is_ok() {
            return Err(format!("names are lowercase: write \"{lower}\""));
        }
        return Err(HELP.into());
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(HELP.into());
    }
    Ok(())
}

/// Linux interface names: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, no
/// whitespace, not `.` or `..`.
pub(crate) fn valid_iface(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("`in` is empty: name the interface packets arrive on".into());
    }
    if s.len() > 15 {
        return Err(format!("interface name `{s}` is longer than 15 bytes"));
    }
    if s == "."
        || s == ".."
        || s.contains('/')
        || s.contains(':')
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("`{s}` is not a valid interface name"));
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct PortError {
    pub message: String,
    pub help: String,
}

impl PortError {
    pub(crate) fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        PortError {
            message: message.into(),
            help: help.into(),
        }
    }
}

const PORT_HELP: &str = "use a port between 1 and 65535";

fn parse_port_int(n: i64) -> Result<PortRange, PortError> {
    match u16::try_from(n) {
        Ok(0) => Err(PortError::new("port 0 is not a valid port", PORT_HELP)),
        Ok(p) => Ok(PortRange::single(p).expect("non-zero")),
        Err(_) => Err(PortError::new(
            format!("port {n} is out of range"),
            PORT_HELP,
        )),
    }
}

fn parse_one_port(s: &str) -> Result<u16, PortError> {
    let s = s.trim();
    let n: i64 = s
        .parse()
        .map_err(|_| PortError::new(format!("`{s}` is not a port number"), PORT_HELP))?;
    parse_port_int(n).map(PortRange::start)
}

/// `"80"` or `"30000-32767"`.
pub(crate) fn parse_port_spec(s: &str) -> Result<PortRange, PortError> {
    if let Some((a, b)) = s.split_once(':') {
        return Err(PortError::new(
            format!("`{s}` is not a port range"),
            format!("ranges use a dash: \"{}-{}\"", a.trim(), b.trim()),
        ));
    }
    match s.split_once('-') {
        None => parse_one_port(s).map(|p| PortRange::single(p).expect("non-zero")),
        Some((a, b)) => {
            let (a, b) = (parse_one_port(a)?, parse_one_port(b)?);
            PortRange::new(a, b).ok_or_else(|| {
                PortError::new(
                    format!("port range {a}-{b} is reversed"),
                    format!("write \"{b}-{a}\""),
                )
            })
        }
    }
}
