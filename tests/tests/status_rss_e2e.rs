//! `forwarder status` reports the daemon's resident memory (VmRSS), the
//! figure `ps` and /proc show, in the text and in `--json`.
use anyhow::{ensure, Context, Result};
use forwarder_tests::{netns, require_root, topology::TempDir, Daemon, Netns};

fn vm_rss(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(kib * 1024)
}

#[test]
fn status_reports_the_daemons_rss() -> Result<()> {
    if !require_root("status_reports_the_daemons_rss") {
        return Ok(());
    }
    netns::sweep();
    let ns = Netns::new("rss")?;
    let dir = TempDir::new("rss")?;
    let file = dir.file("rules.toml");
    std::fs::write(&file, "# no forwards\n")?;
    let d = Daemon::start(&ns, &["--rules", file.to_str().unwrap()])?;
    let pid = d.pid().context("daemon pid")?;
    let st = d.status_json()?;
    let reported = st["daemon_rss_bytes"]
        .as_u64()
        .context("daemon_rss_bytes")?;
    let proc = vm_rss(pid)?;
    // Both are the kernel's VmRSS, read a moment apart.
    ensure!(
        reported > 1 << 20 && reported.abs_diff(proc) < 8 << 20,
        "status says {reported} B, /proc/{pid}/status {proc} B"
    );
    let text = d.cli(&["status"])?;
    let line = text.lines().next().unwrap_or("");
    ensure!(
        line.starts_with(&format!("daemon: running, pid {pid}, version "))
            && line.contains(" MiB (RSS), rules "),
        "{text}"
    );
    eprintln!("{line}");
    Ok(())
}
