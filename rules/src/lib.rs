//! The forwarder's rules file: the product's user interface.
//!
//! Pure logic, no kernel and no IO beyond reading a file:
//!
//! * [`load_str`]/[`load_file`]: TOML text to a validated [`RuleSet`], or every
//!   problem found, each with file, line and column ([`diagnostics`]). A file
//!   and its drop-ins ([`dropins`]) load completely or not at all.
//! * [`compile`]: rule ids stable across reloads, listener and allow-list
//!   map entries in the kernel ABI of `forwarder-common`.
//! * [`diff`]: old vs new map contents as ordered operations
//!   ([`diff::update`]): the order that never opens a hole while they are
//!   applied, and that fits the maps.
//! * [`explain`], [`report`]: the `explain` and `check` commands' logic.
//! * [`import`]: `iptables-save` output and socat units to a rules file.
//! * [`print`]: the model back to TOML.
//!
//! The file format is documented in `docs/rules.md`.

mod addrs;
mod advice;
pub mod compile;
pub mod diagnostics;
pub mod diff;
pub mod dropins;
pub mod explain;
mod family;
pub mod flowrate;
pub mod host;
pub mod import;
pub mod local_sockets;
pub mod memory;
pub mod model;
pub mod nodes;
mod parse;
mod partial;
pub mod print;
mod release;
pub mod report;
mod syntax;
pub mod target;
pub mod timeouts;
mod validate;
mod validate_addrs;
mod values;

use std::path::{Path, PathBuf};

pub use compile::{
    assign_ids, compile, compile_with, materialize, nat64_pool, AllowLpmKey, AllowSpec,
    CompileError, Compiled, CompiledRule, IfaceState, ListenAddr, ListenerSpec, MapEntries,
};
pub use diagnostics::{Diagnostic, Diagnostics, Location, Severity};
pub use diff::{diff, Diff, MapOp, MapState, NoRoom, Room, Update};
pub use family::{abi_addr, family_of_key, is_link_local, key_addr};
pub use flowrate::FlowRate;
pub use host::HostFacts;
pub use model::*;
pub use print::to_toml;
pub use release::{needs_ipv6, needs_nat46, needs_translation, TRANSLATION_NOT_FORWARDED};
pub use timeouts::Timeouts;
pub use validate::{listeners_overlap, ASSUMED_IFACE_ADDRS};

/// A rules file that passed validation.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub rules: RuleSet,
    /// Problems that do not stop the file from loading.
    pub warnings: Diagnostics,
    /// Forwards of the file left out by [`Loaded::for_node`]: they apply on
    /// other cluster nodes (`nodes = [...]`).
    pub other_nodes: Vec<String>,
}

impl Loaded {
    /// The forwards that apply on the node called `node`; the names of the
    /// others go to `other_nodes`.
    pub fn for_node(mut self, node: &str) -> Self {
        self.other_nodes = self.rules.retain_node(node);
        self
    }
}

/// Why a rules file did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The IO error is part of the message (not a `source`), so it is shown
    /// once however the error is printed.
    #[error("{}: cannot read: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Every problem found; warnings are included so the reader sees the
    /// whole picture in one pass.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl LoadError {
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            LoadError::Invalid(d) => Some(d),
            LoadError::Io { .. } => None,
        }
    }
}

/// Parses and validates rules text. `file` names it in messages.
pub fn load_str(file: &str, text: &str) -> Result<Loaded, Diagnostics> {
    load_str_on(file, text, None)
}

/// [`load_str`], and with `host` the file is also judged against the host
/// it will run on (see [`host`]): what that finds are warnings and notes.
pub fn load_str_on(
    file: &str,
    text: &str,
    host: Option<&HostFacts>,
) -> Result<Loaded, Diagnostics> {
    load_sources(file, text, &[], host)
}

/// Loads a main file and its drop-ins (`(name, text)`, see [`dropins`]) as
/// one rules file: every problem of every file at once, each message
/// naming its file.
pub fn load_sources(
    file: &str,
    text: &str,
    dropins: &[(String, String)],
    host: Option<&HostFacts>,
) -> Result<Loaded, Diagnostics> {
    // One text of all files, each starting on a line of its own, so the
    // sink can tell which file a span is in and count its lines.
    let mut all = String::from(text);
    let mut starts = Vec::new();
    for (name, t) in dropins {
        if !all.ends_with('\n') {
            all.push('\n');
        }
        starts.push((all.len(), name.clone()));
        all.push_str(t);
    }
    let mut sink = diagnostics::Sink::with_files(&all, starts.clone());
    let mut parsed = parse::parse(text, &mut sink);
    for ((base, _), (_, t)) in starts.iter().zip(dropins) {
        sink.base = *base;
        let mut p = parse::parse(t, &mut sink);
        dropins::check_sections(t, &mut sink);
        dropins::shift(&mut p, *base);
        dropins::merge(&mut parsed, p);
    }
    sink.base = 0;
    // Forwards with a bad value were left out of `parsed`; the cross-checks
    // still run on the rest so one pass reports as much as it can.
    validate::validate(&parsed, &mut sink);
    // Notes about the host would only distract from an invalid file.
    if let Some(h) = host.filter(|_| !sink.has_errors()) {
        host::check(&parsed, h, &mut sink);
    }
    if !sink.has_errors() && parsed.rules.forwards.is_empty() {
        sink.warning(
            &None,
            None,
            "no forwards defined: nothing will be forwarded",
            Some("add a [[forward]] section".into()),
        );
    }
    let failed = sink.has_errors();
    let diags = sink.finish(file);
    if failed {
        Err(diags)
    } else {
        Ok(Loaded {
            rules: parsed.rules,
            warnings: diags,
            other_nodes: Vec::new(),
        })
    }
}

/// Reads and loads a rules file; messages name it as given.
pub fn load_file(path: &Path) -> Result<Loaded, LoadError> {
    load_file_on(path, None)
}

/// [`load_file`], judged against `host` when given (see [`load_str_on`]).
/// The drop-ins of its directory (see [`dropins`]) load with it.
pub fn load_file_on(path: &Path, host: Option<&HostFacts>) -> Result<Loaded, LoadError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|error| LoadError::Io {
            path: p.to_owned(),
            error,
        })
    };
    let text = read(path)?;
    let dir = dropins::dropin_dir(path);
    let files = dropins::dropin_files(path).map_err(|error| LoadError::Io { path: dir, error })?;
    let dropins = files
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect::<Result<Vec<_>, LoadError>>()?;
    load_sources(&path.display().to_string(), &text, &dropins, host).map_err(LoadError::Invalid)
}
