//! One test per validation rule: the exact message and where it points.

use rules::load_str;

mod support;
use support::{errors, one_error, warnings, FILE};

/// A valid forward with `extra` lines appended (lines 1-5 fixed).
fn fwd(extra: &str) -> String {
    format!("[[forward]]\nname = \"web-http\"\nin = \"vmbr0\"\nport = 80\nto = \"192.168.100.80:80\"\n{extra}")
}

/// The forward with one of its five lines replaced.
fn fwd_with(key: &str, line: &str) -> String {
    fwd("")
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key} =")) {
                line
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn port_zero() {
    assert_eq!(
        one_error(&fwd_with("port", "port = 0")),
        "rules.toml:4:8: error: forward \"web-http\": port 0 is not a valid port\n  help: use a port between 1 and 65535"
    );
}

#[test]
fn port_out_of_range_reversed_and_colon() {
    assert_eq!(one_error(&fwd_with("port", "port = 70000")), "rules.toml:4:8: error: forward \"web-http\": port 70000 is out of range\n  help: use a port between 1 and 65535");
    assert_eq!(one_error(&fwd_with("port", "port = \"90-80\"")), "rules.toml:4:8: error: forward \"web-http\": port range 90-80 is reversed\n  help: write \"80-90\"");
    assert_eq!(
        one_error(&fwd_with("port", "port = \"30000:32767\"")),
        "rules.toml:4:8: error: forward \"web-http\": `30000:32767` is not a port range\n  help: ranges use a dash: \"30000-32767\""
    );
    assert_eq!(
        one_error(&fwd_with("port", "port = true")),
        "rules.toml:4:8: error: forward \"web-http\": `port` must be an integer or a range string, found a boolean\n  help: e.g. port = 80 or port = \"30000-32767\""
    );
    assert_eq!(one_error(&fwd_with("to", "to = \"10.0.0.1:0\"")), "rules.toml:5:6: error: forward \"web-http\": target port 0 is not a valid port\n  help: use a port between 1 and 65535");
}

#[test]
fn unknown_keys_suggest() {
    assert_eq!(one_error(&fwd("prot = \"udp\"")), "rules.toml:6:1: error: forward \"web-http\": unknown key `prot` in [[forward]]\n  help: did you mean `proto`?");
    assert_eq!(one_error(&fwd("listn = \"interface\"")), "rules.toml:6:1: error: forward \"web-http\": unknown key `listn` in [[forward]]\n  help: did you mean `listen`?");
    assert_eq!(one_error("[[forwards]]\nname = \"x\"\n"), "rules.toml:1:3: error: unknown key `forwards` in top level\n  help: did you mean `forward`?");
    assert_eq!(
        one_error("[global]\nconntrack = 5\n"),
        "rules.toml:2:1: error: global: unknown key `conntrack` in [global]\n  help: did you mean `conntrack_max`?"
    );
    assert_eq!(
        one_error("[global.timeouts]\ntcp_establshed = \"1h\"\n"),
        "rules.toml:2:1: error: global.timeouts: unknown key `tcp_establshed` in [global.timeouts]\n  help: did you mean `tcp_established`?"
    );
    assert_eq!(one_error(&fwd_with("proto", "").replace("port = 80", "port = 80\nproto = \"tpc\"")), "rules.toml:5:9: error: forward \"web-http\": `tpc` is not a valid proto\n  help: did you mean `tcp`?");
}

#[test]
fn missing_keys_point_at_the_section() {
    let e = errors("\n[[forward]]\nname = \"a\"\n");
    assert_eq!(
        e,
        [
            "rules.toml:2:1: error: forward \"a\": missing `in`\n  help: add in = \"eth0\" (the interface packets arrive on)",
            "rules.toml:2:1: error: forward \"a\": missing `port`\n  help: add port = 80 or port = \"30000-32767\"",
            "rules.toml:2:1: error: forward \"a\": missing `to`\n  help: add to = \"192.168.100.80:80\"",
        ]
    );
}

#[test]
fn names() {
    assert_eq!(
        one_error(&fwd_with("name", "name = \"Web\"")),
        "rules.toml:2:8: error: forward #1: `Web` is not a valid forward name\n  help: names are lowercase: write \"web\""
    );
    assert_eq!(
        one_error(&fwd_with("name", "name = \"web http\"")),
        "rules.toml:2:8: error: forward #1: `web http` is not a valid forward name\n  help: use 1 to 63 characters out of a-z, 0-9, `-` and `_`, starting with a letter or digit"
    );
    let dup = format!("{}\n{}", fwd(""), fwd("").replace("port = 80", "port = 81"));
    assert_eq!(
        one_error(&dup),
        "rules.toml:8:8: error: forward \"web-http\": duplicate forward name \"web-http\" (first defined on line 2)\n  help: names identify forwards in the CLI and metrics: give each a unique one"
    );
}

#[test]
fn interface_names() {
    assert_eq!(
        one_error(&fwd_with("in", "in = \"\"")),
        "rules.toml:3:6: error: forward \"web-http\": `in` is empty: name the interface packets arrive on\n  help: use the interface name as `ip link` shows it, e.g. \"vmbr0\" or \"tailscale0\""
    );
    assert!(one_error(&fwd_with("in", "in = \"averyveryverylongname\""))
        .contains("interface name `averyveryverylongname` is longer than 15 bytes"));
    assert!(one_error(&fwd_with("in", "in = \"eth0/1\""))
        .contains("`eth0/1` is not a valid interface name"));
}

#[test]
fn overlapping_listeners() {
    let text = format!(
        "{}\n{}",
        fwd(""),
        fwd("")
            .replace("web-http", "b")
            .replace("port = 80", "port = \"70-90\"")
    );
    assert_eq!(
        one_error(&text),
        "rules.toml:10:8: error: forward \"b\": tcp ports 70-90 on vmbr0 (the interface's addresses) overlaps forward \"web-http\" on line 1 (tcp port 80 on vmbr0 (the interface's addresses)): both take tcp port 80\n  help: a packet must match exactly one forward: change `port`, `proto` or `listen` of one of them"
    );
}

#[test]
fn interface_form_overlaps_fixed_address_on_same_interface() {
    let text = format!(
        "{}\n{}",
        fwd("listen = \"192.168.1.55\""),
        fwd("").replace("web-http", "b")
    );
    assert!(one_error(&text).starts_with(
        "rules.toml:10:8: error: forward \"b\": tcp port 80 on vmbr0 (the interface's addresses) overlaps forward \"web-http\" on line 1 (tcp port 80 on vmbr0 (192.168.1.55))"
    ));
    // Distinct fixed addresses, or another interface, do not overlap.
    let ok = format!(
        "{}\n{}",
        fwd("listen = \"192.168.1.55\""),
        fwd("listen = \"192.168.1.56\"").replace("web-http", "b")
    );
    load_str(FILE, &ok).unwrap();
    let ok = format!(
        "{}\n{}",
        fwd(""),
        fwd("").replace("web-http", "b").replace("vmbr0", "vmbr1")
    );
    load_str(FILE, &ok).unwrap();
}

#[test]
fn both_overlaps_udp_but_tcp_and_udp_do_not() {
    let text = format!(
        "{}\n{}",
        fwd("proto = \"both\""),
        fwd("proto = \"udp\"").replace("web-http", "b")
    );
    assert!(one_error(&text).contains("both take udp port 80"));
    let ok = format!(
        "{}\n{}",
        fwd("proto = \"tcp\""),
        fwd("proto = \"udp\"").replace("web-http", "b")
    );
    load_str(FILE, &ok).unwrap();
}

#[test]
fn range_size_mismatch() {
    let text = fwd_with("port", "port = \"30000-30009\"")
        .replace("192.168.100.80:80", "10.0.0.5:8000-8004");
    assert_eq!(
        one_error(&text),
        "rules.toml:5:6: error: forward \"web-http\": port range size mismatch: port 30000-30009 (10 ports) cannot map onto 10.0.0.5:8000-8004 (5 ports)\n  help: map a range 1:1 onto a range of the same size, onto a single port, or leave the target port out to keep the ports"
    );
    // Range onto one port, and same-size ranges, are fine.
    load_str(FILE, &fwd_with("port", "port = \"30000-30009\"")).unwrap();
    load_str(
        FILE,
        &fwd_with("port", "port = \"30000-30009\"")
            .replace("192.168.100.80:80", "10.0.0.5:8000-8009"),
    )
    .unwrap();
}

#[test]
fn unusable_targets() {
    let cases = [
        ("127.0.0.1:80", "target 127.0.0.1 is a loopback address"),
        ("224.0.0.1:80", "target 224.0.0.1 is a multicast address"),
        (
            "255.255.255.255:80",
            "target 255.255.255.255 is the broadcast address",
        ),
        ("0.0.0.0:80", "target 0.0.0.0 is the unspecified address"),
    ];
    for (to, msg) in cases {
        let e = one_error(&fwd_with("to", &format!("to = \"{to}\"")));
        assert!(
            e.starts_with(&format!(
                "rules.toml:5:6: error: forward \"web-http\": {msg}\n  help: "
            )),
            "{e}"
        );
    }
    let e = one_error(&fwd("listen = \"192.168.100.80\""));
    assert_eq!(
        e,
        "rules.toml:5:6: error: forward \"web-http\": target 192.168.100.80 is the listen address itself\n  help: packets would be sent back to this listener; point at the backend"
    );
    // Names are targets (rules/tests/name_targets.rs); one that always
    // means this host is refused like 127.0.0.1.
    assert!(one_error(&fwd_with("to", "to = \"localhost:80\""))
        .contains("target localhost always resolves to this host's loopback"));
}

#[test]
fn listen_addresses() {
    assert_eq!(
        one_error(&fwd("listen = \"0.0.0.0\"")),
        "rules.toml:6:10: error: forward \"web-http\": listen address 0.0.0.0 is the unspecified address\n  help: to listen on all of the interface's addresses, write listen = \"interface\""
    );
    assert!(one_error(&fwd("listen = \"eth0\""))
        .contains("listen `eth0` is neither an IP address nor \"interface\""));
}

#[test]
fn snat_family_mismatch_and_bad_snat() {
    assert_eq!(
        one_error(&fwd("snat = \"fd00::1\"")),
        "rules.toml:6:8: error: forward \"web-http\": SNAT address family mismatch: snat fd00::1 is IPv6 but the target 192.168.100.80 is IPv4\n  help: packets leave toward the target with a source of the target's family: use an IPv4 address of this host, or \"masquerade\""
    );
    assert!(one_error(&fwd("snat = \"127.0.0.1\""))
        .contains("SNAT address 127.0.0.1 is a loopback address"));
    assert_eq!(one_error(&fwd("snat = \"of\"")), "rules.toml:6:8: error: forward \"web-http\": snat `of` is neither a keyword nor an IP address\n  help: did you mean `off`?");
}

#[test]
fn allow_lists() {
    assert_eq!(
        one_error(&fwd("allow = [\"10.0.0.1/24\"]")),
        "rules.toml:6:10: error: forward \"web-http\": allow-list entry 10.0.0.1/24 has host bits set\n  help: write the network address: \"10.0.0.0/24\""
    );
    assert_eq!(
        one_error(&fwd("allow = [\"1.2.3.4\", \"10.0.0.300\"]")),
        "rules.toml:6:21: error: forward \"web-http\": allow-list entry `10.0.0.300` is not an IP address or CIDR\n  help: use an address or CIDR, e.g. \"100.101.92.95\", \"192.168.1.0/24\" or \"fd7a:115c:a1e0::/48\""
    );
    assert_eq!(
        one_error(&fwd("allow = []")),
        "rules.toml:6:9: error: forward \"web-http\": an empty allow-list would refuse every source\n  help: remove `allow` to accept every source, or list the addresses that may connect"
    );
    // A single string is accepted as a one-entry list.
    let l = load_str(FILE, &fwd("allow = \"10.1.0.0/16\"")).unwrap();
    assert_eq!(l.rules.forwards[0].allow.len(), 1);
}

#[test]
fn mss_clamp_and_reject_values() {
    assert!(one_error(&fwd("mss_clamp = 100")).contains("mss_clamp 100 is out of range"));
    assert!(one_error(&fwd("mss_clamp = \"on\"")).contains("`on` is not a valid mss_clamp"));
    assert_eq!(one_error(&fwd("reject = \"rest\"")), "rules.toml:6:10: error: forward \"web-http\": `rest` is not a valid reject\n  help: did you mean `rst`?");
}

#[test]
fn global_values() {
    assert_eq!(
        one_error("[global]\nlog_level = \"verbose\"\n"),
        "rules.toml:2:13: error: global: `verbose` is not a valid log_level\n  help: expected one of: `error`, `warn`, `info`, `debug`, `trace`"
    );
    assert!(one_error("[global]\nconntrack_max = 0\n").contains("conntrack_max 0 is out of range"));
    assert!(one_error("[global]\nsnat_ports = \"60999-32768\"\n")
        .contains("port range 60999-32768 is reversed"));
    assert!(one_error("[global]\nmetrics = \"localhost\"\n")
        .contains("metrics endpoint `localhost` is not an address:port"));
    assert_eq!(
        one_error("[global.timeouts]\nudp = \"60\"\n"),
        "rules.toml:2:7: error: global.timeouts: udp: `60` is not a duration (time unit needed, for example 60sec or 60ms)\n  help: `udp` is how long a UDP flow that has seen one direction only may stay idle; write a duration with a unit, like \"30s\", \"5m\" or \"6h\" (the default is \"30s\")"
    );
    // Zero gets help about this setting, not about duration syntax.
    assert_eq!(
        one_error("[global.timeouts]\nudp = \"0s\"\n"),
        "rules.toml:2:7: error: global.timeouts: udp: `0s` is shorter than one second\n  help: `udp` is how long a UDP flow that has seen one direction only may stay idle; a timeout cannot be 0 or turned off: use at least \"1s\" (the default is \"30s\")"
    );
    assert!(one_error("[global.timeouts]\nudp = 60\n")
        .contains("`udp` must be a duration string, found an integer"));
    assert!(one_error("[global.timeouts]\nudp = \"500ms\"\n")
        .contains("`500ms` is shorter than one second"));
}

#[test]
fn toml_syntax_errors_have_a_location() {
    let e = one_error("[[forward]]\nname = \"a\nport = 1\n");
    assert!(e.starts_with("rules.toml:2:"), "{e}");
    assert!(e.contains("error: TOML syntax:"), "{e}");
    assert_eq!(
        one_error("[forward]\nname = \"a\"\n"),
        "rules.toml:1:1: error: `forward` must be an array of tables, found a table\n  help: write each forward as a [[forward]] section (two brackets)"
    );
}

#[test]
fn all_errors_in_one_pass() {
    let text = format!(
        "{}\n{}\n{}",
        fwd_with("port", "port = 0"),
        fwd("snat = \"bogus\"").replace("web-http", "b"),
        fwd("")
            .replace("web-http", "c")
            .replace("port = 80", "port = 90")
            .replace("192.168.100.80:80", "127.0.0.1")
    );
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("rules.toml:4:8:"));
    assert!(e[1].starts_with("rules.toml:12:8:"));
    assert!(e[2].starts_with("rules.toml:17:6:"));
}

#[test]
fn too_many_listener_entries() {
    let text: String = (0..5)
        .map(|i| {
            fwd(&format!("listen = \"192.168.1.{}\"", i + 1))
                .replace("web-http", &format!("f{i}"))
                .replace("port = 80", "port = \"1-65535\"")
                .replace(":80\"", "\"")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let e = one_error(&text);
    assert_eq!(
        e.lines().next().unwrap(),
        "rules.toml:28:8: error: forward \"f4\": too many listener entries: the forwards up to this one need 327675 (the limit is 262144)"
    );
}

#[test]
fn interface_form_counts_eight_addresses() {
    // 2 x 20000 ports x 8 addresses = 320000 > 262144, though only 40000 ports.
    let a = fwd("")
        .replace("port = 80", "port = \"1-20000\"")
        .replace(":80\"", "\"");
    let b = a.replace("web-http", "b").replace("1-20000", "20001-40000");
    let e = one_error(&format!("{a}\n{b}"));
    assert!(e.contains("need 320000 (the limit is 262144)"), "{e}");
}

#[test]
fn too_many_forwards() {
    let text: String = (1..=1025)
        .map(|i| {
            fwd("")
                .replace("web-http", &format!("f{i}"))
                .replace("port = 80", &format!("port = {i}"))
                .replace(":80\"", "\"")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let e = one_error(&text);
    assert!(
        e.starts_with("rules.toml:6145:1: error: too many forwards: 1025 (the limit is 1024)"),
        "{e}"
    );
}

#[test]
fn too_many_allow_prefixes() {
    let list: Vec<String> = (0..16385u32)
        .map(|i| format!("\"10.{}.{}.{}\"", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let e = one_error(&fwd(&format!("allow = [{}]", list.join(", "))));
    assert!(e.starts_with("rules.toml:6:9: error: forward \"web-http\": too many allow-list entries: the forwards up to this one list 16385 (the limit is 16384 over all forwards)"), "{e}");
}

#[test]
fn warnings_do_not_stop_loading() {
    assert_eq!(
        warnings(&fwd("snat = \"off\"")),
        ["rules.toml:6:8: warning: forward \"web-http\": snat = \"off\" keeps the client's address: replies from 192.168.100.80 must route back through this host, or connections will hang\n  help: use snat = \"auto\" to rewrite the source only when the reply would not come back this way"]
    );
    assert_eq!(
        warnings(&fwd("allow = [\"0.0.0.0/0\", \"1.2.3.4\", \"1.2.3.4/32\"]")),
        [
            "rules.toml:6:10: warning: forward \"web-http\": allow-list entry 0.0.0.0/0 allows every source\n  help: remove `allow` to accept every source, or list the addresses that may connect",
            "rules.toml:6:34: warning: forward \"web-http\": allow-list entry 1.2.3.4/32 is listed twice\n  help: remove the duplicate",
        ]
    );
    assert_eq!(warnings(&fwd("proto = \"udp\"\nmss_clamp = 1200")), ["rules.toml:7:13: warning: forward \"web-http\": mss_clamp has no effect on UDP\n  help: remove it, or use proto = \"tcp\" or \"both\""]);
    assert_eq!(warnings(""), ["rules.toml: warning: no forwards defined: nothing will be forwarded\n  help: add a [[forward]] section"]);
    assert!(warnings("[global]\nsnat_ports = \"100-2000\"\n")
        .iter()
        .any(|w| w.starts_with(
            "rules.toml:2:14: warning: global: snat_ports 100-2000 includes privileged ports"
        )));
}

#[test]
fn inline_forward_tables_are_accepted() {
    let l = load_str(
        FILE,
        "forward = [{ name = \"a\", in = \"eth0\", port = 1, to = \"10.0.0.1\" }]\n",
    )
    .unwrap();
    assert_eq!(l.rules.forwards[0].name, "a");
}

#[test]
fn load_file_names_the_path() {
    let dir = std::env::temp_dir().join(format!("rules-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, fwd_with("port", "port = 0")).unwrap();
    let e = rules::load_file(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:4:8: error:", path.display())),
        "{e}"
    );
    let e = rules::load_file(&dir.join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml: cannot read:"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn path_stack_cannot_carry_snat() {
    assert_eq!(
        one_error(&fwd("snat = \"masquerade\"\npath = \"stack\"")),
        "rules.toml:7:8: error: forward \"web-http\": path = \"stack\" cannot be combined with snat = \"masquerade\": the stack drops packets whose source is one of its own addresses\n  help: use path = \"auto\" (SNATed flows are redirected), or snat = \"off\" / \"auto\""
    );
    assert!(load_str(FILE, &fwd("path = \"stack\"")).is_ok());
    assert!(load_str(FILE, &fwd("snat = \"192.168.100.1\"\npath = \"redirect\"")).is_ok());
    assert_eq!(
        one_error(&fwd("path = \"fast\"")),
        "rules.toml:6:8: error: forward \"web-http\": `fast` is not a valid path\n  help: expected one of: `auto`, `redirect`, `stack`"
    );
}

#[test]
fn interface_sections() {
    let ok = load_str(
        FILE,
        &format!(
            "[interface.eth0]\nattach = \"xdp\"\n[interface.\"eth0.100\"]\nattach = \"tc\"\n\
             [interface.eth1]\nattach = \"tc-legacy\"\n{}",
            fwd("")
        ),
    )
    .unwrap();
    assert_eq!(ok.rules.interfaces["eth0"].attach, rules::AttachMode::Xdp);
    assert_eq!(
        ok.rules.interfaces["eth0.100"].attach,
        rules::AttachMode::Tc
    );
    assert_eq!(
        ok.rules.interfaces["eth1"].attach,
        rules::AttachMode::TcLegacy
    );
    assert_eq!(
        one_error(&format!("[interface.eth0]\nattach = \"fast\"\n{}", fwd(""))),
        "rules.toml:2:10: error: interface eth0: `fast` is not a valid attach\n  help: expected one of: `auto`, `tc`, `xdp`, `tc-legacy`"
    );
    assert!(
        one_error(&format!("[interface.eth0]\nmode = \"xdp\"\n{}", fwd("")))
            .contains("unknown key `mode`"),
    );
    assert!(one_error(&format!(
        "[interface.\"a/b\"]\nattach = \"tc\"\n{}",
        fwd("")
    ))
    .starts_with("rules.toml:1:12: error: interface a/b:"));
}
