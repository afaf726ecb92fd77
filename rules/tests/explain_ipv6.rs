//! `forwarder explain` with IPv6 `--from/--to`: NAT66, NAT64 from a
//! dual-stack listener, NAT46, and why an address of the wrong family does
//! not match.

use std::collections::BTreeMap;

use rules::{
    explain::{explain, render, Explanation, Query},
    load_str, RuleSet, L4,
};

const RULES: &str = r#"
[[forward]]
name = "immich"
in = "tailscale0"
family = "both"
port = 8080
to = "10.43.126.136:80"
allow = ["100.101.92.95", "fd7a:115c:a1e0::/48"]

[[forward]]
name = "web6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 80
to = "[fd00:100::80]:80"
snat = "fd00:100::1"

[[forward]]
name = "v6vm"
in = "vmbr0"
listen = "192.168.1.55"
port = 443
to = "fd00:100::443"

[[forward]]
name = "v4only"
in = "vmbr1"
port = 53
proto = "udp"
to = "192.168.100.53"
"#;

fn rules() -> RuleSet {
    load_str("r.toml", RULES).unwrap().rules
}

fn q(iface: &str, from: &str, to: &str) -> Query {
    Query {
        iface: iface.into(),
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        proto: L4::Tcp,
        iface_addrs: BTreeMap::new(),
        resolved: BTreeMap::new(),
        host_notes: BTreeMap::new(),
    }
}

#[test]
fn nat66_with_a_fixed_source() {
    let rs = rules();
    let query = q("vmbr0", "[2001:db8:77::9]:40000", "[2001:db8:1::55]:80");
    let e = explain(&rs, &query);
    let Explanation::Translated {
        original,
        reply,
        notes,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        original.after.to_string(),
        "[fd00:100::1]:<port from 1024-32767> -> [fd00:100::80]:80"
    );
    assert_eq!(
        reply.after.to_string(),
        "[2001:db8:1::55]:80 -> [2001:db8:77::9]:40000"
    );
    assert!(notes.is_empty(), "{notes:?}");
    assert!(render(&rs, &query, &e).contains("matches forward \"web6\" (vmbr0 2001:db8:1::55 port 80 -> [fd00:100::80]:80, snat fd00:100::1)"));
}

#[test]
fn nat64_from_the_ipv6_half_of_a_dual_stack_listener() {
    let rs = rules();
    let query = q(
        "tailscale0",
        "[fd7a:115c:a1e0::9]:40000",
        "[fd7a:115c:a1e0::1]:8080",
    );
    let e = explain(&rs, &query);
    let Explanation::Translated {
        original,
        reply,
        notes,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        original.after.to_string(),
        "<egress interface's address toward 10.43.126.136>:<port from 1024-32767> -> 10.43.126.136:80"
    );
    assert_eq!(
        reply.after.to_string(),
        "[fd7a:115c:a1e0::1]:8080 -> [fd7a:115c:a1e0::9]:40000"
    );
    assert!(notes.iter().any(|n| n.contains("an IPv6 client of the IPv4 target 10.43.126.136: the header is translated between families (NAT64, RFC 7915)")), "{notes:?}");
    assert!(render(&rs, &query, &e)
        .contains("(tailscale0 interface (IPv4+IPv6) port 8080 -> 10.43.126.136:80, snat auto)"));
    // The IPv4 half of the same forward keeps the client's address.
    let Explanation::Translated { original, .. } = explain(
        &rs,
        &q("tailscale0", "100.101.92.95:40000", "100.118.5.68:8080"),
    ) else {
        panic!()
    };
    assert_eq!(
        original.after.to_string(),
        "100.101.92.95:40000 -> 10.43.126.136:80"
    );
}

#[test]
fn nat46_to_an_ipv6_only_backend() {
    let Explanation::Translated {
        original, notes, ..
    } = explain(
        &rules(),
        &q("vmbr0", "192.168.1.10:5555", "192.168.1.55:443"),
    )
    else {
        panic!()
    };
    assert_eq!(
        original.after.to_string(),
        "<egress interface's address toward fd00:100::443>:<port from 1024-32767> -> [fd00:100::443]:443"
    );
    assert!(notes[0].contains("(NAT46, RFC 7915)"), "{notes:?}");
}

#[test]
fn allow_lists_and_families_decide_per_client_family() {
    let rs = rules();
    let e = explain(
        &rs,
        &q("tailscale0", "[2001:db8::9]:1", "[fd7a:115c:a1e0::1]:8080"),
    );
    assert_eq!(
        e,
        Explanation::Refused {
            rule: "immich".into(),
            reason: "source 2001:db8::9 is not in the allow-list (100.101.92.95/32, fd7a:115c:a1e0::/48): it gets a TCP RST, like from a closed port (reject = \"rst\"); never this host's own service on that port".into()
        }
    );
    let Explanation::NoMatch { reasons } =
        explain(&rs, &q("vmbr1", "[fd00:100::9]:1", "[fd00:100::1]:53"))
    else {
        panic!()
    };
    assert_eq!(reasons, vec!["forward \"v4only\" listens on udp, not tcp"]);
    let mut query = q("vmbr1", "[fd00:100::9]:1", "[fd00:100::1]:53");
    query.proto = L4::Udp;
    let Explanation::NoMatch { reasons } = explain(&rs, &query) else {
        panic!()
    };
    assert_eq!(
        reasons,
        vec!["forward \"v4only\" takes IPv4 clients only (family = \"ipv4\"), not IPv6"]
    );
    // Link-local destinations are never listened on.
    let Explanation::NoMatch { reasons } =
        explain(&rs, &q("tailscale0", "[fe80::9]:1", "[fe80::1]:8080"))
    else {
        panic!()
    };
    assert_eq!(
        reasons,
        vec!["forward \"immich\" does not listen on link-local addresses such as fe80::1"]
    );
    // A packet has one family.
    let Explanation::NoMatch { reasons } = explain(
        &rs,
        &q("tailscale0", "100.101.92.95:1", "[fd7a:115c:a1e0::1]:8080"),
    ) else {
        panic!()
    };
    assert!(
        reasons[0].contains("are of different families"),
        "{reasons:?}"
    );
}

#[test]
fn interface_addresses_of_both_families_can_be_stated() {
    let rs = rules();
    let mut query = q(
        "tailscale0",
        "[fd7a:115c:a1e0::9]:1",
        "[fd7a:115c:a1e0::1]:8080",
    );
    query.iface_addrs.insert(
        "tailscale0".into(),
        vec![
            "100.118.5.68".parse().unwrap(),
            "fd7a:115c:a1e0::2".parse().unwrap(),
        ],
    );
    let Explanation::NoMatch { reasons } = explain(&rs, &query) else {
        panic!()
    };
    assert_eq!(reasons, vec!["forward \"immich\" listens on tailscale0's addresses (fd7a:115c:a1e0::2), and fd7a:115c:a1e0::1 is not one of them"]);
}

/// The explanation is what a rule means; for a NAT46 forward it adds
/// that this release does not forward it (run refuses the file), never
/// for a NAT64 forward (either half of the dual-stack one), an IPv4-only
/// or a NAT66 forward.
#[test]
fn only_nat46_forwards_are_said_to_be_outside_this_release() {
    let rs = rules();
    let note = "note: NAT46 is not in this release: `forwarder run` refuses a rules file with this forward";
    let shown = |query: Query| render(&rs, &query, &explain(&rs, &query));
    let v6 = shown(q("vmbr0", "[2001:db8:77::9]:40000", "[2001:db8:1::55]:80"));
    assert!(v6.contains("matches forward \"web6\""), "{v6}");
    assert!(!v6.contains("not in this release"), "{v6}");
    let mut v4_half = q("tailscale0", "100.101.92.95:40000", "100.118.5.68:8080");
    v4_half
        .iface_addrs
        .insert("tailscale0".into(), vec!["100.118.5.68".parse().unwrap()]);
    let v4_half = shown(v4_half);
    assert!(v4_half.contains("matches forward \"immich\""), "{v4_half}");
    assert!(!v4_half.contains("not in this release"), "{v4_half}");
    let mut nat64 = q(
        "tailscale0",
        "[fd7a:115c:a1e0::9]:40000",
        "[fd7a:115c:a1e0::1]:8080",
    );
    nat64.iface_addrs.insert(
        "tailscale0".into(),
        vec!["fd7a:115c:a1e0::1".parse().unwrap()],
    );
    let nat64 = shown(nat64);
    assert!(nat64.contains("matches forward \"immich\""), "{nat64}");
    assert!(!nat64.contains("not in this release"), "{nat64}");
    let nat46 = shown(q("vmbr0", "192.168.1.9:40000", "192.168.1.55:443"));
    assert!(nat46.contains("matches forward \"v6vm\""), "{nat46}");
    assert!(nat46.contains(note), "{nat46}");
    let mut v4 = q("vmbr1", "192.168.100.9:4000", "192.168.100.1:53");
    v4.proto = L4::Udp;
    let v4 = shown(v4);
    assert!(v4.contains("matches forward \"v4only\""), "{v4}");
    assert!(!v4.contains("IPv6"), "{v4}");
}
