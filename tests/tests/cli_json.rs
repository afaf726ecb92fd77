//! `--json` on every command that prints data, and errors as JSON when
//! `--json` is asked: one object on stdout whatever happened, the exit code
//! as documented. Commands without a daemon run here as they are; the
//! daemon's own commands are asked where nothing runs (cli_daemon_exit_json.rs
//! has them against a running daemon).
use forwarder_tests::{cli::forwarder, topology::TempDir};
use serde_json::Value;

const WEB: &str = "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = 80\nto = \"192.168.100.80\"\nsnat = \"off\"\nallow = [\"192.168.1.0/24\"]\n";

/// The error object of a failed command: kind and exit code as expected.
fn error(v: &Value, kind: &str, code: i64) -> Value {
    assert_eq!(v["error"]["kind"], kind, "{v}");
    assert_eq!(v["error"]["exit_code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v["error"].clone()
}

#[test]
fn check_prints_the_forwards_warnings_and_memory_or_the_diagnostics() {
    let dir = TempDir::new("json-check").unwrap();
    let good = dir.file("good.toml");
    std::fs::write(&good, WEB).unwrap();
    let r = forwarder(&["check", "--json", "--offline", good.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r}");
    let v = r.json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["forwards"][0]["name"], "web");
    assert_eq!(v["forwards"][0]["allow"][0], "192.168.1.0/24");
    assert_eq!(v["forwards"][0]["path"], "auto");
    assert_eq!(
        v["warnings"][0]["line"], 7,
        "snat = \"off\" warns on its line: {v}"
    );
    assert!(
        v["notes"][0]["message"]
            .as_str()
            .unwrap()
            .contains("--offline"),
        "{v}"
    );
    // The total is the maps' sum; at the default conntrack_max the flow
    // table (28 MiB) is most of it.
    let maps = v["memory"]["maps"].as_array().unwrap();
    let sum: u64 = maps.iter().map(|m| m["bytes"].as_u64().unwrap()).sum();
    assert_eq!(v["memory"]["total_bytes"].as_u64(), Some(sum), "{v}");
    let flows = maps.iter().find(|m| m["name"] == "FWD_FLOWS").unwrap();
    assert!(flows["bytes"].as_u64().unwrap() > sum / 2, "{v}");
    assert_eq!(v["memory"]["conntrack_max"], 65536, "{v}");
    assert!(v["memory"]["bytes_per_flow"].as_u64().unwrap() > 400, "{v}");

    let bad = dir.file("bad.toml");
    std::fs::write(
        &bad,
        WEB.replace("port = 80", "port = 0")
            .replace("\"off\"", "\"of\""),
    )
    .unwrap();
    let r = forwarder(&["check", "--json", bad.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.is_empty(), "JSON only: {r}");
    let e = error(&r.json(), "invalid_rules", 1);
    let d = e["diagnostics"].as_array().unwrap();
    assert_eq!(d.len(), 2, "both errors: {e}");
    assert_eq!(d[0]["file"], bad.to_str().unwrap());
    assert_eq!(
        (d[0]["line"].as_u64(), d[0]["column"].as_u64()),
        (Some(5), Some(8))
    );
    assert!(
        d[1]["help"].as_str().unwrap().contains("did you mean"),
        "{e}"
    );

    let r = forwarder(&[
        "check",
        "--json",
        dir.file("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{r}");
    assert!(error(&r.json(), "failed", 1)["message"]
        .as_str()
        .unwrap()
        .contains("cannot read"));
}

#[test]
fn explain_prints_the_verdict_and_the_rewrite() {
    let dir = TempDir::new("json-explain").unwrap();
    let f = dir.file("r.toml");
    std::fs::write(&f, WEB).unwrap();
    let ask = |from: &str, to: &str| {
        forwarder(&[
            "explain",
            f.to_str().unwrap(),
            "--json",
            "--in",
            "vmbr0",
            "--from",
            from,
            "--to",
            to,
        ])
    };
    let r = ask("192.168.1.10:40000", "192.168.1.55:80");
    assert_eq!(r.code, 0, "{r}");
    let v = r.json();
    assert_eq!(v["verdict"], "forwarded");
    assert_eq!(v["forward"], "web");
    assert_eq!(v["original"]["after"]["dst"], "192.168.100.80:80");
    assert_eq!(v["reply"]["after"]["src"], "192.168.1.55:80");
    let r = ask("10.1.1.1:40000", "192.168.1.55:80");
    assert_eq!(
        (r.code, r.json()["verdict"].clone()),
        (1, "refused".into()),
        "{r}"
    );
    let r = ask("192.168.1.10:40000", "192.168.1.55:81");
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(r.json()["verdict"], "no_match");
    assert!(r.json()["reasons"][0].as_str().unwrap().contains("not 81"));
}

#[test]
fn import_prints_the_rules_and_what_was_left_out() {
    let dir = TempDir::new("json-import").unwrap();
    let f = dir.file("nat.rules");
    std::fs::write(
        &f,
        "*nat\n-A PREROUTING -i vmbr0 -d 192.168.1.55/32 -p tcp --dport 80 -j DNAT --to-destination 192.168.100.80:80\n-A PREROUTING -i vmbr0 -p tcp --dport 81 -m statistic --mode random --probability 0.5 -j DNAT --to-destination 192.168.100.81:81\nCOMMIT\n",
    )
    .unwrap();
    let r = forwarder(&["import", "iptables", "--json", f.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r}");
    let v = r.json();
    assert_eq!(v["forwards"], 1);
    assert_eq!(v["exit_code"], 1);
    assert!(v["rules"].as_str().unwrap().contains("[[forward]]"));
    let left: Vec<&Value> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "not_translated")
        .collect();
    assert_eq!(left.len(), 1, "{v}");
    assert_eq!(left[0]["line"], 3);
}

#[test]
fn daemon_commands_say_not_running_as_json() {
    let dir = TempDir::new("json-none").unwrap();
    let (pin, run) = (dir.file("pins"), dir.file("run"));
    let (pin, run) = (pin.to_str().unwrap(), run.to_str().unwrap());
    for cmd in [
        &["status", "--json"][..],
        &["reload", "--json"],
        &["diff", "--json"],
        &["conntrack", "list", "--json"],
        &["conntrack", "flush", "--all", "--json"],
    ] {
        let mut args = vec!["--pin-dir", pin, "--run-dir", run];
        args.extend_from_slice(cmd);
        let r = forwarder(&args);
        assert_eq!(r.code, 3, "{cmd:?}: {r}");
        assert!(r.stderr.is_empty(), "{cmd:?}: JSON only: {r}");
        error(&r.json(), "not_running", 3);
    }
    let r = forwarder(&["down", "--pin-dir", pin, "--run-dir", run, "--json"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(r.json()["removed_pins"], 0);
}

#[test]
fn usage_errors_are_json_when_json_was_asked() {
    let r = forwarder(&["check", "--json", "--bogus", "x.toml"]);
    assert_eq!(r.code, 2, "{r}");
    let e = error(&r.json(), "usage", 2);
    assert!(e["detail"].as_str().unwrap().contains("--bogus"), "{e}");
    let r = forwarder(&["conntrack", "flush", "--json"]);
    assert_eq!(r.code, 2, "{r}");
    error(&r.json(), "usage", 2);
    // Without --json clap's own text, and --help is not an error.
    let r = forwarder(&["check", "--bogus", "x.toml"]);
    assert_eq!(r.code, 2);
    assert!(r.stdout.is_empty() && r.stderr.contains("--bogus"), "{r}");
    let r = forwarder(&["status", "--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--json"), "{r}");
}
