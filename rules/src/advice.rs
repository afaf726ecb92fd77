//! Warnings about `[global]` values that load and work, but are rarely what
//! the writer meant: an established-TCP timeout of seconds, a flow table
//! that reserves gigabytes up front, metrics reachable from every network.
//! And the help texts of the timeouts, which say what each one times.
//!
//! The one fact a reader gets wrong: these are warnings, not errors. A lab
//! may want a 30 s established timeout to watch flows expire; the file
//! loads, and the warning says what it costs.
use std::time::Duration;

use forwarder_common::MAP_FLOWS;

use crate::{diagnostics::Sink, model::Timeouts, parse::Parsed};

/// Below this, `tcp_established` cuts idle connections that live happily
/// under netfilter (5 days there): ssh, database pools, kubectl watches.
pub const ESTABLISHED_WARN_BELOW: Duration = Duration::from_secs(300);
/// A flow table reserving more than this (up front, used or not) gets a
/// warning: 1 GiB is about 2.5 million flows.
pub const FLOW_TABLE_WARN_BYTES: u64 = 1 << 30;

/// What each timeout times, for messages.
pub fn timeout_meaning(key: &str) -> &'static str {
    match key {
        "tcp_syn_sent" => "how long a TCP connection waits for the answer to its SYN",
        "tcp_syn_recv" => "how long a TCP connection waits for the client's ACK of the SYN-ACK",
        "tcp_established" => "how long an established TCP connection may stay idle",
        "tcp_fin_wait" => "how long a TCP connection stays tracked once one side closed it",
        "tcp_close_wait" => "how long a TCP connection stays tracked once its FIN was acknowledged",
        "tcp_last_ack" => "how long a TCP connection waits for the ACK of the last FIN",
        "tcp_time_wait" => "how long a TCP connection stays tracked once both sides closed it",
        "tcp_close" => "how long a reset TCP connection stays tracked",
        "udp" => "how long a UDP flow that has seen one direction only may stay idle",
        "udp_stream" => "how long a UDP stream (replied, active past 2 s) may stay idle",
        "icmp" => "how long an ICMP echo exchange stays tracked",
        _ => "an idle timeout",
    }
}

/// A default as the docs write it: seconds under five minutes.
fn duration_text(d: Duration) -> String {
    if d < Duration::from_secs(300) {
        format!("{}s", d.as_secs())
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// The help of a timeout that did not parse (`too_short`: it parsed, and
/// is under a second): what it times, its unit, its minimum, its default.
pub(crate) fn timeout_help(key: &str, too_short: bool) -> String {
    let default = Timeouts::default().get(key).map_or(String::new(), |d| {
        format!(" (the default is \"{}\")", duration_text(d))
    });
    let what = if too_short {
        "a timeout cannot be 0 or turned off: use at least \"1s\""
    } else {
        "write a duration with a unit, like \"30s\", \"5m\" or \"6h\""
    };
    format!("`{key}` is {}; {what}{default}", timeout_meaning(key))
}

pub(crate) fn check_global(parsed: &Parsed, sink: &mut Sink) {
    let g = &parsed.rules.global;
    let span = |key: &str| parsed.global_spans.get(key).cloned().flatten();
    let ctx = Some("global");
    let est = g.timeouts.tcp_established;
    if est < ESTABLISHED_WARN_BELOW {
        sink.warning(
            &span("timeouts.tcp_established"),
            Some("global.timeouts"),
            format!(
                "tcp_established = \"{}\" forgets an idle TCP connection (ssh, a database pool, \
                 a kubectl watch) after {}: its next packet is then not forwarded and the \
                 client sees a reset",
                humantime::format_duration(est),
                humantime::format_duration(est)
            ),
            Some(format!(
                "use hours (the default is \"6h\"; netfilter keeps 5 days); a value under {} is \
                 for tests",
                humantime::format_duration(ESTABLISHED_WARN_BELOW)
            )),
        );
    }
    let flows = crate::memory::estimate(g.conntrack_max, 1);
    let table = flows.map(MAP_FLOWS).map_or(0, |m| m.bytes);
    if table > FLOW_TABLE_WARN_BYTES {
        sink.warning(
            &span("conntrack_max"),
            ctx,
            format!(
                "conntrack_max = {} reserves {} of kernel memory for the flow table when the \
                 dataplane loads, whether flows use it or not",
                g.conntrack_max,
                crate::memory::human(table)
            ),
            Some(format!(
                "size it for the flows you expect at once (the default {} takes {}); \
                 `forwarder check` prints what each map reserves",
                forwarder_common::DEFAULT_CONNTRACK_MAX,
                crate::memory::human(
                    crate::memory::estimate(forwarder_common::DEFAULT_CONNTRACK_MAX, 1)
                        .map(MAP_FLOWS)
                        .map_or(0, |m| m.bytes)
                )
            )),
        );
    }
    if let Some(addr) = g.metrics.filter(|a| a.ip().is_unspecified()) {
        sink.warning(
            &span("metrics"),
            ctx,
            format!(
                "metrics = \"{addr}\" serves the metrics (forward names, traffic counters) on \
                 every address of this host, to every network it is on"
            ),
            Some(format!(
                "bind to 127.0.0.1:{} or to an address of the management network",
                addr.port()
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    fn warnings(text: &str) -> Vec<String> {
        let l = crate::load_str("r.toml", text).unwrap();
        l.warnings.warnings().map(|d| d.render("r.toml")).collect()
    }

    const FORWARD: &str =
        "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = 80\nto = \"192.168.100.80\"\n";

    #[test]
    fn a_few_seconds_of_established_timeout_is_a_warning_with_its_line() {
        let w = warnings(&format!(
            "[global.timeouts]\ntcp_established = \"10s\"\n{FORWARD}"
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("r.toml:2:19: warning: global.timeouts: tcp_established = \"10s\" forgets an idle TCP connection"), "{w:?}");
        assert!(warnings(&format!(
            "[global.timeouts]\ntcp_established = \"1h\"\n{FORWARD}"
        ))
        .is_empty());
    }

    #[test]
    fn a_16m_table_says_what_it_reserves() {
        let w = warnings(&format!("[global]\nconntrack_max = 16777216\n{FORWARD}"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("conntrack_max = 16777216 reserves 7.0 GiB"),
            "{w:?}"
        );
        assert!(warnings(&format!("[global]\nconntrack_max = 1000000\n{FORWARD}")).is_empty());
    }

    #[test]
    fn metrics_on_every_address_is_a_warning() {
        let w = warnings(&format!("[global]\nmetrics = \"0.0.0.0:9750\"\n{FORWARD}"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("127.0.0.1:9750"), "{w:?}");
        assert!(warnings(&format!("[global]\nmetrics = \"[::]:9750\"\n{FORWARD}")).len() == 1);
        assert!(warnings(&format!(
            "[global]\nmetrics = \"127.0.0.1:9750\"\n{FORWARD}"
        ))
        .is_empty());
    }
}
