//! The `[global]` section and its `[global.timeouts]` table.
//!
//! Every key's value span goes into `Parsed::global_spans`, `timeouts.KEY`
//! for a timeout, so that `validate` and `host` can point at a value that
//! only turns out wrong next to another one.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use toml_edit::{Item, TableLike, Value};

use super::{
    items::{bad_keyword, entries, expect_str, type_error, type_name, unknown_key},
    ports::{parse_port_int, parse_port_spec, PortError},
    Parsed,
};
use crate::{
    diagnostics::{Sink, Span},
    flowrate::{default_burst, parse_flow_rate, FlowRate},
    model::*,
    values::string_list,
};

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
pub(crate) const CONNTRACK_MAX_LIMIT: i64 = 1 << 24;

pub(super) fn parse_global(t: &dyn TableLike, sink: &mut Sink, parsed: &mut Parsed) {
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
