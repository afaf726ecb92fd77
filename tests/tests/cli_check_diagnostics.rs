//! `forwarder check` on the mistakes a new user makes, through the binary:
//! an unquoted address says "quote the address" with the corrected line, a
//! zero timeout gets help about that timeout, and a forward with several
//! problems gets all of them at once (path = "stack" with SNAT next to a
//! bad port), each with its line.
use forwarder_tests::{cli::forwarder, topology::TempDir};

fn check(text: &str) -> (i32, String) {
    let dir = TempDir::new("diag").unwrap();
    let f = dir.file("rules.toml");
    std::fs::write(&f, text).unwrap();
    let r = forwarder(&["check", "--offline", f.to_str().unwrap()]);
    let file = f.display().to_string();
    (r.code, r.stderr.replace(&file, "rules.toml"))
}

const HEAD: &str = "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = 80\n";

#[test]
fn an_unquoted_address_says_quote_the_address() {
    let (code, err) = check(&format!("{HEAD}to = 192.168.100.80\n"));
    assert_eq!(code, 1);
    assert!(
        err.starts_with("rules.toml:5:13: error: `to = 192.168.100.80`: quote the address\n  help: TOML strings are quoted: write to = \"192.168.100.80\"\n"),
        "{err}"
    );
    let (_, err) = check(&format!(
        "{HEAD}to = \"192.168.100.80\"\nallow = [10.0.0.0/8, \"1.2.3.4\"]\n"
    ));
    assert!(
        err.contains("quote each address\n  help: TOML strings are quoted: write allow = [\"10.0.0.0/8\", \"1.2.3.4\"]"),
        "{err}"
    );
    let (_, err) = check(&format!(
        "{HEAD}to = \"192.168.100.80\"\nsnat = masquerade\n"
    ));
    assert!(
        err.contains("`snat = masquerade`: quote the value"),
        "{err}"
    );
}

#[test]
fn a_zero_timeout_gets_help_about_that_timeout() {
    let (code, err) = check(&format!(
        "[global.timeouts]\nudp = \"0s\"\n\n{HEAD}to = \"192.168.100.80\"\n"
    ));
    assert_eq!(code, 1);
    assert_eq!(
        err.lines().take(2).collect::<Vec<_>>(),
        [
            "rules.toml:2:7: error: global.timeouts: udp: `0s` is shorter than one second",
            "  help: `udp` is how long a UDP flow that has seen one direction only may stay idle; a timeout cannot be 0 or turned off: use at least \"1s\" (the default is \"30s\")",
        ]
    );
}

#[test]
fn every_problem_of_a_forward_is_reported_at_once() {
    let (code, err) = check(
        "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = 0\nto = \"192.168.100.80\"\nsnat = \"masquerade\"\npath = \"stack\"\nallow = [\"10.0.0.1/8\"]\n",
    );
    assert_eq!(code, 1);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(
        errors,
        [
            "rules.toml:4:8: error: forward \"web\": port 0 is not a valid port",
            "rules.toml:7:8: error: forward \"web\": path = \"stack\" cannot be combined with snat = \"masquerade\": the stack drops packets whose source is one of its own addresses",
            "rules.toml:8:10: error: forward \"web\": allow-list entry 10.0.0.1/8 has host bits set",
        ],
        "{err}"
    );
    assert!(err.ends_with("rules.toml: 3 errors, not loaded\n"), "{err}");
}
