//! Path MTU over IPv6: the host's LAN side runs at 1280 while the LAN
//! client and vm80 keep 1500 (tests/src/proxmox6.rs, `narrow_lan`). The
//! client announces an MSS for 1500, so vm80 sends 1500-byte packets that
//! the host cannot forward: only the host's ICMPv6 packet too big, with
//! the embedded packet translated back to what vm80 sent, lets the 30 MB
//! download through. vm80's kernel must have learned MTU 1280 toward the
//! address it talks to (the SNAT source).
//!
//! ip6tables first (the kernel sends and NATs the ICMPv6 error), with a
//! control that drops the packet-too-big and sees the download fail; then
//! the forwarder with MSS clamping off, so only its ICMPv6 can do it.
use anyhow::{ensure, Result};
use forwarder_tests::{
    client::curl,
    dual_stack::learned_mtu,
    netns,
    proxmox6::{url, Proxmox6, BIG_FILE, BIG_SIZE, HOST_LAN6, HOST_VM6, NARROW_MTU},
    require_root, Daemon,
};

const NAT66: &[&str] = &[
    "-t nat -A PREROUTING -i vmbr0 -d 2001:db8:1::55 -p tcp --dport 80 -j DNAT --to-destination [fd00:100::80]:80",
    "-t nat -A POSTROUTING -o vmbr1 -d fd00:100::80 -j SNAT --to-source fd00:100::1",
];

fn ip6tables(t: &Proxmox6, rules: &[&str]) -> Result<()> {
    for r in rules {
        let mut args = vec!["ip6tables", "-w", "5"];
        args.extend(r.split_whitespace());
        t.host.run(&args)?;
    }
    Ok(())
}

fn check_pmtu(t: &Proxmox6) -> Result<()> {
    ensure!(
        learned_mtu(&t.vm80, HOST_VM6).is_none(),
        "vm80 knew a path MTU before the download"
    );
    t.check_big_download(&url(HOST_LAN6, 80, BIG_FILE), HOST_VM6)?;
    let mtu = learned_mtu(&t.vm80, HOST_VM6);
    ensure!(
        mtu == Some(NARROW_MTU),
        "vm80's path MTU toward {HOST_VM6}: {mtu:?}, want {NARROW_MTU} from a packet too big"
    );
    Ok(())
}

#[test]
fn ip6tables_packet_too_big_proves_the_harness() -> Result<()> {
    if !require_root("ip6tables_packet_too_big_proves_the_harness") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build_with(true)?;
    ip6tables(&t, NAT66)?;
    check_pmtu(&t)
}

/// Control: with the host's packet-too-big dropped the same download
/// stalls, so the check above depends on the ICMPv6 error.
#[test]
fn without_packet_too_big_the_download_fails() -> Result<()> {
    if !require_root("without_packet_too_big_the_download_fails") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build_with(true)?;
    ip6tables(&t, NAT66)?;
    ip6tables(
        &t,
        &["-A OUTPUT -p ipv6-icmp --icmpv6-type packet-too-big -j DROP"],
    )?;
    // The first full-size segment never arrives: nothing after the
    // headers gets through, however long one waits (10 s here).
    let o = curl(
        &t.lan,
        3,
        10,
        &["-g", "-o", "/dev/null", "-w", "%{size_download}"],
        &url(HOST_LAN6, 80, BIG_FILE),
    );
    let got: u64 = o.stdout.trim().parse().unwrap_or(0);
    assert!(
        !o.ok && got < BIG_SIZE as u64 / 10,
        "download without packet too big: {o}"
    );
    assert_eq!(learned_mtu(&t.vm80, HOST_VM6), None);
    Ok(())
}

#[test]
fn forwarder_sends_packet_too_big() -> Result<()> {
    if !require_root("forwarder_sends_packet_too_big") {
        return Ok(());
    }
    netns::sweep();
    let t = Proxmox6::build_with(true)?;
    let rules = t.dir.file("rules.toml");
    std::fs::write(
        &rules,
        "[[forward]]\nname = \"http6\"\nin = \"vmbr0\"\nlisten = \"2001:db8:1::55\"\nport = 80\nto = \"[fd00:100::80]:80\"\nsnat = \"fd00:100::1\"\nmss_clamp = \"off\"\n",
    )?;
    let _d = Daemon::start(&t.host, &["--rules", rules.to_str().unwrap()])?;
    check_pmtu(&t)
}
