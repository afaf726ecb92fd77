//! `forwarder doctor` on this machine's kernel, through the real binary:
//! every probe runs without failing, the object loads and attaches every
//! way, the verdict is "can run", and the scratch namespace it probes in
//! leaves nothing behind. (What it says on older kernels is checked by
//! `cargo xtask vm-test --exec "forwarder doctor"`.)
use std::process::Command;

use forwarder_tests::{daemon::forwarder_bin, require_root};

fn links() -> String {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn doctor_probes_this_kernel_and_leaves_nothing_behind() {
    if !require_root("doctor_probes_this_kernel_and_leaves_nothing_behind") {
        return;
    }
    let out = Command::new(forwarder_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = v["checks"].as_array().expect("checks");
    let failed: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["status"] == "error" || c["status"] == "skipped")
        .collect();
    assert!(failed.is_empty(), "probes that did not run: {failed:#?}");
    let f = &v["features"];
    for feature in [
        "root",
        "bpffs",
        "object_needs_met",
        "object_loads",
        "netlink_tc",
    ] {
        assert_eq!(f[feature], true, "{feature}: {f:#}");
    }
    // The object's own needs were read from it, not from a list: both
    // program types and the flow table are there.
    for name in [
        "program fwd_ingress (sched_cls)",
        "program fwd_xdp (xdp)",
        "map hash",
    ] {
        assert!(
            checks.iter().any(|c| c["name"] == name),
            "no check {name:?} in {text}"
        );
    }
    assert!(
        out.status.success(),
        "doctor found something fatal on this kernel: {text}"
    );
    assert!(
        !links().contains("fwdprobe"),
        "the probe's veth pair leaked into this namespace"
    );

    // The table says the same, with a verdict.
    let out = Command::new(forwarder_bin())
        .args(["doctor", "--quick"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(table.starts_with("CHECK"), "{table}");
    assert!(table.contains("the forwarder can run here"), "{table}");
}
