//! One test per IPv6 and dual-stack validation rule: the exact message,
//! where it points, and that the valid forms load.

use rules::{load_str, Af, Family, Listen, Snat, TRANSLATION_NOT_FORWARDED};

mod support;
use support::{errors, one_error, FILE};

/// The warnings about the file's design: every NAT46 forward here also
/// gets the release's "NAT46 is not in this release" (tested in
/// `rules::release` and `ipv6_forwards_of_every_shape_load`).
fn warnings(text: &str) -> Vec<String> {
    support::warnings(text)
        .into_iter()
        .filter(|w| !w.contains(TRANSLATION_NOT_FORWARDED))
        .collect()
}

/// A forward on vmbr0 port 80 to `to`, with `extra` lines (from line 6).
fn fwd(to: &str, extra: &str) -> String {
    format!("[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = 80\nto = \"{to}\"\n{extra}")
}

#[test]
fn ipv6_forwards_of_every_shape_load() {
    let text = r#"
[[forward]]
name = "nat66"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 80
to = "[fd00:100::80]:8080"
snat = "fd00:100::1"
allow = ["2001:db8:77::/48", "fd7a:115c:a1e0::1"]

[[forward]]
name = "nat64-dual"
in = "tailscale0"
family = "both"
port = 8080
to = "10.43.126.136:80"

[[forward]]
name = "nat46"
in = "vmbr0"
listen = "192.168.1.55"
port = 443
to = "fd00:100::80"
snat = "masquerade"

[[forward]]
name = "v6-iface"
in = "vmbr0"
proto = "udp"
port = "30000-30010"
to = "[fd00:100::60]:31000-31010"
"#;
    let loaded = load_str(FILE, text).unwrap();
    // Valid, and the NAT46 one warned about once: this release does not
    // translate IPv4 clients to IPv6 (`run` refuses the file); the NAT66
    // and NAT64 ones are not.
    assert_eq!(loaded.warnings.len(), 1, "{}", loaded.warnings);
    assert!(loaded
        .warnings
        .items
        .iter()
        .all(|w| w.message == TRANSLATION_NOT_FORWARDED));
    let rules = loaded.rules;
    let f = |n: &str| rules.forward(n).unwrap().clone();
    assert_eq!(
        f("nat66").listen,
        Listen::Addr("2001:db8:1::55".parse().unwrap())
    );
    assert_eq!(f("nat66").family, Family::Ipv6);
    assert_eq!(f("nat66").snat, Snat::Fixed("fd00:100::1".parse().unwrap()));
    assert_eq!(f("nat66").target.to_string(), "[fd00:100::80]:8080");
    assert_eq!(f("nat64-dual").listen_afs(), [Af::V4, Af::V6]);
    assert!(f("nat64-dual").translates(Af::V6) && !f("nat64-dual").translates(Af::V4));
    // auto keeps IPv4 clients' addresses where it can; IPv6 ones are translated.
    assert_eq!(f("nat64-dual").snat_for(Af::V4), Snat::Auto);
    assert_eq!(f("nat64-dual").snat_for(Af::V6), Snat::Masquerade);
    assert_eq!(f("nat46").listen_afs(), [Af::V4]);
    assert!(f("nat46").translates(Af::V4));
    // Without `family`, the interface form takes the target's family.
    assert_eq!(f("v6-iface").family, Family::Ipv6);
}

#[test]
fn family_must_fit_a_fixed_listen_address() {
    assert_eq!(
        one_error(&fwd("[fd00:100::80]:80", "listen = \"2001:db8:1::55\"\nfamily = \"both\"")),
        "rules.toml:7:10: error: forward \"web\": family = \"both\" does not fit the fixed listen address 2001:db8:1::55, which is IPv6\n  help: a fixed address has one family: remove `family`, or write listen = \"interface\" to take the interface's addresses of every family named"
    );
    // Saying the address's own family is allowed (and printed away).
    assert!(load_str(
        FILE,
        &fwd("10.0.0.5", "listen = \"192.168.1.55\"\nfamily = \"ipv4\"")
    )
    .is_ok());
    assert_eq!(
        one_error(&fwd("10.0.0.5", "family = \"ip6\"")),
        "rules.toml:6:10: error: forward \"web\": `ip6` is not a valid family\n  help: did you mean `ipv6`?"
    );
}

#[test]
fn snat_address_must_be_of_the_target_family() {
    // An IPv6 listener forwarding to IPv6 (NAT66) with an IPv4 snat address.
    assert_eq!(
        one_error(&fwd("[fd00:100::80]:80", "listen = \"2001:db8:1::55\"\nsnat = \"192.168.100.1\"")),
        "rules.toml:7:8: error: forward \"web\": SNAT address family mismatch: snat 192.168.100.1 is IPv4 but the target fd00:100::80 is IPv6\n  help: packets leave toward the target with a source of the target's family: use an IPv6 address of this host, or \"masquerade\""
    );
    // NAT64: the clients are IPv6, the source toward the target IPv4.
    assert!(load_str(
        FILE,
        &fwd("10.0.0.5", "family = \"ipv6\"\nsnat = \"192.168.100.1\"")
    )
    .is_ok());
    assert!(
        one_error(&fwd("10.0.0.5", "family = \"ipv6\"\nsnat = \"fd00::1\""))
            .contains("snat fd00::1 is IPv6 but the target 10.0.0.5 is IPv4")
    );
}

#[test]
fn translated_clients_cannot_keep_their_address() {
    assert_eq!(
        one_error(&fwd("10.43.126.136:80", "family = \"ipv6\"\nsnat = \"off\"")),
        "rules.toml:7:8: error: forward \"web\": snat = \"off\" cannot keep the address of IPv6 clients: they are translated to the IPv4 target 10.43.126.136, so their packets need an IPv4 source of this host\n  help: use snat = \"auto\" or \"masquerade\" (this host's IPv4 address toward the target), or a fixed IPv4 address of this host"
    );
    assert!(one_error(&fwd("10.43.126.136:80", "family = \"both\"\nsnat = \"off\""))
        .ends_with("help: use snat = \"auto\" (IPv4 clients keep their address where replies route back, IPv6 clients get the egress address), \"masquerade\", or an IPv4 address of this host"));
    assert_eq!(
        one_error(&fwd("fd00::80", "family = \"both\"\npath = \"stack\"")),
        "rules.toml:7:8: error: forward \"web\": path = \"stack\" cannot carry IPv4 clients to the IPv6 target fd00::80: translated flows get a source address of this host, and the stack drops packets whose source is one of its own addresses\n  help: use path = \"auto\" or \"redirect\", or family = \"ipv6\" to leave IPv4 clients out"
    );
}

#[test]
fn unusable_ipv6_addresses() {
    let cases = [
        ("::1", "target ::1 is a loopback address"),
        ("ff02::1", "target ff02::1 is a multicast address"),
        ("::", "target :: is the unspecified address"),
        ("fe80::5", "target fe80::5 is a link-local address (it is only meaningful on one link, with an interface scope; use a global or unique-local address)"),
        ("::ffff:10.0.0.1", "target ::ffff:10.0.0.1 is an IPv4-mapped address (write 10.0.0.1)"),
    ];
    for (to, msg) in cases {
        let e = one_error(&fwd(to, ""));
        assert!(
            e.starts_with(&format!(
                "rules.toml:5:6: error: forward \"web\": {msg}\n  help: "
            )),
            "{e}"
        );
    }
    assert_eq!(
        one_error(&fwd("fd00::80", "listen = \"::\"")),
        "rules.toml:6:10: error: forward \"web\": listen address :: is the unspecified address\n  help: to listen on all of the interface's addresses, write listen = \"interface\" with family = \"ipv6\" (or \"both\")"
    );
    assert!(one_error(&fwd("fd00::80", "snat = \"fe80::1\""))
        .contains("SNAT address fe80::1 is a link-local address"));
    assert!(one_error(&fwd("fd00::80", "listen = \"fd00::80\""))
        .contains("target fd00::80 is the listen address itself"));
}

#[test]
fn ipv6_target_forms() {
    assert_eq!(
        one_error(&fwd("fd00::80::1", "")),
        "rules.toml:5:6: error: forward \"web\": target `fd00::80::1` is not an address (an IPv6 target with a port is written \"[IPv6]:port\")\n  help: write the target as \"IPv4\", \"IPv4:port\" or \"IPv4:first-last\", \"IPv6\", \"[IPv6]:port\" or \"[IPv6]:first-last\", or a host name the daemon resolves, e.g. \"immich-server.immich.svc.cluster.local:80\""
    );
    assert_eq!(
        one_error(&fwd("[fd00::80]:0", "")),
        "rules.toml:5:6: error: forward \"web\": target port 0 is not a valid port\n  help: use a port between 1 and 65535"
    );
    assert!(one_error(&fwd("[fd00::80", "")).contains("target `[fd00::80` has no closing `]`"));
}

#[test]
fn allow_list_entries_must_be_of_a_listened_family() {
    assert_eq!(
        one_error(&fwd("10.0.0.5", "allow = [\"fd7a:115c:a1e0::/48\"]")),
        "rules.toml:6:10: error: forward \"web\": allow-list entry fd7a:115c:a1e0::/48 is IPv6, but the forward takes IPv4 clients only\n  help: add family = \"both\" to take IPv6 clients too, or remove the entry"
    );
    assert_eq!(
        one_error(&fwd("10.0.0.5", "listen = \"192.168.1.55\"\nallow = [\"2001:db8::/32\"]")),
        "rules.toml:7:10: error: forward \"web\": allow-list entry 2001:db8::/32 is IPv6, but the forward takes IPv4 clients only\n  help: no IPv6 client reaches a fixed IPv4 listen address: remove the entry, or write a forward for IPv6"
    );
    assert_eq!(
        one_error(&fwd("10.0.0.5", "allow = [\"2001:db8::1/32\"]")),
        "rules.toml:6:10: error: forward \"web\": allow-list entry 2001:db8::1/32 has host bits set\n  help: write the network address: \"2001:db8::/32\""
    );
}

#[test]
fn a_dual_stack_allow_list_without_one_family_refuses_that_family() {
    assert_eq!(
        warnings(&fwd("10.0.0.5", "family = \"both\"\nallow = [\"100.101.92.95\"]")),
        vec!["rules.toml:7:9: warning: forward \"web\": the allow-list has no IPv6 entries: every IPv6 client is refused\n  help: list the IPv6 addresses that may connect, or write family = \"ipv4\" to not listen for IPv6 at all"]
    );
    assert!(warnings(&fwd(
        "10.0.0.5",
        "family = \"both\"\nallow = [\"100.101.92.95\", \"fd7a:115c:a1e0::/48\"]"
    ))
    .is_empty());
    assert_eq!(
        warnings(&fwd(
            "10.0.0.5",
            "family = \"both\"\nallow = [\"::/0\", \"0.0.0.0/0\"]"
        ))
        .len(),
        2
    );
}

#[test]
fn listeners_of_different_families_never_overlap() {
    let two = |a: &str, b: &str| {
        format!(
            "[[forward]]\nname = \"a\"\nin = \"vmbr0\"\nport = 80\n{a}\n\n[[forward]]\nname = \"b\"\nin = \"vmbr0\"\nport = 80\n{b}\n"
        )
    };
    // IPv4 to IPv4 and IPv6 to IPv6 on the same interface and port.
    assert!(load_str(FILE, &two("to = \"10.0.0.5\"", "to = \"fd00::5\"")).is_ok());
    // A fixed IPv6 address next to the IPv4 interface form.
    assert!(load_str(
        FILE,
        &two(
            "to = \"10.0.0.5\"",
            "listen = \"2001:db8:1::55\"\nto = \"fd00::5\""
        )
    )
    .is_ok());
    // Both families overlap an IPv6 listener.
    assert_eq!(
        one_error(&two("to = \"10.0.0.5\"\nfamily = \"both\"", "to = \"fd00::5\"")),
        "rules.toml:11:8: error: forward \"b\": tcp port 80 on vmbr0 (the interface's IPv6 addresses) overlaps forward \"a\" on line 1 (tcp port 80 on vmbr0 (the interface's IPv4+IPv6 addresses)): both take tcp port 80\n  help: a packet must match exactly one forward: change `port`, `proto` or `listen` of one of them"
    );
    assert!(errors(&two(
        "to = \"10.0.0.5\"\nfamily = \"both\"",
        "listen = \"2001:db8:1::55\"\nto = \"fd00::5\""
    ))[0]
        .contains("overlaps forward \"a\""));
}

#[test]
fn the_interface_form_counts_eight_addresses_per_family() {
    // 16384 ports x 2 protocols x 8 addresses = 262144 fits exactly; a
    // second family doubles it.
    let ok = fwd("10.0.0.5", "proto = \"both\"\n").replace("port = 80", "port = \"1-16384\"");
    assert!(load_str(FILE, &ok).is_ok());
    let dual = format!("{ok}family = \"both\"\n");
    assert!(one_error(&dual).contains(
        "too many listener entries: the forwards up to this one need 524288 (the limit is 262144)"
    ));
}
