//! The IPv6 twin of test_run/ct_reopen.rs `keeps_the_old_snat_port`: a
//! client's SYN reusing the tuple of its closed (TIME_WAIT) NAT66
//! connection gets the old connection's SNAT port again. The backend holds
//! that tuple in TIME_WAIT and accepts the new SYN there (its sequence
//! number is past the old connection's); a random port from the range can
//! land on a TIME_WAIT tuple of another client port, whose backend answers
//! with an ACK of the old connection, and the client waits a second to
//! send its SYN again (IPv6 new connections/s fell to 0.34x ip6tables).
//!
//! The fixture is test_run/nat66.rs's: `web6` SNATs to fd00:100::1 with a
//! port from `snat_ports = "41000-41015"`; the client's port lies outside
//! the range, so without the old port a random one of 16 is drawn. Three
//! rounds on three tuples: a pass by chance is 1 in 4,096.
use etherparse::PacketBuilder;
use forwarder_common::{conntrack::CtState, FlowKey, Reason, PROTO_TCP};
use forwarder_tests::testrun::{
    frames::HOST_MAC, tc::*, Host, LAN_IF, SNAT_PORTS, TC_ACT_REDIRECT, VM_IF,
};

use super::nat66::{ep6, host, key6, mac6, read6, Ep6, CLIENT6, HOST_LAN6, HOST_VM6, VM6};

/// A TCP segment with these numbers ("A" acknowledges `ack`), no options.
fn seg6(src: Ep6, dst: Ep6, flags: &str, seq: u32, ack: u32) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(mac6(src.ip), HOST_MAC)
        .ipv6(src.ip, dst.ip, 64)
        .tcp(src.port, dst.port, seq, 64_240);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(ack),
            'F' => b.fin(),
            _ => panic!("flag {f}"),
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

/// A NAT66 connection of `web6` that keeps its sequence numbers; the
/// backend sees the client as `seen`.
struct Conn6 {
    client: Ep6,
    listen: Ep6,
    target: Ep6,
    seen: Ep6,
    cseq: u32,
    sseq: u32,
}

impl Conn6 {
    fn orig(&self) -> FlowKey {
        key6(self.client, self.listen, PROTO_TCP)
    }
    fn reply(&self) -> FlowKey {
        key6(self.target, self.seen, PROTO_TCP)
    }

    /// The client's SYN creates the flow; returns the SNAT port it left
    /// with.
    fn syn(&mut self, h: &mut Host, case: &str) -> u16 {
        let f = seg6(self.client, self.listen, "S", self.cseq, 0);
        self.cseq = self.cseq.wrapping_add(1);
        let s = ingress(case, LAN_IF, f)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("web6", created(true, false))
            .out(Out::Checked);
        let o = step(h, &s);
        let got = read6(case, &o.run.out);
        assert_eq!(
            (got.src.ip, got.dst),
            (HOST_VM6, self.target),
            "{case}: SNATed tuple"
        );
        assert!(SNAT_PORTS.contains(&got.src.port), "{case}: SNAT port");
        self.seen = ep6(HOST_VM6, got.src.port);
        let state = CtState::from_raw(entry(case, &o.after, &self.orig()).ct.state);
        assert_eq!(state, CtState::SynSent, "{case}: state");
        got.src.port
    }

    /// One segment of either side, translated and redirected.
    fn send(&mut self, h: &mut Host, case: &str, from_client: bool, flags: &str) {
        let (f, iface, src, dst) = if from_client {
            let f = seg6(self.client, self.listen, flags, self.cseq, self.sseq);
            (f, LAN_IF, self.seen, self.target)
        } else {
            let f = seg6(self.target, self.seen, flags, self.sseq, self.cseq);
            (f, VM_IF, self.listen, self.client)
        };
        let grows = flags.contains('S') || flags.contains('F');
        if from_client {
            self.cseq = self.cseq.wrapping_add(grows as u32);
        } else {
            self.sseq = self.sseq.wrapping_add(grows as u32);
        }
        let s = ingress(case, iface, f)
            .expect(TC_ACT_REDIRECT, Reason::FwdRedirect)
            .rule("web6", translated())
            .out(Out::Checked);
        let o = step(h, &s);
        let got = read6(case, &o.run.out);
        assert_eq!((got.src, got.dst), (src, dst), "{case}: translated tuple");
    }
}

#[test]
fn a_syn_on_an_ipv6_time_wait_tuple_keeps_the_old_snat_port() {
    let Some(mut h) = host() else { return };
    for (round, client_port) in [40010u16, 40011, 40012].into_iter().enumerate() {
        let case = |what: &str| format!("round {round}: {what}");
        let mut c = Conn6 {
            client: ep6(CLIENT6, client_port),
            listen: ep6(HOST_LAN6, 80),
            target: ep6(VM6, 8080),
            seen: ep6(HOST_VM6, 0),
            cseq: 0x1000_0000,
            sseq: 0x7000_0000,
        };
        let old_port = c.syn(&mut h, &case("SYN"));
        c.send(&mut h, &case("SYN-ACK"), false, "SA");
        c.send(&mut h, &case("ACK"), true, "A");
        c.send(&mut h, &case("client FIN"), true, "FA");
        c.send(&mut h, &case("server ACK and FIN"), false, "FA");
        c.send(&mut h, &case("client's last ACK"), true, "A");
        let snap = h.snapshot().unwrap();
        for k in [c.orig(), c.reply()] {
            let state = CtState::from_raw(entry(&case("closed"), &snap, &k).ct.state);
            assert_eq!(state, CtState::TimeWait, "{}", case("closed"));
        }

        // The client reuses its port for a new connection, its sequence
        // numbers past the old one's.
        c.cseq = c.cseq.wrapping_add(0x0400_0000);
        c.sseq = 0x5555_0000;
        let port = c.syn(&mut h, &case("SYN reusing the TIME_WAIT tuple"));
        assert_eq!(port, old_port, "{}", case("the new connection's SNAT port"));
    }
}
