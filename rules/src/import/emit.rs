//! Candidates to `[[forward]]` sections, and the generated file.
//!
//! This is the only place that refuses IPv6: the rules format is IPv4-only
//! until dual-stack lands (issue 13), and everything before emission keeps
//! IPv6 addresses so that change is confined to here and `model`.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
};

use ipnet::{IpNet, Ipv4Net};

use super::{
    ir::{Candidate, PortMap, SnatChoice},
    sanitize_name, Entry, Imported, Kind, SECTIONS,
};
use crate::{model::*, print::forward_to_toml};

/// A forward and the comment lines that explain where it came from.
pub struct Draft {
    pub forward: Forward,
    pub comments: Vec<String>,
}

pub const IPV6_REASON: &str = "IPv6 forwards are not supported by the rules format yet (dual-stack is planned, issue 13): keep this rule until then";

pub fn emit(cands: Vec<Candidate>, entries: &mut Vec<Entry>) -> Vec<Draft> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for c in cands {
        let Some(f) = to_forward(&c, &mut names) else {
            entries.push(Entry::left(c.origins[0].clone(), IPV6_REASON.into()));
            continue;
        };
        let mut comments: Vec<String> = c
            .origins
            .iter()
            .map(|o| format!("from {}: {}", o.at(), o.text))
            .collect();
        comments.extend(c.comments.iter().cloned());
        out.push(Draft {
            forward: f,
            comments,
        });
    }
    out
}

fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

fn to_forward(c: &Candidate, names: &mut HashSet<String>) -> Option<Forward> {
    let host = match &c.target_name {
        Some(name) => Host::Name(name.clone()),
        None => Host::Addr(v4(c.target)?),
    };
    let listen = match c.listen {
        None => Listen::Interface,
        Some(a) => Listen::Addr(v4(a)?),
    };
    let allow = c
        .allow
        .iter()
        .map(|n| match n {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
        .collect::<Option<Vec<Ipv4Net>>>()?;
    let target_ports = match c.map {
        PortMap::Shift(0) => None,
        m => Some(m.apply(c.ports)?),
    };
    let base = c
        .name_hint
        .as_deref()
        .map(sanitize_name)
        .filter(|n| !n.is_empty() && n.starts_with(|ch: char| ch.is_ascii_alphanumeric()))
        .unwrap_or_else(|| {
            let udp = if c.l4 == L4::Udp { "-udp" } else { "" };
            let iface = if c.iface.is_empty() {
                c.l4.as_str()
            } else {
                &c.iface
            };
            sanitize_name(&format!("{iface}{udp}-{}", c.ports))
        });
    let mut f = Forward::new(
        unique_name(&base, names),
        c.iface.clone(),
        c.ports,
        Target {
            host,
            ports: target_ports,
        },
    );
    f.listen = listen;
    f.proto = if c.l4 == L4::Udp {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    f.allow = allow;
    f.description = c.description.clone();
    f.snat = match c.snat {
        SnatChoice::Auto => Snat::Auto,
        SnatChoice::Masquerade => Snat::Masquerade,
        SnatChoice::Addr(a) => Snat::Fixed(v4(a)?),
    };
    Some(f)
}

/// `base`, or `base-2`, `base-3`... whichever is not taken yet.
pub fn unique_name(base: &str, used: &mut HashSet<String>) -> String {
    let base = if base.is_empty() { "forward" } else { base };
    let mut name = base.to_owned();
    let mut n = 2;
    while !used.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

pub fn render(header: &[String], drafts: Vec<Draft>, entries: Vec<Entry>) -> Imported {
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
    for (kind, title) in SECTIONS {
        let list: Vec<&Entry> = entries.iter().filter(|e| e.kind == kind).collect();
        if list.is_empty() {
            continue;
        }
        let what = match kind {
            Kind::Left => "not in this file: handle by hand",
            Kind::Kept => "not forwards: keep them in your firewall",
            Kind::Note => "nothing to translate",
        };
        toml.push_str(&format!("\n# {title} ({}; {what}):\n", list.len()));
        for e in list {
            for line in e.render().lines() {
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
        entries,
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
