//! Legacy TC attachment (`attach = "tc-legacy"`: clsact qdisc + cls_bpf
//! filters, what kernels without TCX get) through the real daemon on the
//! Proxmox topology: sharing the hooks with filters of other tools, a
//! SIGKILL restart under load that swaps the program in place, `down`
//! removing only what is ours, a filter of someone else in our place, and
//! moving an interface between TCX and tc-legacy by editing the rules.
//!
//! The foreign filters are classic-BPF cls_bpf filters that never match
//! (`ret 0`): the kernel has no tc action modules here, and a filter that
//! matched would end classification before ours (legacy TC runs filters in
//! priority order until one claims the packet).
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    client::client,
    netns::{self, tc_programs, Netns},
    process::wait_for,
    require_root,
    topology::{Proxmox, TempDir},
    Daemon,
};

/// Our filters' place (forwarder::dataplane::tc_legacy).
const OUR_PREF: u64 = 65000;
const OUR_HANDLE: &str = "0xf0d";

/// A SNAT forward (redirect path) and a stack-path forward, which needs
/// the egress program on vmbr0; both interfaces tc-legacy.
const RULES: &str = r#"
[[forward]]
name = "web"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "192.168.100.1"

[[forward]]
name = "kept"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.80:80"
snat = "off"
path = "stack"

[interface.vmbr0]
attach = "tc-legacy"

[interface.vmbr1]
attach = "tc-legacy"
"#;

/// One filter as `tc -j filter show` lists it.
#[derive(Debug, PartialEq)]
struct Filter {
    pref: u64,
    handle: String,
    bpf_name: Option<String>,
    prog_id: Option<u64>,
}

fn filters(ns: &Netns, dev: &str, hook: &str) -> Result<Vec<Filter>> {
    let out = ns.output(&["tc", "-j", "filter", "show", "dev", dev, hook])?;
    let v: serde_json::Value =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        // Each priority opens with a line for the chain itself.
        .filter(|f| f.get("options").is_some())
        .map(|f| Filter {
            pref: f["pref"].as_u64().unwrap_or(0),
            handle: f["options"]["handle"].as_str().unwrap_or("").to_string(),
            bpf_name: f["options"]["bpf_name"].as_str().map(String::from),
            prog_id: f["options"]["prog"]["id"].as_u64(),
        })
        .collect())
}

fn ours<'a>(fs: &'a [Filter], name: &str) -> Option<&'a Filter> {
    fs.iter().find(|f| {
        f.pref == OUR_PREF && f.handle == OUR_HANDLE && f.bpf_name.as_deref() == Some(name)
    })
}

fn has_clsact(ns: &Netns, dev: &str) -> Result<bool> {
    Ok(ns
        .output(&["tc", "qdisc", "show", "dev", dev])?
        .contains("clsact"))
}

/// Someone else's clsact qdisc and never-matching filters on vmbr0.
fn foreign_filters(ns: &Netns, dev: &str, place: &[(&str, &str, Option<&str>)]) -> Result<()> {
    ns.run(&["tc", "qdisc", "add", "dev", dev, "clsact"])?;
    for (hook, pref, handle) in place {
        let mut cmd = vec!["tc", "filter", "add", "dev", dev, hook, "prio", pref];
        if let Some(h) = handle {
            cmd.extend(["handle", h]);
        }
        cmd.extend([
            "protocol",
            "all",
            "bpf",
            "bytecode",
            "1,6 0 0 0,",
            "flowid",
            "1:1",
        ]);
        ns.run(&cmd)?;
    }
    Ok(())
}

fn http_ok(topo: &Proxmox, port: u16) -> bool {
    let url = format!("http://192.168.1.55:{port}/");
    let o = client(
        &topo.lan,
        5,
        &[
            "curl",
            "-s",
            "--max-time",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ],
    );
    o.ok && o.stdout == "200"
}

fn start(topo: &Proxmox, dir: &TempDir, rules: &str) -> Result<Daemon> {
    let path = dir.file("rules.toml");
    std::fs::write(&path, rules)?;
    Daemon::start(&topo.host, &["--rules", path.to_str().unwrap()])
}

#[test]
fn tc_legacy_shares_the_hooks_restarts_in_place_and_down_removes_only_ours() -> Result<()> {
    if !require_root("tc_legacy_shares_the_hooks_restarts_in_place_and_down_removes_only_ours") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    let h = &topo.host;
    // vmbr0: another tool's qdisc and filters on both hooks; vmbr1: none.
    foreign_filters(
        h,
        "vmbr0",
        &[("ingress", "10", None), ("egress", "20", None)],
    )?;
    let dir = TempDir::new("tc-legacy")?;
    let mut daemon = start(&topo, &dir, RULES)?;

    let st = daemon.state()?;
    for i in st["interfaces"].as_array().context("interfaces")? {
        let want = if i["name"] == "vmbr0" {
            "tc-legacy+egress"
        } else {
            "tc-legacy"
        };
        ensure!(i["attach"] == want, "status names the mode: {i}");
    }
    ensure!(http_ok(&topo, 80), "the SNAT forward works");
    ensure!(
        http_ok(&topo, 81),
        "the stack-path forward works (egress program)"
    );
    let ingress = filters(h, "vmbr0", "ingress")?;
    let first = ours(&ingress, "fwd_ingress")
        .with_context(|| format!("our ingress filter: {ingress:?}"))?
        .prog_id;
    ensure!(
        ingress.iter().any(|f| f.pref == 10) && ingress.len() == 2,
        "the foreign filter stays beside ours: {ingress:?}"
    );
    ensure!(
        ours(&filters(h, "vmbr0", "egress")?, "fwd_egress").is_some(),
        "our egress filter on vmbr0"
    );
    ensure!(has_clsact(h, "vmbr1")?, "we made vmbr1's clsact qdisc");

    // SIGKILL under load: the download's flow must see the new program
    // take over in place (a gap would send its SNATed replies to the host
    // stack, which answers with a reset).
    let dest = dir.file("download.bin");
    let mut dl = topo.slow_download(&dest)?;
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        daemon.kill9()?;
        ensure!(http_ok(&topo, 80), "forwarding while no daemon runs");
        daemon.respawn()?;
    }
    let ingress = filters(h, "vmbr0", "ingress")?;
    let now = ours(&ingress, "fwd_ingress")
        .with_context(|| format!("our filter after the restarts: {ingress:?}"))?
        .prog_id;
    ensure!(
        now != first && ingress.len() == 2,
        "the same filter runs the new daemon's program ({first:?} -> {now:?}): {ingress:?}"
    );
    topo.finish_download(&mut dl, &dest)
        .context("the download survived three restarts")?;

    // `down`: our filters go, the other tool's filters and qdisc stay, the
    // qdisc we created goes.
    daemon.stop();
    let out = daemon.cli(&["down"])?;
    ensure!(out.contains("removed"), "down: {out}");
    for iface in ["vmbr0", "vmbr1"] {
        let progs = tc_programs(h, iface)?;
        ensure!(
            !progs.iter().any(|p| p.starts_with("fwd_")),
            "{iface} still runs {progs:?}"
        );
    }
    let left: Vec<u64> = ["ingress", "egress"]
        .iter()
        .map(|hook| filters(h, "vmbr0", hook))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .map(|f| f.pref)
        .collect();
    ensure!(
        left == [10, 20],
        "the foreign filters are untouched: {left:?}"
    );
    ensure!(has_clsact(h, "vmbr0")?, "the foreign qdisc stays");
    ensure!(!has_clsact(h, "vmbr1")?, "the qdisc we created is gone");
    ensure!(!http_ok(&topo, 80), "nothing forwards after down");
    Ok(())
}

#[test]
fn a_filter_of_someone_else_in_our_place_stops_the_start_and_stays() -> Result<()> {
    if !require_root("a_filter_of_someone_else_in_our_place_stops_the_start_and_stays") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    foreign_filters(&topo.host, "vmbr0", &[("ingress", "65000", Some("0xf0d"))])?;
    let dir = TempDir::new("tc-legacy-taken")?;
    // The daemon publishes the failed start, then exits.
    let err = match start(&topo, &dir, RULES) {
        Ok(mut d) => {
            let exited = wait_for(Duration::from_secs(10), || {
                d.bg.as_mut().is_some_and(|b| !b.is_running()).then_some(())
            });
            ensure!(
                exited.is_some(),
                "the daemon runs on over a foreign filter: {}",
                d.log()
            );
            let st = d.state()?;
            ensure!(
                st["last_load"]["applied"] == false,
                "the status file says the start failed: {st}"
            );
            d.log()
        }
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("error: ") && err.contains("of someone else") && err.contains("65000"),
        "the error names the taken place: {err}"
    );
    let fs = filters(&topo.host, "vmbr0", "ingress")?;
    ensure!(
        fs.len() == 1 && fs[0].bpf_name.is_none() && fs[0].handle == OUR_HANDLE,
        "the foreign filter is untouched: {fs:?}"
    );
    Ok(())
}

#[test]
fn a_failed_attach_on_reload_fails_the_reload_and_says_why() -> Result<()> {
    if !require_root("a_failed_attach_on_reload_fails_the_reload_and_says_why") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    let h = &topo.host;
    // A third interface whose hook is taken.
    h.ip(&["link", "add", "extra0", "type", "bridge"])?;
    h.ip(&["addr", "add", "10.77.0.1/24", "dev", "extra0"])?;
    h.ip(&["link", "set", "extra0", "up"])?;
    foreign_filters(h, "extra0", &[("ingress", "65000", Some("0xf0d"))])?;
    let dir = TempDir::new("tc-legacy-reload")?;
    let web = RULES
        .split("[[forward]]\nname = \"kept\"")
        .next()
        .unwrap_or(RULES);
    let daemon = start(&topo, &dir, web)?;
    ensure!(http_ok(&topo, 80), "forwarding before the edit");

    let edited = format!(
        "{web}\n[[forward]]\nname = \"extra\"\nin = \"extra0\"\nlisten = \"10.77.0.1\"\n\
         port = 80\nto = \"192.168.100.80:80\"\n[interface.extra0]\nattach = \"tc-legacy\"\n"
    );
    std::fs::write(dir.file("rules.toml"), edited)?;
    let out = daemon.cli_output(&["reload"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "the reload reports the failure: {stderr}"
    );
    let st = daemon.state()?;
    ensure!(
        st["last_load"]["applied"] == false
            && st["last_load"]["summary"]
                .as_str()
                .is_some_and(|s| s.contains("extra0") && s.contains("someone else")),
        "status says which interface failed and why: {}",
        st["last_load"]
    );
    let extra = st["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "extra0"))
        .context("extra0 in status")?;
    ensure!(
        extra["state"]
            .as_str()
            .is_some_and(|s| s.contains("attach failed")),
        "the interface line says so: {extra}"
    );
    ensure!(
        daemon.log().contains("attach failed"),
        "the log says so: {}",
        daemon.log()
    );
    ensure!(http_ok(&topo, 80), "the other forwards keep working");
    Ok(())
}

#[test]
fn editing_the_attach_mode_moves_an_interface_between_tcx_and_tc_legacy() -> Result<()> {
    if !require_root("editing_the_attach_mode_moves_an_interface_between_tcx_and_tc_legacy") {
        return Ok(());
    }
    netns::sweep();
    let topo = Proxmox::build()?;
    let h = &topo.host;
    let dir = TempDir::new("tc-mode-edit")?;
    let web = RULES.split("[interface.vmbr0]").next().unwrap_or(RULES);
    let daemon = start(&topo, &dir, web)?;
    // What the default gives (tcx, or tc-legacy when the whole run is
    // forced with FORWARDER_FORCE_ATTACH).
    let default = forwarder_tests::daemon::tc_mode();
    let vmbr0 = |daemon: &Daemon| -> Result<String> {
        let st = daemon.state()?;
        Ok(st["interfaces"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == "vmbr0"))
            .map(|i| i["attach"].as_str().unwrap_or("").to_string())
            .unwrap_or_default())
    };
    ensure!(
        vmbr0(&daemon)? == format!("{default}+egress"),
        "start: {}",
        vmbr0(&daemon)?
    );

    let dest = dir.file("download.bin");
    let mut dl = topo.slow_download(&dest)?;
    std::thread::sleep(Duration::from_millis(1000));
    let reload = |text: &str| -> Result<()> {
        std::fs::write(dir.file("rules.toml"), text)?;
        daemon.cli(&["reload"]).map(drop)
    };
    reload(&format!(
        "{web}\n[interface.vmbr0]\nattach = \"tc-legacy\"\n"
    ))?;
    ensure!(
        vmbr0(&daemon)? == "tc-legacy+egress",
        "edited: {}",
        vmbr0(&daemon)?
    );
    let progs = tc_programs(h, "vmbr0")?;
    ensure!(
        progs.iter().filter(|p| p.starts_with("fwd_")).count() == 2
            && ours(&filters(h, "vmbr0", "ingress")?, "fwd_ingress").is_some(),
        "vmbr0 carries our two filters and nothing else of ours: {progs:?}"
    );
    ensure!(
        http_ok(&topo, 81),
        "the stack-path forward works after the move"
    );

    reload(web)?;
    ensure!(
        vmbr0(&daemon)? == format!("{default}+egress"),
        "back: {}",
        vmbr0(&daemon)?
    );
    if default == "tcx" {
        ensure!(
            filters(h, "vmbr0", "ingress")?.is_empty(),
            "our filter went"
        );
        ensure!(!has_clsact(h, "vmbr0")?, "the qdisc we created went");
    }
    let progs = tc_programs(h, "vmbr0")?;
    ensure!(
        progs.iter().filter(|p| p.starts_with("fwd_")).count() == 2,
        "ingress and egress, once each: {progs:?}"
    );
    topo.finish_download(&mut dl, &dest)
        .context("the download survived both moves")?;
    Ok(())
}
