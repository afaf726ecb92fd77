//! A SYN flood from spoofed addresses cannot lock the forwards (issue 11,
//! defect 1: 16 spoofed SYNs locked a 16-entry table for hours). Flows that
//! never complete their handshake are evicted for new ones, oldest first;
//! a legitimate client's handshake completes long before its entry's turn.
//! Through the real daemon, spoofed SYNs sent with a raw socket
//! (`synflood`), real curl clients.
mod ct_e2e_support;

use std::time::Duration;

use anyhow::{ensure, Result};
use ct_e2e_support::*;

#[test]
fn sixteen_spoofed_syns_do_not_lock_a_sixteen_flow_table() -> Result<()> {
    if !require_root("sixteen_spoofed_syns_do_not_lock_a_sixteen_flow_table") {
        return Ok(());
    }
    let t = topo()?;
    let d = t.daemon("conntrack_max = 16")?;
    let sent = t.flood(&["--to", "10.1.0.1:8000", "--from", SPOOFED, "--count", "16"])?;
    ensure!(sent["sent"] == 16, "sent: {sent}");
    let full = wait_for(Duration::from_secs(10), || {
        let st = d.status_json().ok()?;
        (st["conntrack"]["flows"].as_u64()? >= 16).then_some(())
    });
    ensure!(
        full.is_some(),
        "the 16 spoofed SYNs filled the table: {}",
        d.status_json()?
    );
    for i in 0..3 {
        ensure!(
            t.http_ok(10),
            "legitimate request {i} got through the full table"
        );
    }
    let evicted = rule_drop(&d, "web", "evicted");
    ensure!(
        evicted >= 3,
        "each new flow evicted an unanswered one: {evicted}"
    );
    ensure!(rule_drop(&d, "web", "table_full") == 0, "nothing refused");
    Ok(())
}

#[test]
fn legitimate_clients_connect_during_a_flood() -> Result<()> {
    if !require_root("legitimate_clients_connect_during_a_flood") {
        return Ok(());
    }
    let t = topo()?;
    // A table the flood fills in about a second and a half; a legitimate
    // flow then stays unassured-and-evictable for as long again, ample for
    // a handshake even on a busy machine.
    let d = t.daemon("conntrack_max = 8192")?;
    let mut flood = t.flood_bg(&[
        "--to",
        "10.1.0.1:8000",
        "--from",
        SPOOFED,
        "--rate",
        "5000",
        "--secs",
        "40",
    ])?;
    let full = wait_for(Duration::from_secs(20), || {
        let st = d.status_json().ok()?;
        (st["conntrack"]["flows"].as_u64()? >= 8000).then_some(())
    });
    ensure!(
        full.is_some(),
        "the flood filled the table: {}",
        d.status_json()?
    );
    let mut ok = 0;
    for _ in 0..10 {
        ok += usize::from(t.http_ok(15));
    }
    flood.stop();
    ensure!(ok == 10, "{ok} of 10 requests completed during the flood");
    ensure!(rule_drop(&d, "web", "evicted") > 0, "the flood was evicted");
    Ok(())
}
