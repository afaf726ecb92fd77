//! Expiry lives in the dataplane: an entry past its state's timeout is
//! treated as absent by the first packet that finds it (and removed), so
//! a SYN on an expired tuple starts a new flow and a mid-stream packet of
//! an expired flow is no longer translated, whether or not a daemon ever
//! sweeps. The timeouts come from `FWD_CT_CONFIG`. Entries are aged here
//! by rewriting their timestamps (the clock they are stamped with is
//! CLOCK_MONOTONIC_COARSE, `Host::now_ns`), not by sleeping.

use super::ct_support::*;
use forwarder_common::{
    conntrack::{CtConfig, CtState, CtTimeouts},
    FlowKey, Reason,
};
use forwarder_tests::require_root;

const S: u64 = 1_000_000_000;

/// ESTABLISHED flows expire after 30 s here, as the daemon would write it
/// from the rules.
fn established_expires_after_30s(h: &mut Host) {
    let t = CtTimeouts::DEFAULT.with(CtState::Established, 30);
    h.dp.maps
        .set_ct_config(CtConfig {
            timeouts: t,
            ..Default::default()
        })
        .unwrap();
}

/// Moves both entries' last packet `secs` into the past.
fn age(h: &mut Host, keys: &[FlowKey], secs: u64) {
    let snap = h.snapshot().unwrap();
    let then = Host::now_ns() - secs * S;
    for k in keys {
        let mut e = snap.flows[k];
        e.last_seen_ns = then;
        e.created_ns = e.created_ns.min(then);
        h.insert_flow(*k, e).unwrap();
    }
}

#[test]
fn an_expired_flow_is_replaced_by_the_next_syn_on_its_tuple() {
    if !require_root("an_expired_flow_is_replaced_by_the_next_syn_on_its_tuple") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let c = Conn::open(&mut h, ep(CLIENT, 40000), ep(HOST_LAN, 80), ep(VM, 80));
    let keys = [c.orig(), c.reply()];
    // SYN_SENT's default is netfilter's 120 s: 119 s idle is alive.
    age(&mut h, &keys, 119);
    let syn = seg(c.client, c.listen, "S", CLIENT_ISN, 0, b"");
    let (ran, _) = ingress(
        &mut h,
        "retransmitted SYN at 119 s",
        LAN_IF,
        &syn,
        Out::Fwd(c.seen_as, c.target),
    );
    assert!(ran.delta.flows_added.is_empty(), "the same flow");
    age(&mut h, &keys, 121);
    let created = h.snapshot().unwrap().flows[&c.orig()].created_ns;
    let (ran, _) = ingress(
        &mut h,
        "SYN at 121 s",
        LAN_IF,
        &syn,
        Out::Snat(HOST_VM, c.target),
    );
    let e = entry("new flow", &ran.after, &c.orig());
    assert!(
        e.created_ns > created,
        "a new flow replaced the expired one"
    );
    assert_eq!(e.packets, 1);
}

#[test]
fn a_packet_of_an_expired_flow_is_not_translated() {
    if !require_root("a_packet_of_an_expired_flow_is_not_translated") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    established_expires_after_30s(&mut h);
    let mut c = Conn::established(&mut h, ep(CLIENT, 40001), ep(HOST_LAN, 80), ep(VM, 80));
    let keys = [c.orig(), c.reply()];
    age(&mut h, &keys, 29);
    let data = c.client_sends("PA", b"still alive");
    ingress(
        &mut h,
        "data at 29 s",
        LAN_IF,
        &data,
        Out::Fwd(c.seen_as, c.target),
    );
    age(&mut h, &keys, 31);
    let late = c.client_sends("PA", b"too late");
    let (ran, _) = ingress(&mut h, "data at 31 s", LAN_IF, &late, Out::Reset);
    let removed: Vec<FlowKey> = ran.delta.flows_removed.iter().copied().collect();
    assert_eq!(removed.len(), 2, "both entries removed by the kernel");
    for k in &keys {
        assert!(removed.contains(k), "{}", show(k));
    }
}

#[test]
fn one_direction_keeps_the_flow_alive() {
    if !require_root("one_direction_keeps_the_flow_alive") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    established_expires_after_30s(&mut h);
    let mut c = Conn::established(&mut h, ep(CLIENT, 40002), ep(HOST_LAN, 80), ep(VM, 80));
    // The client went quiet 100 s ago, the server sent 5 s ago: the
    // flow's idle time counts from the last packet of either direction.
    age(&mut h, &[c.orig()], 100);
    age(&mut h, &[c.reply()], 5);
    let data = c.client_sends("PA", b"here again");
    ingress(
        &mut h,
        "client after 100 s",
        LAN_IF,
        &data,
        Out::Fwd(c.seen_as, c.target),
    );
}

#[test]
fn a_full_table_of_expired_established_flows_takes_new_ones() {
    if !require_root("a_full_table_of_expired_established_flows_takes_new_ones") {
        return;
    }
    // No daemon sweeps here: the kernel evicts what expired.
    let mut h = Host::with_rules(2, WEB_AND_DNS);
    established_expires_after_30s(&mut h);
    let a = Conn::established(&mut h, ep(CLIENT, 40003), ep(HOST_LAN, 80), ep(VM, 80));
    let b = Conn::established(&mut h, ep(CLIENT, 40004), ep(HOST_LAN, 80), ep(VM, 80));
    let syn = seg(ep(CLIENT, 40005), ep(HOST_LAN, 80), "S", CLIENT_ISN, 0, b"");
    ingress(
        &mut h,
        "full of live flows",
        LAN_IF,
        &syn,
        Out::Drop(Reason::DropTableFull),
    );
    age(&mut h, &[a.orig(), a.reply()], 31);
    let c = Conn::established(&mut h, ep(CLIENT, 40005), ep(HOST_LAN, 80), ep(VM, 80));
    let snap = h.snapshot().unwrap();
    assert!(
        !snap.flows.contains_key(&a.orig()),
        "the expired flow made room"
    );
    assert!(snap.flows.contains_key(&b.orig()));
    assert!(snap.flows.contains_key(&c.orig()));
}
