//! Reading `toml_edit` items with the messages every section shares: a
//! value of the wrong type, an unknown key ("did you mean"), a keyword that
//! is not one of the allowed ones.
//!
//! Every message takes the value's span; a key that is missing has none,
//! so those messages point at the table instead (see `forward`).

use toml_edit::{Item, TableLike, Value};

use crate::diagnostics::{suggest, Sink, Span};

/// Non-empty entries of a table with their key spans.
pub(crate) fn entries(t: &dyn TableLike) -> Vec<(&str, Span, &Item)> {
    t.iter()
        .filter(|(_, item)| !item.is_none())
        .map(|(k, item)| (k, t.key(k).and_then(|k| k.span()), item))
        .collect()
}

pub(crate) fn type_name(item: &Item) -> &'static str {
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

pub(crate) fn unknown_key(
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

pub(crate) fn expect_str<'i>(
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

pub(crate) fn bad_keyword(
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
