//! Saying what a TOML syntax error means in a rules file. The commonest
//! one is a value written without quotes, `to = 192.168.100.80`, which
//! TOML reads as the number 192.168 followed by garbage: its parser says
//! "expected newline, `#`", true and useless. Here the line is looked at
//! again and the error becomes "quote the address", with the line as it
//! should be.
//!
//! The one fact a reader gets wrong: this never accepts anything. The file
//! is still rejected; only the message and its help change, and only when
//! the line holds an unquoted value. Every other syntax error keeps the
//! parser's own words.

/// What an unquoted value looks like, for the message.
fn kind_of(value: &str) -> &'static str {
    let v = value.trim();
    let v4 = |c: char| c.is_ascii_digit() || matches!(c, '.' | ':' | '/');
    let v6 = |c: char| c.is_ascii_hexdigit() || matches!(c, ':' | '/' | '[' | ']' | '.');
    let ipv4 = v.contains('.') && v.starts_with(|c: char| c.is_ascii_digit()) && v.chars().all(v4);
    let ipv6 = v.contains(':') && v.chars().all(v6);
    if ipv4 || ipv6 {
        "address"
    } else if v.contains('-') && v.chars().all(|c| c.is_ascii_digit() || c == '-') {
        "port range"
    } else if v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().any(|c| c.is_ascii_alphabetic())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
    {
        "duration"
    } else {
        "value"
    }
}

fn quoted(item: &str) -> bool {
    item.starts_with('"') || item.starts_with('\'')
}

/// An array's items, quoted where they were not; `None` when all were.
fn quote_items(inner: &str) -> Option<(String, &'static str)> {
    let items: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let bare: Vec<&&str> = items.iter().filter(|i| !quoted(i)).collect();
    let kind = kind_of(bare.first()?);
    let fixed: Vec<String> = items
        .iter()
        .map(|i| {
            if quoted(i) {
                i.to_string()
            } else {
                format!("\"{i}\"")
            }
        })
        .collect();
    Some((fixed.join(", "), kind))
}

/// The message and help for a syntax error at byte `at` of `src`, when the
/// line there holds an unquoted value.
pub(crate) fn unquoted_value(src: &str, at: usize) -> Option<(String, String)> {
    let at = at.min(src.len());
    let start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = src[at..].find('\n').map_or(src.len(), |i| at + i);
    let line = src[start..end].trim_end_matches('\r');
    let code = line.split(" #").next().unwrap_or(line).trim();
    match code.split_once('=') {
        Some((key, value)) => {
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() || quoted(value) || key.is_empty() {
                return None;
            }
            if let Some(inner) = value.strip_prefix('[') {
                let inner = inner.trim_end_matches(']');
                let (items, kind) = quote_items(inner)?;
                let close = if value.ends_with(']') { "]" } else { "" };
                return Some((
                    format!("`{code}`: quote each {kind}"),
                    format!("TOML strings are quoted: write {key} = [{items}{close}"),
                ));
            }
            if value.starts_with('{') || value == "true" || value == "false" {
                return None;
            }
            let kind = kind_of(value);
            Some((
                format!("`{code}`: quote the {kind}"),
                format!("TOML strings are quoted: write {key} = \"{value}\""),
            ))
        }
        // A line of a multi-line array: `  10.0.0.0/8,`.
        None => {
            let item = code.trim_end_matches(',').trim();
            if item.is_empty() || quoted(item) || item.starts_with('[') {
                return None;
            }
            let kind = kind_of(item);
            (kind == "address").then(|| {
                (
                    format!("`{item}`: quote the address"),
                    format!("TOML strings are quoted: write \"{item}\""),
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(src: &str, needle: &str) -> Option<(String, String)> {
        unquoted_value(src, src.find(needle).unwrap())
    }

    #[test]
    fn unquoted_values_get_quoted_in_the_help() {
        let src = "[[forward]]\nto = 192.168.100.80\n";
        assert_eq!(
            at(src, ".168"),
            Some((
                "`to = 192.168.100.80`: quote the address".into(),
                "TOML strings are quoted: write to = \"192.168.100.80\"".into()
            ))
        );
        let (m, h) = at("to = 192.168.100.80:8080 # web\n", "80:").unwrap();
        assert_eq!(m, "`to = 192.168.100.80:8080`: quote the address");
        assert_eq!(
            h,
            "TOML strings are quoted: write to = \"192.168.100.80:8080\""
        );
        let (m, h) = at("allow = [10.0.0.0/8, \"1.2.3.4\"]\n", "10.").unwrap();
        assert_eq!(m, "`allow = [10.0.0.0/8, \"1.2.3.4\"]`: quote each address");
        assert_eq!(
            h,
            "TOML strings are quoted: write allow = [\"10.0.0.0/8\", \"1.2.3.4\"]"
        );
        assert!(at("snat = masquerade\n", "masq")
            .unwrap()
            .0
            .ends_with("quote the value"));
        assert!(at("port = 30000-32767\n", "-")
            .unwrap()
            .0
            .ends_with("quote the port range"));
        assert!(at("udp = 60s\n", "60")
            .unwrap()
            .0
            .ends_with("quote the duration"));
        assert!(at("allow = [\n  10.0.0.0/8,\n]\n", "10.")
            .unwrap()
            .0
            .ends_with("quote the address"));
    }

    #[test]
    fn other_syntax_errors_keep_the_parsers_words() {
        assert_eq!(at("name = \"web\nin = \"x\"\n", "web"), None);
        assert_eq!(at("[[forward]\n", "forward"), None);
        assert_eq!(at("x = true\n", "true"), None);
    }
}
