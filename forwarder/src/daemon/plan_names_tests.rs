//! The plan for DNS-name targets, without root or DNS: the names' answers
//! are facts built by hand. A resolved name gives the listeners its
//! address would; a changed answer rewrites only that forward's listeners;
//! a name without an address (or with an answer that cannot be a target)
//! pauses its forward and nothing else.
use std::{collections::BTreeMap, net::Ipv4Addr};

use forwarder_common::{addr_v4, ListenerKey, ListenerValue, PROTO_TCP};
use rules::{MapOp, Room};

use super::*;
use crate::daemon::resolve::{Failure, NameFact};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A Proxmox-like host: LAN bridge vmbr0 (192.168.1.55), VM bridge vmbr1
/// with the VMs on-link, no route to ClusterIPs (10.43.0.0/16).
fn host(names: &[(&str, NameFact)]) -> Facts {
    let link = |name: &str, ifindex: u32| Iface {
        name: name.into(),
        ifindex,
        l3: false,
        mtu: 1500,
        kind: Some("bridge".into()),
        up: true,
    };
    let on_link = |oif, src: &str| {
        Some(Route {
            oif,
            gateway: None,
            prefsrc: Some(ip(src)),
        })
    };
    Facts {
        links: [link("vmbr0", 2), link("vmbr1", 3)]
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect(),
        addrs: [
            (2, vec![ip("192.168.1.55")]),
            (3, vec![ip("192.168.100.1")]),
        ]
        .into_iter()
        .collect(),
        routes: [
            (ip("192.168.100.80"), on_link(3, "192.168.100.1")),
            (ip("192.168.100.81"), on_link(3, "192.168.100.1")),
            (ip("10.43.12.7"), None),
        ]
        .into_iter()
        .collect(),
        room: Room::default(),
        names: names
            .iter()
            .map(|(n, f)| (n.to_string(), f.clone()))
            .collect(),
        ..Default::default()
    }
}

fn resolved(addr: &str) -> NameFact {
    NameFact {
        addr: Some(ip(addr)),
        answers: vec![ip(addr)],
        resolved_unix: Some(1_700_000_000),
        ttl: Some(5),
        next_unix: 1_700_000_005,
        ..Default::default()
    }
}

fn failed(e: Failure, keep: Option<&str>) -> NameFact {
    NameFact {
        addr: keep.map(ip),
        last_addr: keep.map(ip),
        answers: keep.map(ip).into_iter().collect(),
        error: Some(e),
        failures: 1,
        next_unix: 1_700_000_001,
        ..Default::default()
    }
}

/// `vm` forwards 80 to a VM by name; `web` 81 to a VM by address.
const RULES: &str = "[[forward]]\nname = \"vm\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = 80\nto = \"vm101.lan:8080\"\nsnat = \"auto\"\n\n\
     [[forward]]\nname = \"web\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = 81\nto = \"192.168.100.81:80\"\n";

fn rules_of(text: &str) -> RuleSet {
    rules::load_str("test.toml", text)
        .unwrap_or_else(|d| panic!("{d}"))
        .rules
}

fn key(port: u16) -> ListenerKey {
    ListenerKey::v4(addr_v4([192, 168, 1, 55]), 2, port.to_be(), PROTO_TCP)
}

fn target(v: &ListenerValue) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(forwarder_common::addr_v4_octets(&v.target_addr)),
        u16::from_be(v.target_port),
    )
}

fn rule<'a>(p: &'a Plan, name: &str) -> &'a RuleStatus {
    p.rules.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn a_resolved_name_listens_like_its_address_written_out() {
    let p = plan(
        &rules_of(RULES),
        &host(&[("vm101.lan", resolved("192.168.100.80"))]),
        &Record::default(),
    )
    .unwrap();
    let written = RULES.replace("vm101.lan", "192.168.100.80");
    let want = plan(&rules_of(&written), &host(&[]), &Record::default()).unwrap();
    assert_eq!(p.entries.listeners, want.entries.listeners);
    assert_eq!(
        target(&p.entries.listeners[&key(80)]),
        (ip("192.168.100.80"), 8080)
    );
    // The route to the answer is used like a written target's (the VM
    // bridge is attached, MSS and the decision come from it).
    let vmbr1 = p.ifaces.iter().find(|i| i.name == "vmbr1").unwrap();
    assert_eq!(vmbr1.why, "route to 192.168.100.80 (vm)");
    assert_eq!(rule(&p, "vm").decision, rule(&want, "vm").decision);
    assert_eq!(rule(&p, "vm").mss, Some(1460));
    let n = rule(&p, "vm").resolution.clone().unwrap();
    assert_eq!(n.name, "vm101.lan");
    assert_eq!(n.state, "resolved");
    assert_eq!(n.addr.as_deref(), Some("192.168.100.80"));
    assert_eq!(n.resolved_unix, Some(1_700_000_000));
    assert_eq!(n.paused, None);
    assert_eq!(rule(&p, "web").resolution, None);
}

#[test]
fn a_changed_answer_rewrites_only_that_forwards_listener() {
    let rules = rules_of(RULES);
    let before = plan(
        &rules,
        &host(&[("vm101.lan", resolved("192.168.100.80"))]),
        &Record::default(),
    )
    .unwrap();
    let after = plan(
        &rules,
        &host(&[("vm101.lan", resolved("10.43.12.7"))]),
        &before.record(),
    )
    .unwrap();
    // One write, in place (the key stays, the value points elsewhere):
    // new connections go to the new address, and the flow table keeps the
    // translation of established ones, as conntrack does after a DNAT edit.
    assert_eq!(after.update.ops.len(), 1, "{:?}", after.update.ops);
    let MapOp::ListenerWrite(k, v) = &after.update.ops[0] else {
        panic!("{:?}", after.update.ops)
    };
    assert_eq!(*k, key(80));
    assert_eq!(target(v), (ip("10.43.12.7"), 8080));
    assert_eq!(after.ids, before.ids, "the forward keeps its rule id");
    assert_eq!(
        after.entries.listeners[&key(81)],
        before.entries.listeners[&key(81)]
    );
    // The new address has no route: its flows take the stack path now.
    assert!(rule(&after, "vm").decision.contains("no forwarding route"));
    assert!(
        after
            .ifaces
            .iter()
            .find(|i| i.name == "vmbr0")
            .unwrap()
            .egress
    );
}

#[test]
fn a_name_that_does_not_resolve_pauses_its_forward_and_nothing_else() {
    let rules = rules_of(RULES);
    let running = plan(
        &rules,
        &host(&[("vm101.lan", resolved("192.168.100.80"))]),
        &Record::default(),
    )
    .unwrap();
    for (fact, why) in [
        (
            failed(Failure::NxDomain, None),
            "vm101.lan does not resolve (NXDOMAIN: the name does not exist)",
        ),
        (
            failed(Failure::Timeout, None),
            "vm101.lan does not resolve (timeout: no answer from the DNS server)",
        ),
        (NameFact::default(), "vm101.lan has not resolved yet"),
    ] {
        let facts = host(&[("vm101.lan", fact)]);
        let p = plan(&rules, &facts, &running.record()).unwrap();
        // Its listener goes, and only that: the other forward is untouched.
        assert_eq!(p.update.ops, [MapOp::ListenerRemove(key(80))], "{why}");
        assert!(!p.entries.listeners.contains_key(&key(80)));
        assert_eq!(
            p.entries.listeners[&key(81)],
            running.entries.listeners[&key(81)]
        );
        // It keeps its rule id (counters), and says why it is paused.
        assert_eq!(p.ids, running.ids);
        let r = rule(&p, "vm");
        assert_eq!(r.listeners, 0);
        assert!(
            r.decision
                .starts_with(&format!("paused: {why}; no listener")),
            "{}",
            r.decision
        );
        assert_eq!(r.resolution.as_ref().unwrap().paused.as_deref(), Some(why));
        // Its listening side stays attached; the route side is used for
        // the other forward now. No egress program: it never had an
        // address in these facts, so it has no flows that took the stack.
        let vmbr0 = p.ifaces.iter().find(|i| i.name == "vmbr0").unwrap();
        assert!(!vmbr0.egress);
        let vmbr1 = p.ifaces.iter().find(|i| i.name == "vmbr1").unwrap();
        assert_eq!(vmbr1.why, "route to 192.168.100.81 (web)");
        // Resolving again resumes it exactly as before.
        let back = plan(
            &rules,
            &host(&[("vm101.lan", resolved("192.168.100.80"))]),
            &p.record(),
        )
        .unwrap();
        assert_eq!(back.entries.listeners, running.entries.listeners);
    }
}

#[test]
fn a_stale_name_keeps_forwarding_to_its_last_address() {
    let rules = rules_of(RULES);
    let running = plan(
        &rules,
        &host(&[("vm101.lan", resolved("192.168.100.80"))]),
        &Record::default(),
    )
    .unwrap();
    let p = plan(
        &rules,
        &host(&[(
            "vm101.lan",
            failed(Failure::ServFail, Some("192.168.100.80")),
        )]),
        &running.record(),
    )
    .unwrap();
    assert!(p.update.ops.is_empty(), "{:?}", p.update.ops);
    let n = rule(&p, "vm").resolution.clone().unwrap();
    assert_eq!(n.state, "stale");
    assert_eq!(n.error.as_deref(), Some("SERVFAIL from the DNS server"));
    assert_eq!(n.paused, None);
}

#[test]
fn an_answer_that_cannot_be_a_target_pauses_the_forward() {
    let rules = rules_of(RULES);
    for (answer, why) in [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("192.168.1.55", "192.168.1.55 is the listen address itself"),
        ("224.0.0.251", "224.0.0.251 is a multicast address"),
    ] {
        let p = plan(
            &rules,
            &host(&[("vm101.lan", resolved(answer))]),
            &Record::default(),
        )
        .unwrap();
        assert!(!p.entries.listeners.contains_key(&key(80)), "{answer}");
        assert!(p.entries.listeners.contains_key(&key(81)));
        assert_eq!(
            rule(&p, "vm").resolution.as_ref().unwrap().paused,
            Some(format!(
                "vm101.lan resolves to {why}, which cannot be a target"
            ))
        );
    }
}

#[test]
fn two_forwards_to_one_name_follow_it_together() {
    let text = RULES.replace("192.168.100.81:80", "vm101.lan:22");
    let rules = rules_of(&text);
    let names = |a: &str| host(&[("vm101.lan", resolved(a))]);
    let p = plan(&rules, &names("192.168.100.80"), &Record::default()).unwrap();
    assert_eq!(
        target(&p.entries.listeners[&key(81)]),
        (ip("192.168.100.80"), 22)
    );
    let q = plan(&rules, &names("192.168.100.81"), &p.record()).unwrap();
    let targets: BTreeMap<u16, (Ipv4Addr, u16)> = [80, 81]
        .into_iter()
        .map(|port| (port, target(&q.entries.listeners[&key(port)])))
        .collect();
    assert_eq!(
        targets,
        BTreeMap::from([
            (80, (ip("192.168.100.81"), 8080)),
            (81, (ip("192.168.100.81"), 22))
        ])
    );
}

#[test]
fn a_paused_forward_keeps_egress_while_its_last_address_took_the_stack_path() {
    let rules = rules_of(RULES);
    // (last address before the pause, egress on vmbr0 while paused):
    // a ClusterIP's flows went through the stack and their replies are
    // translated at egress; an on-link VM's were redirected.
    for (last, want) in [
        (Some("10.43.12.7"), true),
        (Some("192.168.100.80"), false),
        (None, false),
    ] {
        let fact = NameFact {
            last_addr: last.map(ip),
            error: Some(Failure::NxDomain),
            ..Default::default()
        };
        let p = plan(&rules, &host(&[("vm101.lan", fact)]), &Record::default()).unwrap();
        let vmbr0 = p.ifaces.iter().find(|i| i.name == "vmbr0").unwrap();
        assert_eq!(vmbr0.egress, want, "last address {last:?}");
        assert!(!p.entries.listeners.contains_key(&key(80)));
    }
}

#[test]
fn a_restarted_daemon_takes_each_names_address_from_the_maps_it_adopts() {
    use crate::daemon::targets::adopted_addrs;
    // The previous daemon forwarded `vm` to the answer it had; `web` is
    // written out, and `gone` was paused (no listener).
    let text = format!(
        "{RULES}\n[[forward]]\nname = \"gone\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\n\
         port = 82\nto = \"vm102.lan:22\"\n"
    );
    let before = plan(
        &rules_of(&text),
        &host(&[("vm101.lan", resolved("192.168.100.80"))]),
        &Record::default(),
    )
    .unwrap()
    .record();
    let adopted = adopted_addrs(&rules_of(&text), &before);
    assert_eq!(
        adopted,
        BTreeMap::from([("vm101.lan".to_string(), ip("192.168.100.80"))])
    );
    // A forward renamed in the file meanwhile is a new forward: nothing
    // of the old one's is taken.
    let renamed = text.replace("name = \"vm\"", "name = \"vm-new\"");
    assert!(adopted_addrs(&rules_of(&renamed), &before).is_empty());
    // With the adopted address standing in for an answer, the new plan
    // keeps the listener exactly as it is in the kernel.
    let mut fact = crate::daemon::resolve::NameState::new(tokio::time::Instant::now(), 0);
    fact.adopt(ip("192.168.100.80"));
    assert_eq!(fact.fact.state(), "adopted");
    let again = plan(
        &rules_of(&text),
        &host(&[("vm101.lan", fact.fact)]),
        &before,
    )
    .unwrap();
    assert!(again.update.ops.is_empty(), "{:?}", again.update.ops);
    assert_eq!(rule(&again, "vm").listeners, 1);
}
