//! Nothing depends on the daemon to expire flows (issue 11, defect 6: with
//! a tiny table and the daemon stopped, connections 5 and 6 failed). The
//! kernel treats a flow past its timeout as absent and a full table evicts
//! it for a new one. Here four idle established connections fill a 4-flow
//! table, the daemon is stopped (SIGTERM: the dataplane stays), their 2 s
//! timeout passes, and connections 5 and 6 still succeed.
mod ct_e2e_support;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ct_e2e_support::*;

#[test]
fn connections_five_and_six_succeed_without_a_daemon() -> Result<()> {
    if !require_root("connections_five_and_six_succeed_without_a_daemon") {
        return Ok(());
    }
    let t = topo()?;
    let mut d = t.daemon("conntrack_max = 4\n\n[global.timeouts]\ntcp_established = \"2s\"")?;
    let mut held = Vec::new();
    for i in 1..=4 {
        let e = Echo::connect(&t.client, &t.dir, &format!("held{i}"), "10.1.0.1", 9000, "")?;
        e.round(1).with_context(|| format!("connection {i}"))?;
        held.push(e);
    }
    let st = d.status_json()?;
    ensure!(st["conntrack"]["flows"] == 4, "the table is full: {st}");
    let st = d.stop().context("daemon was running")?;
    ensure!(st.success(), "clean exit");
    std::thread::sleep(Duration::from_secs(4));
    ensure!(t.http_ok(10), "connection 5 after the timeout, no daemon");
    ensure!(t.http_ok(10), "connection 6 after the timeout, no daemon");
    Ok(())
}
