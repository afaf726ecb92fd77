//! UDP flows as netfilter keeps them: UNREPLIED (30 s) until the first
//! packet back, REPLIED (still 30 s: a DNS exchange is over by then), and
//! a STREAM (120 s, assured: a full table keeps it) once a packet arrives
//! more than 2 s after the first. The state change is written to both
//! entries. The flow's age is set by rewriting its creation time, not by
//! sleeping.

use super::ct_support::*;
use forwarder_common::{
    conntrack::{CtState, CT_ASSURED},
    FlowKey, PROTO_UDP,
};
use forwarder_tests::require_root;

fn udp(src: Ep, dst: Ep, payload: &[u8]) -> Vec<u8> {
    forwarder_tests::testrun::frames::udp(src, dst, payload)
}

fn backdate(h: &mut Host, keys: &[FlowKey], secs: u64) {
    let snap = h.snapshot().unwrap();
    for k in keys {
        let mut e = snap.flows[k];
        e.created_ns -= secs * 1_000_000_000;
        h.insert_flow(*k, e).unwrap();
    }
}

#[test]
fn unreplied_replied_stream() {
    if !require_root("unreplied_replied_stream") {
        return;
    }
    let mut h = Host::with_rules(64, WEB_AND_DNS);
    let client = ep(CLIENT, 50000);
    let listen = ep(HOST_LAN, 5353);
    let vm = ep(VM, 53);
    let q = udp(client, listen, b"query");
    let (_, port) = ingress(&mut h, "query", LAN_IF, &q, Out::Snat(HOST_VM, vm));
    let seen_as = ep(HOST_VM, port);
    let (o, r) = (
        fkey(client, listen, PROTO_UDP),
        fkey(vm, seen_as, PROTO_UDP),
    );
    assert_eq!(
        state("query", &h.snapshot().unwrap(), &o, &r),
        CtState::UdpUnreplied
    );
    // A second query: still unreplied, only its own entry changes.
    let (ran, _) = ingress(&mut h, "second query", LAN_IF, &q, Out::Fwd(seen_as, vm));
    assert_eq!(ran.delta.flows_changed.len(), 1);
    assert_eq!(
        state("second query", &ran.after, &o, &r),
        CtState::UdpUnreplied
    );
    let a = udp(vm, seen_as, b"answer");
    let (ran, _) = ingress(&mut h, "answer", VM_IF, &a, Out::Fwd(listen, client));
    assert_eq!(state("answer", &ran.after, &o, &r), CtState::UdpReplied);
    assert_eq!(ran.delta.flows_changed.len(), 2, "both entries");
    assert_eq!(entry("answer", &ran.after, &o).ct.ct_flags & CT_ASSURED, 0);
    // Three seconds on, the flow is still in use: a stream, assured.
    backdate(&mut h, &[o, r], 3);
    let (ran, _) = ingress(&mut h, "query after 3 s", LAN_IF, &q, Out::Fwd(seen_as, vm));
    assert_eq!(state("stream", &ran.after, &o, &r), CtState::UdpStream);
    for k in [o, r] {
        assert_ne!(entry("stream", &ran.after, &k).ct.ct_flags & CT_ASSURED, 0);
    }
}
