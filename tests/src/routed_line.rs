//! The smallest routed topology, shared by the connection-tracking e2e
//! tests and the cluster tests:
//!
//! ```text
//! client 10.1.0.2 -- eth0 10.1.0.1 [router] eth1 10.2.0.1 -- server 10.2.0.2
//! ```
//!
//! The server routes back through the router and the router forwards;
//! nothing listens and nothing is translated yet: each test adds its
//! servers, its rules and the daemon (or netfilter) on the router.

use anyhow::Result;

use crate::netns::{veth, Netns};

/// The client's address (on its eth0).
pub const CLIENT: &str = "10.1.0.2";
/// The router's address on the client side (eth0): where forwards listen.
pub const ROUTER_IN: &str = "10.1.0.1";
/// The router's address on the server side (eth1): the SNAT source.
pub const ROUTER_OUT: &str = "10.2.0.1";
/// The server's address (on its eth0).
pub const SERVER: &str = "10.2.0.2";

/// Builds the line; `labels` name the client, router and server
/// namespaces (each gets the tests' unique prefix).
pub fn build(labels: [&str; 3]) -> Result<(Netns, Netns, Netns)> {
    let [client_label, router_label, server_label] = labels;
    let client = Netns::new(client_label)?;
    let router = Netns::new(router_label)?;
    let server = Netns::new(server_label)?;
    veth(&client, "eth0", &router, "eth0")?;
    veth(&router, "eth1", &server, "eth0")?;
    client.addr("eth0", &format!("{CLIENT}/24"))?;
    router.addr("eth0", &format!("{ROUTER_IN}/24"))?;
    router.addr("eth1", &format!("{ROUTER_OUT}/24"))?;
    server.addr("eth0", &format!("{SERVER}/24"))?;
    server.ip(&["route", "add", "default", "via", ROUTER_OUT])?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    Ok((client, router, server))
}

/// A rules file for the line with `head` first (a `[global]` section, or
/// nothing) and two forwards on the router: "web" (TCP 8000) and "echo"
/// (TCP 9000) of `ROUTER_IN` to the same ports of the server, SNAT to
/// `ROUTER_OUT`.
pub fn web_and_echo_rules(head: &str) -> String {
    let forward = |name: &str, port: u16| {
        format!(
            "[[forward]]\nname = \"{name}\"\nin = \"eth0\"\nlisten = \"{ROUTER_IN}\"\n\
             port = {port}\nto = \"{SERVER}:{port}\"\nsnat = \"{ROUTER_OUT}\"\n"
        )
    };
    format!(
        "{head}\n\n{}\n{}",
        forward("web", 8000),
        forward("echo", 9000)
    )
}
