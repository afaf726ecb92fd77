//! TOML text to the model, keeping the source span of every value.
//!
//! `toml_edit`'s `ImDocument` (the parser inside the `toml` crate) keeps byte
//! spans of keys and values, which is what error messages need; serde-based
//! deserialisation would stop at the first error and lose most spans. Every
//! key is checked by hand so that unknown keys get a "did you mean" and all
//! problems of a file are reported in one pass. Value-level problems (a bad
//! port, an unknown keyword) are reported here; relations between values and
//! between forwards are checked in `validate`.
//!
//! One submodule a section of the file (`global`, `interfaces`, `forward`);
//! `items` has the messages they share, `names` and `ports` the value
//! checks that other modules (targets, addresses) use too.

mod forward;
mod global;
mod interfaces;
mod items;
mod names;
mod ports;

use std::collections::HashMap;

use toml_edit::ImDocument;

use forward::parse_forwards;
pub(crate) use forward::ForwardSpans;
use global::parse_global;
use interfaces::parse_interfaces;
pub(crate) use items::type_error;
use items::{entries, unknown_key};
pub(crate) use ports::{parse_port_spec, PortError};

use crate::{
    diagnostics::{Sink, Span},
    model::*,
};

const TOP_KEYS: [&str; 3] = ["global", "forward", "interface"];

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
