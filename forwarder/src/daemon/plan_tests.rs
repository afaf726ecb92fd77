//! Unit tests of the daemon's plan: no root, no kernel; facts are built by
//! hand. Each test names the decision it pins down.
use std::net::IpAddr;

use forwarder_common::{IfaceConfig, IfaceFlags, ListenFlags, ListenerKey, PROTO_TCP};
use rules::{MapOp, Room};

use super::*;
use crate::daemon::facts::Attached;

pub(super) fn iface(name: &str, ifindex: u32, kind: Option<&str>, l3: bool, mtu: u32) -> Iface {
    Iface {
        name: name.into(),
        ifindex,
        l3,
        mtu,
        kind: kind.map(String::from),
        up: true,
    }
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A Proxmox host: LAN bridge vmbr0, VM bridge vmbr1 (VMs on-link), a
/// tailnet tun, a NIC with a gateway route, no route to ClusterIPs.
pub(super) fn host() -> Facts {
    let links = [
        iface("vmbr0", 2, Some("bridge"), false, 1500),
        iface("vmbr1", 3, Some("bridge"), false, 1500),
        iface("tailscale0", 4, Some("tun"), true, 1280),
        iface("eth0", 5, None, false, 9000),
    ];
    Facts {
        links: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
        addrs: [
            (2, vec![ip("192.168.1.55")]),
            (3, vec![ip("192.168.100.1")]),
            (4, vec![ip("100.100.1.1")]),
        ]
        .into_iter()
        .collect(),
        routes: [
            (ip("192.168.100.80"), Some(on_link(3, "192.168.100.1"))),
            (
                ip("172.16.0.9"),
                Some(Route {
                    oif: 5,
                    gateway: Some(ip("10.9.0.1")),
                    prefsrc: Some(ip("10.9.0.2")),
                }),
            ),
            (ip("192.168.1.20"), Some(on_link(2, "192.168.1.55"))),
            (ip("10.43.0.10"), None),
        ]
        .into_iter()
        .collect(),
        room: Room::default(),
        ..Default::default()
    }
}

pub(super) fn on_link(oif: u32, src: &str) -> Route {
    Route {
        oif,
        gateway: None,
        prefsrc: Some(ip(src)),
    }
}

pub(super) fn rules(text: &str) -> RuleSet {
    match rules::load_str("test.toml", text) {
        Ok(l) => l.rules,
        Err(d) => panic!("test rules do not load:\n{d}"),
    }
}

pub(super) fn forward(name: &str, extra: &str) -> String {
    format!("[[forward]]\nname = \"{name}\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\n{extra}\n")
}

pub(super) fn plan_of(text: &str, facts: &Facts) -> Plan {
    plan(&rules(text), facts, &Record::default()).expect("plan")
}

pub(super) fn iface_plan<'a>(p: &'a Plan, name: &str) -> &'a IfacePlan {
    p.ifaces
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no plan for {name}: {:?}", p.ifaces))
}

#[test]
fn the_listening_interface_and_the_route_to_the_target_are_used_and_say_why() {
    let p = plan_of(
        &forward(
            "web",
            "port = 80\nto = \"192.168.100.80\"\nsnat = \"192.168.100.1\"",
        ),
        &host(),
    );
    let names: Vec<_> = p.ifaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["vmbr0", "vmbr1"]);
    assert_eq!(iface_plan(&p, "vmbr0").why, "listens for web");
    assert_eq!(iface_plan(&p, "vmbr1").why, "route to 192.168.100.80 (web)");
}

#[test]
fn an_interface_that_listens_says_so_even_when_a_route_also_leads_there() {
    // The target is on vmbr0 itself (a hairpin): one reason, the first.
    let p = plan_of(&forward("lan", "port = 22\nto = \"192.168.1.20\""), &host());
    assert_eq!(p.ifaces.len(), 1);
    assert_eq!(p.ifaces[0].why, "listens for lan");
}

#[test]
fn a_missing_interface_waits_without_entries() {
    let text = "[[forward]]\nname = \"ts\"\nin = \"wg9\"\nport = 80\nto = \"192.168.100.80\"\n";
    let p = plan_of(text, &host());
    let wg = iface_plan(&p, "wg9");
    assert_eq!(wg.link, None);
    assert_eq!(wg.attach, None);
    assert_eq!(p.entries.missing_ifaces, vec!["wg9".to_string()]);
    assert!(p.entries.listeners.is_empty());
}

#[test]
fn new_interfaces_get_the_lowest_free_slots_and_registered_ones_keep_theirs() {
    let mut f = host();
    // vmbr1 was registered by a previous daemon with slot 0; slot 1 is
    // taken by an interface that still exists but is not ours now.
    f.registered.insert(
        3,
        IfaceConfig {
            slot: 0,
            flags: IfaceFlags::empty(),
        },
    );
    f.registered.insert(
        9,
        IfaceConfig {
            slot: 1,
            flags: IfaceFlags::empty(),
        },
    );
    let p = plan_of(
        &forward(
            "web",
            "port = 80\nto = \"192.168.100.80\"\nsnat = \"192.168.100.1\"",
        ),
        &f,
    );
    assert_eq!(
        iface_plan(&p, "vmbr1").attach,
        Some(Slot {
            slot: 0,
            fresh: false
        })
    );
    assert_eq!(
        iface_plan(&p, "vmbr0").attach,
        Some(Slot {
            slot: 2,
            fresh: true
        })
    );
}

#[test]
fn two_new_interfaces_never_share_a_slot() {
    let text = format!(
        "{}{}",
        forward("web", "port = 80\nto = \"192.168.100.80\""),
        "[[forward]]\nname = \"ts\"\nin = \"tailscale0\"\nport = 81\nto = \"172.16.0.9\"\n"
    );
    let p = plan_of(&text, &host());
    let slots: BTreeSet<u32> = p
        .ifaces
        .iter()
        .filter_map(|i| i.attach.map(|s| s.slot))
        .collect();
    assert_eq!(slots.len(), p.ifaces.len(), "{:?}", p.ifaces);
}

#[test]
fn every_slot_taken_is_an_error() {
    let mut f = host();
    for i in 0..MAX_IFACES {
        f.registered.insert(
            100 + i,
            IfaceConfig {
                slot: i,
                flags: IfaceFlags::empty(),
            },
        );
    }
    let r = plan(
        &rules(&forward("web", "port = 80\nto = \"192.168.100.80\"")),
        &f,
        &Record::default(),
    );
    assert!(
        format!("{:#}", r.unwrap_err()).contains("no free interface counter slot"),
        "slot exhaustion must be reported"
    );
}

#[test]
fn attached_interfaces_are_kept_and_the_unused_gone_or_recreated_let_go() {
    let mut f = host();
    let attached = |i: Iface| Attached {
        iface: i,
        tc: TcMode::Tcx,
        egress: false,
        xdp: false,
    };
    f.attached = vec![
        attached(iface("vmbr0", 2, Some("bridge"), false, 1500)),
        // vmbr1 deleted and re-created: new ifindex 30.
        attached(iface("vmbr1", 13, Some("bridge"), false, 1500)),
        attached(iface("eth0", 5, None, false, 9000)),
        attached(iface("gone0", 77, None, false, 1500)),
    ];
    f.links.get_mut("vmbr1").unwrap().ifindex = 30;
    f.routes
        .insert(ip("192.168.100.80"), Some(on_link(30, "192.168.100.1")));
    let p = plan_of(
        &forward(
            "web",
            "port = 80\nto = \"192.168.100.80\"\nsnat = \"192.168.100.1\"",
        ),
        &f,
    );
    let detach: Vec<(&str, &str)> = p
        .detach
        .iter()
        .map(|d| (d.iface.name.as_str(), d.why))
        .collect();
    assert_eq!(
        detach,
        [
            ("vmbr1", "re-created"),
            ("eth0", "no longer used"),
            ("gone0", "no longer used")
        ]
    );
    assert_eq!(iface_plan(&p, "vmbr0").attach, None, "already attached");
    assert!(iface_plan(&p, "vmbr1").attach.is_some(), "the new vmbr1");
}

#[test]
fn egress_goes_where_flows_may_take_the_stack_path() {
    // (snat, path, target) -> egress program on the listening interface?
    let cases = [
        ("192.168.100.1", "auto", "192.168.100.80", false),
        ("masquerade", "auto", "172.16.0.9", false),
        ("off", "auto", "192.168.100.80", false),
        ("off", "auto", "172.16.0.9", true),
        ("off", "auto", "10.43.0.10", true),
        ("auto", "auto", "192.168.100.80", false),
        ("auto", "auto", "10.43.0.10", true),
        ("auto", "stack", "192.168.100.80", true),
        ("off", "redirect", "172.16.0.9", false),
        ("off", "redirect", "10.43.0.10", true),
    ];
    for (snat, path, to, want) in cases {
        let text = forward(
            "f",
            &format!("port = 80\nto = \"{to}\"\nsnat = \"{snat}\"\npath = \"{path}\""),
        );
        let p = plan_of(&text, &host());
        assert_eq!(
            iface_plan(&p, "vmbr0").egress,
            want,
            "snat {snat}, path {path}, to {to}"
        );
        // Never on the target side: replies there are the redirect's.
        for i in p.ifaces.iter().filter(|i| i.name != "vmbr0") {
            assert!(!i.egress, "{}: snat {snat}, path {path}, to {to}", i.name);
        }
    }
}

#[test]
fn mss_auto_is_the_narrower_mtu_minus_forty_and_lands_in_the_listener() {
    let mut f = host();
    f.links.get_mut("vmbr1").unwrap().mtu = 1400;
    let p = plan_of(&forward("web", "port = 80\nto = \"192.168.100.80\""), &f);
    assert_eq!(p.rules[0].mss, Some(1360));
    let v = p.entries.listeners.values().next().unwrap();
    assert!(v.flags.contains(ListenFlags::MSS_CLAMP));
    assert_eq!(v.mss, 1360);
}

#[test]
fn mss_auto_takes_the_narrowest_route_mtu_of_either_side() {
    // vmbr0 (listening, ifindex 2) and vmbr1 (to the VM, 3) are 1500.
    let web = forward("web", "port = 80\nto = \"192.168.100.80\"");
    let mut f = host();
    // A route towards some clients with `mtu lock 1280` on the listening side.
    f.route_mtus.insert(2, 1280);
    assert_eq!(plan_of(&web, &f).rules[0].mss, Some(1240));
    // On the target side.
    let mut f = host();
    f.route_mtus.insert(3, 1380);
    assert_eq!(plan_of(&web, &f).rules[0].mss, Some(1340));
    // A route MTU above the link's changes nothing; other links' neither.
    let mut f = host();
    f.route_mtus.insert(2, 9000);
    f.route_mtus.insert(4, 1200);
    assert_eq!(plan_of(&web, &f).rules[0].mss, Some(1460));
}

#[test]
fn mss_auto_without_a_route_uses_the_listening_side_and_floors_at_536() {
    let mut f = host();
    let p = plan_of(&forward("svc", "port = 80\nto = \"10.43.0.10\""), &f);
    assert_eq!(p.rules[0].mss, Some(1460));
    f.links.get_mut("vmbr0").unwrap().mtu = 500;
    let p = plan_of(&forward("svc", "port = 80\nto = \"10.43.0.10\""), &f);
    assert_eq!(p.rules[0].mss, Some(536));
}

#[test]
fn mss_fixed_and_off() {
    let p = plan_of(
        &forward("a", "port = 80\nto = \"192.168.100.80\"\nmss_clamp = 1200"),
        &host(),
    );
    assert_eq!(p.rules[0].mss, Some(1200));
    let p = plan_of(
        &forward(
            "a",
            "port = 80\nto = \"192.168.100.80\"\nmss_clamp = \"off\"",
        ),
        &host(),
    );
    assert_eq!(p.rules[0].mss, None);
    let v = p.entries.listeners.values().next().unwrap();
    assert!(!v.flags.contains(ListenFlags::MSS_CLAMP));
}

#[test]
fn xdp_only_where_it_helps_or_is_asked_for() {
    use rules::AttachMode::*;
    let nic = iface("eth0", 5, None, false, 1500);
    let tun = iface("tailscale0", 4, Some("tun"), true, 1280);
    let bridge = iface("vmbr0", 2, Some("bridge"), false, 1500);
    let veth = iface("v0", 6, Some("veth"), false, 1500);
    let vlan = iface("eth0.100", 7, Some("vlan"), false, 1500);
    assert!(xdp_choice(Auto, &nic).is_ok());
    assert!(xdp_choice(Xdp, &bridge).is_ok(), "asked for");
    assert!(xdp_choice(Tc, &nic).is_err(), "asked not to");
    assert!(xdp_choice(TcLegacy, &nic).is_err(), "tc-legacy is TC only");
    assert!(xdp_choice(Xdp, &tun).is_err(), "an L3 device has no XDP");
    assert!(xdp_choice(Auto, &bridge).unwrap_err().contains("bridge"));
    assert!(xdp_choice(Auto, &veth).unwrap_err().contains("GSO"));
    assert!(xdp_choice(Auto, &vlan).unwrap_err().contains("virtual"));
}

#[test]
fn the_interface_setting_reaches_the_xdp_choice() {
    let text = format!(
        "{}[interface.vmbr0]\nattach = \"xdp\"\n",
        forward("web", "port = 80\nto = \"192.168.100.80\"")
    );
    let p = plan_of(&text, &host());
    assert_eq!(
        iface_plan(&p, "vmbr0").xdp,
        Ok("configured attach = \"xdp\"")
    );
    assert!(iface_plan(&p, "vmbr1").xdp.is_err());
}

#[test]
fn a_fresh_plan_names_the_rule_before_its_listener_and_a_replayed_one_does_nothing() {
    let text = forward(
        "web",
        "port = \"80-81\"\nto = \"192.168.100.80\"\nallow = [\"10.0.0.0/8\"]",
    );
    let p = plan_of(&text, &host());
    assert_eq!(p.ids["web"], 0);
    let kinds: Vec<&str> = p
        .update
        .ops
        .iter()
        .map(|o| match o {
            MapOp::NameRule { .. } => "name",
            MapOp::AllowInsert(_) => "allow+",
            MapOp::ListenerWrite(..) => "listener",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["name", "allow+", "listener", "listener"]);
    let k = ListenerKey::v4(
        forwarder_common::addr_v4([192, 168, 1, 55]),
        2,
        81u16.to_be(),
        PROTO_TCP,
    );
    assert!(p.entries.listeners[&k]
        .flags
        .contains(ListenFlags::ALLOWLIST));
    // Planning again from what this plan installs changes nothing.
    let again = plan(&rules(&text), &host(), &p.record()).unwrap();
    assert!(again.update.ops.is_empty(), "{:?}", again.update.ops);
    assert_eq!(again.ids, p.ids);
}

#[test]
fn listen_interface_follows_the_addresses_in_the_facts() {
    let text =
        "[[forward]]\nname = \"dns\"\nin = \"vmbr0\"\nproto = \"udp\"\nport = 53\nto = \"192.168.100.80\"\n";
    let mut f = host();
    f.addrs
        .insert(2, vec![ip("192.168.1.55"), ip("192.168.1.56")]);
    assert_eq!(plan_of(text, &f).entries.listeners.len(), 2);
    f.addrs.remove(&2);
    assert_eq!(plan_of(text, &f).entries.listeners.len(), 0);
}

#[test]
fn a_set_that_does_not_fit_the_maps_is_refused_by_the_plan() {
    let mut f = host();
    f.room = Room {
        listeners: 1,
        allow: 100,
    };
    let r = plan(
        &rules(&forward("web", "port = \"80-81\"\nto = \"192.168.100.80\"")),
        &f,
        &Record::default(),
    );
    assert!(format!("{:#}", r.unwrap_err()).contains("need 2 listener entries"));
}

#[test]
fn the_decisions_say_how_flows_will_go() {
    let cases = [
        (
            "192.168.100.1",
            "192.168.100.80",
            "source rewritten to 192.168.100.1; redirected to vmbr1",
        ),
        (
            "masquerade",
            "172.16.0.9",
            "source rewritten to 10.9.0.2 (masquerade); redirected to eth0",
        ),
        (
            "off",
            "192.168.100.80",
            "client address kept; redirected straight to vmbr1 (on-link)",
        ),
        (
            "off",
            "172.16.0.9",
            "client address kept; through the stack (target behind gateway 10.9.0.1 on eth0)",
        ),
        (
            "off",
            "10.43.0.10",
            "client address kept; no forwarding route to the target",
        ),
        (
            "masquerade",
            "10.43.0.10",
            "no forwarding route to the target: new flows are dropped",
        ),
        (
            "auto",
            "10.43.0.10",
            "client address kept: the target has no forwarding route",
        ),
        (
            "auto",
            "192.168.1.20",
            "SNAT to 192.168.1.55: the target is reached through vmbr0 itself",
        ),
        (
            "auto",
            "192.168.100.80",
            "client address kept when the route back to the client leaves through vmbr0",
        ),
    ];
    for (snat, to, want) in cases {
        let p = plan_of(
            &forward("f", &format!("port = 80\nto = \"{to}\"\nsnat = \"{snat}\"")),
            &host(),
        );
        assert!(
            p.rules[0].decision.starts_with(want),
            "snat {snat} to {to}: {:?}",
            p.rules[0].decision
        );
    }
}

#[test]
fn ids_stay_with_their_names_across_plans() {
    let a = forward("a", "port = 80\nto = \"192.168.100.80\"");
    let b = forward("b", "port = 81\nto = \"192.168.100.80\"");
    let first = plan_of(&format!("{a}{b}"), &host());
    let second = plan(&rules(&b), &host(), &first.record()).unwrap();
    assert_eq!(second.ids["b"], first.ids["b"]);
    assert!(second
        .update
        .ops
        .contains(&MapOp::UnnameRule { id: first.ids["a"] }));
}
