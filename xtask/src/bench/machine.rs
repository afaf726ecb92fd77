//! Facts about the machine and tools a result was measured with.
use std::{collections::BTreeMap, process::Command};

fn cmd(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|o| {
            // Some tools (nginx -v) print their version on stderr.
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s).trim().to_string()
        })
        .unwrap_or_else(|e| format!("unavailable: {e}"))
}

fn first_line(s: String) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

pub fn machine() -> BTreeMap<String, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_default();
    // "none" when bare metal / not in a container.
    let virt = format!(
        "VM: {}, container: {}",
        cmd(&["systemd-detect-virt", "--vm"]),
        cmd(&["systemd-detect-virt", "--container"])
    );
    [
        ("cpu", model),
        ("cores", cores),
        ("memory", mem),
        ("kernel", cmd(&["uname", "-r"])),
        ("uname -a", cmd(&["uname", "-a"])),
        ("virtualization", virt),
        (
            "os",
            std::fs::read_to_string("/etc/os-release")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .unwrap_or("?")
                .trim_matches('"')
                .to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn tools(forwarder_bin: &str) -> BTreeMap<String, String> {
    [
        ("iperf3", first_line(cmd(&["iperf3", "--version"]))),
        ("wrk", first_line(cmd(&["wrk", "-v"]))),
        ("sockperf", first_line(cmd(&["sockperf", "--version"]))),
        (
            "socat",
            cmd(&["socat", "-V"])
                .lines()
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string(),
        ),
        ("nginx", first_line(cmd(&["nginx", "-v"]))),
        ("iptables", first_line(cmd(&["iptables", "-V"]))),
        ("nft", first_line(cmd(&["nft", "-v"]))),
        ("bpftool", first_line(cmd(&["bpftool", "version"]))),
        ("forwarder", first_line(cmd(&[forwarder_bin, "--version"]))),
        ("rustc", first_line(cmd(&["rustc", "--version"]))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The commit measured, marked when the work tree had changes.
pub fn git(root: &std::path::Path) -> String {
    let rev = cmd(&[
        "git",
        "-C",
        root.to_str().unwrap(),
        "rev-parse",
        "--short=12",
        "HEAD",
    ]);
    let dirty = !cmd(&[
        "git",
        "-C",
        root.to_str().unwrap(),
        "status",
        "--porcelain",
        "--untracked-files=no",
    ])
    .is_empty();
    if dirty {
        format!("{rev} (with uncommitted changes)")
    } else {
        rev
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn date_utc() -> String {
    cmd(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"])
}
