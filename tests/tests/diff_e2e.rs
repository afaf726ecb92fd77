//! `forwarder diff` says what applying a file would change against what
//! runs, changes nothing itself, and `forwarder reload` prints the same
//! summary for what it applied. Real connections prove each side: before
//! the reload the old forwards answer, after it the new ones.
//!
//! ```text
//!  lan ns 192.168.1.10 ── lan0 192.168.1.55 host (forwarder --no-watch) vm0 ── vm 192.168.100.80
//!                                                                socat :80 :81 :22 :3000
//! ```
//! File A: web 8080 -> :80, ssh 2222 -> :22, gone 3000 -> :3000 (allow-listed).
//! File B: web 8080 -> :81 (changed), ssh as before, new 4000 -> :80, no gone.
use anyhow::{ensure, Context, Result};
use forwarder_tests::{lanvm::LanVm, require_root, Daemon};

const GLOBAL: &str = "[global.timeouts]\n# Closed test connections stay in the table for the whole test.\ntcp_fin_wait = \"1h\"\ntcp_time_wait = \"1h\"\ntcp_close = \"1h\"\n\n";

fn forward(name: &str, port: u16, to_port: u16, extra: &str) -> String {
    format!(
        "[[forward]]\nname = \"{name}\"\nin = \"lan0\"\nlisten = \"192.168.1.55\"\nport = {port}\nto = \"192.168.100.80:{to_port}\"\nsnat = \"masquerade\"\n{extra}\n"
    )
}

fn file_a() -> String {
    GLOBAL.to_string()
        + &forward("web", 8080, 80, "")
        + &forward("ssh", 2222, 22, "")
        + &forward("gone", 3000, 3000, "allow = [\"192.168.1.0/24\"]")
}

fn file_b() -> String {
    GLOBAL.to_string()
        + &forward("web", 8080, 81, "")
        + &forward("ssh", 2222, 22, "")
        + &forward("new", 4000, 80, "")
}

fn run(d: &Daemon, args: &[&str]) -> Result<(i32, String, String)> {
    let o = d.cli_output(args)?;
    Ok((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

#[test]
fn diff_shows_what_a_reload_would_change_and_reload_prints_the_same() -> Result<()> {
    if !require_root("diff_shows_what_a_reload_would_change_and_reload_prints_the_same") {
        return Ok(());
    }
    let t = LanVm::build("diff", &[80, 81, 22, 3000])?;
    let path = t.rules_path();
    std::fs::write(&path, file_a())?;
    let d = Daemon::start(&t.host, &["--rules", path.to_str().unwrap(), "--no-watch"])?;
    ensure!(t.wait_forwarding(8080, 80), "file A forwards web to :80");
    ensure!(t.wait_forwarding(3000, 3000), "file A forwards gone");

    // The running file against itself: nothing.
    let (code, out, err) = run(&d, &["diff"])?;
    ensure!(
        code == 0,
        "diff of the running file: exit {code}: {out}{err}"
    );
    ensure!(out == "no change: the file matches what runs\n", "{out}");

    // File B on disk, not applied (no watch): the old forwards still answer.
    std::fs::write(&path, file_b())?;
    ensure!(
        t.connect(8080).as_deref() == Some("hello 80"),
        "still file A"
    );
    ensure!(
        t.connect(4000).is_none(),
        "file B's new forward is not live"
    );
    // Live flows now: web 2 (wait_forwarding may have taken more tries),
    // gone at least 1; the summary counts them from the table.
    let (code, diff_out, err) = run(&d, &["diff"])?;
    ensure!(code == 1, "diff with changes: exit {code}: {diff_out}{err}");
    for line in [
        "+ forward new\n",
        "~ forward web: to 192.168.100.80:80 -> 192.168.100.80:81\n",
        "- forward gone\n",
        "listener entries +1 ~1 -1 (3 -> 3), allow-list entries +0 ~0 -1 (1 -> 0)\n",
    ] {
        ensure!(diff_out.contains(line), "diff lacks {line:?}:\n{diff_out}");
    }
    ensure!(
        diff_out.contains("live flows keep the translation and admission of their time")
            && diff_out.contains("gone ")
            && diff_out.contains("web "),
        "diff counts the live flows of web and gone:\n{diff_out}"
    );
    ensure!(
        t.connect(4000).is_none() && t.peers(81).is_empty(),
        "diff changed nothing in the kernel"
    );
    let (code, json, _) = run(&d, &["diff", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&json).context(json.clone())?;
    ensure!(code == 1 && v["changed"] == true, "{json}");
    ensure!(
        v["changes"]["added"] == serde_json::json!(["new"]),
        "{json}"
    );
    ensure!(
        v["changes"]["removed"] == serde_json::json!(["gone"]),
        "{json}"
    );

    eprintln!("forwarder diff:\n{diff_out}");
    // Reload applies it and prints the same lines (the flows are the same:
    // no connection was made since, the last one was the refused :4000).
    let (code, reload_out, err) = run(&d, &["reload"])?;
    ensure!(code == 0, "reload: exit {code}: {reload_out}{err}");
    let (first, rest) = reload_out.split_once('\n').context("reload output")?;
    ensure!(first.starts_with("applied: 3 forwards"), "{reload_out}");
    ensure!(
        rest == diff_out,
        "reload printed another summary than diff:\n--- diff\n{diff_out}--- reload\n{rest}"
    );
    // The far end sees file B: web now reaches :81, new reaches :80, gone
    // is refused (nothing listens on 3000 any more).
    ensure!(
        t.wait_forwarding(8080, 81),
        "web goes to :81 after the reload"
    );
    ensure!(t.wait_forwarding(4000, 80), "new forwards after the reload");
    ensure!(t.connect(3000).is_none(), "gone is gone");
    ensure!(
        !t.peers(81).is_empty(),
        "the :81 server saw the client's connections"
    );

    let (code, out, _) = run(&d, &["diff"])?;
    ensure!(
        code == 0,
        "after the reload nothing is left to apply: {out}"
    );
    // An invalid file: exit 1, nothing applied, the error names the line.
    let bad = t.dir.file("bad.toml");
    std::fs::write(&bad, forward("web", 0, 80, ""))?;
    let (code, out, err) = run(&d, &["diff", bad.to_str().unwrap()])?;
    ensure!(
        code == 1 && err.contains("bad.toml:5:8: error") && out.is_empty(),
        "diff of an invalid file: exit {code}\n{out}{err}"
    );
    Ok(())
}
