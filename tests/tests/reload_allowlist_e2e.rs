//! Issue 11, item 2, as reported: a reload between two big allow-lists
//! must never leave a denied client admitted.
//!
//! ```text
//!  lan ns                      host ns (forwarder)                 vm ns
//!  eth0 192.168.1.10 ── veth ── lan0 192.168.1.55   vm0 192.168.100.1 ── veth ── eth0 192.168.100.80
//!                               :2222 -> 192.168.100.80:22, snat off      socat :22 logs each peer
//! ```
//!
//! File A: 10,000 /32 allow entries, not the client. File B: 10,000 others,
//! including the client. A and B together exceed the allow-list map
//! (16,384): the reload A -> B used to fail half-way with ENOSPC, leaving
//! thousands of B's entries in the kernel while the daemon went on
//! describing A; the edit back to A then changed "nothing", `status` said
//! "applied", and the client reached the backend. Now B applies (removes
//! first, as the order allows), and back on A the kernel holds exactly A's
//! entries and the client is refused.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use aya::maps::{LpmTrie, Map, MapData};
use forwarder_common::{AllowKey, MAP_ALLOW};
use forwarder_tests::{
    client::client,
    netns::{self, veth},
    process::wait_for,
    require_root,
    topology::TempDir,
    Bg, Daemon, Netns,
};

const CLIENT: &str = "192.168.1.10";
const ENTRIES: u32 = 10_000;

/// The forward with `allow` entries `base`, `base + 1`, ... (as /32s), the
/// client's address last when `with_client` (still `ENTRIES` in all).
fn rules(base: u32, with_client: bool) -> String {
    let n = if with_client { ENTRIES - 1 } else { ENTRIES };
    let mut allow: Vec<String> = (0..n)
        .map(|i| format!("\"{}\"", Ipv4Addr::from(base + i)))
        .collect();
    if with_client {
        allow.push(format!("\"{CLIENT}\""));
    }
    format!(
        "[[forward]]\nname = \"ssh\"\nin = \"lan0\"\nlisten = \"192.168.1.55\"\nport = 2222\n\
         to = \"192.168.100.80:22\"\nsnat = \"off\"\nallow = [{}]\n",
        allow.join(", ")
    )
}

/// The /32s of `rules(base, with_client)` as the allow map stores them.
fn entries(base: u32, with_client: bool) -> BTreeSet<Ipv4Addr> {
    let n = if with_client { ENTRIES - 1 } else { ENTRIES };
    let mut s: BTreeSet<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::from(base + i)).collect();
    if with_client {
        s.insert(CLIENT.parse().unwrap());
    }
    s
}

fn write_rules(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Every address in the pinned allow-list map (all /32s of rule 0 here).
fn kernel_allow(pin_dir: &Path) -> Result<BTreeSet<Ipv4Addr>> {
    let trie: LpmTrie<MapData, AllowKey, u8> =
        LpmTrie::try_from(Map::LpmTrie(MapData::from_pin(pin_dir.join(MAP_ALLOW))?))?;
    let mut out = BTreeSet::new();
    for k in trie.keys() {
        let k = k?;
        ensure!(
            k.prefix_len() == 64,
            "only /32s were written: {}",
            k.prefix_len()
        );
        out.insert(Ipv4Addr::from(forwarder_common::addr_v4_octets(
            &k.data().addr,
        )));
    }
    Ok(out)
}

/// Waits for the load after `generation` and returns the status file.
fn wait_load(d: &Daemon, generation: u64) -> Result<serde_json::Value> {
    wait_for(Duration::from_secs(30), || {
        d.state()
            .ok()
            .filter(|s| s["generation"].as_u64().unwrap_or(0) > generation)
    })
    .context("the daemon did not report a load of the edited file")
}

/// Connections from the client the backend accepted so far.
fn backend_saw_client(server: &Bg) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains("accepting connection from") && l.contains(CLIENT))
        .count()
}

/// One connection attempt of the client through the forward.
fn connect(lan: &Netns) -> bool {
    let o = client(
        lan,
        6,
        &[
            "socat",
            "-T2",
            "STDIO",
            "TCP:192.168.1.55:2222,connect-timeout=2",
        ],
    );
    o.stdout.contains("hello")
}

#[test]
fn a_failed_big_reload_never_leaves_a_denied_client_admitted() -> Result<()> {
    if !require_root("a_failed_big_reload_never_leaves_a_denied_client_admitted") {
        return Ok(());
    }
    netns::sweep();
    let host = Netns::new("rahost")?;
    let lan = Netns::new("ralan")?;
    let vm = Netns::new("ravm")?;
    veth(&lan, "eth0", &host, "lan0")?;
    veth(&vm, "eth0", &host, "vm0")?;
    lan.addr("eth0", &format!("{CLIENT}/24"))?;
    host.addr("lan0", "192.168.1.55/24")?;
    host.addr("vm0", "192.168.100.1/24")?;
    vm.addr("eth0", "192.168.100.80/24")?;
    vm.ip(&["route", "add", "default", "via", "192.168.100.1"])?;
    host.sysctl("net.ipv4.ip_forward", "1")?;
    let server = vm.spawn(&[
        "socat",
        "-d",
        "-d",
        "TCP-LISTEN:22,reuseaddr,fork",
        "SYSTEM:echo hello",
    ])?;
    wait_for(Duration::from_secs(10), || {
        let ss = vm.output(&["ss", "-ltn"]).unwrap_or_default();
        ss.contains(":22 ").then_some(())
    })
    .context("backend listener")?;

    let a_base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let b_base = u32::from(Ipv4Addr::new(10, 100, 0, 0));
    let dir = TempDir::new("reload-allow")?;
    let path = dir.file("rules.toml");
    write_rules(&path, &rules(a_base, false))?;
    let d = Daemon::start(&host, &["--rules", path.to_str().unwrap()])?;
    ensure!(
        kernel_allow(&d.pin_dir)? == entries(a_base, false),
        "file A in the kernel"
    );
    ensure!(!connect(&lan), "file A refuses the client");
    ensure!(backend_saw_client(&server) == 0, "the backend saw nobody");

    // A -> B.
    let g = d.state()?["generation"].as_u64().unwrap_or(0);
    write_rules(&path, &rules(b_base, true))?;
    let b_state = wait_load(&d, g)?;
    let b_kernel = kernel_allow(&d.pin_dir)?;
    let b_client_in = connect(&lan);

    // B -> A.
    let g = b_state["generation"].as_u64().unwrap_or(0);
    write_rules(&path, &rules(a_base, false))?;
    let a_state = wait_load(&d, g)?;
    let t0 = Instant::now();
    let a_kernel = kernel_allow(&d.pin_dir)?;
    let seen_before = backend_saw_client(&server);
    let a_client_in = connect(&lan);
    let seen_after = backend_saw_client(&server);

    // The defect of the issue: back on A, the client must be refused, the
    // kernel must hold A and nothing else, and "applied" must be true.
    ensure!(
        !a_client_in && seen_after == seen_before,
        "back on file A the denied client reached the backend (status: {})",
        a_state["last_load"]
    );
    let a_entries = entries(a_base, false);
    let stale: Vec<_> = a_kernel.difference(&a_entries).collect();
    ensure!(
        stale.is_empty() && a_kernel.len() == ENTRIES as usize,
        "back on file A the kernel holds {} entries, {} not in A (e.g. {:?})",
        a_kernel.len(),
        stale.len(),
        stale.first()
    );
    ensure!(
        a_state["last_load"]["applied"] == true,
        "A applied: {}",
        a_state["last_load"]
    );
    // And file B itself applied exactly (it fits once A's entries go
    // first), admitting the client it lists.
    ensure!(
        b_state["last_load"]["applied"] == true,
        "B applied: {}",
        b_state["last_load"]
    );
    ensure!(
        b_kernel == entries(b_base, true),
        "file B exactly in the kernel"
    );
    ensure!(b_client_in, "file B admits the client");
    eprintln!(
        "A -> B -> A with {ENTRIES} entries each: B {}, A {} (checked in {:?})",
        b_state["last_load"]["summary"],
        a_state["last_load"]["summary"],
        t0.elapsed()
    );
    Ok(())
}
