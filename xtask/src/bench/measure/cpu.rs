//! CPU accounting from /proc: the machine's softirq, steal and total time,
//! how busy it was before a run, and the CPU time of a namespace's
//! processes. /proc counts in USER_HZ ticks, converted to ns here.
use anyhow::{ensure, Context, Result};
use forwarder_tests::netns::Netns;

/// The aggregate `cpu` line of /proc/stat, in ticks: user nice system idle
/// iowait irq softirq steal.
fn proc_stat_cpu() -> Result<Vec<u64>> {
    let s = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = s
        .lines()
        .next()
        .context("empty /proc/stat")?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    ensure!(cpu.len() >= 8, "unexpected /proc/stat");
    Ok(cpu)
}

/// CPU time (ns) spent so far in softirq on all CPUs, stolen by the
/// hypervisor, and in total, from /proc/stat (USER_HZ ticks).
pub fn proc_stat_ns() -> Result<(u64, u64, u64)> {
    let cpu = proc_stat_cpu()?;
    let ns = 1_000_000_000 / clk_tck();
    let total: u64 = cpu.iter().take(8).sum();
    Ok((cpu[6] * ns, cpu[7] * ns, total * ns))
}

/// Share of the machine's CPU time that was not idle over `window`.
pub fn busy_pct(window: std::time::Duration) -> Result<f64> {
    // (total, idle + iowait) ticks.
    let read = || -> Result<(u64, u64)> {
        let cpu = proc_stat_cpu()?;
        Ok((cpu.iter().take(8).sum(), cpu[3] + cpu[4]))
    };
    let (t0, i0) = read()?;
    std::thread::sleep(window);
    let (t1, i1) = read()?;
    let total = t1.saturating_sub(t0).max(1);
    Ok(100.0 * (total - i1.saturating_sub(i0).min(total)) as f64 / total as f64)
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// CPU time (ns) of every process in `ns`, including their reaped children.
pub fn ns_proc_cpu_ns(ns: &Netns) -> u64 {
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let tick = 1_000_000_000 / clk_tck();
    pids.split_whitespace()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            // Fields after "(comm)": state is field 3, utime..cstime 14..17.
            let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|v| v.parse().ok())
                .collect();
            f.iter().sum::<u64>() * tick
        })
        .sum()
}

/// Resident memory (VmRSS) of the processes in `ns`, in KiB.
pub fn ns_proc_rss_kib(ns: &Netns) -> u64 {
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &ns.name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    pids.split_whitespace()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}
