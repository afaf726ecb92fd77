//! `snat = "auto"` learning. Auto keeps the client's address when the
//! FIB says replies leave by the listening interface; when they do not
//! come back that way after all (the backend's default route goes around
//! this host), the client's SYN goes unanswered. A SYN retransmitted more
//! than AUTO_SNAT_PROBE_NS (200 ms) after its flow began, with nothing
//! ever back from the backend, is one client's evidence; the
//! AUTO_SNAT_CLIENTS-th distinct client's (see `ct_auto_snat` for one
//! client alone) switches its flow to SNAT and remembers the backend
//! (FWD_AUTO_SNAT) for AUTO_SNAT_TTL_NS; a flow that did get a reply stays
//! as it is.
//!
//! ```text
//!  client 192.168.1.10 ── vmbr0 192.168.1.55 [host] vmbr1 ─┬─ vm 192.168.100.80  (never answers)
//!                                                           └─ vm81 192.168.100.81 (answers)
//! ```
use std::time::Duration;

use forwarder_common::{
    addr_v4, AutoSnatKey, FlowEntry, FlowFlags, Reason, Seen, AUTO_SNAT_PROBE_NS, AUTO_SNAT_TTL_NS,
    PROTO_TCP,
};
use forwarder_tests::testrun::{
    frames::{ep, fkey, tcp, CLIENT, VM, VM81},
    tc::*,
    Host, AUTO_MSS, EPHEMERAL_PORTS, HOST_LAN, HOST_VM, LAN_IF, TC_ACT_REDIRECT, VM_IF,
};

/// How old the flow is when its SYN is retransmitted early.
const EARLY: Duration = Duration::from_millis(20);

const AUTO: &str = r#"
[[forward]]
name = "auto80"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "auto"

[[forward]]
name = "auto81"
in = "vmbr0"
listen = "192.168.1.55"
port = 81
to = "192.168.100.81:81"
snat = "auto"
"#;

#[test]
fn a_syn_retransmitted_without_any_reply_switches_the_backend_to_snat_until_the_learning_expires() {
    let Some(mut h) = Host::for_test(64, AUTO) else {
        return;
    };
    let client = ep(CLIENT, 40000);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);
    let syn = tcp(client, listen, "S", &[]);
    let orig = fkey(client, listen, PROTO_TCP);
    let dnat_reply = fkey(vm, client, PROTO_TCP);
    let o = step(
        &mut h,
        &ingress("first SYN keeps the client", LAN_IF, syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("auto80", created(false, false))
            .xlate(redirect(client, vm)),
    );
    assert_flows("first SYN", &o.delta, &[orig, dnat_reply], &[], &[]);
    assert_eq!(entry("first SYN", &o.after, &orig).flags, FlowFlags::AUTO);

    // Answered flow on the other rule: SYN, SYN-ACK.
    let c81 = ep(CLIENT, 40100);
    let l81 = ep(HOST_LAN, 81);
    let v81 = ep(VM81, 81);
    let syn81 = tcp(c81, l81, "S", &[]);
    step(
        &mut h,
        &ingress("auto81 SYN", LAN_IF, syn81.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("auto81", created(false, false))
            .xlate(redirect(c81, v81)),
    );
    step(
        &mut h,
        &ingress("auto81 SYN-ACK", VM_IF, tcp(v81, c81, "SA", &[]))
            .fwd("auto81", redirect(l81, c81)),
    );

    // An early retransmission is just another packet of the flow. Its
    // flow is made 20 ms old for it: older than a tick of the coarse clock
    // the program reads (4 ms here; two steps often fit in one tick), so a
    // probe that does not wait fires here; and 180 ms younger than the
    // probe time, a margin that what runs between the stamp and the
    // program (one snapshot of the maps) does not eat, even when slowed.
    // (Left to the steps above, the age was whatever a loaded machine took
    // for them: often 0, sometimes over 200 ms.) Then the flow is made new
    // again for the real wait below.
    let created_ns = |h: &mut Host, at: u64| {
        let e = h.snapshot().unwrap().flows[&orig];
        h.insert_flow(
            orig,
            FlowEntry {
                created_ns: at,
                ..e
            },
        )
        .unwrap();
    };
    created_ns(&mut h, Host::now_ns() - EARLY.as_nanos() as u64);
    let o = step(
        &mut h,
        &ingress("SYN retransmitted at once", LAN_IF, syn.clone())
            .fwd("auto80", redirect(client, vm)),
    );
    assert_flows("SYN retransmitted at once", &o.delta, &[], &[], &[orig]);
    assert!(o.after.auto_snat.is_empty(), "nothing learned yet");
    let created_at = Host::now_ns();
    created_ns(&mut h, created_at);

    let wait = Duration::from_nanos(AUTO_SNAT_PROBE_NS) + Duration::from_millis(50);
    std::thread::sleep(wait);

    // Two other clients' flows failed the same way before (the evidence
    // of one client is not enough: `ct_auto_snat`).
    for other in [[192, 168, 1, 11], [192, 168, 1, 12]] {
        let oc = ep(other, 40000);
        let osyn = tcp(oc, listen, "S", &[]);
        let name = "another client's SYN";
        step(
            &mut h,
            &ingress(name, LAN_IF, osyn.clone())
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .rule("auto80", created(false, false))
                .xlate(redirect(oc, vm)),
        );
        let ok = fkey(oc, listen, PROTO_TCP);
        let e = h.snapshot().unwrap().flows[&ok];
        let backdated = Host::now_ns() - 2 * AUTO_SNAT_PROBE_NS;
        h.insert_flow(
            ok,
            FlowEntry {
                created_ns: backdated,
                ..e
            },
        )
        .unwrap();
        let name = "its retransmission: evidence, still DNAT only";
        let o = step(
            &mut h,
            &ingress(name, LAN_IF, osyn).fwd("auto80", redirect(oc, vm)),
        );
        assert!(o.after.auto_snat.is_empty(), "{name}: nothing learned yet");
    }

    // Late retransmission without any reply: forget the DNAT-only flow,
    // learn the backend, create the flow anew with SNAT.
    let name = "SYN retransmitted after 200 ms, no reply";
    let s = ingress(name, LAN_IF, syn.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("auto80", created(true, false))
        .out(Out::Snat(HOST_VM, EPHEMERAL_PORTS, redirect(client, vm)));
    let o = step(&mut h, &s);
    let snat = ep(HOST_VM, o.port);
    let snat_reply = fkey(vm, snat, PROTO_TCP);
    assert_flows(name, &o.delta, &[snat_reply], &[dnat_reply], &[orig]);
    let e = entry(name, &o.after, &orig);
    assert!(
        e.created_ns > created_at,
        "{name}: the flow was created anew"
    );
    assert_entry(
        name,
        &o.after,
        &orig,
        ExpectedEntry {
            new_src: snat,
            new_dst: vm,
            rule: h.id("auto80"),
            flags: FlowFlags::AUTO | FlowFlags::SNAT,
            tcp_seen: Seen::SYN,
            packets: 1,
            bytes: syn.len() as u64,
            mss: AUTO_MSS,
        },
    );
    let learned = AutoSnatKey {
        rule_id: h.id("auto80"),
        addr: addr_v4(VM),
    };
    assert_eq!(
        o.after.auto_snat.keys().copied().collect::<Vec<_>>(),
        vec![learned],
        "{name}: FWD_AUTO_SNAT"
    );
    let at = o.after.auto_snat[&learned];
    assert!(
        at > created_at && at <= Host::now_ns(),
        "{name}: learned at {at}"
    );

    // The answered flow is not probed: its retransmitted SYN is just a
    // packet, nothing learned for its backend.
    let name = "answered flow's SYN retransmitted after 200 ms";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, syn81).fwd("auto81", redirect(c81, v81)),
    );
    assert_flows(name, &o.delta, &[], &[], &[fkey(c81, l81, PROTO_TCP)]);
    assert!(
        o.delta.auto_snat_changed.is_empty(),
        "{name}: nothing learned"
    );

    // New flows to the learned backend are SNATed from the start.
    let c2 = ep(CLIENT, 40001);
    let name = "new flow to the learned backend";
    let o = step(
        &mut h,
        &ingress(name, LAN_IF, tcp(c2, listen, "S", &[]))
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("auto80", created(true, false))
            .out(Out::Snat(HOST_VM, EPHEMERAL_PORTS, redirect(c2, vm))),
    );
    assert_eq!(
        entry(name, &o.after, &fkey(c2, listen, PROTO_TCP)).flags,
        FlowFlags::AUTO | FlowFlags::SNAT
    );
    // ... and the new flow's replies come back through the SNAT address.
    let name = "SYN-ACK of the SNATed flow";
    step(
        &mut h,
        &ingress(name, VM_IF, tcp(vm, snat, "SA", &[])).fwd("auto80", redirect(listen, client)),
    );

    // What was learned holds for AUTO_SNAT_TTL_NS; after that the next
    // flow tries to keep the client again. Aged here by rewriting the
    // learned timestamp (CLOCK_MONOTONIC_COARSE, like bpf_ktime_get_coarse_ns).
    let now = Host::now_ns();
    if now > AUTO_SNAT_TTL_NS + 2_000_000_000 {
        h.set_auto_snat_learned_at(learned, now - AUTO_SNAT_TTL_NS - 1_000_000_000)
            .unwrap();
        let c3 = ep(CLIENT, 40002);
        let name = "new flow after the learned SNAT expired";
        let o = step(
            &mut h,
            &ingress(name, LAN_IF, tcp(c3, listen, "S", &[]))
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .rule("auto80", created(false, false))
                .xlate(redirect(c3, vm)),
        );
        assert_eq!(
            entry(name, &o.after, &fkey(c3, listen, PROTO_TCP)).flags,
            FlowFlags::AUTO,
            "{name}"
        );
    } else {
        eprintln!("uptime below AUTO_SNAT_TTL_NS: the expiry case needs an older timestamp");
    }
}
