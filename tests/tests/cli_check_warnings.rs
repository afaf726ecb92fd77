//! `forwarder check` on a file that loads but is probably not what was
//! meant: an established timeout of seconds, a 16 M flow table, metrics on
//! every address; and the table of forwards shows every setting that
//! changes what a flow does (MSS clamp, path, reject). Offline: these are
//! judgements of the file alone.
use forwarder_tests::{cli::forwarder, topology::TempDir};

const FWD: &str = "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = 80\nto = \"192.168.100.80\"\nmss_clamp = 1200\npath = \"redirect\"\nreject = \"drop\"\n";

#[test]
fn risky_globals_are_warnings_and_the_table_shows_every_setting() {
    let dir = TempDir::new("warn").unwrap();
    let f = dir.file("rules.toml");
    std::fs::write(
        &f,
        format!(
            "[global]\nconntrack_max = 16777216\nmetrics = \"0.0.0.0:9750\"\n\n[global.timeouts]\ntcp_established = \"5s\"\n\n{FWD}"
        ),
    )
    .unwrap();
    let r = forwarder(&["check", "--offline", f.to_str().unwrap()]);
    assert_eq!(r.code, 0, "warnings do not fail the file: {r}");
    let out = r.stdout.replace(&f.display().to_string(), "rules.toml");
    for want in [
        "rules.toml:2:17: warning: global: conntrack_max = 16777216 reserves 7.0 GiB of kernel memory for the flow table",
        "rules.toml:3:11: warning: global: metrics = \"0.0.0.0:9750\" serves the metrics",
        "  help: bind to 127.0.0.1:9750 or to an address of the management network",
        "rules.toml:6:19: warning: global.timeouts: tcp_established = \"5s\" forgets an idle TCP connection",
        "rules.toml: note: not checked against this host (--offline)",
        "rules.toml: ok, 1 forward, 3 warnings, 1 note",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let header = out.lines().next().unwrap();
    assert!(
        header.ends_with("ALLOW  MSS   PATH      REJECT"),
        "{header}"
    );
    let row = out.lines().nth(1).unwrap();
    assert!(row.ends_with("any    1200  redirect  drop"), "{row}");
    // The memory the table sizes reserve, with the flow table first.
    assert!(
        out.contains("kernel memory the table sizes reserve: ")
            && out.contains("FWD_FLOWS          7.0 GiB  33554432 entries, 208 B per entry"),
        "{out}"
    );
}
