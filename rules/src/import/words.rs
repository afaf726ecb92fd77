//! Shell word splitting for the importers: quotes, escapes, operators,
//! redirections and plain variables, as sh does them.
//!
//! Hand-written on purpose: shlex splits words but knows no operators or
//! variables, and a whole-program shell parser fails on the non-shell files
//! the importers read line by line (interfaces files, units). Anything sh
//! would compute at run time (command substitution, arguments) is an error
//! that says so, never a guess.

use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    Word(String),
    Op(&'static str),
    /// `<<EOF`: the delimiter of a here-document.
    Heredoc(String),
}

/// Variable values; `Err` says why a variable's value is not known.
pub(crate) type Vars = HashMap<String, Result<String, String>>;

/// Joins lines ending in a backslash; yields (first line number, text).
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
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

pub(crate) fn tokenize(s: &str, vars: &Vars) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars().peekable();
    let finish = |word: &mut Option<String>, out: &mut Vec<Tok>| {
        if let Some(w) = word.take() {
            out.push(Tok::Word(w));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => finish(&mut word, &mut out),
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unbalanced quotes".into()),
                    }
                }
            }
            '"' => {
                let mut w = word.take().unwrap_or_default();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('$' | '`' | '"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unbalanced quotes".into()),
                        },
                        Some('$') => w.push_str(&expand(&mut chars, vars)?),
                        Some('`') => return Err(not_followed("command substitution `...`")),
                        Some(c) => w.push(c),
                        None => return Err("unbalanced quotes".into()),
                    }
                }
                word = Some(w);
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            '$' => {
                let v = expand(&mut chars, vars)?;
                word.get_or_insert_with(String::new).push_str(&v);
            }
            '`' => return Err(not_followed("command substitution `...`")),
            ';' => {
                finish(&mut word, &mut out);
                out.push(Tok::Op(";"));
            }
            '&' | '|' => {
                finish(&mut word, &mut out);
                if chars.peek() == Some(&c) {
                    chars.next();
                    out.push(Tok::Op(if c == '&' { "&&" } else { "||" }));
                } else if c == '&' && chars.peek() == Some(&'>') {
                    chars.next();
                    redirect_target(&mut chars);
                } else {
                    out.push(Tok::Op(if c == '&' { "&" } else { "|" }));
                }
            }
            '>' | '<' => {
                // A file descriptor number before the operator (`2>`).
                if word
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|d| d.is_ascii_digit()))
                {
                    word = None;
                }
                finish(&mut word, &mut out);
                if c == '<' && chars.peek() == Some(&'<') {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        redirect_target(&mut chars);
                        continue;
                    }
                    if chars.peek() == Some(&'-') {
                        chars.next();
                    }
                    let delim = redirect_target(&mut chars);
                    out.push(Tok::Heredoc(delim.trim_matches(['\'', '"']).to_owned()));
                    continue;
                }
                if matches!(chars.peek(), Some('>') | Some('&')) {
                    chars.next();
                }
                redirect_target(&mut chars);
            }
            '(' | ')' if word.is_none() => {
                return Err(not_followed("a subshell ( ... )"));
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    finish(&mut word, &mut out);
    Ok(out)
}

pub(crate) fn not_followed(what: &str) -> String {
    format!("{what} is not followed by the importer: write the command out with its values")
}

/// Skips the word after a redirection operator and returns it.
fn redirect_target(chars: &mut std::iter::Peekable<std::str::Chars>) -> String {
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    let mut w = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || matches!(c, ';' | '|' | '&') && !w.is_empty() {
            break;
        }
        w.push(c);
        chars.next();
    }
    w
}

/// After a `$`: the value of `$NAME`, `${NAME}`, `${NAME:-default}`.
fn expand(chars: &mut std::iter::Peekable<std::str::Chars>, vars: &Vars) -> Result<String, String> {
    let lookup = |name: &str| -> Result<String, String> {
        match vars.get(name) {
            Some(v) => v.clone(),
            None => Err(format!(
                "${name} is not assigned in this file (only plain NAME=value assignments are substituted)"
            )),
        }
    };
    match chars.peek().copied() {
        Some('(') => Err(not_followed("command substitution $(...)")),
        Some('{') => {
            chars.next();
            let mut inner = String::new();
            loop {
                match chars.next() {
                    Some('}') => break,
                    Some(c) => inner.push(c),
                    None => return Err("unbalanced ${".into()),
                }
            }
            let (name, default) = match inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            {
                None => (inner.as_str(), None),
                Some(i) => {
                    let (n, rest) = inner.split_at(i);
                    let d = rest
                        .strip_prefix(":-")
                        .or_else(|| rest.strip_prefix('-'))
                        .or_else(|| rest.strip_prefix(":="));
                    match d {
                        Some(d) => (n, Some(d.to_owned())),
                        None => return Err(not_followed(&format!("the expansion ${{{inner}}}"))),
                    }
                }
            };
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(positional(&inner));
            }
            match (lookup(name), default) {
                (Ok(v), _) => Ok(v),
                (Err(_), Some(d)) if !vars.contains_key(name) => Ok(d),
                (Err(e), _) => Err(e),
            }
        }
        Some(c) if c.is_ascii_digit() || matches!(c, '@' | '*' | '#' | '?' | '!' | '$') => {
            chars.next();
            Err(positional(&c.to_string()))
        }
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            lookup(&name)
        }
        _ => Ok("$".into()),
    }
}

fn positional(what: &str) -> String {
    format!("${what} is set when the script runs (an argument or a shell parameter): write the command out with its values")
}

/// A `NAME=value` word: the name and the value.
pub(crate) fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    (!name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit()))
    .then_some((name, value))
}

/// Splits at `;`, `&&`, `||`, `|`, `&`: one list of tokens per command.
pub(crate) fn split_commands(tokens: &[Tok]) -> Vec<Vec<Tok>> {
    let mut out = vec![Vec::new()];
    for t in tokens {
        match t {
            Tok::Op(_) => out.push(Vec::new()),
            t => out.last_mut().expect("never empty").push(t.clone()),
        }
    }
    out.retain(|c| !c.is_empty());
    out
}
