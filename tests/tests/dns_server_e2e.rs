//! `dns_server` in `[global]` (issue 16): the daemon asks that server, on
//! its port, and nothing else: the router namespace has no resolv.conf of
//! its own, so the machine's resolver (which knows nothing of `web.test`)
//! is what the name would otherwise go to. dnsmasq listens on port 5353
//! only, so an answer proves the port was used too. `explain --lookup`
//! asks the same way. A reload that names another server (where nothing
//! answers) asks again at once and keeps the last address, stale.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    cluster::ROUTER_IN,
    dns::{line_with, Dnsmasq},
    netns,
    process::wait_for,
    require_root,
    topology::TempDir,
    Daemon,
};

const DNS: &str = "10.2.0.53";
const BACKEND: &str = "10.2.0.3";

fn rules(dns_server: &str) -> String {
    format!(
        "[global]\n{dns_server}\n\n[[forward]]\nname = \"web\"\nin = \"eth0\"\nlisten = \"{ROUTER_IN}\"\n\
         port = 80\nto = \"web.test.:8080\"\n"
    )
}

#[test]
fn dns_server_is_the_only_resolver_asked() -> Result<()> {
    if !require_root("dns_server_is_the_only_resolver_asked") {
        return Ok(());
    }
    netns::sweep();
    let (line, _server) = line_with(&[BACKEND, DNS])?;
    let dns = Dnsmasq::start(&line.server, DNS, 5353, "test", 5)?;
    dns.set(&[("web", BACKEND)])?;

    let dir = TempDir::new("dnssrv")?;
    let path = dir.file("rules.toml");
    std::fs::write(&path, rules(&format!("dns_server = \"{DNS}:5353\"")))?;
    let p = path.to_str().unwrap();

    let d = Daemon::start(&line.router, &["--rules", p])?;
    let answered = wait_for(Duration::from_secs(20), || {
        (line.ask(80).as_deref() == Some(BACKEND)).then_some(())
    });
    ensure!(
        answered.is_some(),
        "no answer through the forward: {}",
        d.log()
    );
    let name = |d: &Daemon| -> serde_json::Value {
        d.state()
            .ok()
            .and_then(|st| {
                let r = st["rules"]
                    .as_array()?
                    .iter()
                    .find(|r| r["name"] == "web")?;
                Some(r["resolution"].clone())
            })
            .unwrap_or_default()
    };
    let n = name(&d);
    ensure!(
        n["state"] == "resolved" && n["addr"] == BACKEND && n["ttl"] == 5,
        "{n}"
    );

    // explain --lookup asks the way the daemon does.
    let explain = d.cli(&[
        "explain",
        p,
        "--in",
        "eth0",
        "--from",
        "10.1.0.2:40000",
        "--to",
        "10.1.0.1:80",
        "--lookup",
    ])?;
    ensure!(
        explain.contains(&format!("looked up web.test.: {BACKEND} (TTL 5s"))
            && explain.contains(&format!("becomes  10.1.0.2:40000 -> {BACKEND}:8080")),
        "{explain}"
    );

    // Another server (nothing listens there): the name is asked again at
    // once, fails, and keeps its last address, stale; forwarding goes on.
    std::fs::write(&path, rules(&format!("dns_server = \"{DNS}:5354\"")))?;
    d.cli(&["reload"])?;
    let n = wait_for(Duration::from_secs(30), || {
        let n = name(&d);
        (n["state"] == "stale").then_some(n)
    })
    .with_context(|| format!("not stale: {}", name(&d)))?;
    ensure!(n["addr"] == BACKEND, "{n}");
    ensure!(
        line.ask(80).as_deref() == Some(BACKEND),
        "forwarding stopped"
    );
    ensure!(
        dns.log().contains("query[A] web.test from 10.2.0.1"),
        "dnsmasq saw no query from the router: {}",
        dns.log()
    );
    eprintln!("{explain}");
    Ok(())
}
