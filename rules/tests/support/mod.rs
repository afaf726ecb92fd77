//! What the validation tests share: a file's rendered errors and warnings.

use rules::load_str;

pub const FILE: &str = "rules.toml";

/// Rendered errors (first line of each: file:line:col, context, message).
pub fn errors(text: &str) -> Vec<String> {
    match load_str(FILE, text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.errors().map(|e| e.render(FILE)).collect(),
    }
}

pub fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

pub fn warnings(text: &str) -> Vec<String> {
    match load_str(FILE, text) {
        Ok(l) => l.warnings.items.iter().map(|e| e.render(FILE)).collect(),
        Err(d) => panic!("{d}"),
    }
}
