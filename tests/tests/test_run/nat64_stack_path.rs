//! NAT64 next to the IPv6 stack path (issue 13), without the NAT64 pool's
//! device: a NAT66 flow to a target without a forwarding route goes
//! through the stack with the client's address kept
//! (test_run/nat66_stack_path.rs), but a NAT64 flow can only from the
//! NAT64 pool (test_run/nat64_pool.rs): from one of the host's IPv4
//! addresses the stack would drop it as a martian. So where the daemon
//! has no `fwd64` (it could not make it: `GlobalConfig::nat64_ifindex`
//! 0), a NAT64 forward to a target the host has no on-link route to (a
//! ClusterIP that only kube-proxy's DNAT in the stack reaches, a host
//! behind a gateway without `path = "redirect"`) starts no flow: the
//! client's packets go to the stack untranslated (`pass_no_match`), as
//! docs/rules.md states, and nothing is translated at egress either.
//!
//! ```text
//!  lan ── veth ── vmbr0  192.168.1.55/24, 2001:db8:1::55/64  (client 2001:db8:1::10)
//!  vm  ── veth ── vmbr1  192.168.100.1/24   router 192.168.100.254 -> 10.50.0.0/24
//!  no route to 10.43.0.0/16 (ClusterIPs)
//! ```
use forwarder_tests::testrun::{
    ipv6::{ep6, ipv6_host, udp6, Ep6, CLIENT6, HOST_LAN6, HOST_LAN6_CIDR},
    tc::*,
    Host, LAN_IF, NAT64_IF,
};

use super::nat64::tcp6;

const RULES: &str = r#"
[[forward]]
name = "cluster64"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 8090
to = "10.43.0.10:80"

[[forward]]
name = "dns64"
in = "vmbr0"
listen = "2001:db8:1::55"
proto = "udp"
port = 5353
to = "10.43.0.11:53"

[[forward]]
name = "gw64"
in = "vmbr0"
listen = "2001:db8:1::55"
port = 8091
to = "10.50.0.5:80"
"#;

fn host() -> Option<Host> {
    let mut h = ipv6_host("nat64_stack_path", &[(LAN_IF, HOST_LAN6_CIDR)])?;
    h.ns.ip(&["route", "add", "10.50.0.0/24", "via", "192.168.100.254"])
        .expect("route behind the gateway");
    // No pool device: the daemon's plan then says nat64_ifindex 0.
    h.ns.ip(&["link", "del", NAT64_IF]).expect("no fwd64");
    h.rules(RULES).expect("rules");
    Some(h)
}

#[test]
fn a_nat64_flow_to_a_target_without_an_on_link_route_is_left_to_the_stack_untranslated() {
    let Some(mut h) = host() else { return };
    // Egress translation on, as for a forward that may take the stack
    // path: a NAT64 flow still must not start one.
    h.egress_nat(LAN_IF, true).unwrap();
    let client: Ep6 = ep6(CLIENT6, 40000);
    let to = |port: u16| ep6(HOST_LAN6, port);
    steps_leave_flows_alone(
        &mut h,
        &[
            ingress(
                "SYN to a NAT64 forward of an IPv4 ClusterIP",
                LAN_IF,
                tcp6(client, to(8090), "S", 64, b""),
            ),
            ingress(
                "UDP to a NAT64 forward of an IPv4 ClusterIP",
                LAN_IF,
                udp6(ep6(CLIENT6, 50000), to(5353), b"\x12\x34 query"),
            ),
            ingress(
                "SYN to a NAT64 forward of a target behind a gateway",
                LAN_IF,
                tcp6(client, to(8091), "S", 64, b""),
            ),
            // What the stack sends back to the client (its own RST, here
            // as a stand-in) is no flow's at egress.
            egress(
                "the stack's answer at egress",
                LAN_IF,
                tcp6(to(8090), client, "RA", 64, b""),
            ),
        ],
    );
}
