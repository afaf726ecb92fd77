//! Tests of `compile` and `materialize`: rule ids stay stable across
//! reloads, and each forward becomes exactly the listener and allow-list
//! entries its family, ports and interface addresses call for.

use super::*;
use forwarder_common::{addr_v4, addr_v4_octets, PROTO_TCP, PROTO_UDP};

fn ids(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(n, i)| (n.to_string(), *i)).collect()
}

#[test]
fn ids_are_stable_and_fresh_ids_avoid_just_freed_ones() {
    let first = assign_ids(&BTreeMap::new(), ["a", "b", "c"]);
    assert_eq!(first, ids(&[("a", 0), ("b", 1), ("c", 2)]));
    // "b" removed, "d" added: "d" must not take b's id 1 in the same reload.
    let second = assign_ids(&first, ["c", "a", "d"]);
    assert_eq!(second, ids(&[("a", 0), ("c", 2), ("d", 3)]));
    // Next reload: 1 is free and lowest.
    let third = assign_ids(&second, ["a", "c", "d", "e"]);
    assert_eq!(third["e"], 1);
}

#[test]
fn ids_reuse_freed_ones_when_nothing_else_is_left() {
    let prev: BTreeMap<String, u32> = (0..MAX_RULES).map(|i| (format!("r{i}"), i)).collect();
    let mut names: Vec<String> = (1..MAX_RULES).map(|i| format!("r{i}")).collect();
    names.push("new".into());
    let out = assign_ids(&prev, names.iter().map(String::as_str));
    assert_eq!(out["new"], 0);
    assert_eq!(out.len(), MAX_RULES as usize);
}

#[test]
fn ids_out_of_range_are_replaced() {
    let out = assign_ids(&ids(&[("a", MAX_RULES + 5)]), ["a"]);
    assert_eq!(out["a"], 0);
}

fn fwd(name: &str, ports: (u16, u16), target: &str) -> Forward {
    let (addr, tp): (std::net::Ipv4Addr, _) = match target.split_once(':') {
        Some((a, p)) => {
            let (s, e) = p.split_once('-').map_or((p, p), |x| x);
            (
                a.parse().unwrap(),
                Some(PortRange::new(s.parse().unwrap(), e.parse().unwrap()).unwrap()),
            )
        }
        None => (target.parse().unwrap(), None),
    };
    Forward::new(
        name,
        "eth0",
        PortRange::new(ports.0, ports.1).unwrap(),
        Target::ip(addr, tp),
    )
}

#[test]
fn compile_fills_listener_values() {
    let mut f = fwd("web", (80, 80), "192.168.100.80");
    f.snat = Snat::Fixed("192.168.100.1".parse().unwrap());
    f.allow = vec!["100.101.92.95/32".parse().unwrap()];
    f.mss_clamp = MssClamp::Fixed(1240);
    f.proto = Proto::Both;
    let rs = RuleSet {
        forwards: vec![f],
        ..Default::default()
    };
    let c = compile(&rs, &ids(&[("web", 7)])).unwrap();
    let r = &c.rules[0];
    assert_eq!(r.id, 7);
    assert_eq!(r.listeners.len(), 2);
    assert_eq!(r.listeners[0].proto, PROTO_TCP);
    assert_eq!(r.listeners[1].proto, PROTO_UDP);
    let v = r.listeners[0].value;
    assert_eq!(addr_v4_octets(&v.target_addr), [192, 168, 100, 80]);
    assert_eq!(addr_v4_octets(&v.snat_addr), [192, 168, 100, 1]);
    assert_eq!(u16::from_be(v.target_port), 80);
    assert_eq!(v.snat_mode, SnatMode::FIXED);
    assert_eq!(
        v.flags,
        ListenFlags::ALLOWLIST | ListenFlags::REJECT | ListenFlags::MSS_CLAMP
    );
    assert_eq!(v.mss, 1240);
    assert_eq!(v.rule_id, 7);
    assert_eq!(
        r.allow,
        vec![AllowSpec {
            rule_id: 7,
            net: "100.101.92.95/32".parse().unwrap()
        }]
    );
}

#[test]
fn compile_maps_ranges() {
    let rs = RuleSet {
        forwards: vec![
            fwd("same", (30000, 30002), "10.0.0.5"),
            fwd("shift", (8000, 8002), "10.0.0.6:9000-9002"),
            fwd("many", (7000, 7002), "10.0.0.7:80"),
        ],
        ..Default::default()
    };
    let c = compile(
        &rs,
        &assign_ids(&BTreeMap::new(), ["same", "shift", "many"]),
    )
    .unwrap();
    let ports = |i: usize| {
        c.rules[i]
            .listeners
            .iter()
            .map(|l| (l.port, u16::from_be(l.value.target_port)))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ports(0),
        vec![(30000, 30000), (30001, 30001), (30002, 30002)]
    );
    assert_eq!(ports(1), vec![(8000, 9000), (8001, 9001), (8002, 9002)]);
    assert_eq!(ports(2), vec![(7000, 80), (7001, 80), (7002, 80)]);
    assert_eq!(c.rules[0].listeners[0].value.snat_mode, SnatMode::AUTO);
    assert_eq!(c.rules[0].listeners[0].value.flags, ListenFlags::REJECT);
}

#[test]
fn compile_reports_missing_ids() {
    let rs = RuleSet {
        forwards: vec![fwd("a", (1, 1), "10.0.0.1")],
        ..Default::default()
    };
    assert_eq!(
        compile(&rs, &BTreeMap::new()),
        Err(CompileError::MissingId("a".into()))
    );
}

#[test]
fn materialize_expands_interfaces_and_reports_missing() {
    let mut fixed = fwd("fixed", (80, 81), "10.0.0.1");
    fixed.listen = Listen::Addr("192.168.1.55".parse().unwrap());
    let mut other = fwd("other", (22, 22), "10.0.0.2");
    other.iface = "wg0".into();
    other.allow = vec!["10.1.2.0/24".parse().unwrap()];
    let iface = fwd("iface", (53, 53), "10.0.0.3");
    let rs = RuleSet {
        forwards: vec![fixed, other, iface],
        ..Default::default()
    };
    let c = compile(
        &rs,
        &assign_ids(&BTreeMap::new(), ["fixed", "other", "iface"]),
    )
    .unwrap();
    let m = materialize(&c, |name| {
        (name == "eth0").then(|| IfaceState {
            ifindex: 4,
            addrs: vec![
                "192.168.1.55".parse().unwrap(),
                "192.168.1.56".parse().unwrap(),
            ],
        })
    });
    assert_eq!(m.missing_ifaces, vec!["wg0".to_string()]);
    // fixed: 2 ports x 1 addr; iface: 1 port x 2 addrs.
    assert_eq!(m.listeners.len(), 4);
    let k = ListenerKey::v4(addr_v4([192, 168, 1, 56]), 4, 53u16.to_be(), PROTO_TCP);
    assert_eq!(m.listeners[&k].rule_id, 2);
    // Allow entries do not depend on the interface being there.
    let key = AllowLpmKey::new(1, "10.1.2.0/24".parse::<ipnet::IpNet>().unwrap());
    assert_eq!(key.prefix_len, 56);
    assert_eq!(key.data.rule_id_be, 1u32.to_be());
    assert!(m.allow.contains_key(&key));
}

#[test]
fn listeners_need_their_address_assigned_on_this_host() {
    let mut vip = fwd("vip", (80, 80), "10.0.0.1");
    vip.listen = Listen::Addr("192.168.1.100".parse().unwrap());
    let rs = RuleSet {
        forwards: vec![vip, fwd("iface", (53, 53), "10.0.0.3")],
        ..Default::default()
    };
    let c = compile(&rs, &assign_ids(&BTreeMap::new(), ["vip", "iface"])).unwrap();
    let own: IpAddr = "192.168.1.55".parse().unwrap();
    let vip_addr: IpAddr = "192.168.1.100".parse().unwrap();
    let eth0 = |addrs: Vec<IpAddr>| {
        move |name: &str| {
            (name == "eth0").then(|| IfaceState {
                ifindex: 4,
                addrs: addrs.clone(),
            })
        }
    };
    // The VIP is held by another node: only the interface listener.
    let mut m = materialize(&c, eth0(vec![own]));
    assert_eq!(m.retain_assigned(&BTreeSet::from([own])), 1);
    assert_eq!(m.listeners.len(), 1);
    assert!(m.listeners.values().all(|v| v.rule_id == 1));
    // The VIP moved in (on eth0, or on any other interface: lo, a dummy).
    for assigned in [vec![own, vip_addr], vec![own]] {
        let mut m = materialize(&c, eth0(assigned));
        assert_eq!(m.retain_assigned(&BTreeSet::from([own, vip_addr])), 0);
        assert!(m.listeners.values().any(|v| v.rule_id == 0));
    }
}
