//! UDP flows: a datagram to a UDP listener creates the flow like a SYN
//! does, the answer comes back translated. A zero checksum means "none"
//! (RFC 768) and must stay zero; Ethernet padding after the datagram is
//! carried, never summed.
use forwarder_common::{FlowFlags, Reason, Seen, PROTO_UDP};
use forwarder_tests::testrun::{
    frames::{ep, fkey, udp, udp_nocsum, Ep, CLIENT, ETH, VM},
    tc::*,
    Host, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, TC_ACT_REDIRECT, VM_IF, WEB_AND_DNS,
};

/// One query/answer exchange of a table row.
struct Exchange {
    /// Says how the datagrams are built; the step names start with it.
    what: &'static str,
    client: Ep,
    /// Sent without checksum (0), which must stay 0.
    zero_checksum: bool,
    /// The query frame padded to the Ethernet minimum of 60 bytes.
    padded: bool,
}

#[test]
fn udp_datagrams_are_translated_both_ways_and_a_zero_checksum_stays_zero() {
    let Some(mut h) = Host::for_test(64, WEB_AND_DNS) else {
        return;
    };
    let id = h.id("dns");
    let listen = ep(HOST_LAN, 5353);
    let vm = ep(VM, 53);
    let exchanges = [
        Exchange {
            what: "checksum",
            client: ep(CLIENT, 50000),
            zero_checksum: false,
            padded: false,
        },
        Exchange {
            what: "zero checksum",
            client: ep(CLIENT, 50001),
            zero_checksum: true,
            padded: false,
        },
        Exchange {
            what: "checksum, frame padded to 60 bytes",
            client: ep(CLIENT, 50002),
            zero_checksum: false,
            padded: true,
        },
    ];
    for x in exchanges {
        let (what, client) = (x.what, x.client);
        let build = if x.zero_checksum { udp_nocsum } else { udp };
        let payload: &[u8] = if x.padded {
            b"q"
        } else {
            b"\x12\x34 dns query bytes"
        };
        let mut q = build(client, listen, payload);
        if x.padded {
            // Ethernet minimum size: the IPv4 total length says where the
            // packet ends; the padding is carried, never summed.
            q.resize(60, 0xa5);
        }
        let s = ingress(format!("UDP query, {what}"), LAN_IF, q.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("dns", created(true, false))
            .out(Out::Snat(HOST_VM, SNAT_PORTS, redirect(client, vm)));
        let o = step(&mut h, &s);
        if x.zero_checksum {
            assert_eq!(
                &o.run.out[ETH + 26..ETH + 28],
                &[0, 0],
                "{}: checksum",
                s.description
            );
        }
        let snat = ep(HOST_VM, o.port);
        let orig = fkey(client, listen, PROTO_UDP);
        let reply = fkey(vm, snat, PROTO_UDP);
        assert_flows(&s.description, &o.delta, &[orig, reply], &[], &[]);
        let ow = ExpectedEntry {
            new_src: snat,
            new_dst: vm,
            rule: id,
            flags: FlowFlags::SNAT,
            tcp_seen: Seen::empty(),
            packets: 1,
            bytes: q.len() as u64,
            mss: 0,
        };
        assert_entry(&s.description, &o.after, &orig, ow);

        let a = build(vm, snat, b"\x12\x34 dns answer bytes, a bit longer");
        let name = format!("UDP answer, {what}");
        let o = step(
            &mut h,
            &ingress(&name, VM_IF, a.clone()).fwd("dns", redirect(listen, client)),
        );
        if x.zero_checksum {
            assert_eq!(&o.run.out[ETH + 26..ETH + 28], &[0, 0], "{name}: checksum");
        }
        // The first reply makes the flow UDP_REPLIED: both entries.
        assert_flows(&name, &o.delta, &[], &[], &[orig, reply]);
        assert_entry(
            &name,
            &o.after,
            &reply,
            ExpectedEntry {
                new_src: listen,
                new_dst: client,
                flags: FlowFlags::SNAT | FlowFlags::REPLY,
                packets: 1,
                bytes: a.len() as u64,
                ..ow
            },
        );
    }
}
