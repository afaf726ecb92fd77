//! Errors and warnings about a rules file, with the place they point at.
//!
//! Rendered like a compiler message so editors and terminals can jump to it:
//!
//! ```text
//! rules.toml:12:7: error: forward "web-http": port 0 is not a valid port
//!   help: use a port between 1 and 65535
//! ```

use std::{fmt, ops::Range};

/// A byte range in the source text, as the TOML parser reports it.
pub(crate) type Span = Option<Range<usize>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    /// Not a problem of the file: something worth knowing about how it
    /// meets this host (netfilter does not see forwarded flows), or what
    /// `check` could not verify.
    Note,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// 1-based line and column (columns count characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file it is in when that is not the main file of its
    /// [`Diagnostics`] (a drop-in of `rules.d/`).
    pub file: Option<String>,
    pub location: Option<Location>,
    /// What the message is about, e.g. `forward "web-http"` or `forward #3`
    /// (a forward without a usable name).
    pub context: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// The diagnostic as one or two lines, prefixed with `file`.
    pub fn render(&self, file: &str) -> String {
        let mut out = String::from(self.file.as_deref().unwrap_or(file));
        if let Some(loc) = self.location {
            out.push_str(&format!(":{}:{}", loc.line, loc.column));
        }
        out.push_str(": ");
        out.push_str(self.severity.as_str());
        out.push_str(": ");
        if let Some(ctx) = &self.context {
            out.push_str(ctx);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        if let Some(help) = &self.help {
            out.push_str("\n  help: ");
            out.push_str(help);
        }
        out
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The diagnostics of one file, in source order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// The file name as the user gave it (used as the message prefix).
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.is_error())
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
    pub fn notes(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Note)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&d.render(&self.file))?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects diagnostics while parsing and validating one source text, turning
/// byte spans into line/column as they are pushed.
///
/// A rules file with drop-ins is one text made of several files (see
/// `dropins`): `files` says where each drop-in starts, locations count lines
/// from the start of their own file, and diagnostics in a drop-in name it.
/// While one file is parsed its spans are relative to it: `base` is added.
pub(crate) struct Sink<'a> {
    src: &'a str,
    line_starts: Vec<usize>,
    /// Drop-ins: (offset of the file's first byte in `src`, its name).
    files: Vec<(usize, String)>,
    /// Added to every span pushed (the offset of the file being parsed).
    pub(crate) base: usize,
    pub(crate) items: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    #[cfg(test)]
    pub(crate) fn new(src: &'a str) -> Self {
        Self::with_files(src, Vec::new())
    }

    /// A sink for `src` made of the main file followed by `files` (each
    /// starting at a line start).
    pub(crate) fn with_files(src: &'a str, files: Vec<(usize, String)>) -> Self {
        let line_starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Sink {
            src,
            line_starts,
            files,
            base: 0,
            items: Vec::new(),
        }
    }

    /// The drop-in an offset is in: its rank (1-based; 0 is the main
    /// file), first byte and name.
    fn file_at(&self, offset: usize) -> (usize, usize, Option<&str>) {
        match self.files.iter().rposition(|(start, _)| *start <= offset) {
            Some(i) => (i + 1, self.files[i].0, Some(self.files[i].1.as_str())),
            None => (0, 0, None),
        }
    }

    pub(crate) fn location(&self, span: &Span) -> Option<Location> {
        let start = span.as_ref()?.start.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= start);
        let line_start = self.line_starts[line - 1];
        let (_, file_start, _) = self.file_at(start);
        let first_line = self.line_starts.partition_point(|&s| s <= file_start);
        let column = self
            .src
            .get(line_start..start)
            .map_or(1, |s| s.chars().count() + 1);
        Some(Location {
            line: line - first_line + 1,
            column,
        })
    }

    /// "line 3", or "line 3 of rules.d/team.toml" for a place in a drop-in.
    pub(crate) fn place(&self, span: &Span) -> Option<String> {
        let loc = self.location(span)?;
        let start = span.as_ref()?.start;
        Some(match self.file_at(start).2 {
            Some(f) => format!("line {} of {f}", loc.line),
            None => format!("line {}", loc.line),
        })
    }

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        span: &Span,
        context: Option<&str>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let span = span
            .as_ref()
            .map(|r| r.start + self.base..r.end + self.base);
        let file = span
            .as_ref()
            .and_then(|r| self.file_at(r.start).2)
            .map(str::to_owned);
        self.items.push(Diagnostic {
            severity,
            file,
            location: self.location(&span),
            context: context.map(str::to_owned),
            message: message.into(),
            help,
        });
    }

    pub(crate) fn error(
        &mut self,
        span: &Span,
        context: Option<&str>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.push(Severity::Error, span, context, message, help);
    }

    pub(crate) fn warning(
        &mut self,
        span: &Span,
        context: Option<&str>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.push(Severity::Warning, span, context, message, help);
    }

    pub(crate) fn note(
        &mut self,
        span: &Span,
        context: Option<&str>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.push(Severity::Note, span, context, message, help);
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// Into the file's diagnostics, sorted by position so a reader can walk
    /// the files top to bottom, main file first (messages without a place
    /// come first in their file).
    pub(crate) fn finish(mut self, file: &str) -> Diagnostics {
        let files = std::mem::take(&mut self.files);
        self.items.sort_by_key(|d| {
            let rank = d
                .file
                .as_ref()
                .and_then(|f| files.iter().position(|(_, n)| n == f))
                .map_or(0, |i| i + 1);
            (rank, d.location)
        });
        Diagnostics {
            file: file.to_owned(),
            items: self.items,
        }
    }
}

/// The candidate closest to `input`, if it is close enough to be a typo.
pub fn did_you_mean<'c>(
    input: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(input, c), c))
        .filter(|&(d, c)| d <= (c.len().max(input.len()) / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// "did you mean `x`?" or a list of the accepted values.
pub(crate) fn suggest(input: &str, candidates: &[&str]) -> String {
    match did_you_mean(input, candidates.iter().copied()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => format!(
            "expected one of: {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_chars() {
        let s = Sink::new("a = 1\nné = 2\n");
        assert_eq!(
            s.location(&Some(0..1)),
            Some(Location { line: 1, column: 1 })
        );
        assert_eq!(
            s.location(&Some(6..7)),
            Some(Location { line: 2, column: 1 })
        );
        // "né = " is 5 chars but 6 bytes.
        assert_eq!(
            s.location(&Some(12..13)),
            Some(Location { line: 2, column: 6 })
        );
        assert_eq!(s.location(&None), None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("prto", ["proto", "port", "to"]), Some("proto"));
        assert_eq!(did_you_mean("listn", ["listen", "in"]), Some("listen"));
        assert_eq!(did_you_mean("zzzzzz", ["listen", "in"]), None);
    }

    #[test]
    fn render_format() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: None,
            location: Some(Location {
                line: 12,
                column: 7,
            }),
            context: Some("forward \"web-http\"".into()),
            message: "port 0 is not a valid port".into(),
            help: Some("use a port between 1 and 65535".into()),
        };
        assert_eq!(
            d.render("rules.toml"),
            "rules.toml:12:7: error: forward \"web-http\": port 0 is not a valid port\n  help: use a port between 1 and 65535"
        );
    }
}
