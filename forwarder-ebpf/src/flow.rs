//! The flow-table steps TC and XDP share: finding a packet's flow, and
//! whether this hook is the one that translates it. (Accounting a packet
//! on its flow, with the state machine, is `conntrack::existing` in TC and
//! `conntrack::xdp_account` in XDP.)
use forwarder_common::{FlowEntry, FlowFlags, Hook};

use crate::{
    conntrack,
    maps::{self, FlowRef},
    parse::Packet,
};

/// The flow entry of the packet's own direction.
#[inline(always)]
pub fn lookup(p: &Packet) -> Option<FlowRef> {
    maps::flow(conntrack::key_of(p))
}

/// Whether a packet matching flow entry `e` is translated at `hook`.
/// Flows through the stack have their replies translated at egress only:
/// at ingress they still carry whatever netfilter will undo, and the stack
/// must see them to keep its own conntrack (and kube-proxy's) consistent.
#[inline(always)]
pub fn handled_here(e: &FlowEntry, hook: Hook) -> bool {
    let stack_reply = e.flags.contains(FlowFlags::VIA_STACK | FlowFlags::REPLY);
    match hook {
        Hook::TcEgress => stack_reply,
        _ => !stack_reply,
    }
}
