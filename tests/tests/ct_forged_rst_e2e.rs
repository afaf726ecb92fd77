//! A forged RST cannot tear down someone else's connection (issue 11,
//! defect 3: one RST with seq 12345 moved a live flow to CLOSE, it was
//! swept, and the next send got a reset). An RST outside the window its
//! receiver advertised is dropped and counted; the connection goes on after
//! longer than the CLOSE timeout. Through the real daemon, a real TCP
//! connection, the RST sent with a raw socket spoofing the client.
mod ct_e2e_support;

use std::time::Duration;

use anyhow::{ensure, Result};
use ct_e2e_support::*;

#[test]
fn an_out_of_window_rst_leaves_the_connection_alone() -> Result<()> {
    if !require_root("an_out_of_window_rst_leaves_the_connection_alone") {
        return Ok(());
    }
    let t = topo()?;
    let d = t.daemon("[global.timeouts]\ntcp_close = \"1s\"")?;
    let echo = Echo::connect(&t.client, &t.dir, "victim", "10.1.0.1", 9000, "")?;
    echo.round(1)?;
    let port = echo.local_port().to_string();
    let drops_before = reason_count(&d, "drop_out_of_window");
    // The forged RST (and a few others), from the client's tuple.
    for seq in ["12345", "1", "4000000000"] {
        t.flood(&[
            "--to",
            "10.1.0.1:9000",
            "--from",
            "10.1.0.2/32",
            "--sport",
            &port,
            "--flags",
            "R",
            "--seq",
            seq,
            "--count",
            "1",
        ])?;
    }
    // Longer than CLOSE's timeout (1 s here) plus a sweep: the flow would
    // be gone had an RST been believed.
    std::thread::sleep(Duration::from_secs(4));
    echo.round(2)?;
    let counted = wait_for(Duration::from_secs(5), || {
        (reason_count(&d, "drop_out_of_window") >= drops_before + 3).then_some(())
    });
    ensure!(
        counted.is_some(),
        "the forged RSTs were counted: {}",
        d.status_json()?
    );
    let flows = d.cli(&["conntrack", "list", "--json", "--rule", "echo"])?;
    ensure!(flows.contains("ESTABLISHED"), "still established: {flows}");
    Ok(())
}
