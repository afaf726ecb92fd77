//! The memory `forwarder check` says the table sizes reserve is the
//! kernel's own figure: each pinned map of a loaded dataplane is compared
//! with the kernel's accounting of it (`memlock` in /proc/PID/fdinfo, what
//! `bpftool map show` prints as bytes_memlock), for a file with a
//! non-default `conntrack_max`. The listener map is allocated as written:
//! with one forward it costs its buckets and one entry, not the 34 MiB a
//! preallocated map of 262144 entries took (issue 20).
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

/// Entries in the pinned listener map.
fn listener_entries(d: &Daemon) -> Result<u64> {
    let map = MapData::from_pin(d.pin_dir.join(forwarder_common::MAP_LISTENERS))?;
    let listeners: aya::maps::HashMap<
        _,
        forwarder_common::ListenerKey,
        forwarder_common::ListenerValue,
    > = aya::maps::HashMap::try_from(aya::maps::Map::HashMap(map))?;
    Ok(listeners.keys().count() as u64)
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
    // One address: the forward installs one listener entry.
    ns.ip(&["addr", "add", "192.168.1.55/24", "dev", "lan0"])?;
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
        let row = ours
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == spec.name))
            .with_context(|| format!("{} not in check's figures", spec.name))?;
        let mut est = row["bytes"].as_u64().context("bytes")?;
        if spec.flags & forwarder_common::BPF_F_NO_PREALLOC != 0
            && spec.kind == forwarder_common::MapKind::Hash
        {
            // Reserved up front, plus what check states per entry for the
            // entries the daemon wrote.
            let entries = listener_entries(&d)?;
            ensure!(
                entries == 1,
                "one forward on one address: {entries} entries"
            );
            est += entries * row["bytes_per_entry"].as_u64().context("bytes_per_entry")?;
        }
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
    let listeners = memlock(&MapData::from_pin(
        d.pin_dir.join(forwarder_common::MAP_LISTENERS),
    )?)?;
    ensure!(
        listeners < 5 << 20,
        "the listener map takes {listeners} B for one forward"
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
