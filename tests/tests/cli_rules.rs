//! The rules commands through the real binary (no root needed).
use std::{path::Path, process::Command};

use forwarder_tests::daemon::forwarder_bin;

fn forwarder(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(forwarder_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_example_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let (code, out, err) = forwarder(&["check", p.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {out}{err}", p.display());
            assert!(out.contains("ok,"), "{out}");
            n += 1;
        }
    }
    assert!(n >= 2, "both core examples are shipped");
}

#[test]
fn a_bad_file_names_file_line_column_and_rule() {
    let p = std::env::temp_dir().join(format!("fwt-{}-bad.toml", std::process::id()));
    std::fs::write(
        &p,
        "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nport = 0\nto = \"192.168.100.80:80\"\n",
    )
    .unwrap();
    let (code, _out, err) = forwarder(&["check", p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(code, 1);
    let file = p.display().to_string();
    assert!(err.contains(&format!("{file}:4:")), "file:line in {err}");
    assert!(err.contains("\"web\""), "rule name in {err}");
    assert!(err.contains("port"), "what is wrong in {err}");
}

#[test]
fn run_refuses_to_start_on_a_bad_file() {
    let p = std::env::temp_dir().join(format!("fwt-{}-bad-run.toml", std::process::id()));
    std::fs::write(
        &p,
        "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nprot = 80\n",
    )
    .unwrap();
    let (code, _out, err) = forwarder(&["run", "--rules", p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(code, 1);
    assert!(err.contains("not starting"), "{err}");
    assert!(err.contains("did you mean"), "{err}");
}
