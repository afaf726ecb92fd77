//! The model back to rules-file TOML.
//!
//! Prints what an operator would write: settings at their default are left
//! out (except `snat`, which is always spelled out because it decides
//! whether backends see client addresses). `parse(print(x)) == x` holds for
//! every valid rule set; it is property-tested.

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::model::*;

/// A TOML string literal, escaped as needed.
pub(crate) fn quote(s: &str) -> String {
    toml_edit::Value::from(s).to_string().trim().to_owned()
}

/// A host prefix (/32, /128) as the bare address, as people write them.
pub(crate) fn allow_entry(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// A DNS server as written: the port only when it is not 53.
fn dns_server(a: &std::net::SocketAddr) -> String {
    if a.port() == 53 {
        a.ip().to_string()
    } else {
        a.to_string()
    }
}

/// The whole rule set: `[global]` (when anything differs from the defaults)
/// and one `[[forward]]` section per forward, separated by blank lines.
pub fn to_toml(rules: &RuleSet) -> String {
    let mut sections: Vec<String> = Vec::new();
    if let Some(g) = global_to_toml(&rules.global) {
        sections.push(g);
    }
    sections.extend(rules.interfaces.iter().map(|(name, i)| {
        // Dotted names (eth0.100) need a quoted key.
        let key = if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            name.clone()
        } else {
            quote(name)
        };
        format!("[interface.{key}]\nattach = {}\n", quote(i.attach.as_str()))
    }));
    sections.extend(rules.forwards.iter().map(forward_to_toml));
    sections.join("\n")
}

/// `[global]` and `[global.timeouts]` with their non-default keys, or `None`
/// when everything is at its default.
pub fn global_to_toml(g: &Global) -> Option<String> {
    let d = Global::default();
    let mut out = String::new();
    let mut keys = String::new();
    if g.conntrack_max != d.conntrack_max {
        let _ = writeln!(keys, "conntrack_max = {}", g.conntrack_max);
    }
    if g.snat_ports != d.snat_ports {
        let _ = writeln!(keys, "snat_ports = {}", quote(&g.snat_ports.to_string()));
    }
    if g.log_level != d.log_level {
        let _ = writeln!(keys, "log_level = {}", quote(g.log_level.as_str()));
    }
    if g.log_format != d.log_format {
        let _ = writeln!(keys, "log_format = {}", quote(g.log_format.as_str()));
    }
    if let Some(m) = g.metrics {
        let _ = writeln!(keys, "metrics = {}", quote(&m.to_string()));
    }
    if let Some(r) = g.new_flows_per_source {
        let _ = writeln!(keys, "new_flows_per_source = {}", quote(&r.to_string()));
        if r.burst != crate::flowrate::default_burst(r.count, r.per) {
            let _ = writeln!(keys, "new_flows_burst = {}", r.burst);
        }
    }
    if g.rules_watch != d.rules_watch {
        let _ = writeln!(keys, "rules_watch = {}", quote(g.rules_watch.as_str()));
    }
    if g.rules_poll_interval != d.rules_poll_interval {
        let _ = writeln!(
            keys,
            "rules_poll_interval = {}",
            quote(&humantime::format_duration(g.rules_poll_interval).to_string())
        );
    }
    match g.dns_servers.as_slice() {
        [] => {}
        [one] => {
            let _ = writeln!(keys, "dns_server = {}", quote(&dns_server(one)));
        }
        many => {
            let list: Vec<String> = many.iter().map(|a| quote(&dns_server(a))).collect();
            let _ = writeln!(keys, "dns_server = [{}]", list.join(", "));
        }
    }
    let mut timeouts = String::new();
    for key in Timeouts::KEYS {
        let (v, dv) = (g.timeouts.get(key), d.timeouts.get(key));
        if let Some(v) = v.filter(|v| Some(*v) != dv) {
            let _ = writeln!(
                timeouts,
                "{key} = {}",
                quote(&humantime::format_duration(v).to_string())
            );
        }
    }
    if keys.is_empty() && timeouts.is_empty() {
        return None;
    }
    out.push_str("[global]\n");
    out.push_str(&keys);
    if !timeouts.is_empty() {
        out.push_str("\n[global.timeouts]\n");
        out.push_str(&timeouts);
    }
    Some(out)
}

/// One `[[forward]]` section.
pub fn forward_to_toml(f: &Forward) -> String {
    let mut s = String::from("[[forward]]\n");
    let _ = writeln!(s, "name = {}", quote(&f.name));
    if let Some(d) = &f.description {
        let _ = writeln!(s, "description = {}", quote(d));
    }
    let _ = writeln!(s, "in = {}", quote(&f.iface));
    if f.listen != Listen::Interface {
        let _ = writeln!(s, "listen = {}", quote(&f.listen.to_string()));
    }
    if f.family != f.default_family() {
        let _ = writeln!(s, "family = {}", quote(f.family.as_str()));
    }
    if f.proto != Proto::Tcp {
        let _ = writeln!(s, "proto = {}", quote(f.proto.as_str()));
    }
    if f.ports.is_single() {
        let _ = writeln!(s, "port = {}", f.ports.start());
    } else {
        let _ = writeln!(s, "port = {}", quote(&f.ports.to_string()));
    }
    let _ = writeln!(s, "to = {}", quote(&f.target.to_string()));
    let _ = writeln!(s, "snat = {}", quote(&f.snat.to_string()));
    if !f.allow.is_empty() {
        let items: Vec<String> = f.allow.iter().map(|n| quote(&allow_entry(n))).collect();
        let _ = writeln!(s, "allow = [{}]", items.join(", "));
    }
    match f.mss_clamp {
        MssClamp::Auto => {}
        MssClamp::Off => s.push_str("mss_clamp = \"off\"\n"),
        MssClamp::Fixed(n) => {
            let _ = writeln!(s, "mss_clamp = {n}");
        }
    }
    if f.reject != Reject::Rst {
        let _ = writeln!(s, "reject = {}", quote(f.reject.as_str()));
    }
    if f.path != PathMode::Auto {
        let _ = writeln!(s, "path = {}", quote(f.path.as_str()));
    }
    if !f.nodes.is_empty() {
        let items: Vec<String> = f.nodes.iter().map(|n| quote(n)).collect();
        let _ = writeln!(s, "nodes = [{}]", items.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_escape() {
        assert_eq!(quote("plain"), "\"plain\"");
        let q = quote("say \"hi\"\\");
        let doc: toml_edit::ImDocument<String> = format!("x = {q}").parse().unwrap();
        assert_eq!(doc["x"].as_str(), Some("say \"hi\"\\"));
    }

    #[test]
    fn defaults_print_nothing_global() {
        assert_eq!(global_to_toml(&Global::default()), None);
    }
}
