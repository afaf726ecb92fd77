//! Migration from what users run today: iptables and nftables NAT rules,
//! UFW allow rules, socat units and the scripts, interfaces files and units
//! they live in, to one rules file.
//!
//! One pipeline for every source: files are read into commands and rules
//! (`shell`, `iptables`, `nft`, `socat`, `ufw`), NAT rules are evaluated
//! the way netfilter evaluates them (`flatten`, `resolve`, `snat`), and the
//! candidates become forwards (`emit`). Nothing is dropped silently: every
//! line that did not become (part of) a forward is an [`Entry`] with its
//! file:line and a reason, listed at the end of the generated file and on
//! stderr. [`Imported::exit_code`] is 1 when something was left out.

mod assemble;
mod emit;
mod flatten;
pub mod iptables;
mod iptables_values;
mod ir;
pub mod migrate;
pub mod nft;
mod nft_text;
mod nft_values;
mod resolve;
mod shell;
mod snat;
pub mod socat;
pub mod ufw;
mod ufw_patch;
mod ufw_status;
mod unit;
mod words;

use std::net::IpAddr;

use ipnet::IpNet;

pub use ir::Origin;

use crate::{model::RuleSet, Diagnostics, Loaded};

/// How an input line fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Did something the generated file does not do: exit 1.
    Left,
    /// Does something that is not a forward and stays in the firewall.
    Kept,
    /// Needs no translation (a removal, a shadowed rule, another tool's chain).
    Note,
}

/// One line that did not simply become a forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub origin: Origin,
    pub reason: String,
}

impl Entry {
    pub fn left(origin: Origin, reason: String) -> Entry {
        Entry {
            kind: Kind::Left,
            origin,
            reason,
        }
    }
    pub fn kept(origin: Origin, reason: String) -> Entry {
        Entry {
            kind: Kind::Kept,
            origin,
            reason,
        }
    }
    pub fn note(origin: Origin, reason: String) -> Entry {
        Entry {
            kind: Kind::Note,
            origin,
            reason,
        }
    }
    pub fn render(&self) -> String {
        format!(
            "{}: {}\n  {}",
            self.origin.at(),
            self.origin.text,
            self.reason
        )
    }
}

/// One file (or standard input, with an empty name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub name: String,
    pub text: String,
}

/// What the user asked to import; it decides how ambiguous files are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Iptables,
    Nft,
    Ufw,
    Socat,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Iptables => "iptables",
            Source::Nft => "nft",
            Source::Ufw => "ufw",
            Source::Socat => "socat",
        }
    }
}

/// Facts about the live host, for `--from-running` (the CLI implements it
/// with `ip route get` and `ip addr`).
pub trait LiveHost {
    /// The interface the kernel routes `addr` through.
    fn route(&self, addr: IpAddr) -> Option<String>;
    /// The interface that has `addr` as one of its own addresses.
    fn owner(&self, addr: IpAddr) -> Option<String>;
}

/// What the importer knows about the host's interfaces.
#[derive(Default)]
pub struct HostView<'a> {
    /// `IFACE=ADDR/LEN` from `--iface-net` and interfaces files.
    pub iface_nets: Vec<(String, IpNet)>,
    /// `--in`: the interface of rules and listeners that name none.
    pub default_iface: Option<String>,
    pub live: Option<&'a dyn LiveHost>,
}

impl HostView<'_> {
    /// The interface traffic to `addr` leaves by.
    pub fn egress(&self, addr: IpAddr) -> Option<String> {
        if let Some(i) = self.live.and_then(|l| l.route(addr)) {
            return Some(i);
        }
        self.iface_nets
            .iter()
            .filter(|(_, n)| n.trunc().contains(&addr))
            .max_by_key(|(_, n)| n.prefix_len())
            .map(|(i, _)| i.clone())
    }

    /// The interface that owns `addr`.
    pub fn owner(&self, addr: IpAddr) -> Option<String> {
        if let Some(i) = self.live.and_then(|l| l.owner(addr)) {
            return Some(i);
        }
        self.iface_nets
            .iter()
            .find(|(_, n)| n.addr() == addr)
            .map(|(i, _)| i.clone())
    }
}

/// Options of one import.
pub struct Options<'a> {
    pub source: Source,
    pub host: HostView<'a>,
    /// Says where the input came from, for the header ("from the running system").
    pub from_running: bool,
}

/// A generated rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The forwards, as parsing `toml` back gives them.
    pub rules: RuleSet,
    pub entries: Vec<Entry>,
    /// The rules file: header, forwards with comments citing their source
    /// lines, and the lists of what was not translated.
    pub toml: String,
}

impl Imported {
    /// Loads the generated text like any rules file.
    pub fn validate(&self, file: &str) -> Result<Loaded, Diagnostics> {
        crate::load_str(file, &self.toml)
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }

    /// 0 when everything was translated (what stays in the firewall and
    /// the notes do not count), 1 when something was left out.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.count(Kind::Left) > 0)
    }

    /// The one-line summary printed last on stderr.
    pub fn summary(&self) -> String {
        let n = self.rules.forwards.len();
        format!(
            "forwarder import: {n} forward{}; {} left out, {} kept in the firewall, {} notes (exit {})",
            if n == 1 { "" } else { "s" },
            self.count(Kind::Left),
            self.count(Kind::Kept),
            self.count(Kind::Note),
            self.exit_code()
        )
    }

    /// Everything for stderr: the entries by kind, then the summary.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (kind, title) in SECTIONS {
            let list: Vec<&Entry> = self.entries.iter().filter(|e| e.kind == kind).collect();
            if list.is_empty() {
                continue;
            }
            out.push_str(&format!("{title} ({}):\n", list.len()));
            for e in list {
                for l in e.render().lines() {
                    out.push_str(&format!("  {l}\n"));
                }
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

const SECTIONS: [(Kind, &str); 3] = [
    (Kind::Left, "Not translated"),
    (Kind::Kept, "Stays in the firewall"),
    (Kind::Note, "Notes"),
];

/// Imports `inputs` into one rules file.
pub fn import(inputs: &[Input], opts: &Options) -> Imported {
    let mut entries = Vec::new();
    let mut host_nets = opts.host.iface_nets.clone();
    let mut reader = Reader::default();
    for input in inputs {
        reader.read(
            input,
            opts.source,
            &mut entries,
            &mut host_nets,
            opts.from_running,
        );
    }
    let view = HostView {
        iface_nets: host_nets,
        default_iface: opts.host.default_iface.clone(),
        live: opts.host.live,
    };
    let mut cands = Vec::new();
    for family in [ir::Family::V4, ir::Family::V6] {
        let pre = flatten::flatten(&reader.ruleset, family, ir::Hook::Prerouting, &mut entries);
        let mut found = resolve::dnat(&pre, &view, &mut entries);
        let post = flatten::flatten(&reader.ruleset, family, ir::Hook::Postrouting, &mut entries);
        snat::snat(&post, &mut found, &view, &mut entries);
        for f in flatten::flatten(&reader.ruleset, family, ir::Hook::Output, &mut entries) {
            if f.rule.action.is_nat() {
                entries.push(Entry::kept(f.rule.origin, "NAT of connections this host opens itself (OUTPUT): the forwarder translates packets arriving on an interface; keep this rule".into()));
            }
        }
        cands.extend(found);
    }
    let reached = |c: &ir::Chain| {
        reader.ruleset.chains.iter().any(|o| {
            o.rules
                .iter()
                .any(|r| matches!(&r.action, ir::Action::Jump { chain, .. } if *chain == c.name))
        })
    };
    flatten::chain_entries(&reader.ruleset, &reached, &mut entries);
    for cmd in &reader.socat {
        cands.extend(socat::command(cmd, &view, &mut entries));
    }
    let ufw_rules = ufw::collect(
        &reader.ruleset,
        &reader.ufw,
        &reader.ufw_defaults,
        &mut entries,
    );
    if !ufw_rules.rules.is_empty() {
        for c in &mut cands {
            ufw::apply(&ufw_rules, c, &mut entries);
        }
    }
    let drafts = emit::emit(cands, &mut entries);
    entries.sort_by(|a, b| {
        (a.origin.source.as_str(), a.origin.line, a.kind).cmp(&(
            b.origin.source.as_str(),
            b.origin.line,
            b.kind,
        ))
    });
    entries.dedup();
    let sources: Vec<&str> = inputs
        .iter()
        .map(|i| {
            if i.name.is_empty() {
                "standard input"
            } else {
                i.name.as_str()
            }
        })
        .collect();
    let header = vec![
        format!(
            "Generated by `forwarder import {}` from {}.",
            if opts.from_running {
                "--from-running".to_owned()
            } else {
                opts.source.as_str().to_owned()
            },
            sources.join(", ")
        ),
        "Each forward cites the lines it replaces; review, then run `forwarder check`.".into(),
    ];
    emit::render(&header, drafts, entries)
}

/// Everything read from the inputs, before evaluation.
#[derive(Default)]
struct Reader {
    ruleset: ir::Ruleset,
    socat: Vec<shell::Command>,
    ufw: Vec<ufw::UfwRule>,
    ufw_defaults: Vec<(String, String)>,
}

impl Reader {
    fn read(
        &mut self,
        input: &Input,
        source: Source,
        entries: &mut Vec<Entry>,
        nets: &mut Vec<(String, IpNet)>,
        iptables_too: bool,
    ) {
        let text = input.text.as_str();
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            nft::read_json(&input.name, text, &mut self.ruleset, entries, iptables_too);
            return;
        }
        if nft_text::looks_like_text(text) {
            match nft_text::load_text(text) {
                Ok(json) => {
                    nft::read_json(&input.name, &json, &mut self.ruleset, entries, iptables_too)
                }
                Err(e) => entries.push(Entry::left(
                    Origin::new(&input.name, 1, text.lines().next().unwrap_or("")),
                    e,
                )),
            }
            return;
        }
        if ufw_status::looks_like_status(text) {
            ufw_status::read_status(
                &input.name,
                text,
                &mut self.ufw,
                &mut self.ufw_defaults,
                entries,
            );
            return;
        }
        let unit = text
            .lines()
            .any(|l| l.trim_start().starts_with("ExecStart"))
            || text.contains("[Service]");
        let save_lines = text.lines().filter(|l| {
            let t = l.trim_start();
            t.starts_with('*')
                || t.starts_with(':')
                || t.starts_with("-A ")
                || t.starts_with("-P ")
                || t.starts_with("-N ")
                || t == "COMMIT"
        });
        if !unit
            && save_lines.count() > 0
            && !text
                .lines()
                .any(|l| l.contains("iptables ") && !l.trim_start().starts_with('#'))
        {
            let mut r = iptables::SaveReader::new(&input.name, text);
            for (n, line) in words::logical_lines(text) {
                r.line(n, &line, &mut self.ruleset, entries);
            }
            return;
        }
        let _ = source;
        let script = if unit {
            unit::read_unit(&input.name, text)
        } else {
            shell::read_script(&input.name, text)
        };
        entries.extend(script.entries);
        nets.extend(script.iface_nets);
        for cmd in script.commands {
            match cmd.program() {
                p if p.starts_with("iptables") || p.starts_with("ip6tables") => iptables::command(&cmd, &mut self.ruleset, entries),
                "socat" => self.socat.push(cmd),
                "ufw" => ufw::command(&cmd, &mut self.ufw, &mut self.ufw_defaults, entries),
                "nft" => entries.push(Entry::left(cmd.origin.clone(), "an nft command in a script: save the ruleset (`nft list ruleset`) and import that, or import with --from-running".into())),
                _ => {}
            }
        }
    }
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
