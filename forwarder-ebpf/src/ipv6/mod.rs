//! NAT66 for TCP and UDP at TC ingress (issue 13, phase B, first step):
//! IPv6 clients of IPv6 targets, with the IPv4 path's flow table, listener
//! and allow-list maps (their keys already hold 16-byte addresses and a
//! family byte), redirected straight to the target's next hop.
//!
//! ```text
//! run: parse -> established ----------------------> translate -> forward
//!            \-> admit -> decide -> flow::create --/
//! ```
//!
//! The fact a reader gets wrong: this path is dormant in a release. The
//! daemon refuses rules files with IPv6 forwards (rules::release), so no
//! `AF_INET6` listener exists outside the test_run tables; this code runs
//! for every IPv6 packet but finds no listener and passes it on, counted
//! as `PassNoMatch`. Not here yet, and passed to the stack untranslated:
//! extension headers (`PassIpOptions`, fragments `PassFragment`), ICMPv6
//! (errors about flows and echo; neighbour discovery is never touched),
//! NAT64/NAT46 listeners (`ListenFlags::XLAT`), flows that would need the
//! stack path (no forwarding route, `path = "stack"`), `snat = "auto"`'s
//! learning from retransmitted SYNs, and the XDP accelerator and the
//! egress hook (IPv6 stays `PassNotIpv4` there).
mod flow;
mod nat;
pub mod parse;
mod route;

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, PerCpuArray},
    programs::TcContext,
};
use forwarder_common::{
    AllowKey, FlowEntry, FlowFlags, Hook, ListenFlags, ListenerKey, ListenerValue, Reason,
    ALLOW_EXACT_V6_PREFIX, PROTO_TCP, RULE_DROP_DENIED, RULE_DROP_ERROR, RULE_DROP_NO_PORT,
    RULE_DROP_TABLE_FULL,
};

use crate::{
    conntrack, counters,
    error::log_rewrite_failed,
    flow::handled_here,
    hdr::{TCP_ACK, TCP_SYN},
    maps,
    verdict::Verdict,
};
use parse::Packet6;

#[map(name = "FWD_PKT6_SCRATCH")]
static PKT6: PerCpuArray<Packet6> = PerCpuArray::with_max_entries(1, 0);

/// The IPv6 pipeline for a packet that is not IPv4, at TC ingress.
/// `PassNotIpv4` when it is not IPv6 either.
// Inlined into fwd_ingress, whose frame it shares (the IPv4 path's locals
// are dead here), with the parsed packet in a per-CPU slot: the call chain
// below (flow::create, translate) must fit the 512-byte stack with it.
#[inline(always)]
pub fn run(ctx: &TcContext, ifindex: u32, len: u32, l3_device: bool) -> Verdict {
    let Some(l3) = parse::l3_of(ctx, l3_device) else {
        return Verdict::next(Reason::PassNotIpv4);
    };
    let Some(p) = maps::per_cpu(&PKT6, 0) else {
        return Verdict::next(Reason::PassNotIpv4);
    };
    if let Err(reason) = parse::packet(ctx, l3, p) {
        return Verdict::next(reason);
    }
    let p: &Packet6 = p;
    let key = flow::key(p.src, p.dst, p.p.sport, p.p.dport, p.p.proto);
    if let Some(flow) = maps::flow(key) {
        if !handled_here(flow.entry(), Hook::TcIngress) {
            return Verdict::next(Reason::PassNoMatch);
        }
        conntrack::touch(flow, &p.p, len);
        let e = flow.entry();
        counters::count_rule(e.rule_id, len);
        return translate(ctx, p, e);
    }
    let l = match admit(p, ifindex) {
        Ok(l) => l,
        Err(verdict) => return verdict,
    };
    create_flow(ctx, p, l, ifindex, len)
}

/// The listener a flow's first packet is for, if the rule lets it start
/// one: an IPv6 target, source in the allow-list, a TCP SYN.
#[inline(always)]
fn admit(p: &Packet6, ifindex: u32) -> Result<&'static ListenerValue, Verdict> {
    let lkey = ListenerKey::v6(p.dst, ifindex, p.p.dport, p.p.proto);
    let Some(l) = maps::listener(lkey) else {
        return Err(Verdict::next(Reason::PassNoMatch));
    };
    if l.flags.contains(ListenFlags::XLAT) {
        // NAT64 is not here yet (see the module comment).
        return Err(Verdict::next(Reason::PassNoMatch));
    }
    if l.flags.contains(ListenFlags::ALLOWLIST) {
        let k = Key::new(ALLOW_EXACT_V6_PREFIX, AllowKey::v6(l.rule_id, p.src));
        if maps::ALLOW.get(&k).is_none() {
            counters::count_rule_drop(l.rule_id, RULE_DROP_DENIED);
            return Err(if l.flags.contains(ListenFlags::REJECT) {
                Verdict::ok(Reason::PassDenied)
            } else {
                Verdict::shot(Reason::DropDenied)
            });
        }
    }
    if p.p.proto == PROTO_TCP && (p.p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN {
        return Err(Verdict::next(Reason::PassUntracked));
    }
    Ok(l)
}

/// Decides the new flow's source, inserts both of its entries, accounts
/// its first packet and translates it.
#[inline(always)]
fn create_flow(ctx: &TcContext, p: &Packet6, l: &ListenerValue, ifindex: u32, len: u32) -> Verdict {
    let rule_id = l.rule_id;
    // Decided first, then created: two calls in a row (see tc.rs).
    let created = match route::decide(ctx, p, l, ifindex) {
        Ok(Some(d)) => flow::create(p, l, &d),
        // Only the stack could deliver it: left to the stack, untranslated.
        Ok(None) => return Verdict::next(Reason::PassNoMatch),
        Err(reason) => Err(reason),
    };
    if let Err(reason) = created {
        let drop = match reason {
            Reason::DropTableFull => RULE_DROP_TABLE_FULL,
            Reason::DropNoPort => RULE_DROP_NO_PORT,
            _ => RULE_DROP_ERROR,
        };
        counters::count_rule_drop(rule_id, drop);
        return Verdict::shot(reason);
    }
    let Some(flow) = maps::flow(flow::key(p.src, p.dst, p.p.sport, p.p.dport, p.p.proto)) else {
        return Verdict::shot(Reason::DropError);
    };
    let snat = flow.entry().flags.contains(FlowFlags::SNAT);
    counters::count_new_flow(rule_id, snat, false);
    counters::count_rule(rule_id, len);
    conntrack::touch(flow, &p.p, len);
    translate(ctx, p, flow.entry())
}

/// Applies `e`'s translation and sends the packet to its next hop.
#[inline(never)]
fn translate(ctx: &TcContext, p: &Packet6, e: &FlowEntry) -> Verdict {
    // Read back from the map, offsets are unbounded scalars to the
    // verifier; the MSS option walk needs them bounded (the IPv4 path has
    // them on the stack, where their bounds survive).
    let q = parse::bounded(&p.p);
    let sent =
        nat::apply(ctx, &q, p, e).and_then(|()| route::forward(ctx, &q, &e.new_src, &e.new_dst));
    match sent {
        Ok(verdict) => verdict,
        Err(err) => {
            log_rewrite_failed(ctx, e.rule_id, err);
            counters::count_rule_drop(e.rule_id, RULE_DROP_ERROR);
            Verdict::shot(Reason::DropError)
        }
    }
}
