//! The IPv6 stack path's other half: the replies of flows that went
//! through the stack (`route::decide`: a target without a forwarding
//! route, such as a Kubernetes IPv6 ClusterIP, one behind a gateway, or
//! `path = "stack"`), translated back at TC egress of the listening
//! interface by `fwd_egress6`, which fwd_egress tail-calls for every
//! packet that is not IPv4 (as fwd_ingress does `fwd_ingress6`).
//!
//! The fact a reader gets wrong: at ingress such a reply is not ours yet.
//! It still carries the pod's address that netfilter (kube-proxy's DNAT)
//! will undo, and the stack must see it to keep its own conntrack
//! consistent; only once the stack routed it to the listening interface
//! does it match the flow's reply entry (`flow::handled_here`), here.
//! Nothing else is translated at egress: no flow starts here, and a
//! redirected flow's packets never pass the stack.
use aya_ebpf::programs::TcContext;
use forwarder_common::{
    FlowKey, Hook, IfaceFlags, Reason, RULE_DROP_ERROR, RULE_DROP_OUT_OF_WINDOW, TCX_NEXT,
};

use super::{flow, nat, parse, parse::Packet6, PKT6};
use crate::{
    conntrack::{self, Arrival, Hit},
    counters,
    error::log_rewrite_failed,
    flow::handled_here,
    helpers::skb,
    maps::{self, FlowRef},
    parse::Frag,
    verdict::Verdict,
};

/// The whole of `fwd_egress6`: the interface's settings, the reply
/// translation, the interface counter (at the egress hook).
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    let ifindex = skb::ifindex(ctx);
    let Some(iface) = maps::iface(ifindex) else {
        return TCX_NEXT;
    };
    // fwd_egress tail-calls only where egress translation is on; checked
    // again so this program never depends on who calls it.
    if !iface.flags.contains(IfaceFlags::EGRESS_NAT) {
        return TCX_NEXT;
    }
    let len = ctx.len();
    let verdict = run(ctx, ifindex, len, iface.flags.contains(IfaceFlags::L3));
    counters::count_iface(iface.slot, Hook::TcEgress, verdict.reason(), len);
    verdict.action()
}

/// A packet that is not IPv4, leaving by an interface with egress
/// translation: the reply of a flow through the stack is translated, the
/// rest goes on untouched.
#[inline(always)]
fn run(ctx: &TcContext, ifindex: u32, len: u32, l3_device: bool) -> Verdict {
    let Some(l3) = parse::l3_of(ctx, l3_device) else {
        return Verdict::next(Reason::PassNotIpv4);
    };
    let Some(p) = maps::per_cpu(&PKT6, 0) else {
        return Verdict::next(Reason::PassNotIpv4);
    };
    match parse::packet(ctx, l3, p) {
        Ok(()) => {}
        // Not a flow's reply (a short first fragment is dropped only at
        // ingress, where flows start).
        Err(Reason::DropError) => return Verdict::next(Reason::PassFragment),
        Err(reason) => return Verdict::next(reason),
    }
    if p.p.frag != Frag::None {
        // Not tracked at egress (`frag6` ties fragments to flows at
        // ingress only): a reply the backend sent in fragments passes
        // untranslated, all of it rather than its first fragment alone.
        return Verdict::next(Reason::PassFragment);
    }
    let p: &Packet6 = p;
    let key = flow::key(p.src, p.dst, p.p.sport, p.p.dport, p.p.proto);
    let Some(flow) = maps::flow(key) else {
        return Verdict::next(Reason::PassNoMatch);
    };
    if !handled_here(flow.entry(), Hook::TcEgress) {
        return Verdict::next(Reason::PassNoMatch);
    }
    translate_reply(ctx, p, flow, &key, &Arrival { ifindex, len })
}

/// The reply through the IPv4 path's state machine (`conntrack::existing`,
/// which also checks it leaves by the listening interface), then rewritten
/// to come from the listener; the stack already routed it, so it only
/// continues.
// Own stack frame: the state machine's and the rewrite's locals.
#[inline(never)]
fn translate_reply(
    ctx: &TcContext,
    p: &Packet6,
    flow: FlowRef,
    key: &FlowKey,
    a: &Arrival,
) -> Verdict {
    // Offsets bounded for the header reads (see `super::translate`).
    let q = parse::bounded(&p.p);
    match conntrack::existing(ctx, &q, flow.entry_mut(), key, a) {
        Hit::Forward => {}
        // Expired: nothing to translate it back to.
        Hit::Gone => return Verdict::next(Reason::PassNoMatch),
        Hit::WrongIface => return Verdict::next(Reason::PassWrongIface),
        Hit::OutOfWindow => {
            counters::count_rule_drop(flow.entry().rule_id, RULE_DROP_OUT_OF_WINDOW);
            return Verdict::shot(Reason::DropOutOfWindow);
        }
    }
    let e = flow.entry();
    counters::count_rule(e.rule_id, a.len);
    match nat::apply(ctx, &q, p, e) {
        Ok(()) => Verdict::ok(Reason::FwdEgress),
        Err(err) => {
            log_rewrite_failed(ctx, e.rule_id, err);
            counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
            Verdict::shot(Reason::DropError)
        }
    }
}
