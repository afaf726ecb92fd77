//! The TC pipeline, for fwd_ingress and fwd_egress:
//!
//! ```text
//! run:     interface -> parse::packet -> process -> count
//! process: classify -> established ------------------> translate
//!                   \-> admit -> create_flow ----------> translate
//!                       (listener,  (path::decide,       (nat::apply,
//!                        allow-list, newflow::create)     deliver)
//!                        first packet)
//! ```
//!
//! Each stage returns as soon as it has decided; ICMP errors about a flow
//! leave at `classify` for `icmp::error`, which ends in the same `deliver`.
//! The one fact a reader would get wrong: `translate` and the stages it
//! calls out of line are BPF-to-BPF calls whose frames count toward one
//! 512-byte stack, which is why some stages are `#[inline(never)]` and
//! results travel as a one-register `Verdict`. And every call site of
//! `translate` is verified once per state reaching it: `create_flow` calls
//! it itself rather than returning the flow to `process`, which would cost
//! the verifier 37k instructions more for fwd_ingress.
use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use aya_log_ebpf::debug;
use forwarder_common::{
    addr_v4_word, AllowKey, FibFlags, FlowEntry, FlowFlags, FlowKey, Hook, IfaceFlags, ListenFlags,
    ListenerKey, ListenerValue, Reason, ALLOW_EXACT_V4_PREFIX, PROG_SLOT_IPV6,
    PROG_SLOT_IPV6_EGRESS, PROTO_ICMP, PROTO_TCP, PROTO_UDP, RULE_DROP_DENIED, RULE_DROP_ERROR,
    RULE_DROP_NO_PORT, RULE_DROP_OUT_OF_WINDOW, RULE_DROP_RATE_LIMITED, RULE_DROP_TABLE_FULL,
    TCX_NEXT,
};

use crate::{
    conntrack::{self, Arrival, Hit},
    counters,
    error::log_rewrite_failed,
    fib::{self, NextHop},
    flow::handled_here,
    frag,
    hdr::{
        ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_ECHOREPLY, ICMP_PARAMETERPROB, ICMP_TIME_EXCEEDED,
        IP_DST, IP_SRC, TCP_ACK, TCP_RST, TCP_SYN,
    },
    helpers::skb,
    icmp,
    maps::{self, FlowRef},
    nat, newflow,
    parse::{self, Frag, Packet},
    path, reply,
    verdict::Verdict,
};

/// The whole program for `hook`: the interface's settings, the parsed
/// packet, the pipeline, the interface counter.
#[inline(always)]
pub fn run(ctx: &TcContext, hook: Hook) -> i32 {
    let ifindex = skb::ifindex(ctx);
    let Some(iface) = maps::iface(ifindex) else {
        return TCX_NEXT;
    };
    if hook == Hook::TcEgress && !iface.flags.contains(IfaceFlags::EGRESS_NAT) {
        return TCX_NEXT;
    }
    let len = ctx.len();
    let verdict = match parse::packet(ctx, iface.flags.contains(IfaceFlags::L3)) {
        Ok(mut p) => {
            if p.frag == Frag::First {
                // Its later fragments find its flow by these ports. Read
                // here, not after the rewrite: a fragment kind still read
                // there keeps the verifier from merging states through
                // the whole translation (and its MSS walk).
                frag::remember(&p);
            }
            if p.frag == Frag::Later && !frag::find_ports(&mut p) {
                // Not ours to decide (see `frag`): the stack either
                // reassembles a datagram of its own or never can.
                Verdict::next(Reason::PassFragment)
            } else {
                let v = process(ctx, &p, ifindex, len, hook);
                if !v.is_answer() {
                    v
                } else if v.is_nat64() {
                    // At egress only the NAT64 pool's device has flows of
                    // fwd_ingress64's (see `nat64::back`).
                    if hook == Hook::TcIngress || iface.flags.contains(IfaceFlags::NAT64_DEV) {
                        crate::nat64::hand_over(ctx);
                    }
                    Verdict::next(Reason::PassNoMatch)
                } else if v.reason() == Reason::FwdRedirect {
                    send_error(ctx, &p)
                } else {
                    reply::answer(ctx, &p, v)
                }
            }
        }
        // A first fragment too short for its ports: never to the stack,
        // which would reassemble it behind the allow-list's back.
        Err(reason @ Reason::DropError) => Verdict::shot(reason),
        // IPv6 has programs of its own (see `ipv6`), which count it;
        // without them (never loaded) the packet goes on.
        Err(Reason::PassNotIpv4) => {
            let slot = match hook {
                Hook::TcIngress => PROG_SLOT_IPV6,
                _ => PROG_SLOT_IPV6_EGRESS,
            };
            crate::ipv6::tail_call(ctx, slot);
            Verdict::next(Reason::PassNotIpv4)
        }
        Err(reason) => Verdict::next(reason),
    };
    counters::count_iface(iface.slot, hook, verdict.reason(), len);
    verdict.action()
}

/// The pipeline for a parsed packet (see the module comment).
#[inline(always)]
fn process(ctx: &TcContext, p: &Packet, ifindex: u32, len: u32, hook: Hook) -> Verdict {
    match classify(p) {
        Class::Tracked => {}
        Class::IcmpError => return icmp::error(ctx, p, hook, ifindex),
        Class::Untracked => return Verdict::next(Reason::PassNoMatch),
    }
    let key = conntrack::key_of(p);
    let a = Arrival { ifindex, len };
    if let Some(verdict) = established(ctx, p, key, &a, hook) {
        return verdict;
    }
    if p.frag == Frag::Later {
        // Its first fragment started no flow here: the stack's (see `frag`).
        return Verdict::next(Reason::PassFragment);
    }
    if hook != Hook::TcIngress || p.proto == PROTO_ICMP {
        return Verdict::next(Reason::PassNoMatch);
    }
    let l = match admit(p, ifindex) {
        Ok(l) => l,
        Err(verdict) => return verdict,
    };
    create_flow(ctx, p, l, key, &a, hook)
}

enum Class {
    /// Has a flow of its own (TCP, UDP, ICMP echo by identifier).
    Tracked,
    /// An ICMP error, about some flow's packet it quotes.
    IcmpError,
    /// Nothing we translate.
    Untracked,
}

#[inline(always)]
fn classify(p: &Packet) -> Class {
    match p.proto {
        PROTO_TCP | PROTO_UDP => Class::Tracked,
        PROTO_ICMP => match p.icmp_type {
            ICMP_ECHO | ICMP_ECHOREPLY => Class::Tracked,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB => Class::IcmpError,
            _ => Class::Untracked,
        },
        _ => Class::Untracked,
    }
}

/// A packet of a flow we track, translated at this hook; `None` when
/// there is none (expired, or forgotten to be created anew: a dead
/// neighbour's or `snat = "auto"`'s, see `path::auto_probe`) and a new
/// one may be created. The state machine
/// (`conntrack::existing`) may also pass it on (wrong interface) or drop
/// it (an RST/FIN outside the window).
#[inline(always)]
fn established(
    ctx: &TcContext,
    p: &Packet,
    key: FlowKey,
    a: &Arrival,
    hook: Hook,
) -> Option<Verdict> {
    let flow = maps::flow(key)?;
    if !handled_here(flow.entry(), hook) {
        return Some(Verdict::next(Reason::PassNoMatch));
    }
    if flow.entry().flags.contains(FlowFlags::XLAT) {
        // A NAT64 flow's IPv4 side: fwd_ingress64's (see `nat64`).
        return Some(Verdict::nat64());
    }
    if hook == Hook::TcIngress && path::auto_probe(p, flow.entry(), &key, a.ifindex) {
        return None;
    }
    match conntrack::existing(ctx, p, flow.entry_mut(), &key, a) {
        Hit::Forward => {}
        Hit::Gone => return None,
        Hit::WrongIface => return Some(Verdict::next(Reason::PassWrongIface)),
        Hit::OutOfWindow => {
            counters::count_rule_drop(flow.entry().rule_id, RULE_DROP_OUT_OF_WINDOW);
            return Some(Verdict::shot(Reason::DropOutOfWindow));
        }
    }
    counters::count_rule(flow.entry().rule_id, a.len);
    Some(translate(ctx, p, flow, hook))
}

/// The listener a flow's first packet is for, if the rule lets it start
/// one: source in the allow-list, a TCP SYN. A packet for a listener that
/// may not start a flow is answered or dropped here, never handed to the
/// stack: the host may run a service on the same port (issue 11 item 7).
#[inline(always)]
fn admit(p: &Packet, ifindex: u32) -> Result<&'static ListenerValue, Verdict> {
    let lkey = ListenerKey::v4(addr_v4_word(p.dst), ifindex, p.dport, p.proto);
    let Some(l) = maps::listener(lkey) else {
        return Err(Verdict::next(Reason::PassNoMatch));
    };
    if l.flags.contains(ListenFlags::ALLOWLIST) && !allowed(l.rule_id, p.src) {
        counters::count_rule_drop(l.rule_id, RULE_DROP_DENIED);
        return Err(refuse(p, l, Reason::DropDenied));
    }
    if p.proto == PROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN {
        // Mid-stream packet of a flow we do not know (expired, or from
        // before we started): answered like a closed port would.
        return Err(refuse(p, l, Reason::DropUntracked));
    }
    Ok(l)
}

/// What a packet for listener `l` that may not start a flow gets: with
/// `reject = "rst"` what a closed port answers (a TCP RST, an ICMP port
/// unreachable), built here; otherwise, and for a RST, nothing.
#[inline(always)]
fn refuse(p: &Packet, l: &ListenerValue, drop: Reason) -> Verdict {
    if !l.flags.contains(ListenFlags::REJECT) {
        return Verdict::shot(drop);
    }
    match p.proto {
        PROTO_TCP if p.tcp_flags & TCP_RST == 0 => Verdict::answer(Reason::ReplyReset, 0),
        PROTO_UDP => Verdict::answer(Reason::ReplyPortUnreach, 0),
        _ => Verdict::shot(drop),
    }
}

/// Whether rule `rule_id`'s allow-list holds source `src`.
#[inline(always)]
fn allowed(rule_id: u32, src: u32) -> bool {
    let k = Key::new(
        ALLOW_EXACT_V4_PREFIX,
        AllowKey::new(rule_id, addr_v4_word(src)),
    );
    maps::ALLOW.get(&k).is_some()
}

/// Decides the new flow's path (SNAT, redirect or stack), inserts both of
/// its entries, accounts its first packet and translates it.
#[inline(always)]
fn create_flow(
    ctx: &TcContext,
    p: &Packet,
    l: &ListenerValue,
    key: FlowKey,
    a: &Arrival,
    hook: Hook,
) -> Verdict {
    let rule_id = l.rule_id;
    let len = a.len;
    if hook == Hook::TcIngress && p.ttl <= 1 {
        // Expires here: answered, and no flow is left behind for it, nor
        // is it counted against its source's new-flow rate (`translate`
        // checks the packets of existing flows).
        return Verdict::answer(Reason::ReplyTimeExceeded, 0);
    }
    // Decided, prepared, then created: calls in a row rather than one
    // inside the other keep the call chain's stack under 512 bytes.
    let created = path::decide(ctx, p, l, a.ifindex).and_then(|d| {
        if !newflow::prepare(ctx, p, l, &d, a) {
            return Err(Reason::DropError);
        }
        newflow::create(ctx, p, &d)
    });
    if let Err(reason) = created {
        // The reason is rebuilt from constants: as it came back from the
        // call it is an unknown scalar to the verifier, which then cannot
        // bound the counter lookup it indexes (`Verdict::reason`).
        let (drop, reason) = match reason {
            Reason::DropTableFull => (RULE_DROP_TABLE_FULL, Reason::DropTableFull),
            Reason::DropNoPort => (RULE_DROP_NO_PORT, Reason::DropNoPort),
            Reason::DropRateLimited => (RULE_DROP_RATE_LIMITED, Reason::DropRateLimited),
            // A SNATed flow to a dead neighbour (`path::decide`): answered
            // as the router would, no flow left behind.
            Reason::ReplyHostUnreach => return Verdict::answer(Reason::ReplyHostUnreach, 0),
            _ => (RULE_DROP_ERROR, Reason::DropError),
        };
        counters::count_rule_drop(rule_id, drop);
        return Verdict::shot(reason);
    }
    let Some(flow) = maps::flow(key) else {
        // Replaced by another CPU in the meantime: let the client's
        // retransmission try again.
        return Verdict::shot(Reason::DropError);
    };
    let flags = flow.entry().flags;
    counters::count_new_flow(
        rule_id,
        flags.contains(FlowFlags::SNAT),
        flags.contains(FlowFlags::VIA_STACK),
    );
    // (The first packet is accounted on the entry by `newflow::create`.)
    counters::count_rule(rule_id, len);
    let e = flow.entry();
    debug!(
        ctx,
        "rule {} new flow {:i}:{} -> {:i}:{} flags {}",
        rule_id,
        u32::from_be(p.src),
        u16::from_be(p.sport),
        u32::from_be(e.new_dst[0]),
        u16::from_be(e.new_dport),
        e.flags.bits()
    );
    translate(ctx, p, flow, hook)
}

/// Applies `e`'s translation to the packet and sends it on, after the
/// checks a router makes before forwarding (RFC 1812 5.3.1 TTL, 5.2.7.1
/// MTU): they run on the packet as its sender sent it, so the ICMP error
/// quotes what the sender knows, and a packet the stack would refuse as a
/// martian once translated is never handed to it. They run after the
/// state machine (`conntrack::existing`), as netfilter's conntrack runs in
/// PREROUTING before the forwarding path's checks: a segment that expires
/// here still moved its flow's state, one dropped as out of window is
/// never answered.
// Not inlined: own stack frame (see `newflow::create`).
#[inline(never)]
fn translate(ctx: &TcContext, p: &Packet, flow: FlowRef, hook: Hook) -> Verdict {
    let e = flow.entry();
    let hop = if hook != Hook::TcIngress {
        // Egress: the stack forwarded it already; it only continues.
        NextHop::Stack
    } else if p.ttl <= 1 {
        return Verdict::answer(Reason::ReplyTimeExceeded, 0);
    } else if e.flags.contains(FlowFlags::VIA_STACK) {
        NextHop::Stack
    } else {
        match fib::flow_next_hop(ctx, p, flow) {
            // Its neighbour failed (the daemon says: `maps::NEIGH`, read
            // into the flow's cached answer) and this packet cannot go
            // through the stack (see `path::decide` and `path::auto_probe`
            // for those that can): what a router answers when ARP gives
            // up, RFC 1812 4.3.3.1.
            NextHop::Out { .. } if flow.entry().fib.flags.contains(FibFlags::NEIGH_UNREACHABLE) => {
                return Verdict::answer(Reason::ReplyHostUnreach, 0);
            }
            NextHop::TooBig(mtu) if p.df || source_is_ours(flow.entry()) => {
                // DF: RFC 1191. Without DF the translated packet's source
                // is one of ours (a martian to the stack, which would
                // otherwise fragment it) and the untranslated one is
                // addressed to us: frag-needed is the answer that works,
                // Linux senders heed it whatever their DF setting
                // (docs/CONFORMANCE.md, "Too big without DF").
                return Verdict::answer(Reason::ReplyFragNeeded, mtu);
            }
            // The client's own address: the stack fragments it.
            NextHop::TooBig(_) => NextHop::Stack,
            hop => hop,
        }
    };
    // Again: `flow_next_hop` may have written the entry's FIB cache.
    let e = flow.entry();
    // A redirected packet has its TTL decremented with the rewrite (one
    // pass over the header; the stack decrements the others itself).
    let redirected = matches!(hop, NextHop::Out { .. });
    if let Err(err) = nat::apply(ctx, p, e, redirected) {
        log_rewrite_failed(ctx, e.rule_id, err);
        counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
        return Verdict::shot(Reason::DropError);
    }
    if hook == Hook::TcEgress {
        return Verdict::ok(Reason::FwdEgress);
    }
    send(ctx, p, e, hop)
}

/// Whether packets of `e` leave with one of this host's addresses as
/// source: every reply (the forward's address) and SNATed originals.
#[inline(always)]
fn source_is_ours(e: &FlowEntry) -> bool {
    e.flags.intersects(FlowFlags::REPLY.union(FlowFlags::SNAT))
}

/// Sends a translated packet (its TTL decremented if it goes `Out`) on
/// to `hop`. `Out` is always the flow's cached FIB answer
/// (`fib::flow_next_hop`), read here from the entry: the interface and
/// next hop kept across the rewrite instead cost `translate` a stack slot,
/// one too many for 6.1's 512-byte call chain.
#[inline(always)]
fn send(ctx: &TcContext, p: &Packet, e: &FlowEntry, hop: NextHop) -> Verdict {
    match hop {
        NextHop::Out { .. } => match fib::out(
            ctx,
            p,
            e.fib.oif,
            e.fib.nexthop,
            e.fib.flags.contains(FibFlags::L3_OIF),
        ) {
            Ok(v) => v,
            Err(err) => {
                log_rewrite_failed(ctx, e.rule_id, err);
                Verdict::shot(Reason::DropError)
            }
        },
        // Counted apart: a dead neighbour's flows are not "forwarded"
        // like the others (the stack's ARP or netfilter decides).
        _ if e.flags.contains(FlowFlags::NEIGH_DEAD) => Verdict::ok(Reason::FwdStackNeighDead),
        _ => Verdict::ok(Reason::FwdStack),
    }
}

/// Sends an ICMP error about a flow on, once `icmp::error` translated it:
/// at egress it simply continues; at ingress it goes to the stack or
/// (`send_error`, from the top of the pipeline: here, the FIB lookup's
/// locals would grow icmp::error's frame until its call chain passes 512
/// bytes) straight to its egress device. One whose TTL runs out is
/// dropped: no ICMP error is sent about an ICMP error (RFC 1812 4.3.2.7).
#[inline(always)]
pub fn deliver(p: &Packet, hook: Hook, e: &FlowEntry) -> Verdict {
    if hook == Hook::TcEgress {
        return Verdict::ok(Reason::FwdEgress);
    }
    if e.flags.contains(FlowFlags::VIA_STACK) {
        return Verdict::ok(Reason::FwdStack);
    }
    if p.ttl <= 1 {
        return Verdict::shot(Reason::DropError);
    }
    Verdict::answer(Reason::FwdRedirect, 0)
}

/// The redirect of a translated ICMP error (`deliver`), to where its new
/// outer addresses lead. An error too big for the next hop goes to the
/// stack as before (errors are at most 576 bytes in practice).
#[inline(always)]
fn send_error(ctx: &TcContext, p: &Packet) -> Verdict {
    let (Ok(src), Ok(dst)) = (
        skb::load::<u32>(ctx, p.l3 + IP_SRC),
        skb::load::<u32>(ctx, p.l3 + IP_DST),
    ) else {
        return Verdict::shot(Reason::DropError);
    };
    match fib::next_hop(ctx, p, src, dst) {
        NextHop::Out { oif, nexthop } => {
            fib::send(ctx, p, oif, nexthop).unwrap_or(Verdict::shot(Reason::DropError))
        }
        _ => Verdict::ok(Reason::FwdStack),
    }
}
