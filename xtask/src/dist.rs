//! `cargo xtask dist`: the Debian package, `target/dist/forwarder_V-1_ARCH.deb`.
//!
//! Built with `dpkg-deb` from a tree assembled here, not with cargo-deb:
//! every input is a plain file in `packaging/` (unit, conffile, maintainer
//! scripts, control template, copyright) that a Debian admin can read as is;
//! the maintainer scripts are hand-written anyway (removal takes the pinned
//! dataplane down, which no generator does); and dpkg-deb and dpkg-shlibdeps
//! are on every Debian machine, where cargo-deb would be one more tool for
//! `setup` to compile on each fresh machine and CI run. What cargo-deb would
//! add (control fields, md5sums, conffiles, Depends from dpkg-shlibdeps) is
//! the few dozen lines below.
//!
//! The fact a reader gets wrong: the binary in the package is the release
//! build with the eBPF object already inside it (forwarder/build.rs embeds
//! it), so the package needs no LLVM; man pages and completions come from
//! `forwarder-docgen`, which links the same `forwarder::cli::Cli`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};

use crate::{build_ebpf, cargo, root, run};

/// Debian revision of the packaging (the upstream version is the crate's).
const REVISION: &str = "1";

/// `cargo xtask dist`: install the build tools, then build the package.
pub fn dist() -> Result<()> {
    crate::setup::install()?;
    build_package()?;
    Ok(())
}

/// Builds the release binary and the package; returns the .deb's path.
pub fn build_package() -> Result<PathBuf> {
    let t0 = Instant::now();
    build_ebpf()?;
    run(cargo().current_dir(root()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "forwarder",
        "-p",
        "forwarder-docgen",
    ]))?;
    let built = t0.elapsed();

    let version = format!("{}-{REVISION}", env!("CARGO_PKG_VERSION"));
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let dist = root().join("target/dist");
    // dpkg-shlibdeps wants the tree at debian/<package>/ under its cwd.
    let work = dist.join("build");
    let tree = work.join("debian/forwarder");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&tree)?;
    fs::write(work.join("debian/control"), "")?;
    assemble(&tree)?;

    let depends = shlibs_depends(&work)?;
    let control = fs::read_to_string(root().join("packaging/debian/control.in"))?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", &arch)
        .replace("@INSTALLED_SIZE@", &installed_size_kib(&tree)?.to_string())
        .replace("@SHLIBS_DEPENDS@", &depends);
    let unfilled = control
        .match_indices('@')
        .any(|(i, _)| control[i + 1..].starts_with(|c: char| c.is_ascii_uppercase()));
    ensure!(!unfilled, "unfilled @FIELD@ in control:\n{control}");
    let debian = tree.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    fs::write(debian.join("control"), control)?;
    fs::write(debian.join("conffiles"), "/etc/forwarder/rules.toml\n")?;
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &root().join("packaging/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    write_md5sums(&tree)?;

    let deb = dist.join(format!("forwarder_{version}_{arch}.deb"));
    let mut build = Command::new("dpkg-deb");
    build
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb);
    // Reproducible timestamps in the archive: the last commit's.
    if let Ok(epoch) =
        output(
            Command::new("git")
                .current_dir(root())
                .args(["log", "-1", "--format=%ct"]),
        )
    {
        build.env("SOURCE_DATE_EPOCH", epoch);
    }
    run(&mut build)?;
    let size = fs::metadata(&deb)?.len();
    eprintln!(
        "dist: {} ({:.1} MiB) in {:.0?} (release build {:.0?})",
        deb.display(),
        size as f64 / (1 << 20) as f64,
        t0.elapsed(),
        built
    );
    Ok(deb)
}

/// The package's files under `tree` (the layout a Debian admin expects).
fn assemble(tree: &Path) -> Result<()> {
    let src = root();
    let release = src.join("target/release");
    let bin = tree.join("usr/bin/forwarder");
    fs::create_dir_all(bin.parent().unwrap())?;
    // Debian ships stripped binaries; the embedded eBPF object is data in
    // .rodata and survives (`forwarder --version` and the install test
    // load nothing, but the e2e suite runs the same code unstripped).
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
            "-o",
        ])
        .arg(&bin)
        .arg(release.join("forwarder")))?;

    let unit = tree.join("usr/lib/systemd/system/forwarder.service");
    install(&src.join("packaging/forwarder.service"), &unit, 0o644)?;
    install(
        &src.join("packaging/rules.toml"),
        &tree.join("etc/forwarder/rules.toml"),
        0o644,
    )?;

    let doc = tree.join("usr/share/doc/forwarder");
    install(
        &src.join("packaging/debian/copyright"),
        &doc.join("copyright"),
        0o644,
    )?;
    // Uncompressed (unlike Debian's > 4 kB rule): the unit, the man pages
    // and the shipped rules file point at these paths.
    install(&src.join("README.md"), &doc.join("README.md"), 0o644)?;
    install(&src.join("docs/rules.md"), &doc.join("rules.md"), 0o644)?;
    install(&src.join("docs/metrics.md"), &doc.join("metrics.md"), 0o644)?;
    install(
        &src.join("packaging/grafana/forwarder.json"),
        &doc.join("grafana-dashboard.json"),
        0o644,
    )?;
    for ex in ["proxmox.toml", "tailnet-k3s.toml"] {
        install(
            &src.join("rules/examples").join(ex),
            &doc.join("examples").join(ex),
            0o644,
        )?;
    }

    let gen = src.join("target/dist/generated");
    if gen.exists() {
        fs::remove_dir_all(&gen)?;
    }
    run(Command::new(release.join("forwarder-docgen")).arg(&gen))?;
    let man8 = tree.join("usr/share/man/man8");
    fs::create_dir_all(&man8)?;
    let mut pages = 0;
    for page in fs::read_dir(gen.join("man"))? {
        let page = page?.path();
        let dst = man8.join(page.file_name().unwrap());
        install(&page, &dst, 0o644)?;
        run(Command::new("gzip").args(["-9n"]).arg(&dst))?;
        pages += 1;
    }
    ensure!(pages > 1, "forwarder-docgen wrote {pages} man pages");
    let completions = gen.join("completions");
    for (file, dst) in [
        (
            "forwarder",
            "usr/share/bash-completion/completions/forwarder",
        ),
        ("_forwarder", "usr/share/zsh/vendor-completions/_forwarder"),
        (
            "forwarder.fish",
            "usr/share/fish/vendor_completions.d/forwarder.fish",
        ),
    ] {
        install(&completions.join(file), &tree.join(dst), 0o644)?;
    }
    Ok(())
}

/// Copies `src` to `dst` (creating directories) with `mode`.
fn install(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dst.parent().unwrap())?;
    fs::copy(src, dst).with_context(|| format!("{} -> {}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Depends on the shared libraries the binary links (libc6, libgcc-s1),
/// with the versions dpkg-shlibdeps derives from the symbols it uses.
fn shlibs_depends(work: &Path) -> Result<String> {
    let out = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(work)
            .args(["-O", "-edebian/forwarder/usr/bin/forwarder"]),
    )?;
    match out.strip_prefix("shlibs:Depends=") {
        Some(d) if !d.is_empty() => Ok(d.to_string()),
        _ => bail!("unexpected dpkg-shlibdeps output: {out}"),
    }
}

/// Installed-Size as dpkg-gencontrol computes it: KiB per file, rounded up,
/// plus one per directory.
fn installed_size_kib(tree: &Path) -> Result<u64> {
    let mut kib = 0;
    for entry in walk(tree)? {
        let meta = fs::symlink_metadata(&entry)?;
        kib += if meta.is_dir() {
            1
        } else {
            meta.len().div_ceil(1024)
        };
    }
    Ok(kib)
}

/// DEBIAN/md5sums for every regular file (what `dpkg --verify` checks).
fn write_md5sums(tree: &Path) -> Result<()> {
    let mut files: Vec<String> = walk(tree)?
        .into_iter()
        .filter(|p| p.is_file() && !p.starts_with(tree.join("DEBIAN")))
        .map(|p| p.strip_prefix(tree).unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let out = Command::new("md5sum")
        .current_dir(tree)
        .args(&files)
        .output()?;
    ensure!(out.status.success(), "md5sum failed");
    fs::write(tree.join("DEBIAN/md5sums"), out.stdout)?;
    Ok(())
}

/// Every path under `dir` (not `dir` itself), depth first.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        out.push(path.clone());
        if fs::symlink_metadata(&path)?.is_dir() {
            out.extend(walk(&path)?);
        }
    }
    Ok(out)
}

/// A command's trimmed stdout; fails when it fails.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
