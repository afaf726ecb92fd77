//! Imported rules carry traffic like the setup they replace. For three
//! corpus inputs, the original runs first in the seed-002 topology
//! (iptables rules, or socat relays, in the host namespace), real clients
//! go through it and the backends log what they saw; then the original is
//! removed, `forwarder import` translates the same input, the daemon runs
//! the generated file, and the same clients must get the same answers
//! with the backends seeing the same client addresses (socat: see below).
//! `migrate-check` is exercised in between: it must find the old rules or
//! socat while they are still there, and nothing once they are gone.
use std::{path::Path, process::Command};

use anyhow::{ensure, Context, Result};
use forwarder_tests::{
    client::{check_new_peers, client},
    daemon::forwarder_bin,
    netns, require_root,
    topology::{self, Proxmox},
    Bg, Daemon,
};

fn corpus(case: &str, file: &str) -> String {
    format!(
        "{}/../rules/tests/import-corpus/{case}/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `forwarder import ARGS` (offline, in no namespace): the rules file and the exit code.
fn import(args: &[&str]) -> Result<(String, i32)> {
    let out = Command::new(forwarder_bin())
        .arg("import")
        .args(args)
        .output()?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    ))
}

/// The commands of an iptables script, run in the host namespace.
fn run_iptables_lines(t: &Proxmox, lines: &[String]) -> Result<()> {
    for l in lines {
        let words: Vec<&str> = l.split_whitespace().collect();
        let mut args = vec!["iptables", "-w", "5"];
        args.extend(words.iter().skip(1).map(|w| w.trim_matches('\'')));
        t.host.run(&args).with_context(|| format!("running {l}"))?;
    }
    Ok(())
}

const INDEX: &str = "hello from the backend\n";

/// What a client got through port `port` and the address vm80 saw.
fn http(t: &Proxmox, port: u16, expect_peer: &str) -> Result<()> {
    let before = t.http_peers().len();
    let url = format!("http://{}:{port}/", topology::HOST_LAN);
    let o = client(
        &t.lan,
        8,
        &[
            "curl",
            "-sS",
            "--connect-timeout",
            "3",
            "--max-time",
            "5",
            &url,
        ],
    );
    ensure!(o.ok && o.stdout == INDEX, "curl {url}: {o}");
    check_new_peers(&format!("http :{port}"), before, 1, expect_peer, || {
        t.http_peers()
    })
}

fn tls_6443(t: &Proxmox, expect_peer: &str) -> Result<()> {
    let before = t.tls_peers().len();
    let o = client(
        &t.lan,
        6,
        &[
            "openssl",
            "s_client",
            "-connect",
            "192.168.1.55:6443",
            "-servername",
            "vm50",
        ],
    );
    ensure!(
        o.stdout
            .contains(&format!("subject=CN = {}", topology::VM50_CN)),
        "openssl s_client :6443: {o}"
    );
    check_new_peers("tls :6443", before, 1, expect_peer, || t.tls_peers())
}

fn ssh(t: &Proxmox, port: u16, expect_peer: &str) -> Result<()> {
    let before = t.ssh_peers().len();
    let p = port.to_string();
    let o = client(
        &t.lan,
        8,
        &[
            "ssh-keyscan",
            "-T",
            "3",
            "-t",
            "ed25519",
            "-p",
            &p,
            topology::HOST_LAN,
        ],
    );
    ensure!(
        o.stdout
            .contains(t.vm81_host_key.split_whitespace().nth(1).unwrap_or("-")),
        "ssh-keyscan -p {port}: {o}"
    );
    check_new_peers(&format!("ssh :{port}"), before, 1, expect_peer, || {
        t.ssh_peers()
    })
}

fn migrate_check(d: &Daemon, rules: &Path) -> Result<(String, i32)> {
    let out = d.cli_output(&["migrate-check", "--rules", &rules.to_string_lossy()])?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    ))
}

/// Seed 002's command lines: iptables first, then the imported file. The
/// live import (`--from-running` inside the host namespace) must give the
/// same forwards as the offline import of the script.
#[test]
fn seed002_commands_then_imported() -> Result<()> {
    if !require_root("seed002_commands_then_imported") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox::build()?;
    let script = std::fs::read_to_string(corpus("02-seed002-commands", "setup.sh"))?;
    let lines: Vec<String> = script
        .lines()
        .filter(|l| l.starts_with("sudo iptables"))
        .map(|l| l.trim_start_matches("sudo ").to_owned())
        .collect();
    run_iptables_lines(&t, &lines)?;
    for (port, f) in [(80u16, 0), (2222, 1)] {
        if f == 0 {
            http(&t, port, topology::HOST_VM)?
        } else {
            ssh(&t, port, topology::HOST_VM)?
        }
    }
    tls_6443(&t, topology::HOST_VM)?;

    let (offline, code) = import(&["iptables", &corpus("02-seed002-commands", "setup.sh")])?;
    ensure!(code == 0, "import exit {code}:\n{offline}");
    let live = forwarder_tests::process::run_in(
        Some(&t.host.name),
        &[
            &forwarder_bin().to_string_lossy(),
            "import",
            "--from-running",
        ],
    )?;
    let live = String::from_utf8_lossy(&live.stdout).into_owned();
    let forwards = |s: &str| {
        rules::load_str("x", s).map(|l| {
            l.rules
                .forwards
                .iter()
                .map(|f| (f.iface.clone(), f.ports, f.target.clone(), f.snat))
                .collect::<Vec<_>>()
        })
    };
    let (a, b) = (
        forwards(&offline).map_err(|e| anyhow::anyhow!("{e}"))?,
        forwards(&live).map_err(|e| anyhow::anyhow!("{e}\n{live}"))?,
    );
    ensure!(
        a == b,
        "--from-running gave other forwards:\n{live}\noffline:\n{offline}"
    );

    let rules = t.dir.file("imported.toml");
    std::fs::write(&rules, &offline)?;
    let d = Daemon::start(&t.host, &["--rules", &rules.to_string_lossy()])?;
    // The old rules are still there: migrate-check says so.
    let (report, code) = migrate_check(&d, &rules)?;
    ensure!(
        code == 1 && report.contains("--dport 2222"),
        "migrate-check with the iptables rules still loaded: exit {code}\n{report}"
    );
    t.host.run(&["iptables", "-w", "5", "-t", "nat", "-F"])?;
    let (report, code) = migrate_check(&d, &rules)?;
    ensure!(
        code == 0,
        "migrate-check after the flush: exit {code}\n{report}"
    );
    http(&t, 80, topology::HOST_VM)?;
    ssh(&t, 2222, topology::HOST_VM)?;
    tls_6443(&t, topology::HOST_VM)?;
    Ok(())
}

/// The Proxmox guide's interfaces file: `-o vmbr1 -j MASQUERADE` made the
/// VMs see vmbr1's address; the import says `snat = "masquerade"`, and the
/// VMs must see the same address through the forwarder.
#[test]
fn proxmox_interfaces_masquerade_then_imported() -> Result<()> {
    if !require_root("proxmox_interfaces_masquerade_then_imported") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox::build()?;
    let file = corpus("05-proxmox-interfaces-post-up", "interfaces");
    let text = std::fs::read_to_string(&file)?;
    let lines: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("post-up"))
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with("iptables -t nat"))
        .collect();
    run_iptables_lines(&t, &lines)?;
    http(&t, 80, topology::HOST_VM)?;
    tls_6443(&t, topology::HOST_VM)?;

    let (generated, code) = import(&["iptables", &file])?;
    ensure!(
        code == 0 && generated.matches("snat = \"masquerade\"").count() == 3,
        "import exit {code}:\n{generated}"
    );
    t.host.run(&["iptables", "-w", "5", "-t", "nat", "-F"])?;
    let rules = t.dir.file("imported.toml");
    std::fs::write(&rules, &generated)?;
    let _d = Daemon::start(&t.host, &["--rules", &rules.to_string_lossy()])?;
    http(&t, 80, topology::HOST_VM)?;
    tls_6443(&t, topology::HOST_VM)?;
    Ok(())
}

/// socat relays on the host, then the imported forwards. The bytes are the
/// same; the backends see the LAN client instead of the host: the import
/// writes `snat = "auto"`, which keeps client addresses where replies come
/// back through the host (the documented choice, docs/rules.md).
#[test]
fn socat_relays_then_imported() -> Result<()> {
    if !require_root("socat_relays_then_imported") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox::build()?;
    let script = t.dir.file("relays.sh");
    std::fs::write(
        &script,
        "nohup socat TCP4-LISTEN:8080,bind=192.168.1.55,fork,reuseaddr TCP4:192.168.100.80:80 >/dev/null 2>&1 &\n\
         sh -c 'exec socat TCP-LISTEN:2222,bind=0.0.0.0,fork,reuseaddr,su=nobody TCP:192.168.100.81:22' &\n",
    )?;
    let relays: Vec<Bg> = vec![
        t.host.spawn(&[
            "socat",
            "TCP4-LISTEN:8080,bind=192.168.1.55,fork,reuseaddr",
            "TCP4:192.168.100.80:80",
        ])?,
        t.host.spawn(&[
            "socat",
            "TCP-LISTEN:2222,bind=0.0.0.0,fork,reuseaddr",
            "TCP:192.168.100.81:22",
        ])?,
    ];
    forwarder_tests::process::wait_for(std::time::Duration::from_secs(10), || {
        let ss = t.host.output(&["ss", "-ltn"]).unwrap_or_default();
        (ss.contains(":8080 ") && ss.contains(":2222 ")).then_some(())
    })
    .context("socat did not listen")?;
    http(&t, 8080, topology::HOST_VM)?;
    ssh(&t, 2222, topology::HOST_VM)?;

    let (generated, code) = import(&["socat", &script.to_string_lossy(), "--in", "vmbr0"])?;
    ensure!(code == 0, "import exit {code}:\n{generated}");
    let rules = t.dir.file("imported.toml");
    std::fs::write(&rules, &generated)?;
    let d = Daemon::start(&t.host, &["--rules", &rules.to_string_lossy()])?;
    let (report, code) = migrate_check(&d, &rules)?;
    ensure!(
        code == 1 && report.contains("socat still listens"),
        "migrate-check with socat running: exit {code}\n{report}"
    );
    drop(relays);
    let (report, code) = migrate_check(&d, &rules)?;
    ensure!(
        code == 0,
        "migrate-check after stopping socat: exit {code}\n{report}"
    );
    http(&t, 8080, topology::LAN_CLIENT)?;
    ssh(&t, 2222, topology::LAN_CLIENT)?;
    Ok(())
}
