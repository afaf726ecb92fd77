//! The forwarder's kernel programs. Entry points stay thin: find the
//! interface, parse (`parse`), find or create the flow (`conntrack`, with
//! the per-flow SNAT/path decision in `path`), rewrite (`nat`, `mss`), send
//! on (`fib`), count (`counters`). Shared layouts live in
//! `forwarder-common`.
#![no_std]
#![no_main]

mod conntrack;
mod counters;
mod evict;
mod fib;
mod icmp;
mod maps;
mod mss;
mod nat;
mod newflow;
mod parse;
mod path;
mod xdp;

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    macros::{classifier, xdp},
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::{debug, error};
use conntrack::{Arrival, Hit};
use forwarder_common::{
    AllowKey, FlowEntry, Hook, ListenerKey, Reason, AF_INET, FLOW_REPLY, FLOW_SNAT, FLOW_VIA_STACK,
    IFACE_EGRESS_NAT, LISTEN_ALLOWLIST, LISTEN_REJECT, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
    RULE_DROP_DENIED, RULE_DROP_ERROR, RULE_DROP_NO_PORT, RULE_DROP_OUT_OF_WINDOW,
    RULE_DROP_RATE_LIMITED, RULE_DROP_TABLE_FULL,
};
use parse::{
    Packet, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_ECHOREPLY, ICMP_PARAMETERPROB, ICMP_TIME_EXCEEDED,
    TCP_ACK, TCP_SYN,
};

use crate::fib::{TC_ACT_OK, TC_ACT_SHOT};

/// TCX: let the next program in the chain (or the stack) have the packet.
/// Used for everything we leave untouched so we compose with other TCX users.
const TCX_NEXT: i32 = -1;

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
pub fn fwd_xdp(ctx: XdpContext) -> u32 {
    // SAFETY: ctx.ctx is the valid xdp_md the kernel passed in.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(iface) = maps::iface(ifindex) else {
        return XDP_PASS;
    };
    let len = (ctx.data_end() - ctx.data()) as u32;
    let (action, reason) = xdp::handle(&ctx, len, ifindex);
    counters::count_iface(iface.slot, Hook::Xdp, reason, len);
    action
}

#[inline(always)]
fn run(ctx: &TcContext, hook: Hook) -> i32 {
    // SAFETY: ctx.skb.skb is the valid __sk_buff the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(iface) = maps::iface(ifindex) else {
        return TCX_NEXT;
    };
    if hook == Hook::TcEgress && iface.flags & IFACE_EGRESS_NAT == 0 {
        return TCX_NEXT;
    }
    let len = ctx.len();
    let (verdict, reason) = match parse::ipv4(ctx, iface.flags) {
        Ok(p) => handle(ctx, &p, ifindex, len, hook),
        Err(reason) => (TCX_NEXT, reason),
    };
    counters::count_iface(iface.slot, hook, reason, len);
    verdict
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
fn handle(ctx: &TcContext, p: &Packet, ifindex: u32, len: u32, hook: Hook) -> (i32, Reason) {
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
        return (TCX_NEXT, Reason::PassNoMatch);
    }
    let key = conntrack::key_of(p);
    let a = Arrival { ifindex, len };
    if let Some(e) = maps::FLOWS.get_ptr_mut(key) {
        // SAFETY: a pointer into the map value; the entry stays valid for
        // this run (deleted entries are freed after an RCU grace period).
        // Working on the map value instead of a copy keeps the stack small.
        let entry = unsafe { &*e };
        if !handled_here(entry, hook) {
            return (TCX_NEXT, Reason::PassNoMatch);
        }
        if hook == Hook::TcIngress && path::auto_probe(p, entry, &key, ifindex) {
            // Forgotten: fall through and create it anew, SNATed.
        } else {
            match conntrack::existing(ctx, p, e, &key, &a) {
                Hit::Forward => {
                    counters::count_rule(entry.rule_id, len);
                    return translate(ctx, p, entry, hook);
                }
                // Expired (or an orphan): a new flow.
                Hit::Gone => {}
                Hit::WrongIface => return (TCX_NEXT, Reason::PassWrongIface),
                Hit::OutOfWindow => {
                    counters::count_rule_drop(entry.rule_id, RULE_DROP_OUT_OF_WINDOW);
                    return (TC_ACT_SHOT, Reason::DropOutOfWindow);
                }
            }
        }
    }
    if hook != Hook::TcIngress || p.proto == PROTO_ICMP {
        return (TCX_NEXT, Reason::PassNoMatch);
    }
    let lkey = ListenerKey {
        addr: [p.dst, 0, 0, 0],
        ifindex,
        port: p.dport,
        proto: p.proto,
        family: AF_INET,
    };
    let Some(l) = maps::LISTENERS.get_ptr(lkey) else {
        return (TCX_NEXT, Reason::PassNoMatch);
    };
    // SAFETY: a pointer into the map value, valid for this run.
    let l = unsafe { &*l };
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
                (TC_ACT_OK, Reason::PassDenied)
            } else {
                (TC_ACT_SHOT, Reason::DropDenied)
            };
        }
    }
    if p.proto == PROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN {
        // Mid-stream packet of a flow we do not know (expired, or from
        // before we started): the stack answers it like a closed port.
        return (TCX_NEXT, Reason::PassUntracked);
    }
    // Decided first, then created: two calls in a row rather than one
    // inside the other keeps the call chain's stack under 512 bytes.
    let created = path::decide(ctx, p, l, ifindex).and_then(|d| newflow::create(ctx, p, l, &d, &a));
    if let Err(reason) = created {
        let drop = match reason {
            Reason::DropTableFull => RULE_DROP_TABLE_FULL,
            Reason::DropNoPort => RULE_DROP_NO_PORT,
            Reason::DropRateLimited => RULE_DROP_RATE_LIMITED,
            _ => RULE_DROP_ERROR,
        };
        counters::count_rule_drop(rule_id, drop);
        return (TC_ACT_SHOT, reason);
    }
    let Some(e) = maps::FLOWS.get_ptr(key) else {
        // Replaced by another CPU in the meantime: let the client's
        // retransmission try again.
        return (TC_ACT_SHOT, Reason::DropError);
    };
    // SAFETY: as above.
    let entry = unsafe { &*e };
    counters::count_new_flow(
        rule_id,
        entry.flags & FLOW_SNAT != 0,
        entry.flags & FLOW_VIA_STACK != 0,
    );
    counters::count_rule(rule_id, len);
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
fn translate(ctx: &TcContext, p: &Packet, e: &FlowEntry, hook: Hook) -> (i32, Reason) {
    let (src, dst) = (e.new_src[0], e.new_dst[0]);
    let rewritten = nat::set_addr(ctx, p, nat::IP_SRC, p.src, src)
        .and_then(|_| nat::set_addr(ctx, p, nat::IP_DST, p.dst, dst))
        .and_then(|_| nat::set_port(ctx, p, 0, p.sport, e.new_sport))
        .and_then(|_| {
            // ICMP echo carries one identifier, already rewritten above.
            if p.proto == PROTO_ICMP {
                Ok(())
            } else {
                nat::set_port(ctx, p, 2, p.dport, e.new_dport)
            }
        })
        .and_then(|_| {
            if e.mss != 0
                && p.proto == PROTO_TCP
                && p.tcp_flags & TCP_SYN != 0
                && mss::clamp(ctx, p, e.mss)?
            {
                counters::count_mss_clamped(e.rule_id);
            }
            Ok(())
        });
    if rewritten.is_err() {
        error!(
            ctx,
            "rule {}: rewriting a packet failed, dropped", e.rule_id
        );
        counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
        return (TC_ACT_SHOT, Reason::DropError);
    }
    deliver(ctx, p, hook, e, src, dst)
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
) -> (i32, Reason) {
    if hook == Hook::TcEgress {
        return (TC_ACT_OK, Reason::FwdEgress);
    }
    if e.flags & FLOW_VIA_STACK != 0 {
        return (TC_ACT_OK, Reason::FwdStack);
    }
    fib::forward(ctx, p, src, dst)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
