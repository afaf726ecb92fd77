//! The daemon's commands against a running daemon: exit codes and `--json`
//! (errors included) of status, conntrack, reload, diff, doctor and down,
//! as documented in forwarder(8). Where nothing runs they exit 3
//! (cli_exit_codes.rs, cli_json.rs).
//!
//! ```text
//!  lan ns 192.168.1.10 ── lan0 192.168.1.55 host (forwarder) vm0 ── vm 192.168.100.80 :80
//! ```
use anyhow::{ensure, Result};
use forwarder_tests::{cli::Ran, lanvm::LanVm, require_root, Daemon};

const GOOD: &str = "[[forward]]\nname = \"web\"\nin = \"lan0\"\nlisten = \"192.168.1.55\"\nport = 8080\nto = \"192.168.100.80:80\"\nsnat = \"masquerade\"\n";

fn run(d: &Daemon, args: &[&str]) -> Result<Ran> {
    Ok(Ran::of(&d.cli_output(args)?))
}

#[test]
fn daemon_commands_exit_as_documented_and_speak_json() -> Result<()> {
    if !require_root("daemon_commands_exit_as_documented_and_speak_json") {
        return Ok(());
    }
    let t = LanVm::build("cdej", &[80])?;
    let path = t.rules_path();
    std::fs::write(&path, GOOD)?;
    let d = Daemon::start(&t.host, &["--rules", path.to_str().unwrap(), "--no-watch"])?;
    ensure!(t.wait_forwarding(8080, 80), "the forward works");

    let r = run(&d, &["status", "--json"])?;
    ensure!(r.code == 0, "{r}");
    let v = r.json();
    ensure!(
        v["daemon_running"] == true && v["daemon_rss_bytes"].as_u64().unwrap_or(0) > 1 << 20,
        "{v}"
    );
    ensure!(run(&d, &["status", "--ready"])?.code == 0, "ready");

    let r = run(&d, &["conntrack", "list", "--json"])?;
    ensure!(r.code == 0 && r.json()[0]["rule"] == "web", "{r}");
    let r = run(&d, &["conntrack", "flush", "--rule", "nope", "--json"])?;
    ensure!(
        r.code == 1
            && r.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("no forward named \"nope\""),
        "{r}"
    );
    let r = run(&d, &["conntrack", "flush", "--all", "--json"])?;
    ensure!(
        r.code == 0 && r.json()["removed_flows"].as_u64() >= Some(1),
        "{r}"
    );

    let r = run(&d, &["diff", "--json"])?;
    ensure!(r.code == 0 && r.json()["changed"] == false, "{r}");

    // A good edit: reload 0 with what it changed.
    std::fs::write(&path, GOOD.replace("8080", "8081"))?;
    let r = run(&d, &["reload", "--json"])?;
    ensure!(r.code == 0, "{r}");
    let v = r.json();
    ensure!(
        v["applied"] == true && v["changes"]["changed"][0]["what"][0] == "port 8080 -> 8081",
        "{v}"
    );
    ensure!(t.wait_forwarding(8081, 80), "the reloaded forward works");
    // A bad edit: reload 1, the error as JSON, the old rules in force;
    // `status --ready` says not ready (1: the daemon runs).
    std::fs::write(&path, GOOD.replace("8080", "0"))?;
    let r = run(&d, &["reload", "--json"])?;
    ensure!(r.code == 1, "{r}");
    let v = r.json();
    ensure!(
        v["applied"] == false
            && v["error"]["kind"] == "rejected"
            && v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("port 0"),
        "{v}"
    );
    ensure!(t.connect(8081).is_some(), "the old rules forward on");
    ensure!(
        run(&d, &["status", "--ready"])?.code == 1,
        "not ready while rejected"
    );
    let r = run(&d, &["diff"])?;
    ensure!(
        r.code == 1 && r.stderr.contains("port 0"),
        "diff of the bad file: {r}"
    );

    let r = run(&d, &["doctor", "--quick", "--json"])?;
    ensure!(r.code == 0 && r.json()["checks"].is_array(), "{r}");

    let pid = d.pid().unwrap_or(0);
    let r = run(&d, &["down", "--json"])?;
    ensure!(r.code == 0, "{r}");
    let v = r.json();
    ensure!(
        v["stopped_daemon_pid"] == pid && v["removed_pins"].as_u64() > Some(5),
        "{v}"
    );
    let r = run(&d, &["status"])?;
    ensure!(
        r.code == 3 && r.stderr.contains("not running"),
        "after down: {r}"
    );
    Ok(())
}
