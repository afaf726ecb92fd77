//! NAT66 for TCP and UDP at TC ingress (issue 13): IPv6 clients of IPv6
//! targets, with the IPv4 path's flow table, listener and allow-list maps
//! (their keys already hold 16-byte addresses and a family byte),
//! redirected straight to the target's next hop or handed to the stack
//! (`route::decide`, as the IPv4 path's `path::decide`; the replies of
//! flows through the stack are translated at egress, `stack`), and the
//! answers a router sends built in BPF (`reply`: time exceeded, packet too
//! big, TCP RST and port unreachable for refused packets).
//!
//! ```text
//! run: parse -> ICMPv6 error -> icmp6::error --------------> (send)
//!            -> fragments (frag6) -> established ----------> translate
//!                                 \-> admit -> decide -> flow::create -> start_tracking -/
//! entry: run, then the answer a `Verdict::answer` asks for (reply::answer,
//!        which also sends a translated ICMPv6 error on: icmp6::send)
//! ```
//!
//! A program of its own (`fwd_ingress6`), tail-called by fwd_ingress for
//! every packet that is not IPv4: verified separately, it adds nothing to
//! fwd_ingress's verifier work or stack, and a kernel whose verifier
//! rejects it still runs fwd_ingress (the daemon leaves the slot empty).
//!
//! The fact a reader gets wrong: this code runs for every non-IPv4 packet
//! on every interface the rules use (ARP included), and most of them are
//! not its business: no listener, `PassNoMatch`. Extension headers are
//! walked to the L4 header (`parse`; chains it does not take pass as
//! `PassIpOptions`), fragments follow their first fragment (`frag6`; a
//! stray later fragment passes as `PassFragment`), ICMPv6 errors about a
//! flow are translated back to its peer (`icmp6`); ICMPv6 echo, neighbour
//! discovery and router advertisements are never touched. NAT64 listeners
//! (`ListenFlags::XLAT`) are `nat64`'s (its IPv6 side runs here; a NAT64
//! flow takes the stack path only from the NAT64 pool, see
//! `nat64::out::decide`). Not here
//! yet, and passed to the stack untranslated: `snat = "auto"`'s learning
//! from retransmitted SYNs, and the XDP accelerator (IPv6 is left to TC
//! there, `PassIpv6ToTc`).
mod flow;
mod frag6;
mod icmp6;
mod nat;
pub mod parse;
mod reply;
pub(crate) mod route;
mod stack;

pub use stack::egress;

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, PerCpuArray, ProgramArray},
    programs::TcContext,
};
use forwarder_common::{
    AllowKey, FlowEntry, FlowFlags, FlowKey, Hook, IfaceFlags, ListenFlags, ListenerKey,
    ListenerValue, Reason, ALLOW_EXACT_V6_PREFIX, PROG_SLOTS, PROTO_TCP, PROTO_UDP,
    RULE_DROP_DENIED, RULE_DROP_ERROR, RULE_DROP_NO_PORT, RULE_DROP_OUT_OF_WINDOW,
    RULE_DROP_RATE_LIMITED, RULE_DROP_TABLE_FULL, TCX_NEXT,
};

use crate::{
    conntrack::{self, Arrival, Hit},
    counters,
    error::log_rewrite_failed,
    flow::handled_here,
    hdr::{TCP_ACK, TCP_RST, TCP_SYN},
    helpers::skb,
    maps::{self, FlowRef},
    parse::Frag,
    verdict::Verdict,
};
use parse::Packet6;

#[map(name = "FWD_PKT6_SCRATCH")]
static PKT6: PerCpuArray<Packet6> = PerCpuArray::with_max_entries(1, 0);

/// `fwd_ingress6` in slot `PROG_SLOT_IPV6`, `fwd_ingress64` (`nat64`) in
/// `PROG_SLOT_NAT64`, `fwd_egress6` (`stack`) in `PROG_SLOT_IPV6_EGRESS`,
/// put there by the daemon at load. Pinned like the flow table: the kernel
/// empties a program array when its last user reference goes, and a pin
/// is one, so the slots survive the daemon's exit as the attached programs
/// do (a restart does not reset IPv6 flows).
#[map(name = "FWD_PROGS")]
pub(crate) static PROGS: ProgramArray = ProgramArray::with_max_entries(PROG_SLOTS, 0);

/// Hands the packet to the program in `slot` (`fwd_ingress6` from
/// fwd_ingress, `fwd_egress6` from fwd_egress); returns only when that
/// program is not in `FWD_PROGS` (or the tail-call limit is reached).
// Inlined into the caller's own frame on purpose: the kernel allows a
// tail call from a subprogram only under 256 bytes of caller stack.
#[inline(always)]
pub fn tail_call(ctx: &TcContext, slot: u32) {
    // SAFETY: a tail call replaces this program's run with the slot's
    // on the same context; on failure nothing happened.
    unsafe { PROGS.tail_call(ctx, slot) };
}

/// The whole of `fwd_ingress6`: the interface's settings, the IPv6
/// pipeline, the interface counter (as `tc::run` for IPv4).
#[inline(always)]
pub fn entry(ctx: &TcContext) -> i32 {
    let ifindex = skb::ifindex(ctx);
    let Some(iface) = maps::iface(ifindex) else {
        return TCX_NEXT;
    };
    let len = ctx.len();
    let mut verdict = run(ctx, ifindex, len, iface.flags.contains(IfaceFlags::L3));
    if verdict.is_answer() {
        // One call site for the answers, at the top (see `Verdict::answer`).
        verdict = match maps::per_cpu(&PKT6, 0) {
            Some(p) => reply::answer(ctx, p, verdict),
            None => Verdict::shot(Reason::DropError),
        };
    }
    counters::count_iface(iface.slot, Hook::TcIngress, verdict.reason(), len);
    verdict.action()
}

/// The IPv6 pipeline for a packet that is not IPv4, at TC ingress.
/// `PassNotIpv4` when it is not IPv6 either.
// The parsed packet is kept in a per-CPU slot: the call chain below
// (flow::create, translate) must fit the 512-byte stack.
#[inline(always)]
pub fn run(ctx: &TcContext, ifindex: u32, len: u32, l3_device: bool) -> Verdict {
    let Some(l3) = parse::l3_of(ctx, l3_device) else {
        return Verdict::next(Reason::PassNotIpv4);
    };
    let Some(p) = maps::per_cpu(&PKT6, 0) else {
        return Verdict::next(Reason::PassNotIpv4);
    };
    match parse::packet(ctx, l3, p) {
        Ok(()) => {}
        // A first fragment too short for its ports (see `parse::packet`).
        Err(reason @ Reason::DropError) => return Verdict::shot(reason),
        Err(reason) => return Verdict::next(reason),
    }
    if p.p.proto == parse::PROTO_ICMPV6 {
        // Errors about our flows are translated; echo, neighbour discovery
        // and router advertisements are the stack's (see `icmp6`).
        if icmp6::is_error(p.p.icmp_type) {
            return icmp6::error(ctx, p, ifindex);
        }
        return Verdict::next(Reason::PassNoMatch);
    }
    match p.p.frag {
        Frag::None => {}
        // Its later fragments find its flow by these ports (`frag6`).
        Frag::First => frag6::remember(p),
        Frag::Later => {
            if !frag6::find_ports(p) {
                return Verdict::next(Reason::PassFragment);
            }
        }
    }
    let p: &Packet6 = p;
    let key = flow::key(p.src, p.dst, p.p.sport, p.p.dport, p.p.proto);
    let a = Arrival { ifindex, len };
    if let Some(verdict) = established(ctx, p, key, &a) {
        return verdict;
    }
    if p.p.frag == Frag::Later {
        // Its first fragment started no flow here: the stack's.
        return Verdict::next(Reason::PassFragment);
    }
    let l = match admit(p, ifindex) {
        Ok(l) => l,
        Err(verdict) => return verdict,
    };
    create_flow(ctx, p, l, key, &a)
}

/// A packet of a flow we track, through the IPv4 path's state machine
/// (`conntrack::existing`: the flow key and entries are family-neutral);
/// `None` when there is none (or it just expired) and a new one may start.
// Not inlined, nor is `create_flow`: fwd_ingress6's own frame stays small
// enough for the deepest call chain under it to fit 512 bytes.
#[inline(never)]
fn established(ctx: &TcContext, p: &Packet6, key: FlowKey, a: &Arrival) -> Option<Verdict> {
    let flow = maps::flow(key)?;
    if !handled_here(flow.entry(), Hook::TcIngress) {
        return Some(Verdict::next(Reason::PassNoMatch));
    }
    // Offsets bounded for the state machine's header reads (see `translate`).
    let q = parse::bounded(&p.p);
    match conntrack::existing(ctx, &q, flow.entry_mut(), &key, a) {
        Hit::Forward => {}
        Hit::Gone => return None,
        Hit::WrongIface => return Some(Verdict::next(Reason::PassWrongIface)),
        Hit::OutOfWindow => {
            counters::count_rule_drop(flow.entry().rule_id, RULE_DROP_OUT_OF_WINDOW);
            return Some(Verdict::shot(Reason::DropOutOfWindow));
        }
    }
    let e = flow.entry();
    counters::count_rule(e.rule_id, a.len);
    Some(translate_any(ctx, p, e))
}

/// `translate`, or for a NAT64 flow `nat64::out::translate` (a call of the
/// same depth).
#[inline(always)]
fn translate_any(ctx: &TcContext, p: &Packet6, e: &FlowEntry) -> Verdict {
    if e.flags.contains(FlowFlags::XLAT) {
        crate::nat64::out::translate(ctx, p, e)
    } else {
        translate(ctx, p, e)
    }
}

/// The listener a flow's first packet is for, if the rule lets it start
/// one: an IPv6 target, source in the allow-list, a TCP SYN.
#[inline(always)]
fn admit(p: &Packet6, ifindex: u32) -> Result<&'static ListenerValue, Verdict> {
    let lkey = ListenerKey::v6(p.dst, ifindex, p.p.dport, p.p.proto);
    let Some(l) = maps::listener(lkey) else {
        return Err(Verdict::next(Reason::PassNoMatch));
    };
    // Refused packets are answered here (`reject`) or dropped, never
    // handed to the stack: the host may run a service on the port.
    if l.flags.contains(ListenFlags::ALLOWLIST) {
        let k = Key::new(ALLOW_EXACT_V6_PREFIX, AllowKey::v6(l.rule_id, p.src));
        if maps::ALLOW.get(&k).is_none() {
            counters::count_rule_drop(l.rule_id, RULE_DROP_DENIED);
            return Err(refuse(p, l, Reason::DropDenied));
        }
    }
    if p.p.proto == PROTO_TCP && (p.p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN {
        // Mid-stream segment of a flow we do not know: answered like a
        // closed port would.
        return Err(refuse(p, l, Reason::DropUntracked));
    }
    Ok(l)
}

/// What a packet for listener `l` that may not start a flow gets: with
/// `reject = "rst"` what a closed port answers (a TCP RST, an ICMPv6 port
/// unreachable), built by `reply`; otherwise, and for a RST, nothing.
#[inline(always)]
fn refuse(p: &Packet6, l: &ListenerValue, drop: Reason) -> Verdict {
    if !l.flags.contains(ListenFlags::REJECT) {
        return Verdict::shot(drop);
    }
    match p.p.proto {
        PROTO_TCP if p.p.tcp_flags & TCP_RST == 0 => Verdict::answer(Reason::ReplyReset, 0),
        PROTO_UDP => Verdict::answer(Reason::ReplyPortUnreach, 0),
        _ => Verdict::shot(drop),
    }
}

/// Decides the new flow's source, inserts both of its entries (the first
/// packet accounted on them), and translates the packet.
#[inline(never)]
fn create_flow(
    ctx: &TcContext,
    p: &Packet6,
    l: &ListenerValue,
    key: FlowKey,
    a: &Arrival,
) -> Verdict {
    let rule_id = l.rule_id;
    if p.p.ttl <= 1 {
        // Expires here: answered, and no flow is left behind for it.
        return Verdict::answer(Reason::ReplyTimeExceeded, 0);
    }
    // Decided first, then created: two calls in a row (see tc.rs).
    // NAT64 (`ListenFlags::XLAT`): an IPv4 source, see `nat64::out`.
    let decided = if l.flags.contains(ListenFlags::XLAT) {
        crate::nat64::out::decide(ctx, p, l, a.ifindex)
    } else {
        route::decide(ctx, p, l, a.ifindex).map(Some)
    };
    let created = match decided {
        // Handed over in map memory (see `route::DECISION6`).
        Ok(Some(d)) => match maps::per_cpu(&route::DECISION6, 0) {
            Some(slot) => {
                *slot = d;
                flow::create(p, l, a)
            }
            None => Err(Reason::DropError),
        },
        // NAT64 only could not be delivered but by the stack, which drops
        // a packet from one of its own addresses: left to it untranslated.
        Ok(None) => return Verdict::next(Reason::PassNoMatch),
        Err(reason) => Err(reason),
    };
    if let Err(reason) = created {
        // Rebuilt from constants (see tc.rs `create_flow`).
        let (drop, reason) = match reason {
            Reason::DropTableFull => (RULE_DROP_TABLE_FULL, Reason::DropTableFull),
            Reason::DropNoPort => (RULE_DROP_NO_PORT, Reason::DropNoPort),
            Reason::DropRateLimited => (RULE_DROP_RATE_LIMITED, Reason::DropRateLimited),
            _ => (RULE_DROP_ERROR, Reason::DropError),
        };
        counters::count_rule_drop(rule_id, drop);
        return Verdict::shot(reason);
    }
    let Some(flow) = maps::flow(key) else {
        return Verdict::shot(Reason::DropError);
    };
    let flags = flow.entry().flags;
    // Through the stack: NAT66 flows, and NAT64 ones from the pool
    // (`nat64::out`).
    counters::count_new_flow(
        rule_id,
        flags.contains(FlowFlags::SNAT),
        flags.contains(FlowFlags::VIA_STACK),
    );
    counters::count_rule(rule_id, a.len);
    start_tracking(ctx, p, flow);
    translate_any(ctx, p, flow.entry())
}

/// Starts the TCP tracking of a new flow's original direction from its
/// first packet (`conntrack::start_orig`). A call of its own, after
/// `flow::create` rather than inside it: nested, the frames would not fit
/// 512 bytes.
#[inline(never)]
fn start_tracking(ctx: &TcContext, p: &Packet6, flow: FlowRef) {
    // Offsets bounded for its header reads (see `translate`).
    let q = parse::bounded(&p.p);
    if q.proto == PROTO_TCP {
        conntrack::start_orig(ctx, &q, flow.entry_mut());
    }
}

/// Applies `e`'s translation and sends the packet to its next hop (or the
/// stack, for a flow through it), after the checks a router makes before
/// forwarding (`route::next_hop`: hop limit, MTU), which answer the packet
/// untranslated.
#[inline(never)]
fn translate(ctx: &TcContext, p: &Packet6, e: &FlowEntry) -> Verdict {
    // Read back from the map, offsets are unbounded scalars to the
    // verifier; the MSS option walk needs them bounded (the IPv4 path has
    // them on the stack, where their bounds survive).
    let q = parse::bounded(&p.p);
    let next = match route::next_hop(ctx, &q, e.flags, &e.new_src, &e.new_dst) {
        Ok(next) => Some(next),
        // Fragments the kernel put together before this hook: the stack
        // cuts them again as they came (see `frag6`).
        Err(verdict) if frag6::reassembled(ctx, &q, verdict) => None,
        Err(verdict) => return verdict,
    };
    let sent = nat::apply(ctx, &q, p, e).and_then(|()| match &next {
        Some(next) if !route::via_stack(e) => route::send(ctx, &q, next),
        // A flow through the stack, or reassembled fragments: the stack
        // routes the translated packet.
        _ => Ok(Verdict::ok(Reason::FwdStack)),
    });
    match sent {
        Ok(verdict) => verdict,
        Err(err) => {
            log_rewrite_failed(ctx, e.rule_id, err);
            counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
            Verdict::shot(Reason::DropError)
        }
    }
}
