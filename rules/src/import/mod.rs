//! Migration from what users run today: `iptables` NAT rules and `socat`
//! units. Importers never drop input silently: everything they did not turn
//! into a forward is listed in [`Imported::skipped`] with the reason, and
//! repeated at the end of the generated file.

pub mod iptables;
pub mod socat;

use std::collections::HashSet;

use crate::{
    model::{Forward, RuleSet},
    print::forward_to_toml,
    Diagnostics, Loaded,
};

/// Input the importer did not translate (or translated only in part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Where it came from: a file name, or empty for standard input.
    pub source: String,
    /// 1-based line (the first line of a continued line).
    pub line: usize,
    pub text: String,
    pub reason: String,
}

impl Skipped {
    pub fn render(&self) -> String {
        let at = if self.source.is_empty() {
            format!("line {}", self.line)
        } else {
            format!("{}:{}", self.source, self.line)
        };
        format!("{at}: {}\n  {}", self.text, self.reason)
    }
}

/// A generated rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The forwards, as parsed back from `toml` they would be.
    pub rules: RuleSet,
    pub skipped: Vec<Skipped>,
    /// The rules file: header, forwards with comments citing their source
    /// lines, and the untranslated lines.
    pub toml: String,
}

impl Imported {
    /// Loads the generated text like any rules file, so the user learns at
    /// import time what still needs a hand (an empty `in`, overlaps...).
    pub fn validate(&self, file: &str) -> Result<Loaded, Diagnostics> {
        crate::load_str(file, &self.toml)
    }
}

/// A forward and the comment lines that explain where it came from.
pub(crate) struct Draft {
    pub forward: Forward,
    pub comments: Vec<String>,
}

pub(crate) fn render(header: &[String], drafts: Vec<Draft>, skipped: Vec<Skipped>) -> Imported {
    let mut toml = String::new();
    for h in header {
        toml.push_str(&comment_line(h));
    }
    for d in &drafts {
        toml.push('\n');
        for c in &d.comments {
            toml.push_str(&comment_line(c));
        }
        toml.push_str(&forward_to_toml(&d.forward));
    }
    if !skipped.is_empty() {
        toml.push_str(&format!("\n# Not translated ({}):\n", skipped.len()));
        for s in &skipped {
            for line in s.render().lines() {
                toml.push_str(&comment_line(&format!("  {line}")));
            }
        }
    }
    let rules = RuleSet {
        forwards: drafts.into_iter().map(|d| d.forward).collect(),
        ..Default::default()
    };
    Imported {
        rules,
        skipped,
        toml,
    }
}

/// `# text`, with any newline in `text` kept inside the comment.
fn comment_line(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        out.push('#');
        if !l.is_empty() {
            out.push(' ');
            out.push_str(l);
        }
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("#\n");
    }
    out
}

/// A forward name from free text: lowercase, runs of other characters
/// turned into one `-`, trimmed to a valid name.
pub(crate) fn sanitize_name(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches(|c| c == '-' || c == '_').to_owned();
    out.truncate(48);
    out.trim_end_matches('-').to_owned()
}

/// `base`, or `base-2`, `base-3`... whichever is not taken yet.
pub(crate) fn unique_name(base: &str, used: &mut HashSet<String>) -> String {
    let base = if base.is_empty() { "forward" } else { base };
    let mut name = base.to_owned();
    let mut n = 2;
    while !used.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// Joins lines ending in a backslash; yields (first line number, text).
pub(crate) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = line.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            current = Some((start, acc));
        } else {
            acc.push_str(line);
            out.push((start, acc));
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(sanitize_name("Immich Socat Proxy!"), "immich-socat-proxy");
        assert_eq!(sanitize_name("--x--"), "x");
        let mut used = HashSet::new();
        assert_eq!(unique_name("a", &mut used), "a");
        assert_eq!(unique_name("a", &mut used), "a-2");
        assert_eq!(unique_name("", &mut used), "forward");
    }

    #[test]
    fn continuation_lines() {
        assert_eq!(
            logical_lines("a \\\n b\nc\n"),
            vec![(1, "a   b".to_string()), (3, "c".to_string())]
        );
    }
}
