//! Project automation: `cargo xtask <setup|build-ebpf|test|demo|lint|bench|dist|vm-test|image>`.
//!
//! Every command that needs tools installs them first (`setup` is idempotent
//! and takes seconds when everything is present), so the README's two
//! commands work on a fresh machine.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod dist;
mod file_sizes;
mod image;
mod setup;
mod vm;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install apt packages, rust-src and bpf-linker (idempotent).
    Setup,
    /// Build the kernel object (release, BTF kept).
    BuildEbpf,
    /// Lint everything: file sizes, fmt --check, clippy -D warnings (host and
    /// eBPF crates).
    Lint,
    /// Setup, build, lint, then run the whole test suite (root tests included).
    Test {
        /// Extra arguments passed to `cargo test` (after `--workspace`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, then run the self-contained demo in network namespaces.
    Demo {
        /// Which use case: proxmox (LAN -> VMs) or tailnet (tailnet -> k3s
        /// ClusterIPs).
        #[arg(default_value = "proxmox", value_parser = ["proxmox", "tailnet"])]
        scenario: String,
    },
    /// Build the container image of the Kubernetes DaemonSet: an OCI
    /// layout and a docker-archive tarball under target/image/.
    Image(image::ImageArgs),
    /// Benchmark the forwarder against kernel forwarding, iptables, nftables
    /// and socat in namespaces; writes BENCHMARKS.md, results.json, a chart.
    Bench(bench::BenchArgs),
    /// Build the Debian package (release binary with the eBPF object inside,
    /// unit, rules file, man pages, completions): target/dist/*.deb.
    Dist,
    /// Boot an older kernel (Debian's 6.1 by default) under qemu and run the
    /// namespace e2e subset inside it.
    VmTest(vm::VmArgs),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::install(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Lint => lint(),
        Cmd::Test { args } => test(&args),
        Cmd::Demo { scenario } => demo(&scenario),
        Cmd::Bench(args) => bench::bench(args),
        Cmd::Dist => dist::dist(),
        Cmd::VmTest(args) => vm::vm_test(&args),
        Cmd::Image(args) => image::image(args),
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("command failed ({status}): {cmd:?}");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// cargo inside forwarder-ebpf/ with the unstable flags its
/// .cargo/config.toml needs (build-std) unlocked on the stable toolchain.
fn ebpf_cargo() -> Command {
    let mut c = cargo();
    c.current_dir(root().join("forwarder-ebpf"))
        .env("RUSTC_BOOTSTRAP", "1")
        // The host workspace's rustflags/target must not leak into the BPF build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    c
}

pub(crate) fn build_ebpf() -> Result<()> {
    run(ebpf_cargo().args(["build", "--release", "--locked"]))?;
    let obj = root().join("forwarder-ebpf/target/bpfel-unknown-none/release/forwarder");
    anyhow::ensure!(obj.is_file(), "expected object at {}", obj.display());
    eprintln!("eBPF object: {}", obj.display());
    Ok(())
}

fn lint() -> Result<()> {
    file_sizes::check(&root(), file_sizes::ALLOWED_OVER)?;
    build_ebpf()?;
    run(cargo()
        .current_dir(root())
        .args(["fmt", "--all", "--check"]))?;
    run(ebpf_cargo().args(["fmt", "--check"]))?;
    run(cargo().current_dir(root()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(ebpf_cargo().args(["clippy", "--release", "--locked", "--", "-D", "warnings"]))?;
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    setup::install()?;
    lint()?;
    run(cargo()
        .current_dir(root())
        .args(["build", "--workspace", "--locked"]))?;
    // The package the install test (tests/tests/package_install.rs) takes
    // apart: built here once, not inside a test.
    let deb = dist::build_package()?;
    // nextest runs every test in its own process (a panicking namespace test
    // cannot take others down) and ends with one summary line for the whole
    // suite; plain `cargo test` is the fallback where it is missing.
    let nextest = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mut c = cargo();
    c.current_dir(root());
    if nextest {
        c.args([
            "nextest",
            "run",
            "--workspace",
            "--locked",
            "--no-fail-fast",
        ]);
    } else {
        c.args(["test", "--workspace", "--locked", "--no-fail-fast"]);
    }
    c.args(extra)
        .env("FORWARDER_BIN", root().join("target/debug/forwarder"))
        .env("FORWARDER_DEB", deb)
        .env("KUBERNETES_VALIDATE", setup::kubernetes_validate_bin());
    if std::env::var_os("CI").is_some() {
        // CI runs as root and must run the privileged tests: make a skip fatal.
        c.env("FORWARDER_REQUIRE_ROOT_TESTS", "1");
    }
    run(&mut c)
}

fn demo(scenario: &str) -> Result<()> {
    setup::install()?;
    build_ebpf()?;
    run(cargo()
        .current_dir(root())
        .args(["build", "--workspace", "--locked"]))?;
    run(cargo()
        .current_dir(root())
        .args([
            "run",
            "--quiet",
            "--locked",
            "-p",
            "forwarder-tools",
            "--bin",
            "demo",
            "--",
            scenario,
        ])
        .env("FORWARDER_BIN", root().join("target/debug/forwarder")))
}
