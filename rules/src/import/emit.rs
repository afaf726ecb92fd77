//! Candidates to `[[forward]]` sections, and the generated file.
//!
//! The two halves of a dual-stack socket (socat `TCP6-LISTEN` without
//! `ipv6only`) arrive as two candidates, one per family; they become one
//! forward with `family = "both"` when they agree on everything else, so
//! that the file says what socat did: one listener, both families.

use std::collections::HashSet;

use super::{
    ir::{Candidate, Family as IrFamily, PortMap, SnatChoice},
    sanitize_name, Entry, Imported, Kind, SECTIONS,
};
use crate::{model::*, print::forward_to_toml};

/// A forward and the comment lines that explain where it came from.
pub struct Draft {
    pub forward: Forward,
    pub comments: Vec<String>,
}

pub fn emit(cands: Vec<Candidate>, entries: &mut Vec<Entry>) -> Vec<Draft> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (c, family) in pair_dual_stack(cands) {
        let Some(f) = to_forward(&c, family, &mut names) else {
            entries.push(Entry::left(
                c.origins[0].clone(),
                "the target port range does not fit below 65536".into(),
            ));
            continue;
        };
        let mut comments: Vec<String> = c
            .origins
            .iter()
            .map(|o| format!("from {}: {}", o.at(), o.text))
            .collect();
        comments.extend(c.comments.iter().cloned());
        for af in f.listen_afs().iter().filter(|af| f.translates(**af)) {
            let taf = f.target.af();
            comments.push(format!(
                "{af} clients of the {taf} target are translated ({}) and get this host's {taf} address toward it as their source, as with socat",
                if *af == Af::V6 { "NAT64" } else { "NAT46" }
            ));
        }
        out.push(Draft {
            forward: f,
            comments,
        });
    }
    out
}

/// Candidates with the family of their forward: the IPv4 and IPv6 halves
/// of one dual-stack listener merged into one `Both` (in the place of the
/// first half). Halves that differ, or where one half has an allow-list and
/// the other does not (a merged list would refuse every client of the
/// family without entries), stay two forwards.
fn pair_dual_stack(cands: Vec<Candidate>) -> Vec<(Candidate, Family)> {
    let same_listener = |a: &Candidate, b: &Candidate| {
        a.family != b.family
            && a.listen.is_none()
            && b.listen.is_none()
            && a.origins == b.origins
            && (&a.iface, a.l4, a.ports, a.target, a.map, a.snat, a.local)
                == (&b.iface, b.l4, b.ports, b.target, b.map, b.snat, b.local)
            && a.allow.is_empty() == b.allow.is_empty()
    };
    let mut out: Vec<(Candidate, Family)> = Vec::new();
    for c in cands {
        let family = Family::from(Af::from(c.family));
        if let Some((first, fam)) = out
            .iter_mut()
            .find(|(o, fam)| *fam != Family::Both && same_listener(o, &c))
        {
            *fam = Family::Both;
            let mut allow = first.allow.clone();
            allow.extend(c.allow.iter().copied());
            allow.sort_by_key(|n| (n.addr().is_ipv6(), *n));
            first.allow = allow;
            for comment in c.comments {
                if !first.comments.contains(&comment) {
                    first.comments.push(comment);
                }
            }
            continue;
        }
        out.push((c, family));
    }
    out
}

impl From<IrFamily> for Af {
    fn from(f: IrFamily) -> Af {
        match f {
            IrFamily::V4 => Af::V4,
            IrFamily::V6 => Af::V6,
        }
    }
}

fn to_forward(c: &Candidate, family: Family, names: &mut HashSet<String>) -> Option<Forward> {
    let host = match &c.target_name {
        Some(name) => Host::Name(name.clone()),
        None => Host::Addr(c.target),
    };
    let listen = match c.listen {
        None => Listen::Interface,
        Some(a) => Listen::Addr(a),
    };
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
            let v6 = if family == Family::Ipv6 { "-v6" } else { "" };
            let iface = if c.iface.is_empty() {
                c.l4.as_str()
            } else {
                &c.iface
            };
            sanitize_name(&format!("{iface}{udp}-{}{v6}", c.ports))
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
    f.family = family;
    f.proto = if c.l4 == L4::Udp {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    f.allow = c.allow.clone();
    f.description = c.description.clone();
    f.snat = match c.snat {
        SnatChoice::Auto => Snat::Auto,
        SnatChoice::Masquerade => Snat::Masquerade,
        SnatChoice::Addr(a) => Snat::Fixed(a),
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
