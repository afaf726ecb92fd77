//! Every shipped example must load without errors.

use std::path::Path;

#[test]
fn every_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let loaded = rules::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!loaded.rules.forwards.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "examples missing");
}

#[test]
fn proxmox_example_is_seed_002() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/proxmox.toml");
    let loaded = rules::load_file(&path).unwrap();
    assert!(loaded.warnings.is_empty(), "{}", loaded.warnings);
    let got: Vec<String> = loaded
        .rules
        .forwards
        .iter()
        .map(|f| {
            format!(
                "{} {}:{} -> {} snat {}",
                f.iface, f.listen, f.ports, f.target, f.snat
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "vmbr0 192.168.1.55:80 -> 192.168.100.80:80 snat 192.168.100.1",
            "vmbr0 192.168.1.55:443 -> 192.168.100.80:443 snat 192.168.100.1",
            "vmbr0 192.168.1.55:6443 -> 192.168.100.50:6443 snat 192.168.100.1",
            "vmbr0 192.168.1.55:2222 -> 192.168.100.81:22 snat 192.168.100.1",
        ]
    );
}

#[test]
fn tailnet_example_is_seed_000() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tailnet-k3s.toml");
    let loaded = rules::load_file(&path).unwrap();
    assert!(loaded.warnings.is_empty(), "{}", loaded.warnings);
    let immich = loaded.rules.forward("immich").unwrap();
    assert_eq!(immich.iface, "tailscale0");
    assert_eq!(immich.ports.to_string(), "8080");
    assert_eq!(immich.target.to_string(), "10.43.126.136:80");
    // The IPv6 listener on tailscale0 too, to the IPv4 ClusterIP (NAT64).
    assert_eq!(immich.family, rules::Family::Both);
    assert_eq!(
        immich.allow,
        vec![
            "100.101.92.95/32".parse().unwrap(),
            "fd7a:115c:a1e0::655c:5f5f/128".parse().unwrap()
        ]
    );
    let nodeports = loaded.rules.forward("nodeports").unwrap();
    assert_eq!(nodeports.ports.to_string(), "30000-32767");
    assert_eq!(nodeports.proto, rules::Proto::Both);
}
