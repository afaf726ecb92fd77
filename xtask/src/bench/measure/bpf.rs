//! The forwarder's BPF time per forwarded packet: BPF run-time statistics
//! switched on for one small-packet burst only, and the per-program deltas
//! of exactly the programs that use the daemon-under-test's pinned flow map.
use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use forwarder_tests::netns::Netns;
use serde_json::Value;

use super::{
    commands::iperf_udp_argv,
    exec::{exec, exec_ok},
};

/// BPF run-time statistics are on while this lives (BPF_ENABLE_STATS: the
/// switch behind kernel.bpf_stats_enabled, released when the fd closes, so
/// a crashed benchmark cannot leave it on).
pub struct BpfStats {
    fd: i32,
}

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        let attr = [BPF_STATS_RUN_TIME, 0, 0, 0];
        // SAFETY: bpf(2) with a zeroed attr whose first word is the type.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        ensure!(
            fd >= 0,
            "BPF_ENABLE_STATS: {}",
            std::io::Error::last_os_error()
        );
        Ok(BpfStats { fd: fd as i32 })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        // SAFETY: closing the fd we own.
        unsafe { libc::close(self.fd) };
    }
}

/// Per program (by id): name, run_time_ns, run_cnt, for the programs that
/// use the flow map pinned in `pin_dir`: exactly the forwarder instance
/// under test, whatever its programs are called and wherever they are
/// attached (other BPF users on the machine, even other forwarders, are
/// not counted).
pub fn bpf_prog_stats(pin_dir: &Path) -> Result<BTreeMap<u64, (String, u64, u64)>> {
    let flows = pin_dir.join("FWD_FLOWS");
    let out = exec(
        None,
        &[
            "bpftool",
            "-j",
            "map",
            "show",
            "pinned",
            flows.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    )?;
    let m: Value = serde_json::from_slice(&out.stdout).context("bpftool map show")?;
    let map_id = m["id"].as_u64().context("pinned flow map has no id")?;
    let out = exec(
        None,
        &["bpftool", "-j", "prog", "show"],
        Duration::from_secs(10),
    )?;
    let progs: Value = serde_json::from_slice(&out.stdout).context("bpftool prog show")?;
    let mut found = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let uses = p["map_ids"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i.as_u64() == Some(map_id)));
        if let (true, Some(id)) = (uses, p["id"].as_u64()) {
            found.insert(
                id,
                (
                    p["name"].as_str().unwrap_or("?").to_string(),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                    p["run_cnt"].as_u64().unwrap_or(0),
                ),
            );
        }
    }
    ensure!(
        !found.is_empty(),
        "no BPF program uses flow map id {map_id}"
    );
    Ok(found)
}

pub struct BpfCost {
    /// All of the forwarder's BPF time divided by the packets it forwarded.
    pub ns_per_pkt: f64,
    pub packets: u64,
    /// "name: N ns/run x runs" per program.
    pub programs: Vec<String>,
}

/// The forwarder's BPF time per forwarded packet during a small-packet
/// burst, with statistics on only for that burst (they add two clock reads
/// to every BPF program run on the machine). A forwarded packet runs
/// several programs (TC ingress on the way in, TC egress on the way out;
/// later XDP first): their time is summed, and the packet count is the
/// run count of the program that saw the most runs (the first hook every
/// client packet passes).
pub fn bpf_cost(client: &Netns, target: &str, pin_dir: &Path, secs: u32) -> Result<BpfCost> {
    let stats = BpfStats::enable()?;
    let before = bpf_prog_stats(pin_dir)?;
    exec_ok(client, &iperf_udp_argv(target, secs), secs)?;
    let after = bpf_prog_stats(pin_dir)?;
    drop(stats);
    let (mut time, mut packets, mut programs) = (0, 0, Vec::new());
    for (id, (name, t1, c1)) in &after {
        let (t0, c0) = before.get(id).map_or((0, 0), |(_, t, c)| (*t, *c));
        let (dt, dc) = (t1.saturating_sub(t0), c1.saturating_sub(c0));
        time += dt;
        packets = packets.max(dc);
        if dc > 0 {
            programs.push(format!(
                "{name}: {:.0} ns/run x {dc} runs",
                dt as f64 / dc as f64
            ));
        }
    }
    ensure!(
        packets > 0,
        "the forwarder's programs did not run during the burst"
    );
    Ok(BpfCost {
        ns_per_pkt: time as f64 / packets as f64,
        packets,
        programs,
    })
}
