//! DNS-name targets in the rules file: `to = "immich-server.immich.svc.cluster.local:80"`.
//! What the file accepts and refuses, what `check` and `explain` say about
//! a name offline, `dns_server` in `[global]`, and how a name compiles: no
//! listener until the daemon supplies an address, then the same listeners
//! an address target gets.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
};

use rules::{
    assign_ids, compile, compile_with,
    explain::{explain, parse_resolve, render, Explanation, Query},
    load_str,
    report::check_report,
    to_toml, Forward, Host, L4,
};

const FILE: &str = "rules.toml";

fn load(text: &str) -> rules::Loaded {
    load_str(FILE, text).unwrap_or_else(|d| panic!("{d}"))
}

fn errors(text: &str) -> Vec<String> {
    match load_str(FILE, text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.errors().map(|e| e.render(FILE)).collect(),
    }
}

fn fwd(to: &str, extra: &str) -> String {
    format!(
        "[[forward]]\nname = \"immich\"\nin = \"tailscale0\"\nport = 8080\nto = \"{to}\"\n{extra}"
    )
}

#[test]
fn a_name_is_a_target_with_or_without_ports() {
    for (to, host, ports) in [
        (
            "immich-server.immich.svc.cluster.local:80",
            "immich-server.immich.svc.cluster.local",
            Some("80"),
        ),
        ("immich-server", "immich-server", None),
        ("nas.lan.:445", "nas.lan.", Some("445")),
    ] {
        let l = load(&fwd(to, ""));
        let t = &l.rules.forwards[0].target;
        assert_eq!(t.host, Host::Name(host.into()), "{to}");
        assert_eq!(t.ports.map(|p| p.to_string()).as_deref(), ports, "{to}");
        assert_eq!(t.fixed_addr(), None);
        assert_eq!(t.name(), Some(host));
    }
}

#[test]
fn malformed_names_and_loopback_names_are_refused_where_they_are_written() {
    assert_eq!(
        errors(&fwd("web..lan:80", "")),
        ["rules.toml:5:6: error: forward \"immich\": target `web..lan` is neither an IP address nor a valid DNS name\n  help: write the target as \"IPv4\", \"IPv4:port\" or \"IPv4:first-last\", \"IPv6\", \"[IPv6]:port\" or \"[IPv6]:first-last\", or a host name the daemon resolves, e.g. \"immich-server.immich.svc.cluster.local:80\""]
    );
    assert!(errors(&fwd("10.0.0:80", ""))[0].contains("target `10.0.0` is not an IPv4 address"));
    assert!(errors(&fwd("localhost:80", ""))[0]
        .contains("target localhost always resolves to this host's loopback"));
    assert!(errors(&fwd("db.localhost.", ""))[0].contains("always resolves"));
    // A name's range must still fit the listen range.
    assert!(errors(&fwd("web.lan:90-91", ""))[0].contains("port range size mismatch"));
}

#[test]
fn checks_that_need_the_address_wait_for_the_answer() {
    // With an address these are errors or warnings about the address; with
    // a name they cannot be decided offline, so the file loads (the daemon
    // checks every answer with `unusable_target`).
    let l = load(&fwd(
        "web.lan:80",
        "listen = \"100.118.5.68\"\nsnat = \"192.168.1.1\"",
    ));
    let f = &l.rules.forwards[0];
    let check = |a: &str| rules::target::unusable_target(f, a.parse().unwrap());
    assert_eq!(check("10.43.12.7"), None);
    assert_eq!(
        check("127.0.0.1").as_deref(),
        Some("127.0.0.1 is a loopback address")
    );
    assert_eq!(
        check("100.118.5.68").as_deref(),
        Some("100.118.5.68 is the listen address itself")
    );
    assert_eq!(
        check("192.168.1.1").as_deref(),
        Some("192.168.1.1 is the forward's own SNAT address")
    );
    assert_eq!(
        check("0.0.0.0").as_deref(),
        Some("0.0.0.0 is the unspecified address")
    );
    // snat = "off" still warns, naming the name.
    let w = load(&fwd("web.lan:80", "snat = \"off\""))
        .warnings
        .to_string();
    assert!(w.contains("replies from web.lan must route back"), "{w}");
}

#[test]
fn print_gives_back_the_name() {
    let text = "[global]\ndns_server = [\"10.43.0.10\", \"192.168.1.1:5353\"]\n\n".to_owned()
        + &fwd(
            "immich-server.immich.svc.cluster.local:80",
            "snat = \"auto\"",
        );
    let l = load(&text);
    let printed = to_toml(&l.rules);
    assert!(
        printed.contains("to = \"immich-server.immich.svc.cluster.local:80\""),
        "{printed}"
    );
    assert!(
        printed.contains("dns_server = [\"10.43.0.10\", \"192.168.1.1:5353\"]"),
        "{printed}"
    );
    assert_eq!(load(&printed).rules, l.rules);
}

#[test]
fn dns_server_takes_one_address_or_a_list() {
    let one = load(&format!(
        "[global]\ndns_server = \"10.43.0.10\"\n\n{}",
        fwd("a.lan", "")
    ));
    assert_eq!(
        one.rules.global.dns_servers,
        ["10.43.0.10:53".parse::<SocketAddr>().unwrap()]
    );
    let v6 = load(&format!(
        "[global]\ndns_server = [\"[fd00::53]:5353\", \"fd00::54\"]\n\n{}",
        fwd("a.lan", "")
    ));
    assert_eq!(
        v6.rules.global.dns_servers,
        [
            "[fd00::53]:5353".parse::<SocketAddr>().unwrap(),
            "[fd00::54]:53".parse().unwrap()
        ]
    );
    let e = errors(&format!(
        "[global]\ndns_server = [\"dns.lan\", \"0.0.0.0\"]\n\n{}",
        fwd("a.lan", "")
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].contains("DNS server `dns.lan` is not an address or address:port"));
    assert!(e[1].contains("DNS server 0.0.0.0 is not a unicast address"));
    assert!(errors(&format!(
        "[global]\ndns_server = []\n\n{}",
        fwd("a.lan", "")
    ))[0]
        .contains("an empty dns_server list"));
}

#[test]
fn check_lists_names_as_unresolved() {
    let l = load(
        &(fwd("immich-server.immich.svc.cluster.local:80", "")
            + "\n[[forward]]\nname = \"web\"\nin = \"eth0\"\nport = 80\nto = \"10.0.0.5\"\n"),
    );
    let out = check_report(&l, None);
    assert!(
        out.contains("immich  tailscale0  interface  tcp    8080   immich-server.immich.svc.cluster.local:80"),
        "{out}"
    );
    assert!(out.contains("unresolved: 1 target named by DNS, resolved by the daemon at run time through the system's resolver (/etc/resolv.conf, /etc/hosts)"), "{out}");
    assert!(
        out.contains("  immich: immich-server.immich.svc.cluster.local\n"),
        "{out}"
    );
    let with_server = load(&format!(
        "[global]\ndns_server = \"10.43.0.10\"\n\n{}",
        fwd("a.lan", "")
    ));
    assert!(check_report(&with_server, None).contains("through dns_server 10.43.0.10:53"));
    // A file without names says nothing about them.
    let plain = load("[[forward]]\nname = \"web\"\nin = \"eth0\"\nport = 80\nto = \"10.0.0.5\"\n");
    assert!(!check_report(&plain, None).contains("unresolved"));
}

fn query(resolved: &[(&str, &str)]) -> Query {
    Query {
        iface: "tailscale0".into(),
        from: "100.101.92.95:40000".parse().unwrap(),
        to: "100.118.5.68:8080".parse().unwrap(),
        proto: L4::Tcp,
        iface_addrs: BTreeMap::from([("tailscale0".into(), vec!["100.118.5.68".parse().unwrap()])]),
        resolved: resolved
            .iter()
            .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
            .collect(),
        host_notes: BTreeMap::new(),
    }
}

#[test]
fn explain_says_a_name_resolves_at_run_time_or_uses_the_stated_answer() {
    let l = load(&fwd(
        "immich-server.immich.svc.cluster.local:80",
        "snat = \"off\"",
    ));
    let q = query(&[]);
    let e = explain(&l.rules, &q);
    let out = render(&l.rules, &q, &e);
    assert!(
        out.contains("becomes  100.101.92.95:40000 -> <immich-server.immich.svc.cluster.local>:80"),
        "{out}"
    );
    assert!(out.contains("note: target immich-server.immich.svc.cluster.local is a DNS name: the daemon resolves it at run time (A records; the lowest address when there are several) and follows its answers; pass --resolve immich-server.immich.svc.cluster.local=IP to state an address"), "{out}");

    let q = query(&[("immich-server.immich.svc.cluster.local", "10.43.12.7")]);
    let Explanation::Translated { original, .. } = explain(&l.rules, &q) else {
        panic!("not translated")
    };
    assert_eq!(
        original.after.dst.to_string(),
        SocketAddrV4::new(Ipv4Addr::new(10, 43, 12, 7), 80).to_string()
    );
    let out = render(&l.rules, &q, &explain(&l.rules, &q));
    assert!(
        out.contains("taken here as 10.43.12.7; the daemon resolves it itself"),
        "{out}"
    );

    // An answer that cannot be a target: the daemon would pause the forward.
    let q = query(&[("immich-server.immich.svc.cluster.local", "127.0.0.1")]);
    let out = render(&l.rules, &q, &explain(&l.rules, &q));
    assert!(
        out.contains(
            "with that answer the daemon pauses this forward (127.0.0.1 is a loopback address)"
        ),
        "{out}"
    );

    assert_eq!(
        parse_resolve("a.lan=10.0.0.1"),
        Ok(("a.lan".into(), "10.0.0.1".parse().unwrap()))
    );
    assert!(parse_resolve("a..lan=10.0.0.1").is_err());
    assert!(parse_resolve("a.lan").is_err());
}

#[test]
fn a_name_compiles_to_no_listener_until_an_address_is_given() {
    let text = fwd("web.lan:80", "proto = \"both\"")
        + "\n[[forward]]\nname = \"fixed\"\nin = \"eth0\"\nport = 81\nto = \"10.0.0.5\"\n";
    let l = load(&text);
    let ids = assign_ids(
        &BTreeMap::new(),
        l.rules.forwards.iter().map(|f| f.name.as_str()),
    );
    let listeners = |c: &rules::Compiled, name: &str| {
        c.rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.listeners.clone())
            .unwrap()
    };
    // compile alone: the name is paused, the address forward is whole.
    let c = compile(&l.rules, &ids).unwrap();
    assert!(listeners(&c, "immich").is_empty());
    assert_eq!(listeners(&c, "fixed").len(), 1);
    assert_eq!(c.rules.len(), 2, "the paused forward keeps its rule id");

    // With the answer, the same listeners an address target gets.
    let web = "10.43.12.7".parse::<Ipv4Addr>().unwrap();
    let resolved = |f: &Forward| f.target.fixed_addr().or(Some(web.into()));
    let c = compile_with(&l.rules, &ids, resolved).unwrap();
    let mut as_address = l.rules.clone();
    as_address.forwards[0].target.host = Host::Addr(web.into());
    let want = compile(&as_address, &ids).unwrap();
    assert_eq!(listeners(&c, "immich"), listeners(&want, "immich"));
    assert_eq!(listeners(&c, "immich").len(), 2, "tcp and udp");
    assert_eq!(listeners(&c, "fixed"), listeners(&want, "fixed"));
}
