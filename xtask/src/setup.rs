//! Idempotent install of what a fresh Debian machine of this project's kind
//! needs to build, run and test the forwarder. Checks before it installs, so
//! a second run takes seconds.
use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

/// Debian packages: LLVM 22 for bpf-linker (rustc 1.95 is LLVM 22 and
/// bpf-linker's LLVM major must match), the network tools the tests and the
/// demo drive, and the baselines the benchmark compares against.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "iputils-ping",
    "iptables",
    "nftables",
    "bpftool",
    "ethtool",
    "curl",
    "socat",
    "netcat-openbsd",
    "iperf3",
    "nginx-light",
    "openssl",
    "openssh-server",
    "openssh-client",
    "dnsmasq-base",
    "bind9-dnsutils",
    "wrk",
    "sockperf",
    "procps",
    // perf: the benchmark's CPU profile of new connections (cpu-clock
    // sampling, no PMU needed) and docs/PERFORMANCE-NOTES.md's profiles.
    "linux-perf",
    // conntrack -L: what the k3s node's netfilter made of forwarded flows
    // (tailnet e2e diagnostics).
    "conntrack",
    "kmod",
    // The OpenMetrics parser of the Prometheus project, which the metrics
    // test reads the endpoint with (run by Debian's /usr/bin/python3).
    "python3",
    "python3-prometheus-client",
    // `cargo xtask dist` and the package install test: dpkg-shlibdeps,
    // strip, deb-systemd-helper (the maintainer scripts), systemd-analyze
    // verify and the man it runs to check Documentation=.
    "dpkg-dev",
    "binutils",
    "init-system-helpers",
    "systemd",
    "man-db",
    // Cluster support (issue 16): the OCI image tools of `cargo xtask image`
    // (umoci builds the layout, skopeo inspects it and writes the archive
    // containerd imports), a real FUSE mount standing in for pmxcfs, the
    // gratuitous ARP keepalived sends on a VIP failover, and a venv for the
    // Kubernetes schema validator (PyPI). (objcopy, in binutils above, strips
    // the image's binary of its DWARF.)
    "umoci",
    "skopeo",
    "fuse3",
    "bindfs",
    "iputils-arping",
    "python3-venv",
];

/// What `cargo xtask vm-test` needs on top: qemu (TCG), a static busybox
/// for the guest's initramfs, cpio to pack it. Installed only when the VM
/// test runs: qemu pulls in ~100 MB that the default test run does not use.
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio", "kmod"];

/// The Kubernetes manifest validator (PyPI; bundles the API schemas of
/// Kubernetes 1.25 to 1.37), pinned so CI validates against known schemas.
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn install() -> Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    kubernetes_validate()?;
    Ok(())
}

/// The validator's executable, in a venv of its own under target/ (Debian's
/// Python refuses system-wide pip installs).
pub fn kubernetes_validate_bin() -> std::path::PathBuf {
    crate::root().join("target/tools/k8s-venv/bin/kubernetes-validate")
}

fn kubernetes_validate() -> Result<()> {
    let bin = kubernetes_validate_bin();
    let ok = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(KUBERNETES_VALIDATE_VERSION)
        })
        .unwrap_or(false);
    if ok {
        eprintln!("setup: kubernetes-validate {KUBERNETES_VALIDATE_VERSION} present");
        return Ok(());
    }
    let venv = bin.parent().and_then(|p| p.parent()).context("venv path")?;
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    ]))
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The packages of the VM test harness (see `VM_PACKAGES`).
pub fn install_vm() -> Result<()> {
    apt_install(VM_PACKAGES)
}

fn apt() -> Result<()> {
    apt_install(APT_PACKAGES)
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: apt packages present");
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let sudo = |c: &str| -> Command {
        if root {
            Command::new(c)
        } else {
            let mut s = Command::new("sudo");
            s.arg(c);
            s
        }
    };
    run(sudo("apt-get").args(["update", "-qq"]))?;
    run(sudo("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .context("running rustup")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        eprintln!("setup: rust-src present");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src"]))
}

fn bpf_linker() -> Result<()> {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false);
    if ok {
        eprintln!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    // Its default feature is llvm-23 and it would find /usr/bin/llvm-config
    // (LLVM 14): pin the feature and point it at LLVM 22.
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ]),
    )
}
