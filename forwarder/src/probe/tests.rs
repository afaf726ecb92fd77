//! What the daemon says when it refuses to start: only the missing pieces
//! that stop it, each named, on one line.
use super::*;

fn check(c: &mut Checks, name: &str, answer: Result<bool, String>, impact: Impact, advice: &str) {
    c.add(name, answer, impact, "", advice);
}

#[test]
fn the_refusal_names_each_fatal_gap_on_one_line_and_nothing_else() {
    let mut c = Checks {
        kernel: "5.10.0-46-amd64".into(),
        list: Vec::new(),
    };
    check(&mut c, "kernel", Ok(true), Impact::Info, "");
    check(
        &mut c,
        "helper bpf_ktime_get_coarse_ns (sched_cls)",
        Ok(false),
        Impact::Fatal,
        "sched_cls programs cannot call bpf_ktime_get_coarse_ns (Linux 5.11): the sched_cls programs cannot load",
    );
    check(&mut c, "TCX (tc links)", Ok(false), Impact::Info, "no TCX");
    check(
        &mut c,
        "map batch ops",
        Ok(false),
        Impact::Degraded,
        "no batch",
    );
    check(
        &mut c,
        "map lru_hash",
        Err("EPERM".into()),
        Impact::Fatal,
        "no lru_hash maps",
    );
    c.skip("XDP", Impact::Degraded, "not probed");
    let p = Probe {
        kernel: c.kernel.clone(),
        features: Features::default(),
        checks: c.list,
    };
    let r = p.refusal().expect("fatal gaps refuse the start");
    assert!(!r.contains('\n'), "{r}");
    assert!(r.starts_with("not starting: kernel 5.10.0-46-amd64: sched_cls programs cannot call bpf_ktime_get_coarse_ns (Linux 5.11)"), "{r}");
    assert!(
        r.contains("; kernel 5.10.0-46-amd64: no lru_hash maps"),
        "a failed probe counts: {r}"
    );
    assert!(
        !r.contains("TCX") && !r.contains("batch"),
        "only what stops the daemon: {r}"
    );

    let fine = Probe {
        checks: p
            .checks
            .into_iter()
            .filter(|c| c.impact != Impact::Fatal)
            .collect(),
        ..p
    };
    assert_eq!(fine.refusal(), None);
}
