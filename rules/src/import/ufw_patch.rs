//! `forwarder import ufw FILES --rules rules.toml`: allow-lists written
//! into an existing rules file, its comments and layout kept (toml_edit).

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    ir::{Candidate, Origin},
    ufw::{apply, collect},
};

/// `forwarder import ufw FILES --rules rules.toml`: the rules file with the
/// allow-lists UFW implies written into its forwards (comments and layout
/// kept). Forwards here listen locally as far as UFW is concerned: its
/// plain rules name the port clients connect to.
pub fn patch(
    rules_file: &str,
    rules_text: &str,
    inputs: &[super::Input],
) -> Result<super::Imported, crate::Diagnostics> {
    use super::{
        ir::{Family, PortMap, SnatChoice},
        Reader, Source,
    };
    let loaded = crate::load_str(rules_file, rules_text)?;
    let mut reader = Reader::default();
    let mut entries = Vec::new();
    let mut nets = Vec::new();
    for i in inputs {
        reader.read(i, Source::Ufw, &mut entries, &mut nets, false);
    }
    let ufw = collect(
        &reader.ruleset,
        &reader.ufw,
        &reader.ufw_defaults,
        &mut entries,
    );
    let mut doc: toml_edit::DocumentMut = rules_text.parse().expect("loaded above");
    let mut changed = Vec::new();
    for (n, f) in loaded.rules.forwards.iter().enumerate() {
        let mut c = Candidate {
            family: Family::V4,
            iface: f.iface.clone(),
            listen: match f.listen {
                crate::Listen::Addr(a) => Some(IpAddr::V4(a)),
                crate::Listen::Interface => None,
            },
            l4: f.proto.l4()[0],
            ports: f.ports,
            target: IpAddr::V4(
                f.target
                    .fixed_addr()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            ),
            target_name: f.target.name().map(str::to_owned),
            map: PortMap::Shift(0),
            allow: Vec::new(),
            snat: SnatChoice::Auto,
            origins: vec![Origin::new(
                rules_file,
                0,
                &format!("forward \"{}\"", f.name),
            )],
            comments: Vec::new(),
            name_hint: None,
            description: None,
            local: true,
        };
        apply(&ufw, &mut c, &mut entries);
        if c.allow.is_empty()
            || !f.allow.is_empty()
                && c.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>()
                    == f.allow
                        .iter()
                        .map(|n| IpNet::V4(*n).to_string())
                        .collect::<Vec<_>>()
        {
            continue;
        }
        let list: toml_edit::Array = c
            .allow
            .iter()
            .map(|n| {
                if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                }
            })
            .collect();
        if let Some(t) = forward_table(&mut doc, n) {
            t.insert("allow", toml_edit::value(list));
            changed.push(f.name.clone());
        }
    }
    entries.sort_by(|a, b| {
        (a.origin.source.as_str(), a.origin.line).cmp(&(b.origin.source.as_str(), b.origin.line))
    });
    let mut toml = doc.to_string();
    if !changed.is_empty() {
        toml.push_str(&format!(
            "\n# allow-lists set from ufw by `forwarder import ufw` on: {}\n",
            changed.join(", ")
        ));
    }
    let rules = crate::load_str(rules_file, &toml)?.rules;
    Ok(super::Imported {
        rules,
        entries,
        toml,
    })
}

fn forward_table(doc: &mut toml_edit::DocumentMut, n: usize) -> Option<&mut toml_edit::Table> {
    match doc.get_mut("forward")? {
        toml_edit::Item::ArrayOfTables(a) => a.get_mut(n),
        _ => None,
    }
}
