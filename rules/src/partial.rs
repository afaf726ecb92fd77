//! Forwards that did not parse completely, kept so that the checks between
//! their good values still run: a file with `port = 0` and `path = "stack"`
//! next to `snat = "masquerade"` gets both errors in one pass, as the guide
//! promises, not the second only after the first is fixed.
//!
//! The one fact a reader gets wrong: a partial forward's bad values are
//! placeholders (`to` 0.0.0.0, port 1). Every check says which keys it
//! reads, and runs only when none of them failed or is missing; checks
//! between forwards (overlaps, duplicate names) never see partial ones.
use std::collections::BTreeSet;

use crate::{diagnostics::Sink, model::Forward, parse::ForwardSpans};

/// Which keys of a forward failed or are missing.
#[derive(Clone, Debug, Default)]
pub(crate) struct Failed {
    keys: BTreeSet<&'static str>,
    /// The key being parsed and the error count before it.
    current: Option<(&'static str, usize)>,
}

fn errors(sink: &Sink) -> usize {
    sink.items.iter().filter(|d| d.is_error()).count()
}

impl Failed {
    /// The required keys the forward does not have.
    pub fn missing(required: &[&'static str], seen: impl Fn(&str) -> bool) -> Failed {
        Failed {
            keys: required.iter().copied().filter(|k| !seen(k)).collect(),
            current: None,
        }
    }

    /// `key`'s value is about to be parsed.
    pub fn before_key(&mut self, key: &'static str, sink: &Sink) {
        self.current = Some((key, errors(sink)));
    }

    /// The last key's value was parsed: it failed if it added errors.
    pub fn after_key(&mut self, sink: &Sink) {
        if let Some((key, before)) = self.current.take() {
            if errors(sink) > before {
                self.keys.insert(key);
            }
        }
    }

    pub fn insert(&mut self, key: &'static str) {
        self.keys.insert(key);
    }

    /// Whether every key in `keys` parsed (or took its default).
    pub fn all_ok(&self, keys: &[&str]) -> bool {
        keys.iter().all(|k| !self.keys.contains(k))
    }
}

/// A forward with bad or missing values, and which.
pub(crate) struct Partial {
    pub forward: Forward,
    pub spans: ForwardSpans,
    pub failed: Failed,
}

#[cfg(test)]
mod tests {
    fn errors(text: &str) -> Vec<String> {
        let d = crate::load_str("r.toml", text).unwrap_err();
        d.errors().map(|e| e.render("r.toml")).collect()
    }

    #[test]
    fn a_forward_with_a_bad_value_still_gets_its_other_errors() {
        let e = errors(
            "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = 0\nto = \"192.168.100.80\"\npath = \"stack\"\nsnat = \"masquerade\"\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("r.toml:4:8: error: forward \"web\": port 0"),
            "{e:?}"
        );
        assert!(e[1].starts_with("r.toml:6:8: error: forward \"web\": path = \"stack\" cannot be combined with snat = \"masquerade\""), "{e:?}");
    }

    #[test]
    fn checks_that_read_a_failed_value_do_not_run() {
        // `to` failed: no "target is the unspecified address", no range
        // size check against the placeholder.
        let e = errors(
            "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = \"80-81\"\nto = \"back_end!:8080\"\nlisten = \"0.0.0.0\"\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("nor a valid DNS name"), "{e:?}");
        assert!(e[1].contains("listen address 0.0.0.0"), "{e:?}");
        // A missing `to` is one error, not two.
        let e = errors("[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = 80\n");
        assert_eq!(e.len(), 1, "{e:?}");
    }
}
