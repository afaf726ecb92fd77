//! The memory `forwarder check` says the table sizes reserve is the
//! kernel's own figure: each pinned map of a loaded dataplane is compared
//! with the kernel's accounting of it (`memlock` in /proc/PID/fdinfo, what
//! `bpftool map show` prints as bytes_memlock), for a file with a
//! non-default `conntrack_max`.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{ensure, Context, Result};
use aya::maps::MapData;
use forwarder_tests::{cli::forwarder, netns, require_root, topology::TempDir, Daemon, Netns};

const RULES: &str = "[global]\nconntrack_max = 10000\n\n[[forward]]\nname = \"web\"\nin = \"lan0\"\nport = 80\nto = \"192.168.100.80\"\n";

/// The kernel's `memlock` figure for an open map.
fn memlock(map: &MapData) -> Result<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .context("no memlock in fdinfo")?
        .trim()
        .parse()
        .context("memlock")
}

#[test]
fn check_states_what_the_kernel_accounts_for_each_map() -> Result<()> {
    if !require_root("check_states_what_the_kernel_accounts_for_each_map") {
        return Ok(());
    }
    netns::sweep();
    let ns = Netns::new("memory")?;
    ns.ip(&["link", "add", "lan0", "type", "bridge"])?;
    ns.ip(&["link", "set", "lan0", "up"])?;
    let dir = TempDir::new("memory")?;
    let file = dir.file("rules.toml");
    std::fs::write(&file, RULES)?;
    let d = Daemon::start(&ns, &["--rules", file.to_str().unwrap()])?;

    let r = forwarder(&["check", "--offline", "--json", file.to_str().unwrap()]);
    ensure!(r.code == 0, "{r}");
    let ours = r.json()["memory"]["maps"].clone();
    let mut total_ours = 0;
    let mut total_kernel = 0;
    let mut lines = Vec::new();
    for spec in forwarder_common::pinned_maps() {
        let map = MapData::from_pin(d.pin_dir.join(spec.name))?;
        let kernel = memlock(&map)?;
        let est = ours
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == spec.name))
            .and_then(|m| m["bytes"].as_u64())
            .with_context(|| format!("{} not in check's figures", spec.name))?;
        lines.push(format!(
            "{:<16} check {est:>10}  kernel {kernel:>10}",
            spec.name
        ));
        // The kernel adds the map's own struct (under 1 KiB) and, for the
        // allow-list trie, the prefixes in use; nothing that grows with
        // the table sizes.
        ensure!(
            kernel >= est && kernel - est <= 4096,
            "{}: check says {est} B, the kernel accounts {kernel} B\n{}",
            spec.name,
            lines.join("\n")
        );
        total_ours += est;
        total_kernel += kernel;
    }
    eprintln!(
        "{}\ntotal: check {total_ours}, kernel {total_kernel}",
        lines.join("\n")
    );
    // bpftool reads the same accounting.
    let flows = d.pin_dir.join(forwarder_common::MAP_FLOWS);
    let o = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned", flows.to_str().unwrap()])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let kernel = memlock(&MapData::from_pin(&flows)?)?;
    ensure!(v["bytes_memlock"].as_u64() == Some(kernel), "bpftool: {v}");
    ensure!(v["max_entries"] == 20000, "2 x conntrack_max entries: {v}");
    Ok(())
}
