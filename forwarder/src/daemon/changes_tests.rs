//! Unit tests of the change summary: plans built from hand-made facts, no
//! kernel. Each test names what the summary must say.
use std::{collections::BTreeMap, net::Ipv4Addr};

use rules::Room;

use super::*;
use crate::{
    daemon::{
        facts::{Facts, Route},
        plan,
    },
    ifaces::Iface,
};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// vmbr0 (LAN, 192.168.1.55) and vmbr1 (VMs on-link, 192.168.100.1).
fn host() -> Facts {
    let link = |name: &str, ifindex| Iface {
        name: name.into(),
        ifindex,
        l3: false,
        mtu: 1500,
        kind: Some("bridge".into()),
        up: true,
    };
    let on_link = Some(Route {
        oif: 3,
        gateway: None,
        prefsrc: Some(ip("192.168.100.1")),
    });
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
        routes: ["192.168.100.80", "192.168.100.81", "192.168.100.82"]
            .into_iter()
            .map(|t| (ip(t), on_link))
            .collect(),
        room: Room::default(),
        ..Default::default()
    }
}

fn forward(name: &str, port: u16, to: &str, extra: &str) -> String {
    format!(
        "[[forward]]\nname = \"{name}\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = {port}\nto = \"{to}\"\nsnat = \"masquerade\"\n{extra}\n"
    )
}

/// The plan of `text` against `record`, and the record it leaves.
fn plan_of(text: &str, record: &Record) -> Plan {
    let rules = rules::load_str("t.toml", text).unwrap().rules;
    plan::plan(&rules, &host(), record).unwrap()
}

/// What runs after applying `text` from nothing: the record and the
/// status lines the daemon keeps.
fn running(text: &str) -> (Record, Vec<RuleStatus>) {
    let p = plan_of(text, &Record::default());
    (p.record(), p.rules.clone())
}

#[test]
fn the_same_file_changes_nothing() {
    let text = forward("web", 80, "192.168.100.80:80", "allow = [\"10.0.0.0/8\"]");
    let (record, status) = running(&text);
    let c = between(&record, &status, &plan_of(&text, &record), &BTreeMap::new());
    assert!(c.is_empty(), "{c:?}");
    assert_eq!(c.render(), "no change: the file matches what runs\n");
}

#[test]
fn added_changed_and_removed_forwards_are_named_with_what_changed() {
    let old = forward("web", 80, "192.168.100.80:80", "")
        + &forward("ssh", 2222, "192.168.100.81:22", "")
        + &forward(
            "gone",
            3000,
            "192.168.100.82:3000",
            "allow = [\"10.0.0.0/8\"]",
        );
    let (record, status) = running(&old);
    let new = forward("web", 8080, "192.168.100.80:80", "")
        + &forward("ssh", 2222, "192.168.100.81:22", "")
        + &forward("new", 4000, "192.168.100.82:4000", "");
    let c = between(&record, &status, &plan_of(&new, &record), &BTreeMap::new());
    assert_eq!(c.added, ["new"]);
    assert_eq!(c.removed, ["gone"]);
    assert_eq!(
        c.changed,
        [ForwardChange {
            name: "web".into(),
            what: vec!["port 80 -> 8080".into()]
        }]
    );
    assert_eq!(
        c.listener_entries,
        EntryCounts {
            added: 2,
            changed: 0,
            removed: 2,
            before: 3,
            after: 3
        }
    );
    assert_eq!(
        c.allow_entries,
        EntryCounts {
            added: 0,
            changed: 0,
            removed: 1,
            before: 1,
            after: 0
        }
    );
    let text = c.render();
    assert!(text.contains("+ forward new\n"), "{text}");
    assert!(text.contains("~ forward web: port 80 -> 8080\n"), "{text}");
    assert!(text.contains("- forward gone\n"), "{text}");
    assert!(
        text.contains("listener entries +2 ~0 -2 (3 -> 3), allow-list entries +0 ~0 -1 (1 -> 0)"),
        "{text}"
    );
}

#[test]
fn an_allow_list_edit_is_a_change_of_its_forward() {
    let (record, status) = running(&forward(
        "web",
        80,
        "192.168.100.80:80",
        "allow = [\"10.0.0.0/8\"]",
    ));
    let new = forward(
        "web",
        80,
        "192.168.100.80:80",
        "allow = [\"10.0.0.0/8\", \"192.168.1.0/24\"]",
    );
    let c = between(&record, &status, &plan_of(&new, &record), &BTreeMap::new());
    assert_eq!(c.changed[0].what, ["allow-list +1 -0"]);
}

#[test]
fn a_setting_status_does_not_show_is_reported_as_listener_entries() {
    let (record, status) = running(&forward("web", 80, "192.168.100.80:80", ""));
    let new = forward("web", 80, "192.168.100.80:80", "reject = \"drop\"");
    let c = between(&record, &status, &plan_of(&new, &record), &BTreeMap::new());
    assert_eq!(c.changed[0].what, ["listener entries +0 ~1 -0"]);
}

#[test]
fn live_flows_of_changed_and_removed_forwards_are_counted_others_not() {
    let old = forward("web", 80, "192.168.100.80:80", "")
        + &forward("ssh", 2222, "192.168.100.81:22", "")
        + &forward("gone", 3000, "192.168.100.82:3000", "");
    let (record, status) = running(&old);
    let new = forward("web", 80, "192.168.100.81:80", "")
        + &forward("ssh", 2222, "192.168.100.81:22", "");
    let flows: BTreeMap<u32, u64> = ["web", "ssh", "gone"]
        .iter()
        .zip([3, 5, 1])
        .map(|(n, k)| (record.ids[*n], k))
        .collect();
    let c = between(&record, &status, &plan_of(&new, &record), &flows);
    assert_eq!(
        c.flows_keeping_old_translation,
        [("gone".to_string(), 1), ("web".to_string(), 3)]
            .into_iter()
            .collect()
    );
    let text = c.render();
    assert!(
        text.contains("4 live flows keep the translation and admission of their time until they end (gone 1, web 3)"),
        "{text}"
    );
}

#[test]
fn without_the_daemons_description_changes_come_from_the_maps() {
    let (record, _) = running(&forward("web", 80, "192.168.100.80:80", ""));
    let new = forward("web", 80, "192.168.100.81:80", "");
    let c = between(&record, &[], &plan_of(&new, &record), &BTreeMap::new());
    assert_eq!(c.changed[0].what, ["listener entries +0 ~1 -0"]);
}
