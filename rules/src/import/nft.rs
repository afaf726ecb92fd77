//! nftables input: `nft -j list ruleset` JSON, read with serde_json, and
//! the text form (`/etc/nftables.conf`, `nft list ruleset`), which is
//! handed to nft itself: loaded into a throwaway network namespace and
//! listed back as JSON.
//!
//! Why nft for the text form: the language has variables, includes, sets,
//! maps, several spellings of one statement and grows with each release;
//! nft's own parser is the only one that reads a file exactly as the
//! kernel will get it, and a private empty namespace (`unshare --net`)
//! touches no real firewall. That is the one place the rules crate runs a
//! program. Line numbers of text input are recovered by walking the text's
//! chain blocks (one rule per line, as `nft list ruleset` prints them).
//!
//! The fact a reader would get wrong: a table made by iptables-nft shows
//! up here too (as `xt` expressions); it is read from iptables-save
//! instead, never twice.

use std::{collections::HashMap, net::IpAddr};

use serde_json::Value;

use super::{
    ir::{Action, Family, Hook, Iface, Nets, Origin, PortMap, Rule, Ruleset},
    nft_values::{nets_of, port_map, ports_of},
    Entry,
};
use crate::model::{PortRange, L4};

/// `nft -j list ruleset` output into the model. `iptables_too`: the input
/// also holds iptables-save output, so iptables-nft tables are read there.
pub fn read_json(
    source: &str,
    text: &str,
    rs: &mut Ruleset,
    entries: &mut Vec<Entry>,
    iptables_too: bool,
) {
    let (json, lines) = match text.split_once("\n//lines ") {
        Some((j, l)) => (
            j,
            serde_json::from_str::<HashMap<String, Vec<(usize, String)>>>(l).unwrap_or_default(),
        ),
        None => (text, HashMap::new()),
    };
    let doc: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            entries.push(Entry::left(
                Origin::new(source, e.line(), ""),
                format!("not nft JSON: {e}"),
            ));
            return;
        }
    };
    let objects = doc["nftables"].as_array().cloned().unwrap_or_default();
    let mut sets: HashMap<(String, String, String), Vec<Value>> = HashMap::new();
    let mut xt_tables = Vec::new();
    for o in &objects {
        for kind in ["set", "map"] {
            if let Some(s) = o.get(kind) {
                let key = (
                    str_of(&s["family"]),
                    str_of(&s["table"]),
                    str_of(&s["name"]),
                );
                sets.insert(key, s["elem"].as_array().cloned().unwrap_or_default());
            }
        }
        if let Some(r) = o.get("rule") {
            if r["expr"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x.get("xt").is_some()))
            {
                xt_tables.push((str_of(&r["family"]), str_of(&r["table"])));
            }
        }
    }
    let mut counters: HashMap<String, usize> = HashMap::new();
    for (n, o) in objects.iter().enumerate() {
        if let Some(c) = o.get("chain") {
            let fam = str_of(&c["family"]);
            let table = str_of(&c["table"]);
            if xt_tables.contains(&(fam.clone(), table.clone())) {
                continue;
            }
            for family in families(&fam) {
                let ch = rs.chain(family, &table, &str_of(&c["name"]));
                ch.hook = c["hook"].as_str().and_then(Hook::from_name);
                ch.nat = c["type"].as_str() == Some("nat");
                ch.prio = c["prio"].as_i64().unwrap_or(0) as i32;
                ch.owner = if table.starts_with("kube") {
                    Some("kube-proxy")
                } else {
                    None
                };
            }
        }
        let Some(r) = o.get("rule") else { continue };
        let (fam, table, chain) = (
            str_of(&r["family"]),
            str_of(&r["table"]),
            str_of(&r["chain"]),
        );
        let key = format!("{fam} {table} {chain}");
        let idx = counters.entry(key.clone()).or_default();
        *idx += 1;
        let origin = match lines.get(&key).and_then(|l| l.get(*idx - 1)) {
            Some((line, t)) => Origin::new(source, *line, t),
            None => Origin::new(
                source,
                n + 1,
                &format!(
                    "{fam} {table} {chain} rule #{idx}{}",
                    r["handle"]
                        .as_u64()
                        .map(|h| format!(" (handle {h})"))
                        .unwrap_or_default()
                ),
            ),
        };
        if xt_tables.contains(&(fam.clone(), table.clone())) {
            if *idx == 1 {
                let why = format!(
                    "table {fam} {table} is managed by iptables-nft (its rules use xt expressions)"
                );
                entries.push(if iptables_too {
                    Entry::note(origin, format!("{why}: read from iptables-save instead"))
                } else {
                    Entry::left(origin, format!("{why}: import `iptables-save` output for it (`forwarder import iptables`), or use --from-running"))
                });
            }
            continue;
        }
        for family in families(&fam) {
            let sets_of = |name: &str| {
                sets.get(&(
                    fam.clone(),
                    table.clone(),
                    name.trim_start_matches('@').to_owned(),
                ))
                .cloned()
            };
            match rule(family, &r["expr"], &origin, &sets_of) {
                Ok(Some(rules)) => {
                    let c = rs.chain(family, &table, &chain);
                    for mut x in rules {
                        x.comment = r["comment"].as_str().map(str::to_owned);
                        c.rules.push(x);
                    }
                }
                Ok(None) => {}
                Err(reason) => entries.push(Entry::left(origin.clone(), reason)),
            }
        }
    }
    // Regular chains of a table with nat base chains are part of NAT
    // (reached by jumps); flatten decides whether anything jumps to them.
    let nat_tables: Vec<(Family, String)> = rs
        .chains
        .iter()
        .filter(|c| c.nat && c.hook.is_some())
        .map(|c| (c.family, c.table.clone()))
        .collect();
    for c in rs.chains.iter_mut().filter(|c| c.hook.is_none()) {
        if nat_tables.contains(&(c.family, c.table.clone())) {
            c.nat = true;
        }
    }
}

fn families(fam: &str) -> Vec<Family> {
    match fam {
        "ip" => vec![Family::V4],
        "ip6" => vec![Family::V6],
        "inet" => vec![Family::V4, Family::V6],
        _ => vec![],
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

pub(super) type SetsOf<'a> = dyn Fn(&str) -> Option<Vec<Value>> + 'a;

/// One rule's statements; `Ok(None)` when it cannot match `family`. A dnat
/// through a port map becomes one rule per map entry.
fn rule(
    family: Family,
    expr: &Value,
    origin: &Origin,
    sets: &SetsOf,
) -> Result<Option<Vec<Rule>>, String> {
    let mut r = Rule::new(origin.clone(), family, Action::Continue);
    let mut by_port: Option<Vec<(PortRange, Value)>> = None;
    for st in expr.as_array().into_iter().flatten() {
        let Some((key, val)) = st.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match key.as_str() {
            "match" => {
                if !matches_stmt(&mut r, family, val, sets)? {
                    return Ok(None);
                }
            }
            "counter" | "log" | "limit" | "meta" | "mangle" | "notrack" | "ct helper" => {}
            "accept" | "return" | "drop" | "reject" => {
                r.action = Action::Stop(key.to_ascii_uppercase())
            }
            "jump" | "goto" => {
                r.action = Action::Jump {
                    chain: str_of(&val["target"]),
                    goto: key == "goto",
                }
            }
            "masquerade" => r.action = Action::Masquerade,
            "redirect" => {
                r.action = Action::Redirect {
                    to: val
                        .get("port")
                        .map_or("the same port".into(), |p| p.to_string()),
                }
            }
            "snat" => {
                r.action = match val["addr"].as_str().and_then(|a| a.parse::<IpAddr>().ok()) {
                    Some(a) => Action::Snat { addr: a },
                    None => Action::Unsupported(format!(
                        "snat to {}: only a single address is supported",
                        val["addr"]
                    )),
                };
            }
            "dnat" => {
                if val
                    .get("family")
                    .and_then(Value::as_str)
                    .is_some_and(|f| (f == "ip6") != (family == Family::V6))
                {
                    return Ok(None);
                }
                match &val["addr"] {
                    Value::String(s) => match s.parse::<IpAddr>() {
                        Ok(a) if Family::of(&a) == family => {
                            r.action = Action::Dnat {
                                addr: a,
                                ports: port_map(&val["port"])?,
                            }
                        }
                        Ok(_) => return Ok(None),
                        Err(_) => {
                            r.action = Action::Unsupported(format!("dnat to {s}: not an address"))
                        }
                    },
                    Value::Null => {
                        r.action = Action::LocalPort {
                            port: val["port"].to_string(),
                        }
                    }
                    Value::Object(m) if m.contains_key("map") => {
                        if let Some(p) = m["map"]["key"]["payload"]["protocol"].as_str() {
                            set_proto(&mut r, &Value::String(p.into()), false);
                        }
                        let data = &m["map"]["data"];
                        let elems = match data {
                            Value::String(name) => sets(name).unwrap_or_default(),
                            other => other["set"].as_array().cloned().unwrap_or_default(),
                        };
                        let mut out = Vec::new();
                        for e in elems {
                            let pair = e.as_array().cloned().unwrap_or_default();
                            let (Some(k), Some(v)) = (pair.first(), pair.get(1)) else {
                                continue;
                            };
                            for p in ports_of(k, sets)? {
                                out.push((p, v.clone()));
                            }
                        }
                        by_port = Some(out);
                        r.action = Action::Dnat {
                            addr: IpAddr::from([0, 0, 0, 0]),
                            ports: PortMap::Shift(0),
                        };
                    }
                    other => {
                        r.action = Action::Unsupported(format!(
                            "dnat to {other}: not a form the importer reads"
                        ))
                    }
                }
            }
            "xt" => r.unknown.push("an iptables (xt) extension".into()),
            other => r.unknown.push(format!("statement `{other}`")),
        }
    }
    r.owner = [&r.in_iface, &r.out_iface]
        .into_iter()
        .flatten()
        .find_map(|i| super::ir::iface_owner(&i.name));
    let Some(entries) = by_port else {
        return Ok(Some(vec![r]));
    };
    let mut out = Vec::new();
    for (p, v) in entries {
        let mut x = r.clone();
        x.dports = Some(vec![p]);
        let (addr, port) = match &v {
            Value::String(a) => (a.clone(), Value::Null),
            Value::Object(o) if o.contains_key("concat") => {
                (str_of(&o["concat"][0]), o["concat"][1].clone())
            }
            other => return Err(format!("map value {other}: not an address")),
        };
        match addr.parse::<IpAddr>() {
            Ok(a) if Family::of(&a) == family => {
                x.action = Action::Dnat {
                    addr: a,
                    ports: port_map(&port)?,
                }
            }
            Ok(_) => continue,
            Err(_) => x.action = Action::Unsupported(format!("map value {addr}: not an address")),
        }
        out.push(x);
    }
    Ok(Some(out))
}

/// A match statement into `r`; false when it can never hold for `family`.
fn matches_stmt(r: &mut Rule, family: Family, m: &Value, sets: &SetsOf) -> Result<bool, String> {
    let negated = m["op"].as_str() == Some("!=");
    let left = &m["left"];
    let right = &m["right"];
    if let Some(meta) = left.get("meta") {
        match meta["key"].as_str().unwrap_or("") {
            k @ ("iifname" | "iif" | "oifname" | "oif") => {
                let name = right.as_str().map(|s| {
                    s.trim_end_matches('*').to_owned() + if s.ends_with('*') { "+" } else { "" }
                });
                let Some(name) = name else {
                    r.unknown.push(format!("{k} in a set"));
                    return Ok(true);
                };
                let i = Some(Iface { name, negated });
                if k.starts_with('i') {
                    r.in_iface = i;
                } else {
                    r.out_iface = i;
                }
            }
            "l4proto" => set_proto(r, right, negated),
            "nfproto" => return Ok((right.as_str() == Some("ipv6")) == (family == Family::V6)),
            k => r.unknown.push(format!("meta {k}")),
        }
        return Ok(true);
    }
    if let Some(p) = left.get("payload") {
        let proto = p["protocol"].as_str().unwrap_or("");
        let field = p["field"].as_str().unwrap_or("");
        match (proto, field) {
            ("ip" | "ip6", "saddr" | "daddr") => {
                if (proto == "ip6") != (family == Family::V6) {
                    return Ok(false);
                }
                let nets = Nets {
                    nets: nets_of(right, sets)?,
                    negated,
                };
                if field == "saddr" {
                    r.src = Some(nets);
                } else {
                    r.dst = Some(nets);
                }
            }
            ("tcp" | "udp" | "th", "dport") => {
                if proto != "th" {
                    set_proto(r, &Value::String(proto.into()), false);
                }
                if negated {
                    r.unknown.push(format!("{proto} dport != {right}"));
                } else {
                    r.dports = Some(ports_of(right, sets)?);
                }
            }
            ("ip", "protocol") | ("ip6", "nexthdr") => set_proto(r, right, negated),
            _ => r.unknown.push(format!("{proto} {field}")),
        }
        return Ok(true);
    }
    if left.get("ct").is_some_and(|c| c["key"] == "state") {
        let states: Vec<String> = match right {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(str_of).collect(),
            _ => vec![],
        };
        if states.iter().any(|s| s == "new") && !negated {
            r.accepted
                .push("ct state new (the nat chains only see a connection's first packet)".into());
        } else {
            r.unknown.push(format!("ct state {}", states.join(",")));
        }
        return Ok(true);
    }
    if left.get("fib").is_some() && right.as_str() == Some("local") && !negated {
        r.accepted.push(
            "fib daddr type local (a forward listens on the interface's own addresses)".into(),
        );
        return Ok(true);
    }
    r.unknown.push(format!("match {left}"));
    Ok(true)
}

fn set_proto(r: &mut Rule, v: &Value, negated: bool) {
    match (v.as_str(), negated) {
        (Some("tcp"), false) => r.proto = Some(L4::Tcp),
        (Some("udp"), false) => r.proto = Some(L4::Udp),
        _ => r.unknown.push(format!("protocol {v}")),
    }
}
