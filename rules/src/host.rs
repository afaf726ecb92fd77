//! What `forwarder check` says about a file on the host it runs on: a
//! fixed listen address no interface here holds (the forward would listen
//! nowhere), an interface that does not exist, a local service that sources
//! an allow-list refuses would reach, and netfilter FORWARD rules the
//! forwarded flows will not pass through. The CLI reads the host read-only
//! (interfaces and addresses over rtnetlink, the socket tables,
//! `iptables-save`, `nft -j list ruleset`) into a [`HostFacts`]; the
//! judging is here, pure.
//!
//! IPv4 only: the interfaces' IPv6 addresses and sockets are not read, so
//! a forward's IPv6 side is not judged against the host (an IPv6 forward
//! is refused by `forwarder run` in this release anyway, see `release.rs`).
//!
//! The one fact a reader gets wrong: flows on the redirect path never
//! enter netfilter. The TC program rewrites the packet and hands it to the
//! egress device itself (`bpf_redirect_neigh`), so the host's FORWARD
//! chain, the Proxmox firewall and `conntrack -L` never see it. Such rules
//! are not wrong, only not in the path: the forward's own firewall is its
//! `allow` list.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use crate::{
    diagnostics::Sink,
    local_sockets::LocalSocket,
    model::{Listen, PathMode},
    parse::Parsed,
};

/// What `check` read of this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// Every interface's IPv4 addresses, by name.
    pub ifaces: BTreeMap<String, Vec<Ipv4Addr>>,
    /// This host's name for `nodes = [...]`.
    pub node: String,
    /// Filtering of forwarded packets, one description per chain that has
    /// rules or does not accept by default (see [`forward_filtering`]);
    /// `Err` says why it could not be read.
    pub forward_filter: Result<Vec<String>, String>,
    /// This host's listening TCP and unconnected UDP sockets.
    pub sockets: Vec<LocalSocket>,
}

pub(crate) fn check(parsed: &Parsed, host: &HostFacts, sink: &mut Sink) {
    let here = |f: &crate::Forward| f.applies_on(&host.node);
    let mut missing = BTreeSet::new();
    for (f, sp) in parsed.rules.forwards.iter().zip(&parsed.spans) {
        if !here(f) {
            continue;
        }
        let ctx = format!("forward \"{}\"", f.name);
        let Some(own) = host.ifaces.get(&f.iface) else {
            if missing.insert(f.iface.clone()) {
                sink.note(
                    &sp.field("in"),
                    Some(&ctx),
                    format!(
                        "interface {} does not exist on this host: its forwards start when it \
                         appears",
                        f.iface
                    ),
                    Some(
                        "check the name with `ip link`, or run `check` on the host the file is for"
                            .into(),
                    ),
                );
            }
            continue;
        };
        let a = match f.listen {
            Listen::Addr(IpAddr::V4(a)) => a,
            // Not read: see the module comment.
            Listen::Addr(IpAddr::V6(_)) => continue,
            Listen::Interface => {
                if own.is_empty() && f.listen_afs().contains(&crate::Af::V4) {
                    sink.warning(
                        &sp.field("in"),
                        Some(&ctx),
                        format!(
                        "{} has no IPv4 address: with listen = \"interface\" the forward listens \
                         nowhere here until it gets one",
                        f.iface
                    ),
                        Some(
                            "assign the address the forward should take, or listen on a fixed one"
                                .into(),
                        ),
                    );
                }
                continue;
            }
        };
        let holder = host
            .ifaces
            .iter()
            .find(|(_, addrs)| addrs.contains(&a))
            .map(|(n, _)| n.as_str());
        let has = if own.is_empty() {
            "no IPv4 address".to_string()
        } else {
            own.iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match holder {
            None => sink.warning(
                &sp.field("listen"),
                Some(&ctx),
                format!(
                    "listen address {a} is not assigned to any interface of this host ({} has \
                     {has}): the forward listens nowhere here until it is",
                    f.iface
                ),
                Some(format!(
                    "use an address of {} or listen = \"interface\"; a keepalived VIP held by \
                     another node is fine (it starts here when the address moves here)",
                    f.iface
                )),
            ),
            Some(other) if other != f.iface => sink.note(
                &sp.field("listen"),
                Some(&ctx),
                format!(
                    "listen address {a} is on {other}, not on {}: packets for it are taken \
                     only when they arrive on {}",
                    f.iface, f.iface
                ),
                None,
            ),
            Some(_) => {}
        }
    }
    let redirected: Vec<&str> = parsed
        .rules
        .forwards
        .iter()
        .filter(|f| here(f) && f.path != PathMode::Stack)
        .map(|f| f.name.as_str())
        .collect();
    if redirected.is_empty() {
        return;
    }
    match &host.forward_filter {
        Ok(chains) if !chains.is_empty() => sink.note(
            &None,
            None,
            format!(
                "this host filters forwarded packets ({}), but flows on the redirect path \
                 skip netfilter entirely: those rules, the Proxmox firewall and `conntrack -L` \
                 do not see them (SNATed flows and on-link targets with path = \"auto\", every \
                 flow with path = \"redirect\")",
                chains.join("; ")
            ),
            Some(
                "use `allow` as each forward's own firewall; path = \"stack\" sends a \
                 forward's flows through the stack and netfilter instead"
                    .into(),
            ),
        ),
        Ok(_) => {}
        Err(why) => sink.note(
            &None,
            None,
            format!("the host's FORWARD rules were not read ({why})"),
            Some(
                "flows on the redirect path skip netfilter entirely, whatever it holds: \
                 `allow` is each forward's own firewall"
                    .into(),
            ),
        ),
    }
}

/// The chains that filter forwarded packets, from `iptables-save` output
/// and `nft -j list ruleset` JSON: each with rules, or whose policy is not
/// accept. Chains iptables-nft made (`ip filter FORWARD`) are counted from
/// iptables-save only.
pub fn forward_filtering(iptables_save: &str, nft_json: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut table = "";
    let mut policy = None;
    let mut rules = 0;
    for line in iptables_save.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('*') {
            table = t;
        } else if table == "filter" {
            if let Some(rest) = line.strip_prefix(":FORWARD ") {
                policy = rest.split_whitespace().next().map(str::to_string);
            } else if line.starts_with("-A FORWARD ") {
                rules += 1;
            }
        }
    }
    let iptables = policy.is_some();
    if rules > 0 || policy.as_deref().is_some_and(|p| p != "ACCEPT") {
        out.push(format!(
            "iptables FORWARD: policy {}, {rules} rule{}",
            policy.as_deref().unwrap_or("ACCEPT"),
            if rules == 1 { "" } else { "s" }
        ));
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(nft_json) else {
        return out;
    };
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    let mut chains: BTreeMap<(String, String, String), (String, usize)> = BTreeMap::new();
    for i in &items {
        let c = &i["chain"];
        if c["hook"].as_str() == Some("forward") {
            let key = |k: &str| c[k].as_str().unwrap_or("").to_string();
            let made_by_iptables = iptables
                && ["ip", "ip6"].contains(&key("family").as_str())
                && key("table") == "filter"
                && key("name") == "FORWARD";
            if !made_by_iptables {
                chains.insert(
                    (key("family"), key("table"), key("name")),
                    (c["policy"].as_str().unwrap_or("accept").to_string(), 0),
                );
            }
        }
    }
    for i in &items {
        let r = &i["rule"];
        let key = |k: &str| r[k].as_str().unwrap_or("").to_string();
        if let Some(c) = chains.get_mut(&(key("family"), key("table"), key("chain"))) {
            c.1 += 1;
        }
    }
    for ((family, table, name), (policy, n)) in chains {
        if n > 0 || policy != "accept" {
            out.push(format!(
                "nft {family} {table} chain {name}: policy {policy}, {n} rule{}",
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nlisten = \"192.168.1.99\"\nport = 80\nto = \"192.168.100.80\"\n";

    fn host(vmbr0: &[&str], filter: Result<Vec<String>, String>) -> HostFacts {
        HostFacts {
            ifaces: [
                (
                    "vmbr0".to_string(),
                    vmbr0.iter().map(|a| a.parse().unwrap()).collect(),
                ),
                (
                    "lo".to_string(),
                    vec![Ipv4Addr::LOCALHOST, "10.9.9.9".parse().unwrap()],
                ),
            ]
            .into_iter()
            .collect(),
            node: "pve-alpha".into(),
            forward_filter: filter,
            sockets: Vec::new(),
        }
    }

    fn said(text: &str, host: &HostFacts) -> Vec<String> {
        let l = crate::load_str_on("r.toml", text, Some(host)).unwrap();
        l.warnings
            .items
            .iter()
            .map(|d| d.render("r.toml"))
            .collect()
    }

    #[test]
    fn a_listen_address_no_interface_holds_is_a_warning_with_its_line() {
        let d = said(FILE, &host(&["192.168.1.55"], Ok(vec![])));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("r.toml:4:10: warning: forward \"web\": listen address 192.168.1.99 is not assigned to any interface of this host (vmbr0 has 192.168.1.55)"), "{d:?}");
        assert!(said(FILE, &host(&["192.168.1.55", "192.168.1.99"], Ok(vec![]))).is_empty());
        let on_lo = FILE.replace("192.168.1.99", "10.9.9.9");
        let d = said(&on_lo, &host(&["192.168.1.55"], Ok(vec![])));
        assert!(
            d[0].contains("note: forward \"web\": listen address 10.9.9.9 is on lo, not on vmbr0"),
            "{d:?}"
        );
    }

    #[test]
    fn an_interface_listener_on_an_interface_without_addresses_is_a_warning() {
        let iface = FILE.replace("listen = \"192.168.1.99\"\n", "");
        let d = said(&iface, &host(&[], Ok(vec![])));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].starts_with("r.toml:3:6: warning: forward \"web\": vmbr0 has no IPv4 address"),
            "{d:?}"
        );
        assert!(said(&iface, &host(&["192.168.1.55"], Ok(vec![]))).is_empty());
    }

    #[test]
    fn forwards_of_other_nodes_and_missing_interfaces() {
        let other = FILE.replace("port = 80", "port = 80\nnodes = [\"pve-beta\"]");
        assert!(said(&other, &host(&[], Ok(vec![]))).is_empty());
        let elsewhere = FILE.replace("vmbr0", "vmbr7");
        let d = said(&elsewhere, &host(&[], Ok(vec![])));
        assert!(
            d[0].contains("note: forward \"web\": interface vmbr7 does not exist on this host"),
            "{d:?}"
        );
    }

    #[test]
    fn forward_rules_get_a_note_pointing_to_allow() {
        let d = said(
            FILE,
            &host(
                &["192.168.1.99"],
                Ok(vec!["iptables FORWARD: policy DROP, 3 rules".into()]),
            ),
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("r.toml: note: this host filters forwarded packets (iptables FORWARD: policy DROP, 3 rules), but flows on the redirect path skip netfilter entirely"), "{d:?}");
        assert!(
            d[0].contains("help: use `allow` as each forward's own firewall"),
            "{d:?}"
        );
        // A file whose forwards all take the stack path goes through netfilter.
        let stack = FILE.replace("port = 80", "port = 80\npath = \"stack\"");
        assert!(said(&stack, &host(&["192.168.1.99"], Ok(vec!["x".into()]))).is_empty());
    }

    #[test]
    fn a_local_service_on_a_forwarded_port_is_no_warning() {
        // Refused sources never reach it: the kernel program answers them
        // itself (reject = "rst") or drops them (issue 11 item 7).
        use crate::{local_sockets::LocalSocket, model::L4};
        let allow = FILE.replace("port = 80", "port = 80\nallow = [\"10.0.0.0/8\"]");
        let mut h = host(&["192.168.1.99"], Ok(vec![]));
        h.sockets = vec![LocalSocket {
            proto: L4::Tcp,
            addr: "0.0.0.0".parse().unwrap(),
            port: 80,
        }];
        assert!(said(&allow, &h).is_empty());
    }

    #[test]
    fn filtering_chains_from_iptables_save_and_nft() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n-A FORWARD -j X\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n-A FORWARD -j PVEFW-FORWARD\n-A FORWARD -i vmbr0 -j ACCEPT\nCOMMIT\n";
        let nft = r#"{"nftables":[{"metainfo":{}},
            {"chain":{"family":"ip","table":"filter","name":"FORWARD","hook":"forward","policy":"drop"}},
            {"rule":{"family":"ip","table":"filter","chain":"FORWARD"}},
            {"chain":{"family":"inet","table":"fw","name":"fwd","hook":"forward","policy":"accept"}},
            {"rule":{"family":"inet","table":"fw","chain":"fwd"}},
            {"chain":{"family":"inet","table":"fw","name":"in","hook":"input","policy":"drop"}},
            {"chain":{"family":"inet","table":"idle","name":"f","hook":"forward","policy":"accept"}}]}"#;
        assert_eq!(
            forward_filtering(save, nft),
            [
                "iptables FORWARD: policy DROP, 2 rules",
                "nft inet fw chain fwd: policy accept, 1 rule"
            ]
        );
        let empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n";
        assert!(forward_filtering(empty, "").is_empty());
    }
}
