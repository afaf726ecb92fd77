//! The kernel memory a process's BPF maps take, as the kernel accounts it
//! (`memlock` in /proc/PID/fdinfo, bpftool's `bytes_memlock`): every map
//! the process holds a descriptor of, pinned or not, including those aya
//! adds for the programs' globals. Used by the memory footprint test and by
//! `cargo xtask bench` (issue 20: a handful of default forwards under
//! 40 MiB).
//!
//! The fact a reader gets wrong: the per-CPU maps grow with the host's
//! possible CPUs, so the same rules cost more on a larger host.
use std::collections::BTreeMap;

use anyhow::{Context, Result};

/// One BPF map a process holds, as the kernel accounts it.
#[derive(Debug)]
pub struct HeldMap {
    pub name: String,
    pub max_entries: u64,
    pub memlock: u64,
}

/// The `key:\tvalue` lines of an fdinfo file.
fn fdinfo(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// A map's name as the kernel keeps it (`BPF_OBJ_NAME_LEN`: 15 bytes and
/// the terminating zero).
pub fn kernel_name(name: &str) -> &str {
    name.get(..15).unwrap_or(name)
}

/// Every BPF map process `pid` holds a file descriptor of, by map id.
pub fn maps_held_by(pid: u32) -> Result<BTreeMap<u32, HeldMap>> {
    let mut maps = BTreeMap::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let fd = fd?;
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let info = fdinfo(&text);
        let field = |k: &str| -> Result<u64> {
            info.get(k)
                .with_context(|| format!("no {k} in fdinfo:\n{text}"))?
                .parse()
                .with_context(|| format!("{k} in fdinfo:\n{text}"))
        };
        let id = field("map_id")? as u32;
        let name = aya::maps::MapInfo::from_id(id)
            .ok()
            .and_then(|m| m.name_as_str().map(str::to_string))
            .unwrap_or_default();
        maps.insert(
            id,
            HeldMap {
                name,
                max_entries: field("max_entries")?,
                memlock: field("memlock")?,
            },
        );
    }
    Ok(maps)
}

/// The kernel memory of every BPF map process `pid` holds, in bytes.
pub fn held_map_bytes(pid: u32) -> Result<u64> {
    Ok(maps_held_by(pid)?.values().map(|m| m.memlock).sum())
}
