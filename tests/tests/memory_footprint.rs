//! What a handful of forwards with default settings costs in kernel memory,
//! read from the kernel (issue 20: under 40 MiB; 125.7 MiB before, when the
//! default table held 262,144 flows).
//!
//! The figure is the kernel's own accounting (`memlock` in
//! /proc/PID/fdinfo, bpftool's bytes_memlock) of every BPF map the running
//! daemon holds, pinned or not, including those aya adds for the programs'
//! globals; nothing here is computed from the layout table. The one fact a
//! reader gets wrong: the per-CPU counter arrays grow with the host's
//! possible CPUs (about 177 KiB each), so the same file costs more on a
//! larger host; docs/rules.md ("Sizing") states the figure per CPU count.
use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    cli::forwarder,
    kernel_memory::{kernel_name, maps_held_by},
    netns, require_root,
    topology::TempDir,
    Daemon, Netns,
};

/// Five forwards, every setting left at its default (eight listener
/// entries on one address: two ports of both protocols for "game").
const FIVE_FORWARDS: &str = r#"
[[forward]]
name = "web"
in = "lan0"
port = 80
to = "192.168.100.80"

[[forward]]
name = "tls"
in = "lan0"
port = 443
to = "192.168.100.80"

[[forward]]
name = "ssh"
in = "lan0"
port = 2222
to = "192.168.100.81:22"

[[forward]]
name = "dns"
in = "lan0"
proto = "udp"
port = 53
to = "192.168.100.53"

[[forward]]
name = "game"
in = "lan0"
proto = "both"
port = "27015-27016"
to = "192.168.100.90"
"#;

const TARGET: u64 = 40 << 20;

#[test]
fn five_default_forwards_take_under_40_mib_of_kernel_memory() -> Result<()> {
    if !require_root("five_default_forwards_take_under_40_mib_of_kernel_memory") {
        return Ok(());
    }
    netns::sweep();
    let ns = Netns::new("footprint")?;
    ns.ip(&["link", "add", "lan0", "type", "bridge"])?;
    ns.ip(&["link", "set", "lan0", "up"])?;
    ns.ip(&["addr", "add", "192.168.1.55/24", "dev", "lan0"])?;
    let dir = TempDir::new("footprint")?;
    let file = dir.file("rules.toml");
    std::fs::write(&file, FIVE_FORWARDS)?;
    let d = Daemon::start(&ns, &["--rules", file.to_str().unwrap()])?;
    let pid = d.pid().context("daemon pid")?;
    let held = maps_held_by(pid)?;

    let mut lines: Vec<String> = held
        .values()
        .map(|m| {
            format!(
                "{:<16} {:>9} entries {:>10} B",
                m.name, m.max_entries, m.memlock
            )
        })
        .collect();
    let total: u64 = held.values().map(|m| m.memlock).sum();
    lines.push(format!(
        "total: {total} B ({:.1} MiB) in {} maps",
        total as f64 / f64::from(1 << 20),
        held.len()
    ));
    let report = lines.join("\n");
    eprintln!("{report}");

    // Every map of the object is counted.
    for spec in forwarder_common::MAPS {
        ensure!(
            held.values().any(|m| m.name == kernel_name(spec.name)),
            "{} is not among the maps the daemon holds:\n{report}",
            spec.name
        );
    }
    // The table is the default one.
    let flows = held
        .values()
        .find(|m| m.name == kernel_name(forwarder_common::MAP_FLOWS))
        .unwrap();
    ensure!(
        flows.max_entries
            == u64::from(
                forwarder_common::ENTRIES_PER_FLOW * forwarder_common::DEFAULT_CONNTRACK_MAX
            ),
        "{report}"
    );
    ensure!(
        total < TARGET,
        "five default forwards take {total} B of kernel memory, the target is {TARGET}:\n{report}"
    );

    // `check` states the same total: the kernel's figure is the file's
    // reservation plus the listener entries written (128 B each) and each
    // map's own struct (under 1 KiB).
    let r = forwarder(&["check", "--offline", "--json", file.to_str().unwrap()]);
    ensure!(r.code == 0, "{r}");
    let v = r.json();
    let reserved = v["memory"]["total_bytes"].as_u64().context("total_bytes")?;
    let ours: u64 = forwarder_common::MAPS
        .iter()
        .map(|s| {
            held.values()
                .find(|m| m.name == kernel_name(s.name))
                .unwrap()
                .memlock
        })
        .sum();
    let listener_entries = 8 * 128;
    let maps = forwarder_common::MAPS.len() as u64;
    ensure!(
        ours >= reserved + listener_entries && ours - reserved - listener_entries <= maps * 1024,
        "check says {reserved} B (+ {listener_entries} B of listeners), the kernel accounts \
         {ours} B for the object's maps:\n{report}"
    );
    Ok(())
}
