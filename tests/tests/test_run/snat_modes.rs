//! SNAT modes: the source address the backend sees. `off` keeps the
//! client; an address SNATs to it; `masquerade` takes the source the FIB
//! picks for the route to the target (which may be a secondary address);
//! `auto` keeps the client when the reply routes back out of the listening
//! interface, and SNATs a hairpin (a target behind the listening
//! interface itself, whose replies would otherwise go straight back to the
//! client).
//!
//! ```text
//!  client 192.168.1.10 ─┐                          ┌─ vm 192.168.100.80
//!  peer   192.168.1.20 ─┴─ vmbr0 .1.55 [host] vmbr1 ─┴─ vm81 192.168.100.81
//!                               .100.1 and .100.2; route to vm81 src .100.2
//! ```
use forwarder_common::{FlowFlags, Reason, Seen, FEATURES_ALL, PROTO_TCP, RULE_DROP_ERROR};
use forwarder_tests::testrun::{
    frames::{
        ep, fix_checksums, fkey, icmp_error, ip_of, tcp, Ep, Ip, CLIENT, ETH, LAN_PEER, TTL, VM,
        VM81,
    },
    tc::*,
    Host, AUTO_MSS, EPHEMERAL_PORTS, HOST_LAN, LAN_IF, TC_ACT_REDIRECT, TC_ACT_SHOT, VM_IF,
};

const SNAT_MODES: &str = r#"
[[forward]]
name = "off"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "off"

[[forward]]
name = "masq"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.81:81"
snat = "masquerade"

[[forward]]
name = "auto"
in = "vmbr0"
listen = "192.168.1.55"
port = 82
to = "192.168.100.80:82"
snat = "auto"

[[forward]]
name = "hairpin"
in = "vmbr0"
listen = "192.168.1.55"
port = 83
to = "192.168.1.20:83"
snat = "auto"
"#;

/// The fixture with `SNAT_MODES`, and a route to vm81 that prefers a
/// secondary address: masquerade must take it from the FIB, not from the
/// interface's first address.
fn host() -> Option<Host> {
    host_with(FEATURES_ALL)
}

/// [`host`] for a kernel with only `kernel_features`.
fn host_with(kernel_features: u32) -> Option<Host> {
    let h = Host::for_test_with(64, SNAT_MODES, kernel_features)?;
    h.ns.ip(&["addr", "add", "192.168.100.2/24", "dev", VM_IF])
        .unwrap();
    h.ns.ip(&[
        "route",
        "add",
        "192.168.100.81/32",
        "dev",
        VM_IF,
        "src",
        "192.168.100.2",
    ])
    .unwrap();
    Some(h)
}

/// One forward and the flow its SYN must create.
struct Mode {
    rule: &'static str,
    port: u16,
    target: Ep,
    /// Source the backend sees; None: the client.
    snat: Option<Ip>,
    flags: FlowFlags,
    /// Interface the target (and its replies) are on.
    back: &'static str,
}

/// Opens a flow through `m`: the SYN (its entries checked field by field)
/// and the SYN-ACK. Returns what the backend sees as the client.
fn open(h: &mut Host, client: Ep, m: &Mode) -> Ep {
    let listen = ep(HOST_LAN, m.port);
    let syn = tcp(client, listen, "S", &[]);
    let name = format!("{}: SYN", m.rule);
    let s = ingress(&name, LAN_IF, syn.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule(m.rule, created(m.snat.is_some(), false));
    let s = match m.snat {
        Some(ip) => s.out(Out::Snat(ip, EPHEMERAL_PORTS, redirect(client, m.target))),
        None => s.xlate(redirect(client, m.target)),
    };
    let o = step(h, &s);
    let seen_src = m.snat.map_or(client, |ip| ep(ip, o.port));
    let orig = fkey(client, listen, PROTO_TCP);
    let reply = fkey(m.target, seen_src, PROTO_TCP);
    assert_flows(&name, &o.delta, &[orig, reply], &[], &[]);
    let ow = ExpectedEntry {
        new_src: seen_src,
        new_dst: m.target,
        rule: h.id(m.rule),
        flags: m.flags,
        tcp_seen: Seen::SYN,
        packets: 1,
        bytes: syn.len() as u64,
        mss: AUTO_MSS,
    };
    assert_entry(&name, &o.after, &orig, ow);
    assert_entry(
        &name,
        &o.after,
        &reply,
        ExpectedEntry {
            new_src: listen,
            new_dst: client,
            flags: m.flags | FlowFlags::REPLY,
            tcp_seen: Seen::empty(),
            packets: 0,
            bytes: 0,
            ..ow
        },
    );
    let name = format!("{}: SYN-ACK", m.rule);
    let o = step(
        h,
        &ingress(&name, m.back, tcp(m.target, seen_src, "SA", &[]))
            .fwd(m.rule, redirect(listen, client)),
    );
    // SYN_SENT -> SYN_RECV, written to both entries.
    assert_flows(&name, &o.delta, &[], &[], &[orig, reply]);
    seen_src
}

const OFF: Mode = Mode {
    rule: "off",
    port: 80,
    target: ep(VM, 80),
    snat: None,
    flags: FlowFlags::empty(),
    back: VM_IF,
};

#[test]
fn each_snat_mode_picks_the_source_the_backend_sees() {
    let Some(mut h) = host() else { return };
    for m in &all_modes() {
        open(&mut h, ep(CLIENT, 40000), m);
    }
}

/// The same on a kernel whose bpf_fib_lookup has neither
/// BPF_FIB_LOOKUP_SRC nor SKIP_NEIGH (5.10; the fallbacks run here): the
/// masquerade source, and the egress interface of a target whose neighbour
/// is unresolved (none is, in this namespace), come from the daemon's
/// route facts (`FWD_ROUTE_HINTS`), which it rewrites when it hears of the
/// new route (here: `rules` again). The client is in the neighbour table,
/// as a client that ARPed for the host's address is: replies to it, and
/// the route back that `auto` asks for, need its neighbour there.
#[test]
fn each_snat_mode_picks_the_same_source_without_fib_src_or_skip_neigh() {
    let Some(mut h) = host_with(0) else { return };
    h.rules(SNAT_MODES).expect("rules after the route change");
    h.neigh(CLIENT, [0x02, 0, 0, 0, 0, 0x10], LAN_IF).unwrap();
    for m in &all_modes() {
        open(&mut h, ep(CLIENT, 40000), m);
    }
}

/// Without BPF_FIB_LOOKUP_SRC and without the daemon's route facts for the
/// target (a route that appeared since its last plan), there is no source
/// to masquerade to: the SYN is refused, never sent from 0.0.0.0.
#[test]
fn masquerade_without_fib_src_or_route_facts_is_refused_not_sent_from_nowhere() {
    let Some(mut h) = host_with(0) else { return };
    h.dp.maps
        .set_route_hint(std::net::Ipv4Addr::from(VM81), None)
        .expect("forgetting vm81's route facts");
    let refused = [ingress(
        "masquerade without a source",
        LAN_IF,
        tcp(ep(CLIENT, 40000), ep(HOST_LAN, 81), "S", &[]),
    )
    .expect(TC_ACT_SHOT, Reason::DropError)
    .rule("masq", dropped(RULE_DROP_ERROR))];
    steps_leave_flows_alone(&mut h, &refused);
}

fn all_modes() -> [Mode; 4] {
    [
        OFF,
        Mode {
            rule: "masq",
            port: 81,
            target: ep(VM81, 81),
            snat: Some([192, 168, 100, 2]),
            flags: FlowFlags::SNAT,
            back: VM_IF,
        },
        Mode {
            rule: "auto",
            port: 82,
            target: ep(VM, 82),
            snat: None,
            flags: FlowFlags::AUTO,
            back: VM_IF,
        },
        Mode {
            rule: "hairpin",
            port: 83,
            target: ep(LAN_PEER, 83),
            snat: Some(HOST_LAN),
            flags: FlowFlags::AUTO | FlowFlags::SNAT,
            back: LAN_IF,
        },
    ]
}

/// Without SNAT the reply tuple is the client's own: when only the
/// original entry is gone (swept first), the client's next SYN on the same
/// tuple reuses the leftover reply entry instead of being refused.
#[test]
fn without_snat_a_new_syn_reuses_a_leftover_reply_entry() {
    let Some(mut h) = host() else { return };
    let client = ep(CLIENT, 40000);
    open(&mut h, client, &OFF);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let orig = fkey(client, listen, PROTO_TCP);
    let reply = fkey(vm, client, PROTO_TCP);
    h.remove_flow(&orig).unwrap();
    let syn = tcp(client, listen, "S", &[]);
    let name = "off: SYN over a leftover reply entry";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("off", created(false, false))
            .xlate(redirect(client, vm)),
    );
    assert_flows(name, &o.delta, &[orig], &[], &[reply]);
    let e = entry(name, &o.after, &reply);
    assert_eq!(
        (e.packets, e.tcp_seen),
        (0, Seen::empty()),
        "{name}: reply entry fresh"
    );
}

/// Without SNAT the backend addresses its ICMP errors to the client
/// itself: only the VM's side of the tuple changes back.
#[test]
fn without_snat_an_icmp_error_from_the_backend_to_the_client_is_translated_back() {
    let Some(mut h) = host() else { return };
    let client = ep(CLIENT, 40000);
    open(&mut h, client, &OFF);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let mut sent = tcp(client, vm, "PA", &[b'u'; 64]);
    sent[ETH + 8] = TTL - 1;
    fix_checksums(&mut sent[ETH..]);
    let err = icmp_error(VM, CLIENT, 3, 4, [0, 0, 0x05, 0x00], &ip_of(&sent));
    let want = expect_icmp_error(&err, HOST_LAN, CLIENT, (client, listen));
    let name = "off: frag needed from the backend to the client";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, err)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .out(Out::Exact(want)),
    );
    assert_flows(name, &o.delta, &[], &[], &[]);
}
