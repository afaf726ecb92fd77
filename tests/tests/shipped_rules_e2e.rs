//! The package enables and starts the service with the rules file it ships
//! (packaging/rules.toml, issue 15): that file must start a daemon that
//! forwards nothing and puts no program on any interface, so installing
//! the package changes no packet on the host until the admin writes a
//! forward.
use std::path::Path;

use anyhow::{ensure, Result};
use forwarder_tests::{
    netns::{self, tc_programs, Netns},
    require_root, Daemon,
};

#[test]
fn the_shipped_rules_file_starts_a_daemon_that_touches_no_interface() -> Result<()> {
    if !require_root("the_shipped_rules_file_starts_a_daemon_that_touches_no_interface") {
        return Ok(());
    }
    netns::sweep();
    let host = Netns::new("host")?;
    let lan = Netns::new("lan")?;
    netns::veth(&lan, "eth0", &host, "lan0")?;
    host.addr("lan0", "192.168.1.55/24")?;
    lan.addr("eth0", "192.168.1.10/24")?;
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/rules.toml");
    let daemon = Daemon::start(&host, &["--rules", shipped.to_str().unwrap()])?;

    let st = daemon.state()?;
    ensure!(
        st["last_load"]["applied"] == true
            && st["rules"].as_array().is_some_and(|r| r.is_empty())
            && st["interfaces"].as_array().is_some_and(|i| i.is_empty()),
        "status after start: {st}"
    );
    for iface in ["lan0", "lo"] {
        let progs = tc_programs(&host, iface)?;
        ensure!(progs.is_empty(), "{iface} carries {progs:?}");
        let link = host.output(&["ip", "-d", "link", "show", iface])?;
        ensure!(!link.contains("xdp"), "{iface}: {link}");
    }
    // And the host still answers as before: nothing sits in the path.
    let ping = lan.run(&["ping", "-c", "1", "-W", "5", "192.168.1.55"]);
    ensure!(ping.is_ok(), "ping through an untouched host: {ping:?}");
    Ok(())
}
