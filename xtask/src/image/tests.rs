//! `cargo xtask image` end to end, from the debug binary the test suite
//! builds: the OCI layout reads back valid with the tools' own parsers, the
//! archive carries the tag the DaemonSet runs, the root file system holds
//! the binary and its libraries and nothing else, and the entrypoint runs
//! in a plain chroot of the unpacked image.
use super::*;

/// A directory removed on drop.
struct Out(PathBuf);

impl Drop for Out {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_image_layout_is_valid_and_its_entrypoint_runs() -> Result<()> {
    // umoci unpack keeps file owners and chroot needs root.
    if !forwarder_tests::require_root("the_image_layout_is_valid_and_its_entrypoint_runs") {
        return Ok(());
    }
    let binary = std::env::var_os("FORWARDER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/forwarder"));
    ensure!(
        binary.is_file(),
        "no forwarder binary at {} (cargo build first)",
        binary.display()
    );
    let out = Out(std::env::temp_dir().join(format!("fwt-{}-image", std::process::id())));
    let built = build(&binary, &out.0)?;

    // The OCI layout, as the image-spec defines it and the tools read it.
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(built.layout.join("oci-layout"))?)?;
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(built.layout.join("index.json"))?)?;
    let manifests = index["manifests"]
        .as_array()
        .context("index.json manifests")?;
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let inspect = skopeo_inspect(&format!("oci:{}:{}", built.layout.display(), built.tag))?;
    assert_eq!(inspect["Architecture"], "amd64", "{inspect}");
    assert_eq!(
        inspect["Layers"].as_array().map(Vec::len),
        Some(1),
        "{inspect}"
    );
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let stat = Command::new("umoci")
        .args(["stat", "--json", "--image"])
        .arg(format!("{}:{}", built.layout.display(), built.tag))
        .output()?;
    assert!(
        stat.status.success(),
        "{}",
        String::from_utf8_lossy(&stat.stderr)
    );

    // The archive containerd imports names the image the DaemonSet runs.
    let archive = skopeo_inspect(&format!("docker-archive:{}", built.archive.display()))?;
    assert!(archive["Digest"].is_string(), "{archive}");
    let config = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", built.archive.display()))
        .output()?;
    let config: serde_json::Value = serde_json::from_slice(&config.stdout)?;
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/forwarder"])
    );
    let manifest = Command::new("tar")
        .arg("-xOf")
        .arg(&built.archive)
        .arg("manifest.json")
        .output()?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout)?;
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!([image_name()]));

    // Nothing but the binary and what it loads: no shell in the image.
    assert!(built.files.contains("/usr/bin/forwarder"));
    assert!(
        built.files.iter().any(|f| f.contains("libc.so.6")),
        "{:?}",
        built.files
    );
    assert!(built.files.len() <= 6, "{:?}", built.files);

    // The unpacked image runs: the version, then a real command.
    let bundle = out.0.join("bundle");
    let entrypoint = unpack(&built, &bundle)?;
    assert_eq!(entrypoint, "/usr/bin/forwarder");
    let version = chroot_run(&bundle, &entrypoint, &["--version"])?;
    assert_eq!(version, format!("forwarder {}", env!("CARGO_PKG_VERSION")));
    assert!(!bundle.join("rootfs/bin/sh").exists());
    let rules = std::fs::read_to_string(root().join("rules/examples/proxmox.toml"))?;
    std::fs::write(bundle.join("rootfs/etc/forwarder/rules.toml"), rules)?;
    let table = chroot_run(
        &bundle,
        &entrypoint,
        &["check", "/etc/forwarder/rules.toml"],
    )?;
    assert!(table.contains("ingress-http"), "{table}");
    Ok(())
}
