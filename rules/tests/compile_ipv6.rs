//! IPv6 and dual-stack forwards to kernel map entries: listener keys of
//! family AF_INET6 with 16-byte addresses, NAT64/NAT46 listener values
//! (LISTEN_XLAT, always SNATed), and allow-list trie keys that keep the
//! families apart.

use std::{collections::BTreeMap, net::IpAddr};

use forwarder_common::{
    addr_v4, addr_v6, ListenFlags, ListenerKey, SnatMode, AF_INET, AF_INET6, ALLOW_ID_V6, PROTO_TCP,
};
use rules::{assign_ids, compile, load_str, materialize, AllowLpmKey, IfaceState, MapEntries};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v6(s: &str) -> [u32; 4] {
    match ip(s) {
        IpAddr::V6(a) => addr_v6(a.octets()),
        IpAddr::V4(_) => panic!("{s} is IPv4"),
    }
}

fn v4(s: &str) -> [u32; 4] {
    match ip(s) {
        IpAddr::V4(a) => addr_v4(a.octets()),
        IpAddr::V6(_) => panic!("{s} is IPv6"),
    }
}

/// Compiles `text` and binds it to `tailscale0` (ifindex 7) and `vmbr0`
/// (ifindex 3) with the given addresses.
fn entries(text: &str, ts: &[&str], vmbr0: &[&str]) -> MapEntries {
    let rules = load_str("t.toml", text).unwrap().rules;
    let ids = assign_ids(
        &BTreeMap::new(),
        rules.forwards.iter().map(|f| f.name.as_str()),
    );
    let compiled = compile(&rules, &ids).unwrap();
    materialize(&compiled, |name| match name {
        "tailscale0" => Some(IfaceState {
            ifindex: 7,
            addrs: ts.iter().map(|a| ip(a)).collect(),
        }),
        "vmbr0" => Some(IfaceState {
            ifindex: 3,
            addrs: vmbr0.iter().map(|a| ip(a)).collect(),
        }),
        _ => None,
    })
}

fn key(addr: [u32; 4], ifindex: u32, port: u16, family: u8) -> ListenerKey {
    ListenerKey {
        addr,
        ifindex,
        port: port.to_be(),
        proto: PROTO_TCP,
        family,
    }
}

const TS: [&str; 3] = ["100.118.5.68", "fd7a:115c:a1e0::1", "fe80::1234"];

#[test]
fn a_dual_stack_interface_listener_gets_one_key_per_address_of_each_family() {
    let m = entries(
        "[[forward]]\nname = \"immich\"\nin = \"tailscale0\"\nfamily = \"both\"\nport = 8080\nto = \"10.43.126.136:80\"\n",
        &TS,
        &[],
    );
    // The link-local address is never a listener.
    assert_eq!(m.listeners.len(), 2, "{:#?}", m.listeners.keys());
    let k4 = m.listeners[&key(v4("100.118.5.68"), 7, 8080, AF_INET)];
    let k6 = m.listeners[&key(v6("fd7a:115c:a1e0::1"), 7, 8080, AF_INET6)];
    // Both go to the IPv4 ClusterIP.
    assert_eq!(k4.target_addr, v4("10.43.126.136"));
    assert_eq!(k6.target_addr, v4("10.43.126.136"));
    assert_eq!(u16::from_be(k6.target_port), 80);
    // IPv4 clients: snat = "auto" as written; IPv6 clients: translated,
    // masqueraded to the egress IPv4 address.
    assert_eq!(
        (k4.snat_mode, k4.flags.contains(ListenFlags::XLAT)),
        (SnatMode::AUTO, false)
    );
    assert_eq!(
        (k6.snat_mode, k6.flags.contains(ListenFlags::XLAT)),
        (SnatMode::MASQUERADE, true)
    );
    assert_eq!(k4.rule_id, k6.rule_id);
    // The NAT64 pool source (word 1 of the IPv4 snat address) for flows
    // only the stack reaches: IPv6 clients only.
    assert_eq!(k6.snat_addr, [0, v4("192.0.0.2")[0], 0, 0]);
    assert_eq!(k4.snat_addr, [0; 4]);
}

#[test]
fn an_ipv6_forward_takes_ipv6_addresses_only() {
    let m = entries(
        "[[forward]]\nname = \"web6\"\nin = \"tailscale0\"\nport = 80\nto = \"[fd00:100::80]:8080\"\nsnat = \"fd00:100::1\"\n",
        &TS,
        &[],
    );
    assert_eq!(m.listeners.len(), 1);
    let (k, v) = m.listeners.iter().next().unwrap();
    assert_eq!(*k, key(v6("fd7a:115c:a1e0::1"), 7, 80, AF_INET6));
    assert_eq!(v.target_addr, v6("fd00:100::80"));
    assert_eq!(u16::from_be(v.target_port), 8080);
    assert_eq!(
        (v.snat_mode, v.snat_addr),
        (SnatMode::FIXED, v6("fd00:100::1"))
    );
    assert_eq!(v.flags, ListenFlags::REJECT);
}

#[test]
fn nat46_listens_on_ipv4_and_carries_an_ipv6_target_and_source() {
    let m = entries(
        "[[forward]]\nname = \"v6vm\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = 443\nto = \"fd00:100::80\"\nsnat = \"fd00:100::1\"\nallow = [\"192.168.1.0/24\"]\n",
        &[],
        &["192.168.1.55", "2001:db8:1::55"],
    );
    let v = m.listeners[&key(v4("192.168.1.55"), 3, 443, AF_INET)];
    assert_eq!(v.target_addr, v6("fd00:100::80"));
    assert_eq!(
        (v.snat_mode, v.snat_addr),
        (SnatMode::FIXED, v6("fd00:100::1"))
    );
    assert_eq!(
        v.flags,
        ListenFlags::XLAT | ListenFlags::ALLOWLIST | ListenFlags::REJECT
    );
}

/// The LPM trie's answer for `key`: the longest stored prefix whose
/// leading `prefix_len` bits equal the key's (the kernel's comparison,
/// over the bytes as laid out in memory).
fn lpm_match(stored: &[AllowLpmKey], probe: &AllowLpmKey) -> Option<AllowLpmKey> {
    let bytes = |k: &AllowLpmKey| {
        let mut b = k.data.rule_id_be.to_ne_bytes().to_vec();
        for w in k.data.addr {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b
    };
    let bit = |b: &[u8], i: u32| (b[(i / 8) as usize] >> (7 - i % 8)) & 1;
    let p = bytes(probe);
    stored
        .iter()
        .filter(|s| {
            let sb = bytes(s);
            (0..s.prefix_len).all(|i| bit(&sb, i) == bit(&p, i))
        })
        .max_by_key(|s| s.prefix_len)
        .copied()
}

#[test]
fn an_ipv6_allow_prefix_never_admits_an_ipv4_source_and_back() {
    let text = "[[forward]]\nname = \"immich\"\nin = \"tailscale0\"\nfamily = \"both\"\nport = 8080\nto = \"10.43.126.136:80\"\nallow = [\"10.0.0.0/8\", \"a00::/8\", \"fd7a:115c:a1e0::/48\"]\n";
    let m = entries(text, &TS, &[]);
    let stored: Vec<AllowLpmKey> = m.allow.keys().copied().collect();
    assert_eq!(stored.len(), 3);
    let k6 = AllowLpmKey::new(0, "fd7a:115c:a1e0::/48".parse::<ipnet::IpNet>().unwrap());
    assert_eq!(k6.prefix_len, 32 + 48);
    assert_eq!(u32::from_be(k6.data.rule_id_be), ALLOW_ID_V6);
    // What the kernel looks up: the full source address with the id word.
    let probe = |a: &str| AllowLpmKey::new(0, ipnet::IpNet::from(ip(a)));
    // 10.1.2.3 and the IPv6 prefix a00::/8 share their first 8 bits.
    assert_eq!(
        lpm_match(&stored, &probe("10.1.2.3")).map(|k| k.prefix_len),
        Some(32 + 8)
    );
    assert_eq!(
        lpm_match(&stored, &probe("10.1.2.3"))
            .unwrap()
            .data
            .rule_id_be,
        0u32.to_be()
    );
    assert_eq!(
        u32::from_be(
            lpm_match(&stored, &probe("a01::1"))
                .unwrap()
                .data
                .rule_id_be
        ),
        ALLOW_ID_V6
    );
    assert!(lpm_match(&stored, &probe("fd7a:115c:a1e0:1::9")).is_some());
    assert!(lpm_match(&stored, &probe("fd7a:115c:a1e1::9")).is_none());
    // Each family's prefix alone: the other family's source finds nothing.
    let only_v4 = [AllowLpmKey::new(
        0,
        "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
    )];
    let only_v6 = [AllowLpmKey::new(
        0,
        "a00::/8".parse::<ipnet::IpNet>().unwrap(),
    )];
    assert!(lpm_match(&only_v4, &probe("a01::1")).is_none());
    assert!(lpm_match(&only_v6, &probe("10.1.2.3")).is_none());
    assert!(lpm_match(&only_v4, &probe("10.1.2.3")).is_some());
    assert!(lpm_match(&only_v6, &probe("a01::1")).is_some());
}

/// Only a forward that takes IPv6 clients of an IPv4 target has a NAT64
/// pool (and makes the daemon create the pool's device): an IPv4 forward's
/// target is IPv4 too, but it has no IPv6 clients. (Once every IPv4 forward
/// got a pool, and every daemon a `fwd64` link.)
#[test]
fn only_forwards_with_ipv6_clients_of_an_ipv4_target_have_a_nat64_pool() {
    use rules::{nat64_pool, Af};
    let text = r#"
[[forward]]
name = "v4addr"
in = "eth0"
listen = "10.200.0.2"
port = 9
to = "10.200.0.1:9"

[[forward]]
name = "v4iface"
in = "eth0"
port = 10
to = "10.200.0.1:10"

[[forward]]
name = "both"
in = "eth0"
family = "both"
port = 11
to = "10.200.0.1:11"

[[forward]]
name = "v6addr"
in = "eth0"
listen = "2001:db8::1"
port = 12
to = "10.200.0.1:12"
"#;
    let rules = load_str("t.toml", text).unwrap().rules;
    let pool = |name: &str| {
        let f = rules.forwards.iter().find(|f| f.name == name).unwrap();
        nat64_pool(f, Af::V6)
    };
    assert_eq!(pool("v4addr"), None);
    assert_eq!(pool("v4iface"), None);
    assert_eq!(pool("both"), Some("192.0.0.2".parse().unwrap()));
    assert_eq!(pool("v6addr"), Some("192.0.0.2".parse().unwrap()));
}
