use super::*;

const RULES: &str = r#"
[[forward]]
name = "immich"
in = "tailscale0"
port = 8080
to = "10.43.126.136:80"
allow = ["100.101.92.95"]

[[forward]]
name = "web"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80"
snat = "192.168.100.1"

[[forward]]
name = "nodeports"
in = "vmbr0"
listen = "192.168.1.55"
proto = "both"
port = "30000-32767"
to = "192.168.100.60"
snat = "off"
"#;

fn q(iface: &str, from: &str, to: &str, proto: L4) -> Query {
    Query {
        iface: iface.into(),
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        proto,
        iface_addrs: BTreeMap::new(),
        resolved: BTreeMap::new(),
        host_notes: BTreeMap::new(),
    }
}

fn rules() -> RuleSet {
    crate::load_str("r.toml", RULES).unwrap().rules
}

#[test]
fn fixed_snat_translation() {
    let rs = rules();
    let query = q("vmbr0", "192.168.1.20:50000", "192.168.1.55:80", L4::Tcp);
    let e = explain(&rs, &query);
    let Explanation::Translated {
        rule,
        original,
        reply,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(rule, "web");
    assert_eq!(
        original.after.to_string(),
        "192.168.100.1:<port from 1024-32767> -> 192.168.100.80:80"
    );
    assert_eq!(
        reply.before.to_string(),
        "192.168.100.80:80 -> 192.168.100.1:<port from 1024-32767>"
    );
    assert_eq!(
        reply.after.to_string(),
        "192.168.1.55:80 -> 192.168.1.20:50000"
    );
    let text = render(&rs, &query, &e);
    assert!(text.contains("matches forward \"web\" (vmbr0 192.168.1.55 port 80 -> 192.168.100.80, snat 192.168.100.1)"), "{text}");
}

#[test]
fn interface_form_with_and_without_known_addresses() {
    let rs = rules();
    let mut query = q(
        "tailscale0",
        "100.101.92.95:40000",
        "100.118.5.68:8080",
        L4::Tcp,
    );
    let Explanation::Translated {
        original, notes, ..
    } = explain(&rs, &query)
    else {
        panic!()
    };
    assert_eq!(
        original.after.to_string(),
        "100.101.92.95:40000 -> 10.43.126.136:80"
    );
    assert!(
        notes[0].contains("assuming 100.118.5.68 is an address of tailscale0"),
        "{notes:?}"
    );
    assert!(notes[1].contains("snat = \"auto\""), "{notes:?}");

    query
        .iface_addrs
        .insert("tailscale0".into(), vec!["100.118.5.69".parse().unwrap()]);
    let Explanation::NoMatch { reasons } = explain(&rs, &query) else {
        panic!()
    };
    assert_eq!(reasons, vec!["forward \"immich\" listens on tailscale0's addresses (100.118.5.69), and 100.118.5.68 is not one of them"]);
}

#[test]
fn allow_list_refusal() {
    let rs = rules();
    let query = q(
        "tailscale0",
        "100.64.0.9:40000",
        "100.118.5.68:8080",
        L4::Tcp,
    );
    let e = explain(&rs, &query);
    assert_eq!(
        e,
        Explanation::Refused {
            rule: "immich".into(),
            reason: "source 100.64.0.9 is not in the allow-list (100.101.92.95/32): it \
                     gets a TCP RST, like from a closed port (reject = \"rst\"); never this \
                     host's own service on that port"
                .into()
        }
    );
}

#[test]
fn range_mapping_and_no_match_reasons() {
    let rs = rules();
    let Explanation::Translated {
        original, notes, ..
    } = explain(
        &rs,
        &q("vmbr0", "192.168.1.20:1000", "192.168.1.55:31000", L4::Udp),
    )
    else {
        panic!()
    };
    assert_eq!(
        original.after.to_string(),
        "192.168.1.20:1000 -> 192.168.100.60:31000"
    );
    assert!(notes[0].starts_with("snat = \"off\""));

    let Explanation::NoMatch { reasons } = explain(
        &rs,
        &q("vmbr0", "192.168.1.20:1000", "192.168.1.55:81", L4::Udp),
    ) else {
        panic!()
    };
    assert_eq!(
        reasons,
        vec![
            "forward \"web\" listens on tcp, not udp",
            "forward \"nodeports\" listens on ports 30000-32767, not 81"
        ]
    );

    let Explanation::NoMatch { reasons } =
        explain(&rs, &q("eth9", "1.1.1.1:1", "2.2.2.2:2", L4::Tcp))
    else {
        panic!()
    };
    assert_eq!(
        reasons,
        vec!["no forward listens on interface eth9 (forwards use: tailscale0, vmbr0)"]
    );
}

/// What the host says about the target (a dead next hop, `--lookup`) is
/// a note of the forward that goes there, and of no other.
#[test]
fn a_host_note_about_the_target_is_shown_with_its_forward() {
    let rs = rules();
    let mut query = q("vmbr0", "192.168.1.20:50000", "192.168.1.55:80", L4::Tcp);
    let dead = "target's neighbour 192.168.100.80 on vmbr1 is FAILED (no ARP answer): new flows \
                are answered ICMP host unreachable (3/1) built in BPF, counted reply_host_unreach";
    query
        .host_notes
        .insert("192.168.100.80".parse().unwrap(), dead.into());
    query
        .host_notes
        .insert("192.168.100.60".parse().unwrap(), "not this one".into());
    let e = explain(&rs, &query);
    let Explanation::Translated { notes, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(notes, &vec![dead.to_string()]);
    assert!(
        render(&rs, &query, &e).contains(&format!("  note: {dead}\n")),
        "{e:?}"
    );
}

#[test]
fn iface_addr_argument() {
    assert_eq!(
        parse_iface_addr("tailscale0=100.118.5.68"),
        Ok(("tailscale0".into(), "100.118.5.68".parse().unwrap()))
    );
    assert!(parse_iface_addr("tailscale0").is_err());
    assert_eq!(
        parse_iface_addr("x=fd7a:115c:a1e0::1"),
        Ok(("x".into(), "fd7a:115c:a1e0::1".parse().unwrap()))
    );
    assert!(parse_iface_addr("x=fd7a::zz").is_err());
}
