//! Importers on the seed inputs, against expected rules files in
//! `tests/golden/`. Run with `UPDATE_GOLDEN=1` to rewrite the expectations
//! after an intended change, and review the diff.

use std::path::{Path, PathBuf};

use rules::{
    import::{iptables, socat, Imported},
    load_str, Listen, Snat,
};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(golden_dir().join(name)).unwrap()
}

fn check_golden(expected_file: &str, got: &str) {
    let path = golden_dir().join(expected_file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == got,
        "{expected_file} differs (UPDATE_GOLDEN=1 rewrites it); got:\n{got}"
    );
}

/// The generated file loads, without errors, to exactly the imported model.
fn assert_loads_back(imported: &Imported) {
    let loaded = load_str("generated.toml", &imported.toml)
        .unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    assert_eq!(loaded.rules, imported.rules);
}

fn seed002_summary(imported: &Imported) -> Vec<String> {
    imported
        .rules
        .forwards
        .iter()
        .map(|f| {
            format!(
                "{} {} {}:{} -> {} snat {}",
                f.name, f.iface, f.listen, f.ports, f.target, f.snat
            )
        })
        .collect()
}

const SEED002: [&str; 4] = [
    "vmbr0-80 vmbr0 interface:80 -> 192.168.100.80 snat 192.168.100.1",
    "vmbr0-443 vmbr0 interface:443 -> 192.168.100.80 snat 192.168.100.1",
    "vmbr0-6443 vmbr0 interface:6443 -> 192.168.100.50:6443 snat 192.168.100.1",
    "vmbr0-2222 vmbr0 interface:2222 -> 192.168.100.81:22 snat 192.168.100.1",
];

#[test]
fn iptables_save_of_seed_002() {
    let imported = iptables::import("seed002.iptables-save", &read("seed002.iptables-save"));
    assert_eq!(seed002_summary(&imported), SEED002);
    // Only the VMs' own internet masquerade is left, with its reason.
    assert_eq!(imported.skipped.len(), 1, "{:#?}", imported.skipped);
    assert_eq!(imported.skipped[0].line, 15);
    assert_loads_back(&imported);
    check_golden("seed002.iptables-save.toml", &imported.toml);
}

#[test]
fn iptables_commands_of_seed_002() {
    let imported = iptables::import("seed002-commands.sh", &read("seed002-commands.sh"));
    assert_eq!(seed002_summary(&imported), SEED002);
    let skipped: Vec<(usize, &str)> = imported
        .skipped
        .iter()
        .map(|s| (s.line, s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [(18, "not an iptables rule"), (19, "not an iptables rule")]
    );
    assert_loads_back(&imported);
    check_golden("seed002-commands.sh.toml", &imported.toml);
}

fn immich() -> Vec<socat::Input> {
    vec![socat::Input {
        name: "immich-proxy.service".into(),
        text: read("immich-proxy.service"),
    }]
}

#[test]
fn socat_unit_of_seed_000_with_interface() {
    let imported = socat::import(&immich(), Some("tailscale0"));
    assert!(imported.skipped.is_empty(), "{:#?}", imported.skipped);
    let f = &imported.rules.forwards[0];
    assert_eq!(f.name, "immich-proxy");
    assert_eq!(f.description.as_deref(), Some("Immich Socat Proxy"));
    assert_eq!(f.iface, "tailscale0");
    assert_eq!(f.listen, Listen::Addr("100.118.5.68".parse().unwrap()));
    assert_eq!(f.ports.to_string(), "8080");
    assert_eq!(f.target.to_string(), "10.43.126.136:80");
    assert_eq!(f.snat, Snat::Auto);
    assert_loads_back(&imported);
    check_golden("immich-proxy.service.toml", &imported.toml);
}

#[test]
fn socat_unit_of_seed_000_without_interface_asks_for_it() {
    let imported = socat::import(&immich(), None);
    check_golden("immich-proxy.service.no-in.toml", &imported.toml);
    let errors = imported.validate("immich.toml").unwrap_err();
    let rendered = errors.to_string();
    assert!(
        rendered.starts_with("immich.toml:10:6: error: forward \"immich-proxy\": `in` is empty"),
        "{rendered}"
    );
    assert!(imported.toml.contains("probably tailscale0"));
}
