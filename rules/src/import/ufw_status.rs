//! `ufw status [numbered|verbose]` output to UFW rules: the To, Action and
//! From columns, `(v6)` rows, `on IFACE`, and the `Default:` line.

use super::{
    ir::Origin,
    ufw::{addr, port_spec, UfwRule, Verdict},
    Entry,
};

pub fn looks_like_status(text: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start().starts_with("Status: active")
            || l.trim_start().starts_with("Status: inactive")
    })
}

/// `ufw status [numbered|verbose]` output.
pub fn read_status(
    source: &str,
    text: &str,
    rules: &mut Vec<UfwRule>,
    defaults: &mut Vec<(String, String)>,
    entries: &mut Vec<Entry>,
) {
    for (n, line) in text.lines().enumerate() {
        let origin = Origin::new(source, n + 1, line);
        let t = line.trim();
        if let Some(d) = t.strip_prefix("Default:") {
            for part in d.split(',') {
                let mut it = part.split_whitespace();
                if let (Some(policy), Some(dir)) = (it.next(), it.next()) {
                    defaults.push((dir.trim_matches(['(', ')']).to_owned(), policy.to_owned()));
                }
            }
            continue;
        }
        let body = t
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map_or(t, |(_, r)| r.trim());
        let Some(pos) = [" ALLOW", " DENY", " REJECT", " LIMIT"]
            .iter()
            .filter_map(|a| body.find(a))
            .min()
        else {
            continue;
        };
        let (to, rest) = body.split_at(pos);
        let mut rest = rest.split_whitespace();
        let verdict = rest.next().unwrap_or("");
        let mut dir = "IN";
        let mut from: Vec<&str> = rest.collect();
        if from
            .first()
            .is_some_and(|d| matches!(*d, "IN" | "OUT" | "FWD"))
        {
            dir = from.remove(0);
        }
        if let Some(c) = from.iter().position(|w| *w == "#") {
            from.truncate(c);
        }
        let r = status_rule(to.trim(), verdict, dir, &from, origin.clone());
        match r {
            Ok(Some(r)) => rules.push(r),
            Ok(None) => {}
            Err(reason) => entries.push(Entry::left(origin, reason)),
        }
    }
}

fn status_rule(
    to: &str,
    verdict: &str,
    dir: &str,
    from: &[&str],
    origin: Origin,
) -> Result<Option<UfwRule>, String> {
    if dir == "OUT" {
        return Ok(None);
    }
    let v6 = to.contains("(v6)") || from.contains(&"(v6)");
    let to_words: Vec<&str> = to.split_whitespace().filter(|w| *w != "(v6)").collect();
    let mut r = UfwRule {
        origin,
        verdict: match verdict {
            "ALLOW" => Verdict::Allow,
            "LIMIT" => Verdict::Limit,
            _ => Verdict::Deny,
        },
        route: dir == "FWD",
        in_iface: None,
        src: None,
        dst: None,
        ports: None,
        proto: None,
        v6,
    };
    let mut i = 0;
    while i < to_words.len() {
        match to_words[i] {
            "on" => {
                r.in_iface = to_words.get(i + 1).map(|s| s.to_string());
                i += 1;
            }
            "Anywhere" => {}
            w if w.contains('/')
                && w.split('/').next().is_some_and(|p| {
                    p.chars()
                        .all(|c| c.is_ascii_digit() || c == ':' || c == ',')
                }) =>
            {
                let (p, proto) = port_spec(w)?;
                r.ports = p;
                r.proto = proto;
            }
            w if w
                .chars()
                .all(|c| c.is_ascii_digit() || c == ':' || c == ',') =>
            {
                r.ports = port_spec(w)?.0
            }
            w => match addr(w) {
                Ok(a) => r.dst = a,
                Err(_) => r.ports = port_spec(w)?.0,
            },
        }
        i += 1;
    }
    let from: Vec<&str> = from.iter().copied().filter(|w| *w != "(v6)").collect();
    match from.as_slice() {
        [] | ["Anywhere"] => {}
        ["Anywhere", "on", i] => r.in_iface = Some(i.to_string()),
        [a, ..] => r.src = addr(a)?,
    }
    Ok(Some(r))
}
