//! DNS-name targets (issue 16) against a real DNS server under load.
//!
//! ```text
//! client 10.1.0.2 -- eth0 10.1.0.1 [router: forwarder] eth1 10.2.0.1 -- server 10.2.0.2, 10.2.0.3
//!                                                                       dnsmasq 10.2.0.53
//! ```
//!
//! The router's resolver is the namespace's own resolv.conf
//! (/etc/netns/NS/resolv.conf, bind-mounted by `ip netns exec`), pointing
//! at dnsmasq, whose answers (TTL 1 s) the test changes by rewriting its
//! hosts file and sending SIGHUP. The backend answers each connection with
//! the address it was sent to, so a client loop (a new connection every
//! 50 ms) sees which address the forward uses.
//!
//! The harness is proven with socat first (it resolves the name for every
//! connection; netfilter cannot follow a name at all: iptables resolves a
//! name once, when the rule is inserted). Then the forwarder:
//!
//! 1. the answer changes from .2 to .3: new connections reach .3 (the time
//!    from the change is measured), an established connection to .2 goes
//!    on;
//! 2. the name stops resolving (NXDOMAIN): the forward pauses, new
//!    connections are refused like on a closed port, an established one
//!    goes on, a forward with a written address is untouched, `status`
//!    says PAUSED and why;
//! 3. it resolves again: forwarding resumes (measured);
//! 4. the DNS server dies: the forward keeps its last address (stale) and
//!    goes on forwarding; when the server is back the name is resolved.
//!
//! The Prometheus endpoint (in the router's namespace) says the same as
//! `status`: the forward paused in 2, the name stale in 4, and the lookup
//! failures and address changes counted.
use std::{path::PathBuf, time::Duration};

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    client::curl,
    cluster::{echo_server, loop_answers, unix_now, Line, ROUTER_IN},
    dns::{connect_loop, Dnsmasq, NetnsResolvConf},
    netns,
    process::wait_for,
    require_root,
    topology::TempDir,
    Bg, Daemon, Netns,
};

const DNS: &str = "10.2.0.53";
const OLD: &str = "10.2.0.2";
const NEW: &str = "10.2.0.3";
const NAME: &str = "web.test";
const METRICS: &str = "127.0.0.1:9750";

fn rules() -> String {
    format!(
        "[global]\nmetrics = \"{METRICS}\"\n\n\
         [[forward]]\nname = \"web\"\nin = \"eth0\"\nlisten = \"{ROUTER_IN}\"\nport = \"80-81\"\n\
         to = \"{NAME}:8080-8081\"\n\n\
         [[forward]]\nname = \"fixed\"\nin = \"eth0\"\nlisten = \"{ROUTER_IN}\"\nport = 82\n\
         to = \"{OLD}:8080\"\n"
    )
}

/// Waits for `n` answers `what` after `since`; the time of the first.
fn first_after(bg: &Bg, since: f64, what: &str, n: usize) -> Result<f64> {
    wait_for(Duration::from_secs(30), || {
        let a = loop_answers(&bg.log());
        let hits: Vec<f64> = a
            .iter()
            .filter(|(t, r)| *t > since && r == what)
            .map(|(t, _)| *t)
            .collect();
        (hits.len() >= n).then(|| hits[0])
    })
    .with_context(|| format!("no {n} answers {what:?} after {since}:\n{}", bg.log()))
}

/// A connection opened now that sends "hello", then "world" once `go`
/// exists; the backend echoes both after the address it was sent to.
struct Session {
    bg: Bg,
    go: PathBuf,
}

impl Session {
    fn open(client: &Netns, dir: &TempDir, label: &str) -> Result<Session> {
        let go = dir.file(label);
        let bg = client.spawn(&[
            "sh",
            "-c",
            &format!(
                "(echo hello; while [ ! -e {go} ]; do sleep 0.1; done; echo world; sleep 2) \
                 | socat -t 5 - TCP:{ROUTER_IN}:81,connect-timeout=2",
                go = go.display()
            ),
        ])?;
        let s = Session { bg, go };
        s.wait_for("hello")?;
        Ok(s)
    }

    fn wait_for(&self, line: &str) -> Result<()> {
        wait_for(Duration::from_secs(20), || {
            self.bg.log().lines().any(|l| l == line).then_some(())
        })
        .with_context(|| format!("session never saw {line:?}: {}", self.bg.log()))
    }

    /// The backend address that answered first.
    fn backend(&self) -> String {
        self.bg.log().lines().next().unwrap_or("").to_string()
    }

    /// Sends "world" now and waits for its echo: the flow still works.
    fn finish(&self) -> Result<()> {
        std::fs::write(&self.go, "")?;
        self.wait_for("world")
    }
}

fn resolution(d: &Daemon) -> serde_json::Value {
    d.state()
        .ok()
        .and_then(|s| {
            s["rules"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "web")
                .cloned()
        })
        .map(|r| {
            let mut n = r["resolution"].clone();
            n["listeners"] = r["listeners"].clone();
            n
        })
        .unwrap_or_default()
}

/// Waits until the status file's resolution of `web` satisfies `ok`.
fn wait_status(d: &Daemon, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> Result<()> {
    wait_for(Duration::from_secs(30), || ok(&resolution(d)).then_some(()))
        .with_context(|| format!("status never showed {what}: {}", resolution(d)))
}

/// The value of the metric `series` (name and labels) the router's
/// Prometheus endpoint serves now.
fn metric(router: &Netns, series: &str) -> Result<f64> {
    let o = curl(router, 3, 5, &[], &format!("http://{METRICS}/metrics"));
    ensure!(o.ok, "scrape: {o}");
    o.stdout
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {series} in\n{}", o.stdout))
}

/// The name's counters in the metrics are those of `status` (both read
/// the status file; the resolver may count a failure in between, so the
/// scrape must fall between two reads of it).
fn counters_agree(d: &Daemon, router: &Netns) -> Result<()> {
    let labels = format!("{{rule=\"web\",name=\"{NAME}\"}}");
    for (status, metric_name) in [
        ("failures", "forwarder_target_lookup_failures_total"),
        ("changes", "forwarder_target_address_changes_total"),
    ] {
        let before = resolution(d)[status].as_f64();
        let m = metric(router, &format!("{metric_name}{labels}"))?;
        let after = resolution(d)[status].as_f64();
        ensure!(
            before.is_some_and(|b| b <= m) && after.is_some_and(|a| m <= a),
            "{metric_name} {m}, status {status} {before:?} then {after:?}"
        );
    }
    Ok(())
}

/// socat in the router resolves the name for every connection: the
/// baseline that proves the DNS change is visible through the namespace's
/// resolver. Returns the seconds from the change to the first answer from
/// the new address.
fn socat_baseline(line: &Line, dns: &Dnsmasq) -> Result<f64> {
    let _relay = line.router.spawn(&[
        "socat",
        &format!("TCP-LISTEN:80,bind={ROUTER_IN},fork,reuseaddr"),
        &format!("TCP:{NAME}:8080"),
    ])?;
    let clients = connect_loop(&line.client, 80)?;
    first_after(&clients, 0.0, OLD, 5).context("socat baseline before the change")?;
    let changed = dns.set(&[("web", NEW)])?;
    let first =
        first_after(&clients, changed, NEW, 5).context("socat baseline after the change")?;
    // Gone from DNS: socat accepts, fails to resolve, and closes.
    let gone = dns.set(&[])?;
    first_after(&clients, gone, "FAIL", 3).context("socat baseline, name gone")?;
    dns.set(&[("web", OLD)])?;
    Ok(first - changed)
}

#[test]
fn a_dns_name_target_follows_its_answers_under_load() -> Result<()> {
    if !require_root("a_dns_name_target_follows_its_answers_under_load") {
        return Ok(());
    }
    netns::sweep();
    let line = Line::build()?;
    line.server
        .ip(&["addr", "add", &format!("{NEW}/24"), "dev", "eth0"])?;
    line.server
        .ip(&["addr", "add", &format!("{DNS}/24"), "dev", "eth0"])?;
    let _servers = [
        echo_server(&line.server, 8080, "echo $SOCAT_SOCKADDR")?,
        echo_server(&line.server, 8081, "echo $SOCAT_SOCKADDR; cat")?,
    ];
    let mut dns = Dnsmasq::start(&line.server, DNS, 53, "test", 1)?;
    dns.set(&[("web", OLD)])?;
    let _resolv = NetnsResolvConf::new(
        &line.router,
        &format!("nameserver {DNS}\nsearch test\noptions timeout:1 attempts:2\n"),
    )?;
    ensure!(
        dns.query(&line.router, NAME) == OLD,
        "dnsmasq does not answer: {}",
        dns.log()
    );
    let socat = socat_baseline(&line, &dns)?;

    let dir = TempDir::new("dns")?;
    let path = dir.file("rules.toml");
    std::fs::write(&path, rules())?;
    let d = Daemon::start(&line.router, &["--rules", path.to_str().unwrap()])?;
    wait_status(&d, "resolved", |n| {
        n["state"] == "resolved" && n["addr"] == OLD
    })?;
    let text = d.cli(&["status"])?;
    ensure!(
        text.contains(&format!("target {NAME}: {OLD} (resolved ")) && text.contains("TTL 1s"),
        "{text}"
    );

    let web = connect_loop(&line.client, 80)?;
    let fixed = connect_loop(&line.client, 82)?;
    first_after(&web, 0.0, OLD, 10).context("steady forwarding to the old address")?;
    let s1 = Session::open(&line.client, &dir, "s1")?;
    ensure!(s1.backend() == OLD, "session 1: {}", s1.bg.log());

    // 1. The answer changes.
    let changed = dns.set(&[("web", NEW)])?;
    let first_new = first_after(&web, changed, NEW, 10)?;
    // (A client timing out on a loaded machine prints FAIL; only the old
    // backend or a refusal would be the forwarder's doing.)
    let late_old: Vec<_> = loop_answers(&web.log())
        .into_iter()
        .filter(|(t, r)| *t > first_new && (r == OLD || r == "REFUSED"))
        .collect();
    ensure!(
        late_old.is_empty(),
        "answers other than {NEW} after the switch: {late_old:?}"
    );
    wait_status(&d, "the new address", |n| {
        n["addr"] == NEW && n["changes"] == 1
    })?;
    ensure!(
        d.state()?["rules"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "web" && r["listeners"] == 2)),
        "both ports listen"
    );
    s1.finish()
        .context("the connection to the old backend after the change")?;
    eprintln!("status after the change:\n{}", d.cli(&["status"])?);
    // More changes back and forth: the delay depends on where in the TTL
    // the change falls (a lookup every second), so take several samples.
    let mut delays = vec![first_new - changed];
    for to in [OLD, NEW, OLD, NEW] {
        let at = dns.set(&[("web", to)])?;
        delays.push(first_after(&web, at, to, 5)? - at);
    }
    let s2 = Session::open(&line.client, &dir, "s2")?;
    ensure!(s2.backend() == NEW, "session 2: {}", s2.bg.log());

    // 2. The name stops resolving: paused.
    let gone = dns.set(&[])?;
    let paused_at = first_after(&web, gone, "REFUSED", 10)?;
    wait_status(&d, "paused", |n| {
        n["state"] == "paused"
            && n["listeners"] == 0
            && n["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("NXDOMAIN"))
    })?;
    let text = d.cli(&["status"])?;
    eprintln!("status while paused:\n{text}");
    ensure!(
        text.contains(&format!(
            "PAUSED: {NAME} does not resolve (NXDOMAIN: the name does not exist); retrying in "
        )),
        "{text}"
    );
    ensure!(
        text.contains("paused: ") && text.contains("refused like on a closed port"),
        "{text}"
    );
    s2.finish()
        .context("the established connection while paused")?;
    let router = &line.router;
    ensure!(metric(router, r#"forwarder_rule_paused{rule="web"}"#)? == 1.0);
    ensure!(metric(router, r#"forwarder_rule_paused{rule="fixed"}"#)? == 0.0);
    counters_agree(&d, router)?;
    ensure!(
        resolution(&d)["changes"] == 6 && resolution(&d)["failures"].as_u64() >= Some(1),
        "five new addresses, the address lost, and the NXDOMAIN counted: {}",
        resolution(&d)
    );
    // The forward with a written address never noticed.
    let fixed_answers: Vec<_> = loop_answers(&fixed.log())
        .into_iter()
        .filter(|(t, _)| *t > changed)
        .collect();
    ensure!(
        fixed_answers.iter().all(|(_, r)| r == OLD || r == "FAIL")
            && fixed_answers.iter().filter(|(_, r)| r == OLD).count() >= 10,
        "the forward with an address was disturbed: {fixed_answers:?}"
    );

    // 3. It resolves again.
    let back = dns.set(&[("web", OLD)])?;
    let resumed = first_after(&web, back, OLD, 10)?;
    wait_status(&d, "resolved again", |n| {
        n["state"] == "resolved" && n["addr"] == OLD
    })?;

    // 4. The DNS server dies: the last address is kept.
    dns.stop();
    let died = unix_now();
    wait_status(&d, "stale", |n| n["state"] == "stale" && n["addr"] == OLD)?;
    let text = d.cli(&["status"])?;
    eprintln!("status while the DNS server is down:\n{text}");
    ensure!(
        text.contains(&format!("target {NAME}: {OLD}, STALE: resolved ")),
        "{text}"
    );
    first_after(&web, unix_now(), OLD, 10).context("forwarding while the DNS server is down")?;
    let stale = format!("forwarder_target_stale{{rule=\"web\",name=\"{NAME}\"}}");
    ensure!(metric(&line.router, &stale)? == 1.0);
    ensure!(metric(&line.router, r#"forwarder_rule_paused{rule="web"}"#)? == 0.0);
    counters_agree(&d, &line.router)?;
    let failed: Vec<_> = loop_answers(&web.log())
        .into_iter()
        .filter(|(t, r)| *t > died && r != OLD && r != "FAIL")
        .collect();
    ensure!(
        failed.is_empty(),
        "connections refused or misdirected while the DNS server was down: {failed:?}\n\
         every answer since it resolved again: {:?}\nflows:\n{}",
        loop_answers(&web.log())
            .into_iter()
            .filter(|(t, _)| *t > back)
            .collect::<Vec<_>>(),
        d.cli(&["conntrack", "list"]).unwrap_or_default()
    );
    dns.restart()?;
    wait_status(&d, "resolved after the server came back", |n| {
        n["state"] == "resolved" && n["error"].is_null()
    })?;
    drop((web, fixed));

    let log = d.log();
    ensure!(log.contains("target name no longer resolves"), "{log}");
    delays.sort_by(f64::total_cmp);
    eprintln!(
        "DNS change to new connections on the new address (TTL 1 s): forwarder {delays:.3?} s \
         (median {:.3} s), socat {socat:.3} s; NXDOMAIN to refused {:.3} s; resolving again \
         to forwarding {:.3} s",
        delays[delays.len() / 2],
        paused_at - gone,
        resumed - back
    );
    Ok(())
}
