//! `cargo xtask image`: the container image of the Kubernetes DaemonSet,
//! built from what Debian provides (no image registry is reachable here).
//!
//! The image is the forwarder binary and the shared libraries `ldd` names
//! (glibc, libgcc_s, the dynamic loader), copied to the same paths of an
//! otherwise empty root file system: no shell, no package manager, nothing
//! the daemon does not run. umoci assembles it into an OCI image layout
//! (one layer, entrypoint `/usr/bin/forwarder`), and skopeo checks the
//! layout and writes the docker-archive tarball that containerd (`ctr
//! images import`, k3s's auto-import directory), docker and podman load.
//!
//! The fact a reader would get wrong: the OCI layout is validated by
//! reading it back the way a runtime does (skopeo inspect, umoci unpack),
//! and the unpacked bundle's own `process.args` are run in a plain chroot,
//! so a missing library or a wrong entrypoint fails here, not on a node.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

use crate::{root, run};

/// The tag the DaemonSet (deploy/kubernetes/daemonset.yaml) runs.
pub fn image_name() -> String {
    format!("localhost/forwarder:{}", env!("CARGO_PKG_VERSION"))
}

#[derive(clap::Args)]
pub struct ImageArgs {
    /// The forwarder binary to package (default: a fresh release build).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Output directory: `oci/` (the layout), `forwarder-VERSION.tar`
    /// (docker-archive), `bundle/` (the unpacked check).
    #[arg(long, default_value = "target/image")]
    out: PathBuf,
}

pub fn image(args: ImageArgs) -> Result<()> {
    crate::setup::install()?;
    let binary = match args.binary {
        Some(b) => b,
        None => {
            crate::build_ebpf()?;
            run(crate::cargo().current_dir(root()).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "forwarder",
            ]))?;
            root().join("target/release/forwarder")
        }
    };
    let out = root().join(args.out);
    let built = build(&binary, &out)?;
    eprintln!(
        "image {}: {} files, {} bytes compressed\n  OCI layout: {}\n  archive:    {}",
        image_name(),
        built.files.len(),
        built.compressed_bytes,
        built.layout.display(),
        built.archive.display()
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let bundle = out.join("bundle");
        let v = chroot_run(&bundle, &unpack(&built, &bundle)?, &["--version"])?;
        eprintln!("  entrypoint in a chroot of the unpacked image: {v}");
    } else {
        eprintln!("  (not root: the chroot check of the entrypoint is skipped)");
    }
    Ok(())
}

/// What `build` made.
pub struct Built {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// `<layout>:<tag>` for umoci and `oci:<layout>:<tag>` for skopeo use
    /// this tag.
    pub tag: String,
    /// The docker-archive tarball.
    pub archive: PathBuf,
    /// Files in the root file system (paths inside the image).
    pub files: BTreeSet<String>,
    pub compressed_bytes: u64,
}

/// Assembles the root file system, the OCI layout and the archive under
/// `out`, and checks the layout with skopeo.
pub fn build(binary: &Path, out: &Path) -> Result<Built> {
    ensure!(binary.is_file(), "no binary at {}", binary.display());
    let rootfs = out.join("rootfs");
    let layout = out.join("oci");
    let tag = env!("CARGO_PKG_VERSION").to_string();
    let archive = out.join(format!("forwarder-{tag}.tar"));
    for p in [&rootfs, &layout, &out.join("bundle")] {
        if p.exists() {
            std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let _ = std::fs::remove_file(&archive);
    let files = rootfs_from(binary, &rootfs)?;

    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["insert", "--image", &image])
        .arg(&rootfs)
        .arg("/"))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64")
            .as_str(),
        "--config.entrypoint",
        "/usr/bin/forwarder",
        "--config.cmd",
        "run",
        "--config.cmd",
        "--rules",
        "--config.cmd",
        "/etc/forwarder/rules.toml",
        "--config.workingdir",
        "/",
        "--config.label",
        &format!("org.opencontainers.image.version={tag}"),
        "--config.label",
        "org.opencontainers.image.title=forwarder",
        "--config.label",
        "org.opencontainers.image.description=eBPF port forwarder and NAT manager",
    ]))?;
    run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;

    // Read back as a consumer would: skopeo parses the index, manifest and
    // config and fails on anything malformed.
    let inspect = skopeo_inspect(&format!("oci:{image}"))?;
    ensure!(inspect["Os"] == "linux", "{inspect}");
    // The manifest itself (skopeo 1.9 has no LayersData): layer sizes.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{image}")])
        .output()
        .context("running skopeo")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&raw.stdout).with_context(|| format!("the manifest of {image}"))?;
    let compressed_bytes = manifest["layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|x| x["size"].as_u64()).sum())
        .unwrap_or(0);
    ensure!(compressed_bytes > 0, "no layer in {manifest}");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{image}"),
        &format!("docker-archive:{}:{}", archive.display(), image_name()),
    ]))?;
    Ok(Built {
        layout,
        tag,
        archive,
        files,
        compressed_bytes,
    })
}

/// `skopeo inspect` of `reference` as JSON.
pub fn skopeo_inspect(reference: &str) -> Result<serde_json::Value> {
    let out = Command::new("skopeo")
        .args(["inspect", reference])
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo inspect {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The binary (debug info stripped: the image carries symbols for
/// backtraces, not DWARF) and every library it loads, at their paths.
fn rootfs_from(binary: &Path, rootfs: &Path) -> Result<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    // Mount points and the directories the daemon uses, empty.
    for d in [
        "etc/forwarder",
        "run/forwarder",
        "sys/fs/bpf",
        "proc",
        "dev",
        "tmp",
    ] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    let bin = rootfs.join("usr/bin/forwarder");
    std::fs::create_dir_all(bin.parent().unwrap_or(rootfs))?;
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&bin))?;
    files.insert("/usr/bin/forwarder".to_string());
    for lib in shared_libraries(binary)? {
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        std::fs::create_dir_all(dest.parent().unwrap_or(rootfs))?;
        // The file's content at the path the loader asks for (a symlink on
        // the build host, such as /lib64/ld-linux-x86-64.so.2, becomes a
        // plain file).
        std::fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
        files.insert(lib.display().to_string());
    }
    Ok(files)
}

/// The absolute paths `ldd` resolves for `binary` (the vDSO has none).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    ensure!(
        out.status.success(),
        "ldd {}: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; "not found" is fatal.
        ensure!(!line.contains("not found"), "ldd: {line}");
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    ensure!(!libs.is_empty(), "ldd found no libraries: {text}");
    Ok(libs)
}

/// Unpacks the image into a runtime bundle at `bundle` (umoci, as a
/// runtime would) and returns the entrypoint the bundle's own
/// `config.json` runs (`process.args[0]`).
pub fn unpack(built: &Built, bundle: &Path) -> Result<String> {
    if bundle.exists() {
        std::fs::remove_dir_all(bundle)?;
    }
    run(Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:{}", built.layout.display(), built.tag),
        ])
        .arg(bundle))?;
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    config["process"]["args"][0]
        .as_str()
        .map(str::to_string)
        .context("no process.args in the bundle")
}

/// Runs `entrypoint` with `args` in a plain chroot of the bundle's root
/// file system, with an empty environment; its stdout.
pub fn chroot_run(bundle: &Path, entrypoint: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("chroot")
        .arg(bundle.join("rootfs"))
        .arg(entrypoint)
        .args(args)
        // Nothing of the build host's environment inside the image; PATH
        // only so that `chroot` itself is found.
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .context("running chroot")?;
    ensure!(
        out.status.success(),
        "{entrypoint} {args:?} in the image failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests;
