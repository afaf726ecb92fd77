//! SNAT never takes a port a local socket uses (issue 11, defect 5: a host
//! connection from 10.2.0.1:40000 to the backend was hijacked when a
//! forwarded client was given port 40000). Here the only SNAT port is the
//! one the router's own connection to the backend uses: the forwarded flow
//! is refused instead, and the host's connection keeps its replies. And
//! `status` warns that such a range overlaps the host's ephemeral ports.
mod ct_e2e_support;

use anyhow::{ensure, Result};
use ct_e2e_support::*;

#[test]
fn a_forwarded_flow_never_gets_the_port_of_a_host_connection() -> Result<()> {
    if !require_root("a_forwarded_flow_never_gets_the_port_of_a_host_connection") {
        return Ok(());
    }
    let t = topo()?;
    let d = t.daemon("snat_ports = \"40000-40000\"")?;
    // The router's own connection to the backend's echo port, from the
    // SNAT address and port.
    let host = Echo::connect(
        &t.router,
        &t.dir,
        "host",
        "10.2.0.2",
        9000,
        "10.2.0.1:40000",
    )?;
    host.round(1)?;
    // A client of the "echo" forward: its SNAT tuple would be exactly the
    // host connection's.
    let client = Echo::connect(&t.client, &t.dir, "client", "10.1.0.1", 9000, "");
    // The host's connection still gets its replies.
    host.round(2)?;
    host.round(3)?;
    ensure!(client.is_err(), "the forwarded flow got the host's port");
    ensure!(
        rule_drop(&d, "echo", "no_port") >= 1,
        "refused for want of a port: {}",
        d.status_json()?
    );
    let warnings = d.state()?["warnings"].to_string();
    ensure!(
        warnings.contains("overlaps this host's ephemeral ports"),
        "status warns about the range: {warnings}"
    );
    Ok(())
}
