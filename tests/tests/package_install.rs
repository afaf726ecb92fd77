//! The Debian package (`cargo xtask dist`, issue 15) installed into a clean
//! root with the real dpkg, as an admin would get it:
//!
//! * it installs with its declared dependencies checked against the
//!   versions this Debian has (the root's dpkg database holds only libc6,
//!   libgcc-s1 and init-system-helpers, copied from the host's), and the
//!   maintainer scripts enable the unit inside the root, never on the host;
//! * the installed binary runs (`--version`), `forwarder check` accepts the
//!   shipped rules file, which forwards nothing, and its commented example,
//!   uncommented, is a valid forward;
//! * `systemd-analyze verify` passes on the installed unit (Type=notify,
//!   the binary at its ExecStart= path, the man pages Documentation= names);
//! * a man page for `forwarder` and every subcommand the installed binary
//!   lists, rendering without groff warnings; bash completion completes
//!   commands and options; LICENSE terms in the copyright file;
//! * an admin's edit of the conffile survives a reinstall (upgrade), and a
//!   purge leaves no file behind.
//!
//! `cargo xtask test` builds the package before the test run and passes its
//! path in FORWARDER_DEB (building a release binary inside a test would
//! take minutes). dpkg runs with its own admin directory and
//! --force-script-chrootless: the root has no shell to chroot into, so the
//! maintainer scripts run from the host with DPKG_ROOT set, which is exactly
//! the path that must not touch the running system.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{ensure, Context, Result};
use forwarder_tests::{require_root, topology::TempDir};

fn deb() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FORWARDER_DEB") {
        return Some(PathBuf::from(p));
    }
    if std::env::var_os("FORWARDER_REQUIRE_ROOT_TESTS").is_some() {
        panic!("FORWARDER_DEB is not set: run the suite with `cargo xtask test`, which builds the package");
    }
    eprintln!("\n!!!! SKIPPED package_install: FORWARDER_DEB not set (`cargo xtask dist`, then FORWARDER_DEB=target/dist/forwarder_*.deb) !!!!\n");
    None
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(cmd: &mut Command) -> Result<Output> {
    let o = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    ensure!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}",
        o.status,
        text(&o)
    );
    Ok(o)
}

/// dpkg operating on the clean root `root` with its own database.
fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .arg("--force-script-chrootless");
    c
}

/// An empty root whose dpkg knows only the packages the forwarder may
/// depend on, at the host's versions.
fn clean_root(dir: &TempDir) -> Result<PathBuf> {
    let root = dir.file("root");
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info"))?;
    std::fs::create_dir_all(admin.join("updates"))?;
    let base = ["libc6", "libgcc-s1", "init-system-helpers"];
    let status = ok(Command::new("dpkg-query").arg("-s").args(base))?;
    std::fs::write(admin.join("status"), &status.stdout)?;
    // Empty file lists (their files are the host's, not the root's).
    let arch = String::from_utf8(ok(Command::new("dpkg").arg("--print-architecture"))?.stdout)?;
    for p in base {
        std::fs::write(admin.join(format!("info/{p}.list")), "")?;
        std::fs::write(admin.join(format!("info/{p}:{}.list", arch.trim())), "")?;
    }
    Ok(root)
}

/// `forwarder` and the name path of every subcommand the binary lists in
/// its help, recursively ("conntrack list", ...).
fn commands(bin: &Path, path: &[String]) -> Result<Vec<Vec<String>>> {
    let help = ok(Command::new(bin).args(path).arg("--help"))?;
    let help = String::from_utf8(help.stdout)?;
    let mut out = vec![path.to_vec()];
    let Some(list) = help.split("Commands:\n").nth(1) else {
        return Ok(out);
    };
    for line in list.lines().take_while(|l| !l.trim().is_empty()) {
        // Entries start at two spaces; wrapped descriptions are indented more.
        let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) else {
            continue;
        };
        let name = name.split_whitespace().next().unwrap_or_default();
        if name == "help" {
            continue;
        }
        let mut sub = path.to_vec();
        sub.push(name.to_string());
        out.extend(commands(bin, &sub)?);
    }
    Ok(out)
}

/// Every regular file and symlink under `root`, except dpkg's own database.
fn files_left(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.starts_with(skip) {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, skip, out),
                _ => out.push(p),
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &root.join("var/lib/dpkg"), &mut out);
    out
}

const HOST_WANTS: &str = "/etc/systemd/system/multi-user.target.wants/forwarder.service";

#[test]
fn the_package_installs_into_a_clean_root_and_everything_in_it_works() -> Result<()> {
    if !require_root("the_package_installs_into_a_clean_root_and_everything_in_it_works") {
        return Ok(());
    }
    let Some(deb) = deb() else { return Ok(()) };
    let dir = TempDir::new("pkg")?;
    let root = clean_root(&dir)?;
    let host_enabled_before = Path::new(HOST_WANTS).exists();

    // Without --force-depends: the Depends line must hold on this Debian.
    let o = ok(dpkg(&root).arg("-i").arg(&deb))?;
    ensure!(
        !text(&o).contains("warning") && !text(&o).contains("error"),
        "dpkg -i:\n{}",
        text(&o)
    );
    ok(dpkg(&root).arg("--verify").arg("forwarder")).context("installed files match md5sums")?;

    // The binary, run from the root (the eBPF object is inside it).
    let bin = root.join("usr/bin/forwarder");
    let version = String::from_utf8(ok(Command::new(&bin).arg("--version"))?.stdout)?;
    ensure!(
        version.trim() == format!("forwarder {}", env!("CARGO_PKG_VERSION")),
        "--version: {version}"
    );

    // The shipped rules file: valid, forwards nothing, and registered as a
    // conffile (dpkg keeps an admin's edits).
    let rules = root.join("etc/forwarder/rules.toml");
    let o = ok(Command::new(&bin).arg("check").arg(&rules))?;
    ensure!(text(&o).contains("ok, 0 forwards"), "check:\n{}", text(&o));
    let conffiles = ok(dpkg_query(&root).args(["-W", "-f=${Conffiles}", "forwarder"]))?;
    ensure!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/forwarder/rules.toml"),
        "conffiles: {}",
        text(&conffiles)
    );
    // Its commented example, uncommented, is one valid forward.
    let shipped = std::fs::read_to_string(&rules)?;
    let example: String = shipped
        .lines()
        .skip_while(|l| *l != "# [[forward]]")
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or("")))
        .collect();
    let ex_file = dir.file("example.toml");
    std::fs::write(&ex_file, &example)?;
    let o = ok(Command::new(&bin).arg("check").arg(&ex_file))
        .with_context(|| format!("the uncommented example:\n{example}"))?;
    ensure!(
        text(&o).contains("ok, 1 forward"),
        "check example:\n{}",
        text(&o)
    );

    // The unit: verified inside the root (the binary at ExecStart=, and the
    // man pages of Documentation= looked up in the root's MANPATH). The root
    // has no systemd targets, so dependencies are not verified recursively.
    let unit_path = root.join("usr/lib/systemd/system/forwarder.service");
    let unit = std::fs::read_to_string(&unit_path)?;
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/forwarder run --rules /etc/forwarder/rules.toml",
        "Documentation=man:forwarder(8)",
    ] {
        ensure!(unit.contains(line), "the unit lacks {line}:\n{unit}");
    }
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--recursive-errors=no")
        .arg("forwarder.service")
        .env("MANPATH", root.join("usr/share/man"))
        .output()?;
    ensure!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify ({}):\n{}",
        o.status,
        text(&o)
    );
    // Enabled in the root by the postinst, and nothing done on the host.
    let wants = root.join("etc/systemd/system/multi-user.target.wants/forwarder.service");
    ensure!(
        std::fs::read_link(&wants)? == Path::new("/usr/lib/systemd/system/forwarder.service"),
        "unit not enabled in the root"
    );
    ensure!(
        Path::new(HOST_WANTS).exists() == host_enabled_before,
        "the postinst touched the host's systemd"
    );

    // A man page per command, each rendering cleanly.
    let cmds = commands(&bin, &[])?;
    ensure!(cmds.len() >= 9, "commands found in --help: {cmds:?}");
    for c in &cmds {
        let name = std::iter::once("forwarder".to_string())
            .chain(c.iter().cloned())
            .collect::<Vec<_>>()
            .join("-");
        let page = root.join(format!("usr/share/man/man8/{name}.8.gz"));
        let o = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .output()?;
        let out = String::from_utf8_lossy(&o.stdout);
        ensure!(
            o.status.success() && o.stderr.is_empty() && out.contains("SYNOPSIS"),
            "man page {} ({}):\n{}",
            page.display(),
            o.status,
            text(&o)
        );
    }
    let top = ok(Command::new("man")
        .arg("-l")
        .arg(root.join("usr/share/man/man8/forwarder.8.gz")))?;
    let top = String::from_utf8_lossy(&top.stdout);
    for section in ["EXIT STATUS", "FILES", "/etc/forwarder/rules.toml"] {
        ensure!(top.contains(section), "forwarder(8) lacks {section}");
    }

    // Bash completion, as bash-completion loads it.
    let bash = root.join("usr/share/bash-completion/completions/forwarder");
    let script = format!(
        "source {}; COMP_WORDS=(forwarder con); COMP_CWORD=1; _forwarder forwarder con forwarder; \
         echo \"${{COMPREPLY[*]}}\"; COMP_WORDS=(forwarder status --); COMP_CWORD=2; \
         _forwarder forwarder -- status; echo \"${{COMPREPLY[*]}}\"",
        bash.display()
    );
    let o = ok(Command::new("bash").args(["--norc", "-c", &script]))?;
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    ensure!(
        lines.len() == 2 && lines[0] == "conntrack" && lines[1].contains("--json"),
        "bash completion: {lines:?}"
    );
    let zsh = std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_forwarder"))?;
    ensure!(zsh.starts_with("#compdef forwarder") && zsh.contains("conntrack"));
    let fish =
        std::fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/forwarder.fish"))?;
    ensure!(fish.contains("complete -c forwarder") && fish.contains("conntrack"));

    let copyright = std::fs::read_to_string(root.join("usr/share/doc/forwarder/copyright"))?;
    ensure!(copyright.contains("License: MIT or Apache-2.0"));
    ensure!(root.join("usr/share/doc/forwarder/rules.md").is_file());
    ensure!(root.join("usr/share/doc/forwarder/metrics.md").is_file());
    let dashboard =
        std::fs::read_to_string(root.join("usr/share/doc/forwarder/grafana-dashboard.json"))?;
    ensure!(serde_json::from_str::<serde_json::Value>(&dashboard)?["panels"].is_array());

    // Upgrade (a reinstall): the admin's file stays.
    std::fs::write(&rules, format!("{shipped}\n# edited by the admin\n"))?;
    ok(dpkg(&root).arg("-i").arg(&deb))?;
    ensure!(
        std::fs::read_to_string(&rules)?.ends_with("# edited by the admin\n"),
        "the reinstall replaced the admin's rules file"
    );

    // Purge: nothing of the package is left.
    ok(dpkg(&root).args(["--purge", "forwarder"]))?;
    let left = files_left(&root);
    ensure!(left.is_empty(), "left after purge: {left:?}");
    Ok(())
}

fn dpkg_query(root: &Path) -> Command {
    let mut c = Command::new("dpkg-query");
    c.arg(format!(
        "--admindir={}",
        root.join("var/lib/dpkg").display()
    ));
    c
}
