//! Path MTU on the IPv6 tailnet: a UDP server in the jellyfin pod (MTU
//! 1500) answers the VPS with 1400 bytes, which the node cannot put on its
//! 1280-byte `tailscale0`. The node's ICMPv6 packet too big must reach the
//! pod (with the embedded packet as the pod sent it); the pod then
//! fragments (a UDP socket does, IPv6 routers never do), and the client's
//! next try gets the whole answer: its fragments must reach the VPS
//! translated too.
//!
//! Through ip6tables (a DNAT of the node's tailnet address to the pod), a
//! control without the ICMPv6 error, and then the forwarder (whose flow
//! to the on-link pod is redirected past the stack, so the packet too big
//! must be its own).
use anyhow::{ensure, Result};
use forwarder_tests::{
    client::client,
    dual_stack::learned_mtu,
    k3s6::{K3s6, BIG_UDP_PORT, BIG_UDP_SIZE, JELLYFIN6, NODE_TS6, VPS6},
    netns, require_root, tailnet, Daemon, Netns,
};

fn ip6tables(node: &Netns, rules: &[&str]) -> Result<()> {
    for r in rules {
        let mut args = vec!["ip6tables", "-w", "5"];
        args.extend(r.split_whitespace());
        node.run(&args)?;
    }
    Ok(())
}

fn dnat_to_pod() -> String {
    format!(
        "-t nat -I PREROUTING -i tailscale0 -d {NODE_TS6} -p udp --dport {BIG_UDP_PORT} -j DNAT --to-destination [{}]:{BIG_UDP_PORT}",
        JELLYFIN6.pod6
    )
}

/// Up to three tries of one datagram to the node's tailnet address, each
/// waiting up to 5 s for the answer: the first answer of the full size, or
/// the failure. `-t 5`: socat's stdin ends at once, and by default it
/// waits only 0.5 s after that for the other direction, too short for a
/// forked server's answer on a loaded machine.
fn fetch_big(t: &K3s6) -> Result<()> {
    let script = format!(
        "for i in 1 2 3; do n=$(echo q | socat -t 5 -T 5 - 'UDP6:[{NODE_TS6}]:{BIG_UDP_PORT}' | wc -c); \
         [ \"$n\" -eq {BIG_UDP_SIZE} ] && echo \"try $i: $n\" && exit 0; echo \"try $i: $n\"; done; exit 1"
    );
    let o = client(&t.k.vps, 30, &["sh", "-c", &script]);
    ensure!(o.ok, "{BIG_UDP_SIZE} bytes over UDP from the pod: {o}");
    Ok(())
}

fn check_pmtu(t: &K3s6) -> Result<()> {
    ensure!(
        learned_mtu(&t.k.jellyfin_pod, VPS6).is_none(),
        "the pod knew a path MTU already"
    );
    fetch_big(t)?;
    let mtu = learned_mtu(&t.k.jellyfin_pod, VPS6);
    ensure!(
        mtu == Some(tailnet::MTU),
        "the pod's path MTU toward {VPS6}: {mtu:?}, want {} from a packet too big",
        tailnet::MTU
    );
    Ok(())
}

#[test]
fn ip6tables_packet_too_big_reaches_the_pod() -> Result<()> {
    if !require_root("ip6tables_packet_too_big_reaches_the_pod") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s6::build()?;
    ip6tables(&t.k.node, &[&dnat_to_pod()])?;
    check_pmtu(&t)
}

/// Control: the node's packet too big dropped, every answer is lost.
#[test]
fn without_packet_too_big_the_big_answer_never_arrives() -> Result<()> {
    if !require_root("without_packet_too_big_the_big_answer_never_arrives") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s6::build()?;
    ip6tables(
        &t.k.node,
        &[
            &dnat_to_pod(),
            "-A OUTPUT -p ipv6-icmp --icmpv6-type packet-too-big -j DROP",
        ],
    )?;
    assert!(fetch_big(&t).is_err());
    assert_eq!(learned_mtu(&t.k.jellyfin_pod, VPS6), None);
    Ok(())
}

/// The forwarder's own packet too big reaches the pod (test_run/
/// ipv6_answers.rs has its bytes), and the pod's next answer leaves in two
/// fragments of at most 1280 bytes. What failed here before (issue 13):
/// the node's bridge runs conntrack's defragmentation (br_netfilter)
/// before cni0's TC ingress, so the forwarder saw one 1448-byte datagram
/// again and answered packet too big again, for ever, where ip6_forward
/// refragments such a datagram by the size of its fragments. Now it goes
/// to the stack translated, which does that (forwarder-ebpf/src/ipv6/
/// frag6.rs `reassembled`); fragments that arrive as fragments are
/// translated one by one (test_run/nat66_fragments.rs).
#[test]
fn forwarder_lets_packet_too_big_reach_the_pod() -> Result<()> {
    if !require_root("forwarder_lets_packet_too_big_reach_the_pod") {
        return Ok(());
    }
    netns::sweep();
    let t = K3s6::build()?;
    let rules = t.k.dir.file("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[forward]]\nname = \"big6\"\nin = \"tailscale0\"\nfamily = \"ipv6\"\nproto = \"udp\"\nport = {BIG_UDP_PORT}\nto = \"[{}]:{BIG_UDP_PORT}\"\n",
            JELLYFIN6.pod6
        ),
    )?;
    let _d = Daemon::start(&t.k.node, &["--rules", rules.to_str().unwrap()])?;
    check_pmtu(&t)
}
