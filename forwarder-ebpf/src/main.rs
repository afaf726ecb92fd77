//! The forwarder's kernel programs. Entry points stay thin: find the
//! interface, parse (`parse`), find or create the flow (`conntrack`),
//! rewrite (`nat`), send on (`fib`), count (`counters`). Shared layouts live
//! in `forwarder-common`.
#![no_std]
#![no_main]

mod conntrack;
mod counters;
mod fib;
mod icmp;
mod maps;
mod nat;
mod parse;

use aya_ebpf::{macros::classifier, maps::lpm_trie::Key, programs::TcContext};
use forwarder_common::{
    AllowKey, FlowEntry, ListenerKey, Reason, AF_INET, FLOW_VIA_STACK, LISTEN_ALLOWLIST,
    LISTEN_REJECT, PROTO_ICMP, PROTO_TCP, PROTO_UDP, RULE_DROP_DENIED, RULE_DROP_ERROR,
    RULE_DROP_NO_PORT, RULE_DROP_TABLE_FULL,
};
use parse::{
    Packet, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_ECHOREPLY, ICMP_PARAMETERPROB, ICMP_TIME_EXCEEDED,
    TCP_ACK, TCP_SYN,
};

use crate::fib::{TC_ACT_OK, TC_ACT_SHOT};

/// TCX: let the next program in the chain (or the stack) have the packet.
/// Used for everything we leave untouched so we compose with other TCX users.
const TCX_NEXT: i32 = -1;

/// TC ingress on every interface the rules use (listening and backend side).
#[classifier]
pub fn fwd_ingress(ctx: TcContext) -> i32 {
    // SAFETY: ctx.skb.skb is the valid __sk_buff the kernel passed in.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(iface) = maps::iface(ifindex) else {
        return TCX_NEXT;
    };
    let len = ctx.len();
    let (verdict, reason) = match parse::ipv4(&ctx, iface.flags) {
        Ok(p) => handle(&ctx, &p, ifindex, len),
        Err(reason) => (TCX_NEXT, reason),
    };
    counters::count_iface(iface.slot, reason, len);
    verdict
}

#[inline(always)]
fn handle(ctx: &TcContext, p: &Packet, ifindex: u32, len: u32) -> (i32, Reason) {
    let tracked = match p.proto {
        PROTO_TCP | PROTO_UDP => true,
        PROTO_ICMP => match p.icmp_type {
            ICMP_ECHO | ICMP_ECHOREPLY => true,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB => {
                return icmp::error(ctx, p, ifindex).unwrap_or((TCX_NEXT, Reason::PassNoMatch));
            }
            _ => false,
        },
        _ => false,
    };
    if !tracked {
        return (TCX_NEXT, Reason::PassNoMatch);
    }
    let key = conntrack::key_of(p);
    if let Some(e) = maps::FLOWS.get_ptr_mut(key) {
        conntrack::touch(e, p, len);
        // SAFETY: copied out of the map value.
        let entry = unsafe { *e };
        counters::count_rule(entry.rule_id, len, false);
        return translate(ctx, p, &entry, ifindex);
    }
    if p.proto == PROTO_ICMP {
        return (TCX_NEXT, Reason::PassNoMatch);
    }
    let lkey = ListenerKey {
        addr: [p.dst, 0, 0, 0],
        ifindex,
        port: p.dport,
        proto: p.proto,
        family: AF_INET,
    };
    // SAFETY: copied out of the map value.
    let Some(l) = (unsafe { maps::LISTENERS.get(lkey).copied() }) else {
        return (TCX_NEXT, Reason::PassNoMatch);
    };
    if l.flags & LISTEN_ALLOWLIST != 0 {
        let k = Key::new(
            64,
            AllowKey {
                rule_id_be: l.rule_id.to_be(),
                addr: [p.src, 0, 0, 0],
            },
        );
        if maps::ALLOW.get(&k).is_none() {
            counters::count_rule_drop(l.rule_id, RULE_DROP_DENIED);
            // Reject: the untouched packet meets the stack, which answers
            // exactly as for a closed port (RST / port unreachable).
            let verdict = if l.flags & LISTEN_REJECT != 0 {
                TC_ACT_OK
            } else {
                TC_ACT_SHOT
            };
            return (verdict, Reason::DropDenied);
        }
    }
    if p.proto == PROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN {
        // Mid-stream packet of a flow we do not know (expired, or from
        // before we started): the stack answers it like a closed port.
        return (TCX_NEXT, Reason::PassUntracked);
    }
    match conntrack::create(ctx, p, &l, ifindex) {
        Ok(entry) => {
            counters::count_rule(l.rule_id, len, true);
            if let Some(e) = maps::FLOWS.get_ptr_mut(key) {
                conntrack::touch(e, p, len);
            }
            translate(ctx, p, &entry, ifindex)
        }
        Err(reason) => {
            let drop = match reason {
                Reason::DropTableFull => RULE_DROP_TABLE_FULL,
                Reason::DropNoPort => RULE_DROP_NO_PORT,
                _ => RULE_DROP_ERROR,
            };
            counters::count_rule_drop(l.rule_id, drop);
            (TC_ACT_SHOT, reason)
        }
    }
}

/// Applies `e`'s translation to the packet and sends it on.
#[inline(always)]
fn translate(ctx: &TcContext, p: &Packet, e: &FlowEntry, ifindex: u32) -> (i32, Reason) {
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
        });
    if rewritten.is_err() {
        counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
        return (TC_ACT_SHOT, Reason::DropError);
    }
    if e.flags & FLOW_VIA_STACK != 0 {
        return (TC_ACT_OK, Reason::FwdStack);
    }
    fib::forward(ctx, p, ifindex, src, dst, e.new_sport, e.new_dport)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
