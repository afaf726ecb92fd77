//! `rules.d/*.toml` drop-ins next to the rules file, through the real
//! daemon: forwards in drop-ins forward, a drop-in added or removed is
//! applied like an edit of the main file, a bad drop-in is rejected whole
//! with its own file named while everything keeps forwarding, and `check`
//! reads them too.
//!
//! ```text
//!  lan ns 192.168.1.10 ── lan0 192.168.1.55 host (forwarder) vm0 ── vm 192.168.100.80
//!                                                     socat :80 :22 :3000
//! ```
use std::{path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use forwarder_tests::{cli::forwarder_in, lanvm::LanVm, process::wait_for, require_root, Daemon};

fn forward(name: &str, port: u16, to_port: u16) -> String {
    format!(
        "[[forward]]\nname = \"{name}\"\nin = \"lan0\"\nlisten = \"192.168.1.55\"\nport = {port}\nto = \"192.168.100.80:{to_port}\"\nsnat = \"masquerade\"\n"
    )
}

/// Writes a file as config tools do: a new file renamed into place.
fn put(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The status file once a load after `generation` is recorded.
fn next_load(d: &Daemon, generation: u64) -> Result<serde_json::Value> {
    wait_for(Duration::from_secs(30), || {
        d.state()
            .ok()
            .filter(|s| s["generation"].as_u64().unwrap_or(0) > generation)
    })
    .context("the daemon did not load the change")
}

fn generation(d: &Daemon) -> u64 {
    d.state()
        .ok()
        .and_then(|s| s["generation"].as_u64())
        .unwrap_or(0)
}

#[test]
fn drop_ins_forward_and_load_with_the_main_file_as_one() -> Result<()> {
    if !require_root("drop_ins_forward_and_load_with_the_main_file_as_one") {
        return Ok(());
    }
    let t = LanVm::build("dropin", &[80, 22, 3000])?;
    let main = t.rules_path();
    let dir = main.with_file_name("rules.d");
    std::fs::create_dir(&dir)?;
    std::fs::write(&main, forward("web", 8080, 80))?;
    put(&dir.join("team.toml"), &forward("ssh", 2222, 22))?;
    let d = Daemon::start(&t.host, &["--rules", main.to_str().unwrap()])?;
    ensure!(t.wait_forwarding(8080, 80), "the main file's forward");
    ensure!(t.wait_forwarding(2222, 22), "the drop-in's forward");
    ensure!(
        d.state()?["rules_watch"]
            .as_str()
            .is_some_and(|w| w.contains("rules.d/*.toml")),
        "status says the drop-ins are watched: {}",
        d.state()?
    );

    // A new drop-in is applied like an edit.
    let g = generation(&d);
    put(&dir.join("more.toml"), &forward("db", 5432, 3000))?;
    let st = next_load(&d, g)?;
    ensure!(st["last_load"]["applied"] == true, "{st}");
    ensure!(t.wait_forwarding(5432, 3000), "the added drop-in's forward");

    // A drop-in reusing a name: rejected whole, the error names the
    // drop-in, and all three forwards go on.
    let g = generation(&d);
    let bad = dir.join("zz-bad.toml");
    put(
        &bad,
        &format!("# a generated forward\n{}", forward("web", 9090, 80)),
    )?;
    let st = next_load(&d, g)?;
    let err = st["rules_error"].as_str().unwrap_or("");
    let want = format!(
        "{}:3:8: error: forward \"web\": duplicate forward name \"web\" (first defined on line 2)",
        bad.display()
    );
    ensure!(
        st["last_load"]["applied"] == false && err.contains(&want),
        "the rejection names the drop-in and where the name is taken: {st}"
    );
    for (port, backend) in [(8080, 80), (2222, 22), (5432, 3000)] {
        ensure!(
            t.connect(port).as_deref() == Some(format!("hello {backend}").as_str()),
            "port {port} still forwards after the rejected drop-in"
        );
    }
    ensure!(
        t.connect(9090).is_none(),
        "nothing of the bad drop-in applied"
    );
    let r = forwarder_in(
        &t.host.name,
        &["check", "--offline", main.to_str().unwrap()],
    );
    ensure!(
        r.code == 1 && r.stderr.contains(&format!("{}:3:8", bad.display())),
        "check names the drop-in: {r}"
    );

    // Removing it applies the rest again; removing team.toml ends ssh.
    let g = generation(&d);
    std::fs::remove_file(&bad)?;
    let st = next_load(&d, g)?;
    ensure!(
        st["last_load"]["applied"] == true && st["rules_error"].is_null(),
        "{st}"
    );
    let g = generation(&d);
    std::fs::remove_file(dir.join("team.toml"))?;
    let st = next_load(&d, g)?;
    ensure!(
        st["last_load"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("2 forwards")),
        "{st}"
    );
    ensure!(
        wait_for(Duration::from_secs(10), || t
            .connect(2222)
            .is_none()
            .then_some(()))
        .is_some(),
        "the removed drop-in's forward stopped"
    );
    ensure!(
        t.connect(8080).as_deref() == Some("hello 80"),
        "web goes on"
    );
    let r = forwarder_in(
        &t.host.name,
        &["check", "--offline", main.to_str().unwrap()],
    );
    ensure!(
        r.code == 0 && r.stdout.contains("db ") && r.stdout.contains("ok, 2 forwards"),
        "check lists the drop-in's forward: {r}"
    );
    Ok(())
}
