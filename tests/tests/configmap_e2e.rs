//! A Kubernetes ConfigMap as the rules file (issue 16): the daemon reads
//! `rules.toml` from a directory laid out and updated exactly as kubelet's
//! AtomicWriter does (`rules.toml -> ..data/rules.toml`, `..data` swapped
//! by a rename to a new `..<timestamp>` directory, the old one removed).
//! Each update must reach the traffic within a second; the old directory
//! disappearing must not count as the file being removed; a rejected
//! update makes `status --ready` fail (the readiness probe of the
//! DaemonSet) until a good one arrives.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    cluster::{ConfigMapVolume, Line},
    netns,
    process::wait_for,
    require_root,
    topology::TempDir,
    Daemon,
};

/// The forward on 10.1.0.1:8000 to the server's port `port` (8001 answers
/// "one", 8002 "two").
fn rules(port: u16) -> String {
    format!(
        "[[forward]]\nname = \"web\"\nin = \"eth0\"\nlisten = \"10.1.0.1\"\nport = 8000\n\
         to = \"10.2.0.2:{port}\"\nsnat = \"10.2.0.1\"\n"
    )
}

/// How long after the swap the forward answers `want` (polling), within
/// `limit`.
fn time_until(line: &Line, want: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if line.ask(8000).as_deref() == Some(want) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn ready(d: &Daemon) -> Result<(bool, String)> {
    let o = d.cli_output(&["status", "--ready"])?;
    Ok((
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    ))
}

#[test]
fn configmap_updates_apply_within_a_second_and_readiness_follows() -> Result<()> {
    if !require_root("configmap_updates_apply_within_a_second_and_readiness_follows") {
        return Ok(());
    }
    netns::sweep();
    let line = Line::build()?;
    let dir = TempDir::new("configmap")?;
    let mut volume = ConfigMapVolume::new(&dir.path);
    volume.write(&[("rules.toml", &rules(8001))])?;
    let path = volume.path("rules.toml");
    let mut daemon = Daemon::start(&line.router, &["--rules", path.to_str().unwrap()])?;
    ensure!(
        line.ask(8000).as_deref() == Some("one"),
        "the first version forwards"
    );
    // The watch starts right after the first status is published.
    let st = wait_for(Duration::from_secs(10), || {
        daemon.state().ok().filter(|s| s["rules_watch"].is_string())
    })
    .context("status never said how the rules file is watched")?;
    let watch = st["rules_watch"].as_str().unwrap_or_default();
    ensure!(
        watch.starts_with("inotify on") && watch.contains("through 2 symlinks"),
        "status tells how the file is watched: {st}"
    );
    let (ok, said) = ready(&daemon)?;
    ensure!(
        ok && said.starts_with("ready: "),
        "ready after start: {said}"
    );

    // Five updates, alternating targets: each a full AtomicWriter cycle.
    let mut latencies = Vec::new();
    for i in 0..5 {
        let (port, want) = if i % 2 == 0 {
            (8002, "two")
        } else {
            (8001, "one")
        };
        volume.write(&[("rules.toml", &rules(port))])?;
        let t = time_until(&line, want, Duration::from_secs(5))
            .with_context(|| format!("update {i} never applied; log:\n{}", daemon.log()))?;
        latencies.push(t);
    }
    eprintln!("ConfigMap update to traffic following it: {latencies:?}");
    // Within a second, judged by the median: each sample includes spawning
    // the client in a namespace, which a loaded 2-core CI machine can slow
    // by itself; every update applied within the 5 s bound above.
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    ensure!(
        median <= Duration::from_secs(1),
        "median {median:?}: {latencies:?}"
    );
    // The old directories' removal was not taken for the file going away:
    // every load since start applied, none rejected. The state is
    // republished after a load's maps are written, so traffic can follow
    // the last update before its generation shows: wait for it (an extra
    // reload would show as 7 in the same look, or later, checked below).
    wait_for(Duration::from_secs(5), || {
        let g = daemon.state().ok()?["generation"].as_u64()?;
        (g >= 6).then_some(())
    });
    let st = daemon.state()?;
    ensure!(st["rules_error"].is_null(), "a load was rejected: {st}");
    ensure!(
        st["generation"].as_u64() == Some(6),
        "one load per update (start + 5), no extra reload for the removal: {st}"
    );
    ensure!(
        !daemon.log().contains("cannot read"),
        "the daemon read the file as missing at some point:\n{}",
        daemon.log()
    );

    // An update to the same content (the last one was to "two") is no
    // reload.
    volume.write(&[("rules.toml", &rules(8002))])?;
    std::thread::sleep(Duration::from_millis(800));
    ensure!(
        daemon.state()?["generation"].as_u64() == Some(6),
        "same content, no reload"
    );

    // A bad update: the running rules stay, and the pod turns unready with
    // the reason, until a good update arrives.
    volume.write(&[("rules.toml", "[[forward]]\nname = \"web\"\nport = 0\n")])?;
    let unready = wait_for(Duration::from_secs(10), || {
        let (ok, said) = ready(&daemon).ok()?;
        (!ok).then_some(said)
    })
    .context("a rejected update kept the daemon ready")?;
    ensure!(
        unready.starts_with("not ready: the last load (file changed) was rejected"),
        "{unready}"
    );
    let now = line.ask(8000);
    ensure!(
        now.as_deref() == Some("two"),
        "the running rules stay: {now:?}"
    );
    volume.write(&[("rules.toml", &rules(8001))])?;
    time_until(&line, "one", Duration::from_secs(5)).context("the fix was not applied")?;
    wait_for(Duration::from_secs(10), || {
        ready(&daemon).ok()?.0.then_some(())
    })
    .context("ready again after a good update")?;

    // No daemon, not ready (the dataplane keeps forwarding meanwhile).
    daemon.stop();
    let (ok, said) = ready(&daemon)?;
    ensure!(!ok && said.contains("not running"), "{said}");
    ensure!(
        line.ask(8000).as_deref() == Some("one"),
        "pinned dataplane forwards"
    );
    Ok(())
}
