//! The plan for IPv6 and dual-stack forwards: listeners on the interface's
//! addresses of each family, routes to IPv6 targets, and the MSS clamp per
//! client family (20 bytes more of headers over IPv6, and a NAT64 flow
//! carries IPv6 headers on one side and IPv4 ones on the other).
use std::net::IpAddr;

use forwarder_common::{ListenFlags, ListenerKey, PROTO_TCP};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn iface(name: &str, ifindex: u32, kind: Option<&str>, l3: bool, mtu: u32) -> Iface {
    Iface {
        name: name.into(),
        ifindex,
        l3,
        mtu,
        kind: kind.map(String::from),
        up: true,
    }
}

/// A dual-stack Proxmox host with a tailnet: vmbr0 (LAN, 1500), vmbr1
/// (VMs, 1400 to make the target side the narrower one), tailscale0 (1280)
/// with its fd7a: address and a link-local one.
fn host() -> Facts {
    let links = [
        iface("vmbr0", 2, Some("bridge"), false, 1500),
        iface("vmbr1", 3, Some("bridge"), false, 1400),
        iface("tailscale0", 4, Some("tun"), true, 1280),
    ];
    let on_link = |oif, src: &str| {
        Some(Route {
            oif,
            gateway: None,
            prefsrc: Some(ip(src)),
        })
    };
    Facts {
        links: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
        addrs: [
            (2, vec![ip("192.168.1.55"), ip("2001:db8:1::55")]),
            (3, vec![ip("192.168.100.1"), ip("fd00:100::1")]),
            (
                4,
                vec![ip("100.118.5.68"), ip("fd7a:115c:a1e0::1"), ip("fe80::1")],
            ),
        ]
        .into_iter()
        .collect(),
        routes: [
            (ip("192.168.100.80"), on_link(3, "192.168.100.1")),
            (ip("fd00:100::80"), on_link(3, "fd00:100::1")),
            (ip("10.43.126.136"), None),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn plan_of(text: &str) -> Plan {
    let rules = match rules::load_str("t.toml", text) {
        Ok(l) => l.rules,
        Err(d) => panic!("{d}"),
    };
    plan(&rules, &host(), &Record::default()).unwrap()
}

fn listener(p: &Plan, addr: &str, ifindex: u32, port: u16) -> forwarder_common::ListenerValue {
    let a = ip(addr);
    let key = match a {
        IpAddr::V4(_) => ListenerKey::v4,
        IpAddr::V6(_) => ListenerKey::v6,
    }(rules::abi_addr(a), ifindex, port.to_be(), PROTO_TCP);
    *p.entries.listeners.get(&key).unwrap_or_else(|| {
        panic!(
            "no listener {addr}:{port}: {:#?}",
            p.entries.listeners.keys()
        )
    })
}

#[test]
fn a_dual_stack_forward_listens_on_each_family_and_clamps_each_to_its_headers() {
    let p = plan_of(
        "[[forward]]\nname = \"immich\"\nin = \"tailscale0\"\nfamily = \"both\"\nport = 8080\nto = \"10.43.126.136:80\"\n",
    );
    // Two listeners: the link-local address is left out.
    assert_eq!(p.entries.listeners.len(), 2);
    let v4 = listener(&p, "100.118.5.68", 4, 8080);
    let v6 = listener(&p, "fd7a:115c:a1e0::1", 4, 8080);
    // No route to the ClusterIP: the tunnel decides, 1280 - 40 and - 60.
    assert_eq!((v4.mss, v6.mss), (1240, 1220));
    assert!(v4.flags.contains(ListenFlags::MSS_CLAMP) && v6.flags.contains(ListenFlags::MSS_CLAMP));
    assert!(v6.flags.contains(ListenFlags::XLAT) && !v4.flags.contains(ListenFlags::XLAT));
    // status shows the smaller.
    assert_eq!(p.rules[0].mss, Some(1220));
}

#[test]
fn nat64_clamps_to_the_narrower_side_with_that_side_s_headers() {
    // IPv6 clients on vmbr0 (1500 - 60 = 1440) of an IPv4 VM behind vmbr1
    // (1400 - 40 = 1360): the VM side decides.
    let p = plan_of(
        "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nlisten = \"2001:db8:1::55\"\nport = 80\nto = \"192.168.100.80\"\n",
    );
    assert_eq!(listener(&p, "2001:db8:1::55", 2, 80).mss, 1360);
    // From the tunnel, the client side decides: 1280 - 60.
    let p = plan_of(
        "[[forward]]\nname = \"web\"\nin = \"tailscale0\"\nfamily = \"ipv6\"\nport = 80\nto = \"192.168.100.80\"\n",
    );
    assert_eq!(listener(&p, "fd7a:115c:a1e0::1", 4, 80).mss, 1220);
}

#[test]
fn the_route_to_an_ipv6_target_brings_its_interface_in() {
    let p = plan_of(
        "[[forward]]\nname = \"web6\"\nin = \"vmbr0\"\nlisten = \"2001:db8:1::55\"\nport = 80\nto = \"[fd00:100::80]:80\"\n",
    );
    let vmbr1 = p
        .ifaces
        .iter()
        .find(|i| i.name == "vmbr1")
        .expect("vmbr1 planned");
    assert_eq!(vmbr1.why, "route to fd00:100::80 (web6)");
    assert!(vmbr1.addrs.contains(&ip("fd00:100::1")));
    // NAT66 to an on-link VM: 1400 - 60 on the VM side.
    assert_eq!(listener(&p, "2001:db8:1::55", 2, 80).mss, 1340);
    // On-link target, snat = "auto": redirected, no egress program needed.
    assert!(!vmbr1.egress);
}
