//! The FIB answer cached in a flow entry (issue 19): a packet of an
//! established flow is sent where the entry's cache says while its route
//! generation is current, and looked up again once the daemon bumped the
//! generation (it does on every rtnetlink link/address/route/rule/
//! neighbour event). A cache of another generation, or an empty one, is
//! never used: the FIB decides and the cache is rewritten. The packet's
//! length is checked against the cached route MTU (the PMTU and GSO rows of
//! `l3_tun` and `replies` cover the answers themselves).
//!
//! ```text
//!  client 192.168.1.10 ─┐                      ┌─ vm 192.168.100.80
//!  peer   192.168.1.20 ─┴─ vmbr0 .1.55 [host] vmbr1 .100.1
//! ```
use forwarder::daemon::route_gen;
use forwarder_common::{addr_v4_word, FibCache, FibFlags, FlowKey, Reason, PROTO_UDP};
use forwarder_tests::testrun::{
    frames::{ep, fkey, udp, Ep, CLIENT, LAN_PEER, VM},
    tc::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, TC_ACT_REDIRECT, WEB_AND_DNS,
};

fn word(ip: [u8; 4]) -> u32 {
    addr_v4_word(u32::from_ne_bytes(ip))[0]
}

fn generation(h: &Host) -> u32 {
    h.dp.maps.route_gen.get(&0, 0).unwrap()
}

/// The cache of the original-direction entry `key` now.
fn cache(h: &mut Host, key: &FlowKey) -> FibCache {
    let snap = h.snapshot().unwrap();
    entry("cache", &snap, key).fib
}

/// Opens the flow of `client` to the "dns" forward with its first query;
/// returns the source the backend sees and the original direction's key.
fn open(h: &mut Host, client: Ep) -> (Ep, FlowKey) {
    let listen = ep(HOST_LAN, 5353);
    let o = step(
        h,
        &ingress("first query", LAN_IF, udp(client, listen, b"query"))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("dns", created(true, false))
            .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, ep(VM, 53)))),
    );
    (ep(HOST_VM, o.port), fkey(client, listen, PROTO_UDP))
}

/// One more query of the flow, forwarded.
fn query(h: &mut Host, what: &str, client: Ep, snat: Ep) {
    let listen = ep(HOST_LAN, 5353);
    step(
        h,
        &ingress(what, LAN_IF, udp(client, listen, b"query"))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("dns", translated())
            .xlate(redirect(snat, ep(VM, 53))),
    );
}

#[test]
fn a_route_change_reaches_an_established_flow_once_the_generation_moves() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let client = ep(CLIENT, 50000);
    let (snat, key) = open(&mut h, client);
    let g0 = generation(&h);
    let c = cache(&mut h, &key);
    assert_eq!(
        (c.oif, c.nexthop, c.gen),
        (h.vm, word(VM), g0),
        "the first packet's lookup is cached: vmbr1, on-link"
    );
    assert_eq!(c.mtu, 1500, "vmbr1's MTU, as the FIB reports it");

    // The backend is now reached through a gateway on the LAN side.
    h.ns.ip(&[
        "route",
        "add",
        "192.168.100.80/32",
        "via",
        "192.168.1.20",
        "dev",
        LAN_IF,
    ])
    .unwrap();
    query(
        &mut h,
        "query after the route change, no bump yet",
        client,
        snat,
    );
    let c = cache(&mut h, &key);
    assert_eq!(
        (c.oif, c.gen),
        (h.vm, g0),
        "until the generation moves, the cached answer is used (no lookup)"
    );

    let g1 = route_gen::bump(&mut h.dp.maps.route_gen).unwrap();
    assert_ne!(g1, g0);
    query(&mut h, "query after the bump", client, snat);
    let c = cache(&mut h, &key);
    assert_eq!(
        (c.oif, c.nexthop, c.gen),
        (h.lan, word(LAN_PEER), g1),
        "after the bump the packet goes the new way: vmbr0, via the gateway"
    );
}

#[test]
fn a_cache_of_another_generation_or_an_empty_one_is_never_used() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let client = ep(CLIENT, 50001);
    let (snat, key) = open(&mut h, client);
    let now = route_gen::bump(&mut h.dp.maps.route_gen).unwrap();
    let forged = [
        (
            "a cache of an older generation",
            FibCache {
                oif: h.ts,
                nexthop: word([8, 0, 0, 1]),
                gen: now.wrapping_sub(1),
                mtu: 9000,
                flags: FibFlags::empty(),
            },
        ),
        (
            "an empty cache of the current generation",
            FibCache {
                oif: 0,
                nexthop: word([8, 0, 0, 1]),
                gen: now,
                mtu: 9000,
                flags: FibFlags::empty(),
            },
        ),
    ];
    for (what, fib) in forged {
        let mut e = *entry(what, &h.snapshot().unwrap(), &key);
        e.fib = fib;
        h.insert_flow(key, e).unwrap();
        query(&mut h, what, client, snat);
        let c = cache(&mut h, &key);
        assert_eq!(
            (c.oif, c.nexthop, c.gen, c.mtu),
            (h.vm, word(VM), now, 1500),
            "{what}: the FIB decided and the cache holds its answer"
        );
    }
}

#[test]
fn the_cached_mtu_is_what_a_packet_is_checked_against() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let client = ep(CLIENT, 50002);
    let (_, key) = open(&mut h, client);
    let listen = ep(HOST_LAN, 5353);
    // A current cache that says the route's MTU is 100 bytes: a bigger
    // packet (SNATed, so its source is ours) is answered with
    // fragmentation needed, as a FIB answer of 100 would have it.
    let mut e = *entry("cache", &h.snapshot().unwrap(), &key);
    e.fib.mtu = 100;
    h.insert_flow(key, e).unwrap();
    step(
        &mut h,
        &ingress(
            "a 200-byte packet over a cached MTU of 100",
            LAN_IF,
            udp(client, listen, &[b'x'; 172]),
        )
        .expect(TC_ACT_REDIRECT, Reason::ReplyFragNeeded)
        .rule("dns", translated())
        .out(Out::Answer),
    );
}
