//! Support for the connection-tracking test_run tests (`test_run_ct_*.rs`,
//! one behaviour per file): TCP segments with the sequence numbers a real
//! connection would carry, a connection that keeps them, and one call that
//! runs a frame through a hook and checks the verdict, the one interface
//! counter it moved and the packet that came out (parsed by etherparse,
//! every checksum recomputed, the tuple compared).
//!
//! The host namespace and the dataplane are `forwarder_tests::testrun`'s
//! (see its module comment for the topology).
// Each test file uses its own part of it.
#![allow(dead_code)]

use forwarder_common::{conntrack::CtState, FlowEntry, FlowKey, Hook, Reason, PROTO_TCP};
#[allow(unused_imports)]
pub use forwarder_tests::testrun::{
    assert_counters,
    frames::{ep, fkey, show, verify, Ep, Ip, CLIENT, LAN_PEER, TTL, VM},
    one_counter, Csum, Delta, Host, Snapshot, HOST_LAN, HOST_VM, LAN_IF, SNAT_PORTS, TCX_NEXT,
    TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TS_IF, VM_IF, WEB_AND_DNS,
};

/// The window every segment here advertises (no scaling; `frames::tcp_seg`).
pub const WIN: u16 = 64_240;

/// A TCP segment from `src` to `dst` with these numbers. Flags: any of
/// "S", "A", "F", "R", "P" ("A" sets the acknowledgement to `ack`).
pub fn seg(src: Ep, dst: Ep, flags: &str, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    forwarder_tests::testrun::frames::tcp_seg(src, dst, flags, (seq, ack), &[], payload)
}

/// What one program run did.
pub struct Ran {
    pub verdict: i32,
    pub out: Vec<u8>,
    pub delta: Delta,
    pub after: Snapshot,
}

/// Runs `frame` through the program of `hook` as arriving on (leaving by)
/// `iface` and snapshots everything the programs write before and after.
pub fn run(h: &mut Host, hook: Hook, iface: &'static str, frame: &[u8]) -> Ran {
    run_as(h, hook, iface, frame, Csum::Complete)
}

/// `run` for a frame the program answers: as CHECKSUM_NONE, since
/// reshaping the skb into the answer leaves a CHECKSUM_COMPLETE sum the
/// kernel's test_run check refuses (see test_run/replies.rs); `ingress`
/// checks every checksum of the answer itself.
fn run_answered(h: &mut Host, iface: &'static str, frame: &[u8]) -> Ran {
    run_as(h, Hook::TcIngress, iface, frame, Csum::None)
}

/// `run` with the frame's checksum state given.
fn run_as(h: &mut Host, hook: Hook, iface: &'static str, frame: &[u8], csum: Csum) -> Ran {
    let before = h.snapshot().expect("snapshot");
    let r = h
        .run_with(hook, h.ifindex(iface), frame, csum, None)
        .unwrap_or_else(|e| panic!("test_run on {iface}: {e:#}"));
    let after = h.snapshot().expect("snapshot");
    Ran {
        verdict: r.verdict,
        out: r.out,
        delta: before.delta(&after),
        after,
    }
}

/// What a frame must become.
#[derive(Clone, Copy, Debug)]
pub enum Out {
    /// Translated to this tuple and redirected.
    Fwd(Ep, Ep),
    /// SNATed to this address (any port of the range) towards `Ep`,
    /// redirected; the port is returned.
    Snat(Ip, Ep),
    /// Passed on untouched (TCX_NEXT) under this reason.
    Pass(Reason),
    /// Dropped under this reason.
    Drop(Reason),
    /// Answered with a TCP RST back to its sender (`reject = "rst"`, the
    /// default; the RST's exact bytes are test_run/replies.rs's business).
    Reset,
}

/// Runs `frame` at TC ingress of `iface` and checks the verdict, that
/// exactly the expected interface counter moved by this one packet, and
/// the packet: translated to the expected tuple (checksums recomputed by
/// etherparse) or left byte for byte as it came. Returns the run and, for
/// `Out::Snat`, the source port chosen.
pub fn ingress(
    h: &mut Host,
    case: &str,
    iface: &'static str,
    frame: &[u8],
    want: Out,
) -> (Ran, u16) {
    let r = if matches!(want, Out::Reset) {
        run_answered(h, iface, frame)
    } else {
        run(h, Hook::TcIngress, iface, frame)
    };
    let (verdict, reason) = match want {
        Out::Fwd(..) | Out::Snat(..) => (TC_ACT_REDIRECT, Reason::FwdRedirect),
        Out::Pass(r) => (TCX_NEXT, r),
        Out::Drop(r) => (TC_ACT_SHOT, r),
        Out::Reset => (TC_ACT_REDIRECT, Reason::ReplyReset),
    };
    let moved: Vec<String> = r.delta.moved();
    assert_eq!(
        r.verdict, verdict,
        "{case}: verdict (counters moved: {moved:?})"
    );
    assert_counters(
        case,
        &r.delta,
        &one_counter(iface, Hook::TcIngress, Some(reason), frame.len()),
    );
    let mut port = 0;
    match want {
        Out::Fwd(src, dst) => {
            let p = verify(case, &r.out, false);
            assert_eq!((p.src, p.dst), (src, dst), "{case}: translated tuple");
            assert_eq!(p.ttl, TTL - 1, "{case}: TTL decremented");
        }
        Out::Snat(ip, dst) => {
            let p = verify(case, &r.out, false);
            assert_eq!((p.src.ip, p.dst), (ip, dst), "{case}: SNATed tuple");
            port = p.src.port;
        }
        Out::Pass(_) | Out::Drop(_) => {
            assert_eq!(r.out, frame, "{case}: the packet must be left as it came")
        }
        Out::Reset => {
            let sent = verify(case, frame, false);
            let p = verify(case, &r.out, false);
            assert_eq!(
                (p.src, p.dst),
                (sent.dst, sent.src),
                "{case}: RST to the sender"
            );
        }
    }
    (r, port)
}

/// The connection state both entries of a flow carry (checked equal).
pub fn state(case: &str, snap: &Snapshot, orig: &FlowKey, reply: &FlowKey) -> CtState {
    let o = entry(case, snap, orig).ct.state;
    let r = entry(case, snap, reply).ct.state;
    assert_eq!(o, r, "{case}: both directions carry the state");
    CtState::from_raw(o)
}

pub fn entry<'a>(case: &str, snap: &'a Snapshot, key: &FlowKey) -> &'a FlowEntry {
    snap.flows
        .get(key)
        .unwrap_or_else(|| panic!("{case}: no flow entry {}", show(key)))
}

/// A TCP connection through the forwarder that keeps its sequence
/// numbers: the client talks to `listen`, the backend (`target`) sees it
/// as `seen_as` (learned from the translated SYN).
pub struct Conn {
    pub client: Ep,
    pub listen: Ep,
    pub target: Ep,
    pub seen_as: Ep,
    /// Next sequence number of each side.
    pub cseq: u32,
    pub sseq: u32,
}

pub const CLIENT_ISN: u32 = 0x1000_0000;
pub const SERVER_ISN: u32 = 0x7000_0000;

impl Conn {
    /// Sends the client's SYN on `LAN_IF` (a SNAT forward of `WEB_AND_DNS`
    /// or any forward that SNATs to `HOST_VM`) and learns the SNAT port.
    pub fn open(h: &mut Host, client: Ep, listen: Ep, target: Ep) -> Conn {
        let mut c = Conn {
            client,
            listen,
            target,
            seen_as: client,
            cseq: CLIENT_ISN,
            sseq: SERVER_ISN,
        };
        let syn = c.client_sends("S", b"");
        let (_, port) = ingress(h, "SYN", LAN_IF, &syn, Out::Snat(HOST_VM, target));
        c.seen_as = ep(HOST_VM, port);
        c
    }

    /// `open`, then the SYN-ACK and the client's ACK: ESTABLISHED.
    pub fn established(h: &mut Host, client: Ep, listen: Ep, target: Ep) -> Conn {
        let mut c = Conn::open(h, client, listen, target);
        let sa = c.server_sends("SA", b"");
        ingress(h, "SYN-ACK", VM_IF, &sa, Out::Fwd(listen, client));
        let a = c.client_sends("A", b"");
        ingress(h, "ACK", LAN_IF, &a, Out::Fwd(c.seen_as, target));
        c
    }

    pub fn orig(&self) -> FlowKey {
        fkey(self.client, self.listen, PROTO_TCP)
    }

    pub fn reply(&self) -> FlowKey {
        fkey(self.target, self.seen_as, PROTO_TCP)
    }

    /// The client's next segment (acknowledging everything the server
    /// sent); its sequence advances by the payload (and SYN/FIN).
    pub fn client_sends(&mut self, flags: &str, payload: &[u8]) -> Vec<u8> {
        let f = seg(
            self.client,
            self.listen,
            flags,
            self.cseq,
            self.sseq,
            payload,
        );
        self.cseq = advance(self.cseq, flags, payload);
        f
    }

    /// The server's next segment, as it sends it (to `seen_as`).
    pub fn server_sends(&mut self, flags: &str, payload: &[u8]) -> Vec<u8> {
        let f = seg(
            self.target,
            self.seen_as,
            flags,
            self.sseq,
            self.cseq,
            payload,
        );
        self.sseq = advance(self.sseq, flags, payload);
        f
    }
}

fn advance(seq: u32, flags: &str, payload: &[u8]) -> u32 {
    let extra = flags.contains('S') as u32 + flags.contains('F') as u32;
    seq.wrapping_add(payload.len() as u32 + extra)
}
