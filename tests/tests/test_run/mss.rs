//! MSS clamping: the MSS option of a SYN and a SYN-ACK is lowered to the
//! rule's clamp when larger, wherever it sits among the options (RFC 9293
//! allows any order, and odd offsets after single-byte NOPs), and left
//! alone when smaller. A malformed option list is left alone and the SYN
//! still forwarded. Both entries of the flow record the clamp; segments
//! without SYN carry no MSS and are not counted as clamped. `auto` (the
//! default) is the daemon's: the narrower MTU of the path minus 40.
use forwarder_common::{Reason, PROTO_TCP};
use forwarder_tests::testrun::{
    frames::{ep, fkey, l3, tcp, tcp_opts, verify, Ip, CLIENT, VM},
    tc::*,
    Host, AUTO_MSS, EPHEMERAL_PORTS, HOST_LAN, HOST_TS, HOST_VM, LAN_IF, TC_ACT_REDIRECT, TS_IF,
    TS_MTU, VM_IF,
};

/// A tailnet peer behind tailscale0 (see `frames::l3`).
const TS_CLIENT: Ip = [8, 0, 0, 7];

const MSS: &str = r#"
[[forward]]
name = "clamped"
in = "vmbr0"
listen = "192.168.1.55"
port = 443
to = "192.168.100.80:443"
snat = "192.168.100.1"
mss_clamp = 1240
"#;

/// A SYN's TCP options and what must become of its MSS.
struct SynOptions {
    description: &'static str,
    options: &'static [u8],
    /// The value the program must lower the MSS to, if any.
    clamp: Option<u16>,
    /// The MSS the forwarded SYN carries.
    out: Option<u16>,
    /// The segment's payload (the bytes after the options).
    payload: &'static [u8],
}

/// Ethernet, IPv4 and TCP's fixed header: where the options start in a
/// test frame.
const OPTIONS_AT: usize = 14 + 20 + 20;

/// 36 NOPs, then MSS 1460 in the last four of the 40 option bytes a TCP
/// header can hold: the longest walk there is.
const MSS_LAST: [u8; 40] = {
    let mut o = [1u8; 40];
    o[36] = 2;
    o[37] = 4;
    o[38] = 0x05;
    o[39] = 0xb4;
    o
};

#[test]
fn a_larger_mss_is_lowered_on_syn_and_syn_ack_wherever_the_option_sits() {
    let Some(mut h) = Host::for_test(64, MSS) else {
        return;
    };
    let id = h.id("clamped");
    let listen = ep(HOST_LAN, 443);
    let vm = ep(VM, 443);
    let lowered = |description, options| SynOptions {
        description,
        options,
        clamp: Some(1240),
        out: Some(1240),
        payload: &[],
    };
    let cases = [
        // [NOP, MSS 1460] puts the MSS value at TCP offset 23 (odd).
        lowered(
            "MSS 1460 at an odd offset after a NOP",
            &[1, 2, 4, 0x05, 0xb4, 1, 1, 0],
        ),
        // Window scale (3 bytes), then MSS at offset 25, then SACK permitted.
        lowered(
            "MSS 1460 after window scale",
            &[3, 3, 7, 2, 4, 0x05, 0xb4, 4, 2, 0, 0, 0],
        ),
        // Timestamps first, MSS last at an even offset.
        lowered(
            "MSS 1460 after timestamps",
            &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 2, 4, 0x05, 0xb4],
        ),
        // MSS as the 9th option element (24 of the 40 option bytes).
        lowered(
            "MSS 1460 as the 9th option",
            &[
                1, 3, 3, 7, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 4, 2, 2, 4, 0x05, 0xb4,
            ],
        ),
        SynOptions {
            description: "MSS 1200 below the clamp",
            options: &[2, 4, 0x04, 0xb0, 1, 1, 4, 2],
            clamp: None,
            out: Some(1200),
            payload: &[],
        },
        // A kind byte without its length at the very end of the header
        // (and no payload after it).
        SynOptions {
            description: "option kind cut at the header's end",
            options: &[1, 1, 1, 2],
            clamp: None,
            out: None,
            payload: &[],
        },
        lowered("MSS 1460 in the last 4 of 40 option bytes", &MSS_LAST),
        // The MSS option's kind and length are the header's last two
        // bytes and its value the payload's first two: a walk that read
        // past the header would "clamp" the payload (checksum and all).
        SynOptions {
            description: "MSS option cut off by the header's end, its value in the payload",
            options: &[1, 1, 1, 1, 1, 1, 2, 4],
            clamp: None,
            out: None,
            payload: &[0x05, 0xb4, 0x05, 0xb4],
        },
        // Window scale claiming 40 bytes: the receiver's parser
        // (tcp_parse_options) stops there and never sees the MSS after
        // it, so neither does the clamp.
        SynOptions {
            description: "an option longer than the header hides the MSS after it",
            options: &[1, 3, 40, 2, 4, 0x05, 0xb4, 0],
            clamp: None,
            out: None,
            payload: &[],
        },
        // A zero length would make a naive walk loop forever.
        SynOptions {
            description: "an option of length 0 before the MSS",
            options: &[30, 0, 2, 4, 0x05, 0xb4, 1, 1],
            clamp: None,
            out: None,
            payload: &[],
        },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let what = c.description;
        let client = ep(CLIENT, 40000 + i as u16);
        let syn = tcp_opts(client, listen, "S", c.options, c.payload);
        let exp = created(true, false);
        let s = ingress(format!("SYN, {what}"), LAN_IF, syn.clone())
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("clamped", if c.clamp.is_some() { exp.mss() } else { exp })
            .out(Out::Snat(
                HOST_VM,
                EPHEMERAL_PORTS,
                Xlate {
                    mss: c.clamp,
                    ..redirect(client, vm)
                },
            ));
        let o = step(&mut h, &s);
        let p = verify(&s.description, &o.run.out, false);
        assert_eq!(p.mss, c.out, "{}: MSS", s.description);
        if c.clamp.is_none() {
            assert_eq!(
                o.run.out.get(OPTIONS_AT..),
                syn.get(OPTIONS_AT..),
                "{}: options and payload left alone",
                s.description
            );
        }
        let snat = ep(HOST_VM, o.port);
        let orig = fkey(client, listen, PROTO_TCP);
        let reply = fkey(vm, snat, PROTO_TCP);
        for k in [orig, reply] {
            assert_eq!(
                entry(&s.description, &o.after, &k).mss,
                1240,
                "{}: entry mss",
                s.description
            );
        }
        assert_eq!(entry(&s.description, &o.after, &orig).rule_id, id);

        // The SYN-ACK is clamped too (the backend's MSS toward a narrow
        // client); standard layout, MSS value at offset 22.
        let synack = tcp_opts(vm, snat, "SA", &[2, 4, 0x05, 0xb4, 1, 1, 4, 2], &[]);
        step(
            &mut h,
            &ingress(format!("SYN-ACK, {what}"), VM_IF, synack)
                .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
                .rule("clamped", translated().mss())
                .xlate(Xlate {
                    mss: Some(1240),
                    ..redirect(listen, client)
                }),
        );
        // Segments without SYN keep their options: no MSS there to clamp,
        // and nothing counted.
        step(
            &mut h,
            &ingress(
                format!("ACK, {what}"),
                LAN_IF,
                tcp(client, listen, "A", &[]),
            )
            .fwd("clamped", redirect(snat, vm)),
        );
    }
}

/// `mss_clamp = "auto"` (the default) as the daemon computes it: the
/// narrower MTU of the listening interface and the interface toward the
/// target, minus 40.
const AUTO: &str = r#"
[[forward]]
name = "lan"
in = "vmbr0"
listen = "192.168.1.55"
port = 443
to = "192.168.100.80:443"
snat = "192.168.100.1"

[[forward]]
name = "tailnet"
in = "tailscale0"
port = 443
to = "192.168.100.80:443"
snat = "auto"
"#;

#[test]
fn auto_clamps_to_the_narrower_mtu_of_the_path() {
    let Some(mut h) = Host::for_test(64, AUTO) else {
        return;
    };
    let vm = ep(VM, 443);
    // MSS 8960 (a jumbo-frame client) and MSS 1460, between two veths of
    // MTU 1500: the first is lowered to 1460, the second left as it is.
    let listen = ep(HOST_LAN, 443);
    for (i, (mss, clamp)) in [(8960u16, Some(AUTO_MSS)), (1460, None)]
        .into_iter()
        .enumerate()
    {
        let client = ep(CLIENT, 41000 + i as u16);
        let [hi, lo] = mss.to_be_bytes();
        let syn = tcp_opts(client, listen, "S", &[2, 4, hi, lo], &[]);
        let exp = created(true, false);
        let s = ingress(format!("LAN SYN with MSS {mss}"), LAN_IF, syn)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("lan", if clamp.is_some() { exp.mss() } else { exp })
            .out(Out::Snat(
                HOST_VM,
                EPHEMERAL_PORTS,
                Xlate {
                    mss: clamp,
                    ..redirect(client, vm)
                },
            ));
        let o = step(&mut h, &s);
        let p = verify(&s.description, &o.run.out, false);
        assert_eq!(p.mss, Some(clamp.unwrap_or(mss)), "{}", s.description);
        let orig = fkey(client, listen, PROTO_TCP);
        assert_eq!(entry(&s.description, &o.after, &orig).mss, AUTO_MSS);
    }
    // Through tailscale0 (MTU 1280) the path is narrower: 1240.
    let ts_mss = (TS_MTU - 40) as u16;
    let client = ep(TS_CLIENT, 40000);
    let listen = ep(HOST_TS, 443);
    let syn = l3(&tcp_opts(client, listen, "S", &[2, 4, 0x05, 0xb4], &[]));
    let s = ingress("tailnet SYN with MSS 1460", TS_IF, syn)
        .l3()
        .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
        .rule("tailnet", created(false, false).mss())
        .xlate(Xlate {
            push_eth: true,
            mss: Some(ts_mss),
            ..redirect(client, vm)
        });
    let o = step(&mut h, &s);
    let p = verify(&s.description, &o.run.out, false);
    assert_eq!(p.mss, Some(ts_mss), "{}", s.description);
    for k in [fkey(client, listen, PROTO_TCP), fkey(vm, client, PROTO_TCP)] {
        assert_eq!(entry(&s.description, &o.after, &k).mss, ts_mss);
    }
}
