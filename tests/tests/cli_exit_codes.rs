//! Every command's exit codes, as documented in forwarder(8) EXIT STATUS:
//! 0 success or yes, 1 no or invalid, 2 usage, 3 nothing running. The
//! commands that need no daemon run here as they are; the daemon's own
//! commands are asked about directories where nothing runs (exit 3), and
//! cli_daemon_exit_json.rs covers them against a running daemon.
use forwarder_tests::{
    cli::{forwarder, forwarder_in, Ran},
    netns, require_root,
    topology::TempDir,
    Netns,
};

const WEB: &str = "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = 80\nto = \"192.168.100.80\"\nsnat = \"masquerade\"\nallow = [\"192.168.1.0/24\"]\n";

fn expect(code: i32, r: &Ran, what: &str) {
    assert_eq!(r.code, code, "{what}: {r}");
}

#[test]
fn check_is_0_for_a_valid_file_1_for_an_invalid_or_missing_one_2_for_usage() {
    let dir = TempDir::new("exit-check").unwrap();
    let good = dir.file("good.toml");
    std::fs::write(&good, WEB).unwrap();
    let bad = dir.file("bad.toml");
    std::fs::write(&bad, WEB.replace("port = 80", "port = 0")).unwrap();
    expect(
        0,
        &forwarder(&["check", "--offline", good.to_str().unwrap()]),
        "valid",
    );
    expect(
        1,
        &forwarder(&["check", "--offline", bad.to_str().unwrap()]),
        "invalid",
    );
    expect(
        1,
        &forwarder(&["check", dir.file("missing.toml").to_str().unwrap()]),
        "missing",
    );
    expect(2, &forwarder(&["check"]), "no file");
    expect(
        2,
        &forwarder(&["check", "--bogus", good.to_str().unwrap()]),
        "unknown option",
    );
    expect(2, &forwarder(&["frobnicate"]), "unknown command");
    expect(2, &forwarder(&["run"]), "run without --rules");
}

#[test]
fn explain_is_0_only_for_a_forwarded_packet_and_says_which_otherwise() {
    let dir = TempDir::new("exit-explain").unwrap();
    let f = dir.file("r.toml");
    std::fs::write(&f, WEB).unwrap();
    let f = f.to_str().unwrap();
    let ask = |from: &str, to: &str| {
        forwarder(&["explain", f, "--in", "vmbr0", "--from", from, "--to", to])
    };
    let r = ask("192.168.1.10:40000", "192.168.1.55:80");
    expect(0, &r, "forwarded");
    assert!(r.stdout.contains("matches forward \"web\""), "{r}");
    let r = ask("192.168.1.10:40000", "192.168.1.55:81");
    expect(1, &r, "no match");
    assert!(r.stdout.contains("no forward matches"), "{r}");
    let r = ask("10.9.9.9:40000", "192.168.1.55:80");
    expect(1, &r, "refused");
    assert!(r.stdout.contains("refused by forward \"web\""), "{r}");
    expect(
        2,
        &forwarder(&[
            "explain",
            f,
            "--in",
            "vmbr0",
            "--from",
            "x",
            "--to",
            "192.168.1.55:80",
        ]),
        "bad address",
    );
}

#[test]
fn import_is_1_when_nothing_or_not_everything_was_translated() {
    let dir = TempDir::new("exit-import").unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.file(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let all = write(
        "all.rules",
        "*nat\n-A PREROUTING -i vmbr0 -d 192.168.1.55/32 -p tcp --dport 80 -j DNAT --to-destination 192.168.100.80:80\nCOMMIT\n",
    );
    let nothing = write("nothing.rules", "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n");
    let left = write(
        "left.rules",
        "*nat\n-A PREROUTING -i vmbr0 -d 192.168.1.55/32 -p tcp --dport 80 -j DNAT --to-destination 192.168.100.80:80\n-A PREROUTING -i vmbr0 -p tcp --dport 81 -m statistic --mode random --probability 0.5 -j DNAT --to-destination 192.168.100.81:81\nCOMMIT\n",
    );
    let r = forwarder(&["import", "iptables", &all]);
    expect(0, &r, "everything translated");
    let r = forwarder(&["import", "iptables", &nothing]);
    expect(1, &r, "nothing translated");
    assert!(r.stderr.contains("nothing was translated"), "{r}");
    expect(
        1,
        &forwarder(&["import", "iptables", &left]),
        "something left out",
    );
    expect(2, &forwarder(&["import", "bogus"]), "unknown source");
}

#[test]
fn daemon_commands_are_3_when_nothing_runs() {
    let dir = TempDir::new("exit-none").unwrap();
    let pin = dir.file("pins");
    let run = dir.file("run");
    let (pin, run) = (pin.to_str().unwrap(), run.to_str().unwrap());
    let dirs = ["--pin-dir", pin, "--run-dir", run];
    for cmd in [
        &["status"][..],
        &["status", "--ready"],
        &["reload"],
        &["diff"],
        &["conntrack", "list"],
        &["conntrack", "flush", "--all"],
    ] {
        let mut args: Vec<&str> = vec!["--pin-dir", pin, "--run-dir", run];
        args.extend_from_slice(cmd);
        let r = forwarder(&args);
        expect(3, &r, &format!("{cmd:?}"));
        assert!(
            !r.stderr.contains("BPF_OBJ_GET"),
            "a sentence, not a syscall: {r}"
        );
    }
    let mut args = vec!["status"];
    args.extend_from_slice(&dirs);
    let r = forwarder(&args);
    assert!(
        r.stderr
            .contains("the forwarder is not running: no daemon holds")
            && r.stderr.contains("and no dataplane is pinned under"),
        "{r}"
    );
    // `down` with nothing to remove has nothing to fail at.
    let mut args = vec!["down"];
    args.extend_from_slice(&dirs);
    expect(0, &forwarder(&args), "down, nothing pinned");
    expect(
        2,
        &forwarder(&["conntrack", "flush", "--pin-dir", pin]),
        "flush says which flows",
    );
}

#[test]
fn migrate_check_is_0_when_nothing_else_handles_the_traffic_and_1_when_something_does() {
    if !require_root(
        "migrate_check_is_0_when_nothing_else_handles_the_traffic_and_1_when_something_does",
    ) {
        return;
    }
    netns::sweep();
    let ns = Netns::new("exitmc").unwrap();
    let dir = TempDir::new("exit-migrate").unwrap();
    let f = dir.file("r.toml");
    std::fs::write(&f, WEB).unwrap();
    let f = f.to_str().unwrap();
    expect(
        0,
        &forwarder_in(&ns.name, &["migrate-check", "--rules", f]),
        "clean namespace",
    );
    ns.run(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-i",
        "vmbr0",
        "-d",
        "192.168.1.55",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DNAT",
        "--to-destination",
        "192.168.100.80:80",
    ])
    .unwrap();
    let r = forwarder_in(&ns.name, &["migrate-check", "--rules", f]);
    expect(1, &r, "an old DNAT rule still handles port 80");
    let bad = dir.file("bad.toml");
    std::fs::write(&bad, "x = 1\n").unwrap();
    expect(
        1,
        &forwarder_in(
            &ns.name,
            &["migrate-check", "--rules", bad.to_str().unwrap()],
        ),
        "invalid rules",
    );
}
