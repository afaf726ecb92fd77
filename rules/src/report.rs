//! What `forwarder check` prints: a table of the forwards, the warnings and
//! notes, and the kernel memory the table sizes reserve.

use crate::{model::*, Loaded};

/// Left-aligned columns separated by two spaces, header first.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn allow_cell(f: &Forward) -> String {
    const SHOWN: usize = 3;
    if f.allow.is_empty() {
        return "any".into();
    }
    let mut parts: Vec<String> = f
        .allow
        .iter()
        .take(SHOWN)
        .map(|n| {
            if n.prefix_len() == 32 {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        })
        .collect();
    if f.allow.len() > SHOWN {
        parts.push(format!("+{} more", f.allow.len() - SHOWN));
    }
    parts.join(",")
}

/// One row per forward; a NODES column when any forward is scoped to
/// cluster nodes.
pub fn forwards_table(rules: &RuleSet) -> String {
    let mut header = vec![
        "NAME", "IN", "LISTEN", "PROTO", "PORTS", "TARGET", "SNAT", "ALLOW", "MSS", "PATH",
        "REJECT",
    ];
    let scoped = rules.forwards.iter().any(|f| !f.nodes.is_empty());
    if scoped {
        header.push("NODES");
    }
    let rows: Vec<Vec<String>> = rules
        .forwards
        .iter()
        .map(|f| {
            let mut row = vec![
                f.name.clone(),
                f.iface.clone(),
                f.listen.to_string(),
                f.proto.as_str().to_owned(),
                f.ports.to_string(),
                f.target.to_string(),
                f.snat.to_string(),
                allow_cell(f),
                f.mss_clamp.to_string(),
                f.path.as_str().to_owned(),
                f.reject.as_str().to_owned(),
            ];
            if scoped {
                row.push(if f.nodes.is_empty() {
                    "all".to_owned()
                } else {
                    f.nodes.join(",")
                });
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// The forwards whose target is a DNS name: `check` does not resolve them
/// (the daemon does, at run time); empty when there are none.
pub fn names_note(rules: &RuleSet) -> String {
    let named: Vec<(&str, &str)> = rules
        .forwards
        .iter()
        .filter_map(|f| Some((f.name.as_str(), f.target.name()?)))
        .collect();
    if named.is_empty() {
        return String::new();
    }
    let via = match rules.global.dns_servers.as_slice() {
        [] => "the system's resolver (/etc/resolv.conf, /etc/hosts)".to_owned(),
        s => {
            let list: Vec<String> = s.iter().map(|a| a.to_string()).collect();
            format!("dns_server {}", list.join(", "))
        }
    };
    let mut out = format!(
        "unresolved: {} target{} named by DNS, resolved by the daemon at run time through {via} \
         (A records, the lowest address; re-resolved when the answer's TTL runs out; \
         a forward whose name does not resolve is paused):\n",
        named.len(),
        if named.len() == 1 { "" } else { "s" }
    );
    for (forward, name) in named {
        out.push_str(&format!("  {forward}: {name}\n"));
    }
    out.push('\n');
    out
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The full `check` output for a file that loaded; `memory` is what the
/// table sizes reserve (see [`crate::memory`]).
pub fn check_report(loaded: &Loaded, memory: Option<&crate::memory::MemoryEstimate>) -> String {
    let mut out = String::new();
    let n = loaded.rules.forwards.len();
    if n > 0 {
        out.push_str(&forwards_table(&loaded.rules));
        out.push('\n');
    }
    out.push_str(&names_note(&loaded.rules));
    if !loaded.warnings.is_empty() {
        out.push_str(&loaded.warnings.to_string());
        out.push_str("\n\n");
    }
    if let Some(m) = memory {
        out.push_str(&crate::memory::render(m));
        out.push('\n');
    }
    let w = loaded.warnings.warnings().count();
    let notes = loaded.warnings.notes().count();
    out.push_str(&format!(
        "{}: ok, {}, {}{}\n",
        loaded.warnings.file,
        plural(n, "forward"),
        plural(w, "warning"),
        if notes > 0 {
            format!(", {}", plural(notes, "note"))
        } else {
            String::new()
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_trims() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz\n");
    }

    #[test]
    fn check_report_lists_forwards_and_warnings() {
        let text = "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = 80\nto = \"192.168.100.80\"\nsnat = \"off\"\nallow = [\"10.0.0.0/8\", \"1.2.3.4\", \"5.6.7.8\", \"9.9.9.9\"]\n";
        let loaded = crate::load_str("r.toml", text).unwrap();
        let r = check_report(&loaded, None);
        assert!(
            r.starts_with("NAME  IN     LISTEN     PROTO  PORTS  TARGET          SNAT  ALLOW                               MSS   PATH  REJECT\n"),
            "{r}"
        );
        assert!(r.contains("web   vmbr0  interface  tcp    80     192.168.100.80  off   10.0.0.0/8,1.2.3.4,5.6.7.8,+1 more  auto  auto  rst\n"), "{r}");
        assert!(
            r.contains("r.toml:6:8: warning: forward \"web\": snat = \"off\""),
            "{r}"
        );
        assert!(r.ends_with("r.toml: ok, 1 forward, 1 warning\n"), "{r}");
    }
}
