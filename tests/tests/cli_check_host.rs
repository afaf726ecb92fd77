//! `forwarder check` on the host the file is for, read-only: a fixed listen
//! address no interface holds is a warning, an interface that does not
//! exist is a note, and netfilter FORWARD rules (iptables or nft) get a
//! note that flows on the redirect path skip them, pointing to `allow`.
//! Each case in a fresh network namespace, whose firewall the test writes.
use forwarder_tests::{cli::forwarder_in, netns, require_root, topology::TempDir, Netns};

fn forward(listen: &str, extra: &str) -> String {
    format!(
        "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nlisten = \"{listen}\"\nport = 80\nto = \"192.168.100.80\"\n{extra}"
    )
}

/// A namespace with vmbr0 192.168.1.55/24.
fn host(label: &str) -> Netns {
    let ns = Netns::new(label).unwrap();
    ns.ip(&["link", "add", "vmbr0", "type", "bridge"]).unwrap();
    ns.ip(&["link", "set", "vmbr0", "up"]).unwrap();
    ns.addr("vmbr0", "192.168.1.55/24").unwrap();
    ns
}

/// `check FILE` in `ns`; stdout with the file's path shortened.
fn check(ns: &Netns, dir: &TempDir, text: &str) -> String {
    let f = dir.file("rules.toml");
    std::fs::write(&f, text).unwrap();
    let r = forwarder_in(&ns.name, &["check", f.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r}");
    r.stdout.replace(&f.display().to_string(), "rules.toml")
}

#[test]
fn a_listen_address_no_interface_holds_is_a_warning() {
    if !require_root("a_listen_address_no_interface_holds_is_a_warning") {
        return;
    }
    netns::sweep();
    let ns = host("chkaddr");
    let dir = TempDir::new("chk-addr").unwrap();
    let out = check(&ns, &dir, &forward("192.168.1.99", ""));
    assert!(
        out.contains("rules.toml:4:10: warning: forward \"web\": listen address 192.168.1.99 is not assigned to any interface of this host (vmbr0 has 192.168.1.55): the forward listens nowhere here until it is"),
        "{out}"
    );
    let out = check(&ns, &dir, &forward("192.168.1.55", ""));
    assert!(
        out.ends_with("rules.toml: ok, 1 forward, 0 warnings\n"),
        "{out}"
    );
    let out = check(
        &ns,
        &dir,
        &forward("192.168.1.55", "").replace("vmbr0", "vmbr7"),
    );
    assert!(
        out.contains("note: forward \"web\": interface vmbr7 does not exist on this host"),
        "{out}"
    );
}

#[test]
fn forward_rules_get_a_note_that_the_redirect_path_skips_them() {
    if !require_root("forward_rules_get_a_note_that_the_redirect_path_skips_them") {
        return;
    }
    netns::sweep();
    let dir = TempDir::new("chk-fw").unwrap();
    let file = forward("192.168.1.55", "");

    let ipt = host("chkipt");
    assert!(
        !check(&ipt, &dir, &file).contains("note:"),
        "a fresh namespace filters nothing"
    );
    ipt.run(&["iptables", "-P", "FORWARD", "DROP"]).unwrap();
    ipt.run(&["iptables", "-A", "FORWARD", "-i", "vmbr0", "-j", "ACCEPT"])
        .unwrap();
    let out = check(&ipt, &dir, &file);
    assert!(
        out.contains("rules.toml: note: this host filters forwarded packets (iptables FORWARD: policy DROP, 1 rule), but flows on the redirect path skip netfilter entirely: those rules, the Proxmox firewall and `conntrack -L` do not see them"),
        "{out}"
    );
    assert!(
        out.contains("help: use `allow` as each forward's own firewall"),
        "{out}"
    );
    assert!(
        out.ends_with("ok, 1 forward, 0 warnings, 1 note\n"),
        "{out}"
    );
    // Forwards that all take the stack path meet netfilter: no note.
    let stack = forward("192.168.1.55", "path = \"stack\"\n");
    assert!(!check(&ipt, &dir, &stack).contains("note:"), "path = stack");

    let nft = host("chknft");
    nft.run(&["nft", "add", "table", "inet", "fw"]).unwrap();
    nft.run(&[
        "nft",
        "add",
        "chain",
        "inet",
        "fw",
        "screen",
        "{ type filter hook forward priority 0; policy drop; }",
    ])
    .unwrap();
    let out = check(&nft, &dir, &file);
    assert!(
        out.contains(
            "this host filters forwarded packets (nft inet fw chain screen: policy drop, 0 rules)"
        ),
        "{out}"
    );
}

/// netfilter's count of the namespace `check` runs in.
fn conntrack_count(ns: &Netns) -> u64 {
    ns.output(&["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_netfilter_count_above_conntrack_max_gets_a_note() {
    if !require_root("a_netfilter_count_above_conntrack_max_gets_a_note") {
        return;
    }
    netns::sweep();
    let dir = TempDir::new("chk-ct").unwrap();
    let ns = host("chkct");
    // A rule that needs conntrack makes netfilter track this namespace's
    // packets; unanswered UDP entries then live for the UDP timeout, an
    // hour here so that a slow machine cannot see them expire.
    ns.run(&[
        "iptables",
        "-A",
        "OUTPUT",
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "ACCEPT",
    ])
    .unwrap();
    ns.sysctl("net.netfilter.nf_conntrack_udp_timeout", "3600")
        .unwrap();
    for port in 9001..=9006 {
        ns.run(&["bash", "-c", &format!("echo x > /dev/udp/127.0.0.1/{port}")])
            .unwrap();
    }
    let count = conntrack_count(&ns);
    assert!(count >= 6, "six UDP flows tracked: {count}");

    let file = |max: u64| {
        format!(
            "[global]\nconntrack_max = {max}\n\n{}",
            forward("192.168.1.55", "")
        )
    };
    let out = check(&ns, &dir, &file(4));
    assert!(
        out.contains(&format!(
            "rules.toml: note: netfilter tracks {count} connections on this host now (its limit here: "
        )),
        "{out}"
    );
    assert!(
        out.contains("more than the flow table's conntrack_max = 4: if the forwards carry many of them, a full table evicts flows that have not completed their handshake and refuses new ones (drop_table_full)"),
        "{out}"
    );
    assert!(
        out.contains("help: raise [global] conntrack_max; each flow reserves "),
        "{out}"
    );
    // A table that holds them: no note.
    let out = check(&ns, &dir, &file(count + 100));
    assert!(!out.contains("netfilter tracks"), "{out}");
    assert!(!check(&ns, &dir, &forward("192.168.1.55", "")).contains("note:"));
}
