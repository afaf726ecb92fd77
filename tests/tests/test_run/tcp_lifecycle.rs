//! A TCP connection through a forward with fixed SNAT, from the SYN that
//! creates its two flow entries (original and reply direction) to
//! TIME_WAIT, and a second one closed by RST and a new connection on the
//! same tuple (a new flow). Both entries carry the connection's state (netfilter's TCP
//! states: ESTABLISHED only once the client acknowledged the SYN-ACK) and
//! each its direction's `tcp_seen` bits, which is what this checks step by
//! step.
//!
//! ```text
//!  client 192.168.1.10:40000 ── vmbr0 [192.168.1.55:80 | 192.168.100.1:41000-41015] vmbr1 ── vm 192.168.100.80:80
//!  original entry: client -> 192.168.1.55:80      => 192.168.100.1:P -> vm
//!  reply entry:    vm -> 192.168.100.1:P          => 192.168.1.55:80 -> client
//! ```
use forwarder_common::{conntrack::CtState, FlowFlags, Reason, Seen, PROTO_TCP};
use forwarder_tests::testrun::{
    frames::{ep, fkey, tcp, CLIENT, VM},
    tc::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, TC_ACT_REDIRECT, VM_IF, WEB_AND_DNS,
};

/// Which end of the connection sends a segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Client,
    Backend,
}

/// One segment of the connection after the SYN: what it is, who sends it,
/// and the `tcp_seen` bits of the sender's entry and the connection's
/// state after it.
struct Segment {
    description: &'static str,
    from: From,
    flags: &'static str,
    payload: &'static [u8],
    seen_after: Seen,
    state_after: CtState,
}

#[test]
fn a_connection_with_fixed_snat_runs_from_syn_to_time_wait_and_restarts_after_a_rst() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let id = h.id("web");
    let client = ep(CLIENT, 40000);
    let listen = ep(HOST_LAN, 80);
    let vm = ep(VM, 80);

    // SYN: DNAT to the VM, SNAT to the fixed address and a port of the range.
    let syn = tcp(client, listen, "S", &[]);
    let s = ingress("SYN creates the flow", LAN_IF, syn.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web", created(true, false))
        .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, vm)));
    let o = step(&mut h, &s);
    let snat = ep(HOST_VM, o.port);
    let orig = fkey(client, listen, PROTO_TCP);
    let reply = fkey(vm, snat, PROTO_TCP);
    assert_flows(&s.description, &o.delta, &[orig, reply], &[], &[]);
    let mut ow = ExpectedEntry {
        new_src: snat,
        new_dst: vm,
        rule: id,
        flags: FlowFlags::SNAT,
        tcp_seen: Seen::SYN,
        packets: 1,
        bytes: syn.len() as u64,
        mss: 0,
    };
    let mut rw = ExpectedEntry {
        new_src: listen,
        new_dst: client,
        flags: FlowFlags::SNAT | FlowFlags::REPLY,
        tcp_seen: Seen::empty(),
        packets: 0,
        bytes: 0,
        ..ow
    };
    assert_entry(&s.description, &o.after, &orig, ow);
    assert_entry(&s.description, &o.after, &reply, rw);
    assert_eq!(
        tcp_state(&s.description, &o.after, &orig, &reply),
        CtState::SynSent
    );

    // Then each segment of the connection, with the entry it touches, the
    // tcp_seen bits it leaves there and the derived state.
    let segments = [
        Segment {
            description: "SYN-ACK un-NATed on the backend side",
            from: From::Backend,
            flags: "SA",
            payload: b"",
            seen_after: Seen::SYN | Seen::ACK,
            state_after: CtState::SynRecv,
        },
        Segment {
            description: "client ACK",
            from: From::Client,
            flags: "A",
            payload: b"",
            seen_after: Seen::SYN | Seen::ACK,
            state_after: CtState::Established,
        },
        Segment {
            description: "client data",
            from: From::Client,
            flags: "PA",
            payload: b"GET / HTTP/1.1\r\nHost: vm80\r\n\r\n",
            seen_after: Seen::SYN | Seen::ACK,
            state_after: CtState::Established,
        },
        Segment {
            description: "backend data",
            from: From::Backend,
            flags: "PA",
            payload: &[b'x'; 700],
            seen_after: Seen::SYN | Seen::ACK,
            state_after: CtState::Established,
        },
        Segment {
            description: "client FIN",
            from: From::Client,
            flags: "FA",
            payload: b"",
            seen_after: Seen::SYN | Seen::ACK | Seen::FIN,
            state_after: CtState::FinWait,
        },
        Segment {
            description: "backend FIN",
            from: From::Backend,
            flags: "FA",
            payload: b"",
            seen_after: Seen::SYN | Seen::ACK | Seen::FIN,
            state_after: CtState::LastAck,
        },
        Segment {
            description: "client last ACK",
            from: From::Client,
            flags: "A",
            payload: b"",
            seen_after: Seen::SYN | Seen::ACK | Seen::FIN,
            state_after: CtState::TimeWait,
        },
    ];
    let mut was = CtState::SynSent;
    for seg in segments {
        let (iface, input, x, key) = match seg.from {
            From::Client => (
                LAN_IF,
                tcp(client, listen, seg.flags, seg.payload),
                redirect(snat, vm),
                orig,
            ),
            From::Backend => (
                VM_IF,
                tcp(vm, snat, seg.flags, seg.payload),
                redirect(listen, client),
                reply,
            ),
        };
        let name = seg.description;
        let len = input.len() as u64;
        let o = step(&mut h, &ingress(name, iface, input).fwd("web", x));
        // A state change is written to both entries.
        let changed = if seg.state_after == was {
            vec![key]
        } else {
            vec![orig, reply]
        };
        was = seg.state_after;
        assert_flows(name, &o.delta, &[], &[], &changed);
        let w = if seg.from == From::Client {
            &mut ow
        } else {
            &mut rw
        };
        w.packets += 1;
        w.bytes += len;
        w.tcp_seen = seg.seen_after;
        assert_entry(name, &o.after, &key, *w);
        assert_eq!(
            tcp_state(name, &o.after, &orig, &reply),
            seg.state_after,
            "{name}: state"
        );
    }

    // A second connection: its own SNAT port; a RST closes it; a new SYN
    // on the same tuple is a new connection.
    let client2 = ep(CLIENT, 40001);
    let syn2 = tcp(client2, listen, "S", &[]);
    let s = ingress("second SYN", LAN_IF, syn2.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web", created(true, false))
        .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client2, vm)));
    let o = step(&mut h, &s);
    assert_ne!(o.port, snat.port, "two flows share a SNAT port");
    let snat2 = ep(HOST_VM, o.port);
    let orig2 = fkey(client2, listen, PROTO_TCP);
    let reply2 = fkey(vm, snat2, PROTO_TCP);
    assert_flows(&s.description, &o.delta, &[orig2, reply2], &[], &[]);

    let rst = tcp(vm, snat2, "RA", &[]);
    let name = "backend RST";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, rst.clone()).fwd("web", redirect(listen, client2)),
    );
    assert_flows(name, &o.delta, &[], &[], &[orig2, reply2]);
    assert_eq!(
        entry(name, &o.after, &reply2).tcp_seen,
        Seen::RST | Seen::ACK
    );
    assert_eq!(tcp_state(name, &o.after, &orig2, &reply2), CtState::Close);

    // A SYN on the closed tuple is a new connection: the old flow is
    // forgotten and the SYN creates one anew from the forward as it is now
    // (netfilter kills the old conntrack and looks the SYN up again).
    let s = ingress("new SYN on the closed tuple", LAN_IF, syn2.clone())
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("web", created(true, false))
        .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client2, vm)));
    let o = step(&mut h, &s);
    let snat3 = ep(HOST_VM, o.port);
    let reply3 = fkey(vm, snat3, PROTO_TCP);
    if reply3 == reply2 {
        assert_flows(&s.description, &o.delta, &[], &[], &[orig2, reply2]);
    } else {
        assert_flows(&s.description, &o.delta, &[reply3], &[reply2], &[orig2]);
    }
    assert_entry(
        &s.description,
        &o.after,
        &orig2,
        ExpectedEntry {
            new_src: snat3,
            new_dst: vm,
            rule: id,
            flags: FlowFlags::SNAT,
            tcp_seen: Seen::SYN,
            packets: 1,
            bytes: syn2.len() as u64,
            mss: 0,
        },
    );
    let name = "SYN-ACK of the restarted connection";
    let o = step(
        &mut h,
        &ingress(name, VM_IF, tcp(vm, snat3, "SA", &[])).fwd("web", redirect(listen, client2)),
    );
    assert_eq!(
        entry(name, &o.after, &reply3).tcp_seen,
        Seen::SYN | Seen::ACK
    );
    assert_eq!(tcp_state(name, &o.after, &orig2, &reply3), CtState::SynRecv);
    // The first flow is untouched by all of this.
    assert_entry("at the end", &o.after, &orig, ow);
    assert_entry("at the end", &o.after, &reply, rw);
}
