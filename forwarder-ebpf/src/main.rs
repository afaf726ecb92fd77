//! The forwarder's kernel programs. Entry points stay thin: find the
//! interface, parse (`parse`), find or create the flow (`conntrack`, with
//! the per-flow SNAT/path decision in `path`), rewrite (`nat`, `mss`), send
//! on (`fib`), count (`counters`). Shared layouts live in
//! `forwarder-common`.
#![no_std]
#![no_main]

mod conntrack;
mod counters;
mod error;
mod fib;
mod hdr;
mod helpers;
mod icmp;
mod maps;
mod mss;
mod nat;
mod parse;
mod path;
mod verdict;
mod xdp;

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    macros::{classifier, xdp},
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use error::log_rewrite_failed;
use forwarder_common::{
    AllowKey, FlowEntry, Hook, ListenerKey, Reason, AF_INET, FLOW_REPLY, FLOW_SNAT, FLOW_VIA_STACK,
    IFACE_EGRESS_NAT, LISTEN_ALLOWLIST, LISTEN_REJECT, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
    RULE_DROP_DENIED, RULE_DROP_ERROR, RULE_DROP_NO_PORT, RULE_DROP_TABLE_FULL,
};
use hdr::{
    ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_ECHOREPLY, ICMP_PARAMETERPROB, ICMP_TIME_EXCEEDED, TCP_ACK,
    TCP_SYN,
};
use helpers::{frame::Frame, skb};
use parse::Packet;

use verdict::{Verdict, TCX_NEXT};

/// TC ingress on every interface the rules use (listening and backend
/// side): creates flows, translates, redirects.
#[classifier]
pub fn fwd_ingress(ctx: TcContext) -> i32 {
    run(&ctx, Hook::TcIngress)
}

/// TC egress on the same interfaces: translates back the replies of flows
/// that went through the stack (their backend's answer only becomes
/// recognisable after netfilter undid kube-proxy's DNAT), nothing else.
#[classifier]
pub fn fwd_egress(ctx: TcContext) -> i32 {
    run(&ctx, Hook::TcEgress)
}

/// XDP accelerator on Ethernet interfaces with native XDP: established
/// flows only; everything else goes on to fwd_ingress (see `xdp`).
#[xdp]
pub fn fwd_xdp(mut ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(iface) = maps::iface(ifindex) else {
        return XDP_PASS;
    };
    let len = Frame::len(&ctx);
    let (action, reason) = xdp::handle(&mut ctx, len, ifindex);
    counters::count_iface(iface.slot, Hook::Xdp, reason, len);
    action
}

#[inline(always)]
fn run(ctx: &TcContext, hook: Hook) -> i32 {
    let ifindex = skb::ifindex(ctx);
    let Some(iface) = maps::iface(ifindex) else {
        return TCX_NEXT;
    };
    if hook == Hook::TcEgress && iface.flags & IFACE_EGRESS_NAT == 0 {
        return TCX_NEXT;
    }
    let len = ctx.len();
    let verdict = match parse::ipv4(ctx, iface.flags) {
        Ok(p) => handle(ctx, &p, ifindex, len, hook),
        Err(reason) => Verdict::next(reason),
    };
    counters::count_iface(iface.slot, hook, verdict.reason(), len);
    verdict.action()
}

/// Whether a packet matching flow entry `e` is translated at `hook`.
/// Flows through the stack have their replies translated at egress only:
/// at ingress they still carry whatever netfilter will undo, and the stack
/// must see them to keep its own conntrack (and kube-proxy's) consistent.
#[inline(always)]
pub fn handled_here(e: &FlowEntry, hook: Hook) -> bool {
    let stack_reply = e.flags & (FLOW_VIA_STACK | FLOW_REPLY) == FLOW_VIA_STACK | FLOW_REPLY;
    match hook {
        Hook::TcEgress => stack_reply,
        _ => !stack_reply,
    }
}

#[inline(always)]
fn handle(ctx: &TcContext, p: &Packet, ifindex: u32, len: u32, hook: Hook) -> Verdict {
    let tracked = match p.proto {
        PROTO_TCP | PROTO_UDP => true,
        PROTO_ICMP => match p.icmp_type {
            ICMP_ECHO | ICMP_ECHOREPLY => true,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB => {
                return icmp::error(ctx, p, hook);
            }
            _ => false,
        },
        _ => false,
    };
    if !tracked {
        return Verdict::next(Reason::PassNoMatch);
    }
    let key = conntrack::key_of(p);
    if let Some(flow) = maps::flow(key) {
        if !handled_here(flow.entry(), hook) {
            return Verdict::next(Reason::PassNoMatch);
        }
        if hook == Hook::TcIngress && conntrack::auto_probe(p, flow.entry(), &key) {
            // Forgotten: fall through and create it anew, SNATed.
        } else {
            conntrack::touch(flow.as_ptr(), p, len);
            let entry = flow.entry();
            counters::count_rule(entry.rule_id, len);
            return translate(ctx, p, entry, hook);
        }
    }
    if hook != Hook::TcIngress || p.proto == PROTO_ICMP {
        return Verdict::next(Reason::PassNoMatch);
    }
    let lkey = ListenerKey {
        addr: [p.dst, 0, 0, 0],
        ifindex,
        port: p.dport,
        proto: p.proto,
        family: AF_INET,
    };
    let Some(l) = maps::listener(lkey) else {
        return Verdict::next(Reason::PassNoMatch);
    };
    let rule_id = l.rule_id;
    if l.flags & LISTEN_ALLOWLIST != 0 {
        let k = Key::new(
            64,
            AllowKey {
                rule_id_be: rule_id.to_be(),
                addr: [p.src, 0, 0, 0],
            },
        );
        if maps::ALLOW.get(&k).is_none() {
            counters::count_rule_drop(rule_id, RULE_DROP_DENIED);
            // Reject: the untouched packet meets the stack, which answers
            // exactly as for a closed port (RST / port unreachable).
            return if l.flags & LISTEN_REJECT != 0 {
                Verdict::ok(Reason::PassDenied)
            } else {
                Verdict::shot(Reason::DropDenied)
            };
        }
    }
    if p.proto == PROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN {
        // Mid-stream packet of a flow we do not know (expired, or from
        // before we started): the stack answers it like a closed port.
        return Verdict::next(Reason::PassUntracked);
    }
    // Decided first, then created: two calls in a row rather than one
    // inside the other keeps the call chain's stack under 512 bytes.
    let created = path::decide(ctx, p, l, ifindex).and_then(|d| conntrack::create(p, l, &d));
    if let Err(reason) = created {
        let drop = match reason {
            Reason::DropTableFull => RULE_DROP_TABLE_FULL,
            Reason::DropNoPort => RULE_DROP_NO_PORT,
            _ => RULE_DROP_ERROR,
        };
        counters::count_rule_drop(rule_id, drop);
        return Verdict::shot(reason);
    }
    let Some(flow) = maps::flow(key) else {
        // Swept or replaced by another CPU in the meantime: let the
        // client's retransmission try again.
        return Verdict::shot(Reason::DropError);
    };
    let flags = flow.entry().flags;
    counters::count_new_flow(rule_id, flags & FLOW_SNAT != 0, flags & FLOW_VIA_STACK != 0);
    counters::count_rule(rule_id, len);
    conntrack::touch(flow.as_ptr(), p, len);
    let entry = flow.entry();
    debug!(
        ctx,
        "rule {} new flow {:i}:{} -> {:i}:{} flags {}",
        rule_id,
        u32::from_be(p.src),
        u16::from_be(p.sport),
        u32::from_be(entry.new_dst[0]),
        u16::from_be(entry.new_dport),
        entry.flags
    );
    translate(ctx, p, entry, hook)
}

/// Applies `e`'s translation to the packet and sends it on.
// Not inlined: own stack frame (see `conntrack::create`).
#[inline(never)]
fn translate(ctx: &TcContext, p: &Packet, e: &FlowEntry, hook: Hook) -> Verdict {
    if let Err(err) = nat::apply(ctx, p, e) {
        log_rewrite_failed(ctx, e.rule_id, err);
        counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
        return Verdict::shot(Reason::DropError);
    }
    deliver(ctx, p, hook, e, e.new_src[0], e.new_dst[0])
}

/// Sends a translated packet on: at egress it simply continues; at ingress
/// it goes to the stack or straight to its egress device.
#[inline(always)]
pub fn deliver(
    ctx: &TcContext,
    p: &Packet,
    hook: Hook,
    e: &FlowEntry,
    src: u32,
    dst: u32,
) -> Verdict {
    if hook == Hook::TcEgress {
        return Verdict::ok(Reason::FwdEgress);
    }
    if e.flags & FLOW_VIA_STACK != 0 {
        return Verdict::ok(Reason::FwdStack);
    }
    match fib::forward(ctx, p, src, dst) {
        Ok(sent) => sent,
        Err(err) => {
            log_rewrite_failed(ctx, e.rule_id, err);
            Verdict::shot(Reason::DropError)
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
