//! IPv6 and dual-stack forwards through the real binary's offline
//! commands: `check` shows them, `explain` takes IPv6 `--from/--to`, and
//! NAT46 (IPv4 clients of an IPv6 target) is not in this release, so
//! `check` warns and `run` refuses such forwards at the same place, instead
//! of installing listeners that would never match; NAT66 and NAT64
//! forwards run.
use std::process::Command;

use forwarder_tests::daemon::forwarder_bin;

fn forwarder(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(forwarder_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DUAL: &str = r#"
[[forward]]
name = "immich"
in = "tailscale0"
family = "both"
port = 8080
to = "10.43.126.136:80"
allow = ["100.101.92.95", "fd7a:115c:a1e0::/48"]

[[forward]]
name = "web6"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 80
to = "[fd00:100::80]:80"
snat = "fd00:100::1"
"#;

/// A NAT46 forward: its fixed IPv4 listen address is line 5, column 10.
const NAT46: &str = r#"
[[forward]]
name = "v6vm"
in = "vmbr0"
listen = "192.168.1.55"
port = 443
to = "[fd00:100::443]:443"
"#;

struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(label: &str, text: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("fwt-{}-{label}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn check_lists_dual_stack_and_ipv6_forwards() {
    let f = TempFile::new("dual-check", DUAL);
    let (code, out, err) = forwarder(&["check", f.path()]);
    assert_eq!(code, 0, "{out}{err}");
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name} in {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        row("immich"),
        [
            "immich",
            "tailscale0",
            "interface",
            "(IPv4+IPv6)",
            "tcp",
            "8080",
            "10.43.126.136:80",
            "auto",
            "100.101.92.95,fd7a:115c:a1e0::/48",
            "auto",
            "auto",
            "rst"
        ]
    );
    assert_eq!(
        row("web6"),
        [
            "web6",
            "vmbr0",
            "2001:db8:1::55",
            "tcp",
            "80",
            "[fd00:100::80]:80",
            "fd00:100::1",
            "any",
            "auto",
            "auto",
            "rst"
        ]
    );
}

#[test]
fn explain_takes_ipv6_endpoints() {
    let f = TempFile::new("dual-explain", DUAL);
    let (code, out, err) = forwarder(&[
        "explain",
        f.path(),
        "--in",
        "tailscale0",
        "--from",
        "[fd7a:115c:a1e0::9]:40000",
        "--to",
        "[fd7a:115c:a1e0::1]:8080",
        "--iface-addr",
        "tailscale0=fd7a:115c:a1e0::1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("matches forward \"immich\""), "{out}");
    assert!(out.contains("becomes  <egress interface's address toward 10.43.126.136>:<port from 1024-32767> -> 10.43.126.136:80"), "{out}");
    assert!(out.contains("(NAT64, RFC 7915)"), "{out}");
}

#[test]
fn run_refuses_nat46_forwards_and_only_those() {
    let f = TempFile::new("dual-run", &format!("{NAT46}{DUAL}"));
    let (code, _out, err) = forwarder(&["run", "--rules", f.path()]);
    assert_eq!(code, 1, "{err}");
    // The NAT46 forward by file, line and column (the value that makes it
    // translate), in check's words, and nothing was started; the NAT64
    // and NAT66 forwards are not named.
    let file = f.path();
    assert!(
        err.contains(&format!(
            "{file}:5:10: error: forward \"v6vm\": NAT46 is not in this release"
        )),
        "{err}"
    );
    assert!(!err.contains("\"web6\""), "{err}");
    assert!(!err.contains("\"immich\""), "{err}");
    assert!(
        err.contains("not loaded: 1 forward needs NAT46, which is not in this release"),
        "{err}"
    );
    assert!(err.contains("help: keep this traffic in socat"), "{err}");
    assert!(err.contains("not starting"), "{err}");
}

#[test]
fn check_warns_at_the_same_places_that_run_refuses() {
    let f = TempFile::new("dual-warn", &format!("{NAT46}{DUAL}"));
    let (code, out, err) = forwarder(&["check", f.path()]);
    assert_eq!(code, 0, "{out}{err}");
    let file = f.path();
    let all = format!("{out}{err}");
    assert!(all.contains(&format!("{file}:5:10: warning: forward \"v6vm\": NAT46 is not in this release: the dataplane translates IPv6 clients to an IPv4 target (NAT64) but not IPv4 clients to an IPv6 target")), "{all}");
    assert!(!all.contains("forward \"immich\": NAT"), "{all}");
    assert!(!all.contains("forward \"web6\": NAT"), "{all}");
    assert!(all.contains("ok, 3 forwards, 1 warning"), "{all}");
}
