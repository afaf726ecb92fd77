//! A kernel whose verifier rejects `fwd_ingress6` (issue 13): the daemon
//! starts anyway with `FWD_PROGS` empty, forwards IPv4 as usual, lets IPv6
//! pass to the host's stack untranslated, and says so in `status`.
//!
//! No kernel at hand rejects the program, so the daemon is started with
//! FORWARDER_FORCE_IPV6=off, which takes the same path as a rejection (the
//! slot stays empty, the warning names why).
use anyhow::{ensure, Result};
use forwarder_tests::{
    netns,
    proxmox6::{url, Proxmox6, HOST_LAN, HOST_LAN6, HOST_VM, HOST_VM6, VM80, VM80_6},
    require_root, Daemon,
};

#[test]
fn with_the_ipv6_path_off_ipv4_forwards_and_ipv6_reaches_the_stack() -> Result<()> {
    if !require_root("with_the_ipv6_path_off_ipv4_forwards_and_ipv6_reaches_the_stack") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build()?;
    let rules = format!(
        "[[forward]]\nname = \"web\"\nin = \"vmbr0\"\nlisten = \"{HOST_LAN}\"\nport = 80\nto = \"{VM80}:80\"\nsnat = \"{HOST_VM}\"\n\n\
         [[forward]]\nname = \"web6\"\nin = \"vmbr0\"\nlisten = \"{HOST_LAN6}\"\nport = 80\nto = \"[{VM80_6}]:80\"\nsnat = \"{HOST_VM6}\"\n"
    );
    let path = t.dir.file("rules.toml");
    std::fs::write(&path, rules)?;
    // The daemon inherits this test process's environment (nextest runs
    // each test in a process of its own).
    std::env::set_var("FORWARDER_FORCE_IPV6", "off");
    let d = Daemon::start(&t.host, &["--rules", path.to_str().unwrap()])?;
    std::env::remove_var("FORWARDER_FORCE_IPV6");

    let st = d.state()?;
    let warnings = st["warnings"].to_string();
    ensure!(
        warnings.contains("the IPv6 path is off (FORWARDER_FORCE_IPV6=off)"),
        "status warnings: {warnings}"
    );
    let text = d.cli(&["status"])?;
    ensure!(
        text.contains("warning: the IPv6 path is off"),
        "status text: {text}"
    );
    // IPv4 is forwarded as ever.
    t.check_http(&t.lan, &url(HOST_LAN, 80, ""), HOST_VM, || t.http_peers())?;
    // IPv6 to the host reaches its stack untouched, the NAT66 forward's
    // port included: it answers ping and the port (closed on the host)
    // with a reset, as without the forwarder.
    t.lan
        .run(&["ping", "-6", "-c", "1", "-W", "5", HOST_LAN6])?;
    t.check_refused(&t.lan, &url(HOST_LAN6, 80, ""))?;
    // Counted on vmbr0's ingress as not IPv4 (what an empty slot gives).
    let status = d.status_json()?;
    let passed = status.to_string();
    ensure!(
        passed.contains("pass_not_ipv4"),
        "IPv6 not counted as pass_not_ipv4: {passed}"
    );
    Ok(())
}
