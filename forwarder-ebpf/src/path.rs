//! Per-flow decisions taken once, on the first packet: which source the
//! backend sees (SNAT) and which way translated packets travel (redirect or
//! stack). Both come from the FIB, so they follow the routing table.
use aya_ebpf::programs::TcContext;
use forwarder_common::{
    AutoSnatKey, FlowFlags, ListenFlags, ListenerValue, Reason, SnatMode, AUTO_SNAT_TTL_NS,
};

use crate::{fib, helpers::ktime_coarse_ns, maps::AUTO_SNAT, parse::Packet};

pub struct Decision {
    /// Source address the backend sees.
    pub src: u32,
    /// `SNAT`, `VIA_STACK`, `AUTO`.
    pub flags: FlowFlags,
}

#[inline(always)]
pub fn auto_key(rule_id: u32, target: u32) -> AutoSnatKey {
    AutoSnatKey::v4(rule_id, target)
}

/// Whether `snat = "auto"` learned that this backend's replies bypass us.
#[inline(always)]
fn learned_snat(rule_id: u32, target: u32) -> bool {
    // SAFETY: copied out of the map value.
    match unsafe { AUTO_SNAT.get(auto_key(rule_id, target)).copied() } {
        Some(at) => ktime_coarse_ns().saturating_sub(at) < AUTO_SNAT_TTL_NS,
        None => false,
    }
}

/// `snat = "auto"` for a target with forwarding route `to`: keep the
/// client's address when a reply from the backend, arriving where the
/// backend lives, would be routed back out of the interface the client
/// came in on. That rules out hairpins (backend on the client's side) and
/// backends this host cannot route back from. What the backend itself does
/// with its replies cannot be seen from here; that is learned per backend
/// from retransmitted SYNs (see `conntrack`).
#[inline(always)]
fn keep_client(ctx: &TcContext, p: &Packet, in_ifindex: u32, to: fib::Route, target: u32) -> bool {
    to.oif != in_ifindex
        && fib::route(ctx, to.oif, p.proto, target, p.src).is_some_and(|b| b.oif == in_ifindex)
}

// A BPF-to-BPF call rather than inlined: its locals get their own frame
// instead of adding to the caller's (512-byte stack limit).
#[inline(never)]
pub fn decide(
    ctx: &TcContext,
    p: &Packet,
    l: &ListenerValue,
    in_ifindex: u32,
) -> Result<Decision, Reason> {
    let target = l.target_addr[0];
    // The route, zeroed when there is none, rather than an Option: LLVM
    // may read an Option's payload before testing it (the value is then
    // unused, which is fine for LLVM), and for None those registers were
    // never written, which the verifier refuses ("R3 !read_ok").
    let (routed, to) = match fib::route(ctx, in_ifindex, p.proto, p.src, target) {
        Some(r) => (true, r),
        None => (false, fib::Route::NONE),
    };
    let forced_stack = l.flags.contains(ListenFlags::VIA_STACK);
    let mut flags = FlowFlags::empty();
    let src = match l.snat_mode {
        _ if forced_stack => p.src,
        SnatMode::FIXED => l.snat_addr[0],
        SnatMode::MASQUERADE if routed => to.src,
        SnatMode::MASQUERADE => return Err(Reason::DropError),
        SnatMode::AUTO => {
            flags |= FlowFlags::AUTO;
            if !routed {
                // No forwarding route: a virtual (kube-proxy ClusterIP) or
                // local target, reached through the stack, which cannot
                // take our SNAT (it drops packets from its own addresses
                // as martians): the client's address is the only choice,
                // whichever way the stack then sends the replies. (So no
                // lookup of that way either: an output lookup needs a
                // device, which binds it to that device's routes.)
                p.src
            } else if learned_snat(l.rule_id, target) {
                to.src
            } else if keep_client(ctx, p, in_ifindex, to, target) {
                p.src
            } else {
                to.src
            }
        }
        _ => p.src,
    };
    if src != p.src {
        flags |= FlowFlags::SNAT;
    }
    // A SNATed packet must be redirected: the stack would drop it as a
    // martian (its source is one of our addresses). Otherwise redirect only
    // to on-link targets (VMs, pods, LAN hosts); anything behind a gateway
    // or without a route goes through the stack, where netfilter (e.g.
    // kube-proxy's DNAT of a ClusterIP in PREROUTING) gets to see it.
    let via_stack = if forced_stack {
        true
    } else if flags.contains(FlowFlags::SNAT) || l.flags.contains(ListenFlags::VIA_REDIRECT) {
        !routed
    } else {
        !routed || to.nexthop != target
    };
    if via_stack {
        if flags.contains(FlowFlags::SNAT) {
            // SNAT with no forwarding route: nothing can deliver it.
            return Err(Reason::DropError);
        }
        flags |= FlowFlags::VIA_STACK;
    }
    Ok(Decision { src, flags })
}
