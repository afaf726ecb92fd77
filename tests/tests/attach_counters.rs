//! The daemon attaches to a veth in a namespace and counts real traffic:
//! every packet and byte the kernel says arrived on the interface, by reason.
use anyhow::Result;
use forwarder_tests::{netns, require_root, Daemon, Netns};

fn reason(iface: &serde_json::Value, name: &str) -> (u64, u64) {
    let r = iface["hooks"][0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == name)
        .unwrap_or_else(|| panic!("reason {name} missing"));
    (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap())
}

fn totals(status: &serde_json::Value) -> (u64, u64, serde_json::Value) {
    let ifaces = status["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "exactly one interface attached: {status}");
    let i = ifaces[0].clone();
    let (mut p, mut b) = (0, 0);
    assert_eq!(i["hooks"][0]["hook"], "tc_ingress");
    for r in i["hooks"][0]["reasons"].as_array().unwrap() {
        p += r["packets"].as_u64().unwrap();
        b += r["bytes"].as_u64().unwrap();
    }
    (p, b, i)
}

#[test]
fn counters_match_kernel_rx_for_ping_and_tcp() -> Result<()> {
    if !require_root("counters_match_kernel_rx_for_ping_and_tcp") {
        return Ok(());
    }
    netns::sweep();
    let client = Netns::new("cli")?;
    let server = Netns::new("srv")?;
    netns::veth(&client, "eth0", &server, "eth0")?;
    client.addr("eth0", "10.200.0.1/24")?;
    server.addr("eth0", "10.200.0.2/24")?;

    // One forward on eth0 for a port the traffic below never uses: the
    // program is attached and counts, but translates nothing.
    let rules = std::env::temp_dir().join(format!("fwt-{}-attach.toml", std::process::id()));
    std::fs::write(
        &rules,
        "[[forward]]\nname = \"discard\"\nin = \"eth0\"\nlisten = \"10.200.0.2\"\nport = 9\nto = \"10.200.0.1:9\"\nsnat = \"off\"\n",
    )?;
    let daemon = Daemon::start(&server, &["--rules", rules.to_str().unwrap()]);
    let _ = std::fs::remove_file(&rules);
    let daemon = daemon?;
    let st = daemon.status_json()?;
    assert_eq!(st["daemon"]["interfaces"][0]["state"], "attached", "{st}");

    let (p0, b0, _) = totals(&daemon.status_json()?);
    let (rxp0, rxb0) = server.rx_stats("eth0")?;

    // 10 pings and a 1 MB TCP transfer; the far end must receive every byte.
    client.run(&["ping", "-c", "10", "-i", "0.05", "-W", "1", "10.200.0.2"])?;
    let mut sink = server.spawn(&[
        "socat",
        "-u",
        "TCP-LISTEN:5001,reuseaddr",
        "SYSTEM:wc -c > /tmp/fwt-recv-count",
    ])?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    client.run(&[
        "sh",
        "-c",
        "head -c 1000000 /dev/zero | socat -u STDIN TCP:10.200.0.2:5001",
    ])?;
    let st = sink.child.wait()?;
    assert!(st.success(), "sink failed: {}", sink.log());
    let got = std::fs::read_to_string("/tmp/fwt-recv-count")?;
    let _ = std::fs::remove_file("/tmp/fwt-recv-count");
    assert_eq!(got.trim(), "1000000", "server received everything");

    // The kernel's RX counters bracket ours: read them before and after.
    let (rxp1, rxb1) = server.rx_stats("eth0")?;
    let (p1, b1, iface) = totals(&daemon.status_json()?);
    let (rxp2, rxb2) = server.rx_stats("eth0")?;
    let (dp, db) = (p1 - p0, b1 - b0);
    assert!(
        rxp1 - rxp0 <= dp && dp <= rxp2 - rxp0,
        "packets counted {dp}, kernel rx {}..{}",
        rxp1 - rxp0,
        rxp2 - rxp0
    );
    assert!(
        rxb1 - rxb0 <= db && db <= rxb2 - rxb0,
        "bytes counted {db}, kernel rx {}..{}",
        rxb1 - rxb0,
        rxb2 - rxb0
    );
    // Everything IPv4 is "no match" (no rules yet): at least the 10 echo
    // requests plus the TCP segments carrying 1 MB.
    let (ipv4_p, ipv4_b) = reason(&iface, "pass_no_match");
    assert!(ipv4_p >= 10 + 3, "ipv4 packets {ipv4_p}");
    assert!(ipv4_b >= 1_000_000 + 10 * 98, "ipv4 bytes {ipv4_b}");
    assert!(
        ipv4_b <= 1_000_000 + 10 * 98 + ipv4_p * 80,
        "ipv4 bytes {ipv4_b} too high"
    );
    // Nothing was malformed or dropped.
    assert_eq!(reason(&iface, "pass_malformed").0, 0);
    assert_eq!(reason(&iface, "drop_error").0, 0);

    // `down` detaches: nothing of ours stays on the interface.
    drop(daemon);
    let links = server.output(&["bpftool", "-j", "net", "show", "dev", "eth0"])?;
    assert!(
        !links.contains("fwd_ingress"),
        "still attached after stop: {links}"
    );
    Ok(())
}
