//! The import corpus: realistic inputs (modelled on the Proxmox guide,
//! homelab blogs and GitHub scripts) with the rules file and report each
//! must give. Every case directory under `tests/import-corpus/` holds its
//! input files, a `case.toml` saying how it is imported and what exit code
//! and validity it must have, `expected.toml` (the generated file) and
//! `expected.report` (what goes to stderr). Every generated file that is
//! meant to be usable is loaded like `forwarder check` loads a file, and
//! must give exactly the imported forwards.
//!
//! `UPDATE_CORPUS=1 cargo test -p rules --test import_corpus` rewrites the
//! expectations after an intended change; review the diff.

use std::path::{Path, PathBuf};

use rules::import::{self, HostView, Imported, Input, Options, Source};

#[derive(Debug, Default)]
struct Case {
    source: String,
    files: Vec<String>,
    iface: Option<String>,
    iface_nets: Vec<String>,
    ufw: Vec<String>,
    rules: Option<String>,
    exit: u8,
    valid: bool,
}

fn read_case(dir: &Path) -> Case {
    let text = std::fs::read_to_string(dir.join("case.toml"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    let strs = |k: &str| -> Vec<String> {
        doc.get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Case {
        source: doc["source"].as_str().unwrap().to_owned(),
        files: strs("files"),
        iface: doc.get("in").and_then(|v| v.as_str()).map(str::to_owned),
        iface_nets: strs("iface_nets"),
        ufw: strs("ufw"),
        rules: doc.get("rules").and_then(|v| v.as_str()).map(str::to_owned),
        exit: doc.get("exit").and_then(|v| v.as_integer()).unwrap_or(0) as u8,
        valid: doc.get("valid").and_then(|v| v.as_bool()).unwrap_or(true),
    }
}

fn run(dir: &Path, case: &Case) -> Imported {
    let input = |f: &String| Input {
        name: f.clone(),
        text: std::fs::read_to_string(dir.join(f))
            .unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display())),
    };
    let mut inputs: Vec<Input> = case.files.iter().map(input).collect();
    inputs.extend(case.ufw.iter().map(input));
    let source = match case.source.as_str() {
        "iptables" => Source::Iptables,
        "nft" => Source::Nft,
        "ufw" => Source::Ufw,
        "socat" => Source::Socat,
        s => panic!("{}: unknown source {s}", dir.display()),
    };
    if let Some(rules) = &case.rules {
        let text = std::fs::read_to_string(dir.join(rules)).unwrap();
        return import::ufw::patch(rules, &text, &inputs)
            .unwrap_or_else(|d| panic!("{}: {d}", dir.display()));
    }
    let iface_nets = case
        .iface_nets
        .iter()
        .map(|s| {
            let (i, n) = s.split_once('=').unwrap();
            (i.to_owned(), n.parse().unwrap())
        })
        .collect();
    let opts = Options {
        source,
        host: HostView {
            iface_nets,
            default_iface: case.iface.clone(),
            live: None,
        },
        from_running: false,
    };
    import::import(&inputs, &opts)
}

fn check(dir: &Path, file: &str, got: &str, failures: &mut Vec<String>) {
    let path = dir.join(file);
    if std::env::var_os("UPDATE_CORPUS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if want != got {
        failures.push(format!(
            "{} differs (UPDATE_CORPUS=1 rewrites it); got:\n{got}",
            path.display()
        ));
    }
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import-corpus");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("case.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn corpus() {
    let dirs = cases();
    assert!(
        dirs.len() >= 30,
        "the corpus has {} cases, want at least 30",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let case = read_case(dir);
        let imported = run(dir, &case);
        check(dir, "expected.toml", &imported.toml, &mut failures);
        check(dir, "expected.report", &imported.report(), &mut failures);
        if imported.exit_code() != case.exit {
            failures.push(format!(
                "{}: exit {} want {}:\n{}",
                dir.display(),
                imported.exit_code(),
                case.exit,
                imported.report()
            ));
        }
        // The generated file loads like `forwarder check` loads it, to
        // exactly the imported forwards, whenever the input was usable.
        match (imported.validate("generated.toml"), case.valid) {
            (Ok(loaded), true) => {
                if loaded.rules.forwards != imported.rules.forwards {
                    failures.push(format!(
                        "{}: the file loads to other forwards than imported",
                        dir.display()
                    ));
                }
            }
            (Err(d), true) => failures.push(format!(
                "{}: generated file does not load:\n{d}\n{}",
                dir.display(),
                imported.toml
            )),
            (Ok(_), false) => failures.push(format!("{}: marked invalid but loads", dir.display())),
            (Err(_), false) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}
