//! `bench_prog --primitives` runs end to end and proves its own paths: it
//! exits non-zero unless every production run was redirected and every
//! primitive call returned what its piece expects (a lookup that must
//! hit hit, an insert took, a FIB lookup succeeded...). Checked here: it
//! succeeds, says so, and reports every piece and split the notes
//! (docs/PERFORMANCE-NOTES.md, "Where the remaining time goes") quote. No
//! timing is asserted: this machine is shared.
use std::process::Command;

use forwarder_tests::require_root;
use serde_json::Value;

#[test]
fn primitives_run_and_prove_their_paths() {
    if !require_root("bench_prog_primitives") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bench_prog"))
        .args(["--primitives", "--batches", "3", "--creates", "5"])
        .output()
        .expect("bench_prog runs");
    assert!(
        out.status.success(),
        "bench_prog --primitives failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["unexpected_results"], 0);
    let names: Vec<&str> = v["established"]
        .as_array()
        .expect("established pieces")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in [
        "empty",
        "iface_lookup",
        "flow_lookup",
        "key16_lookup",
        "csum_pair",
        "redirect_neigh",
        "fib_lookup",
        "sk_lookup_tcp",
        "nat_helpers",
    ] {
        assert!(names.contains(&want), "no piece {want} in {names:?}");
    }
    for p in v["established"].as_array().unwrap() {
        assert_eq!(p["samples"], 3, "{}: one sample per batch", p["name"]);
    }
    assert_eq!(v["production"]["create"]["samples"], 5);
    assert!(v["nat_split"]["program_body"].is_i64());
    assert!(v["cold"]["nat_l1_cold"]["median"].is_u64());
    assert!(v["bpf_stats"]["nat_run_time_ns_per_run"].is_f64());
}
