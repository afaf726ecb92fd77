//! The names both sides use: the programs' entry points (the kernel's
//! function names), the maps (also their pin file names under the pin
//! directory) and the pin directory's subdirectories.
//!
//! A map's name here must be the literal in its `#[map(name = ...)]`; the
//! layout-table test in `forwarder` catches one that is not.

// ---- Program names (the entry points' function names). ----

/// TC (TCX) ingress, on every interface a forward uses.
pub const PROG_INGRESS: &str = "fwd_ingress";
/// TC (TCX) egress, where replies of stack-path flows leave.
pub const PROG_EGRESS: &str = "fwd_egress";
/// The XDP accelerator, on NICs with native XDP.
pub const PROG_XDP: &str = "fwd_xdp";
/// IPv6 at TC ingress: never attached, `fwd_ingress` tail-calls it
/// through `FWD_PROGS` (verified on its own: inlined it would add its
/// whole pipeline to fwd_ingress's verifier budget and 512-byte stack).
pub const PROG_INGRESS6: &str = "fwd_ingress6";
/// `FWD_PROGS`' slot of `fwd_ingress6`.
pub const PROG_SLOT_IPV6: u32 = 0;
/// The IPv4 side of NAT64 flows at TC ingress (replies of the target, ICMP
/// errors about the flow): never attached, `fwd_ingress` tail-calls it
/// through `FWD_PROGS` for a packet whose flow entry is `FlowFlags::XLAT`
/// (fwd_ingress's 512-byte stack has no room for the translation).
pub const PROG_INGRESS64: &str = "fwd_ingress64";
/// `FWD_PROGS`' slot of `fwd_ingress64`.
pub const PROG_SLOT_NAT64: u32 = 1;
/// IPv6 at TC egress (the replies of IPv6 flows through the stack): never
/// attached, `fwd_egress` tail-calls it through `FWD_PROGS`.
pub const PROG_EGRESS6: &str = "fwd_egress6";
/// `FWD_PROGS`' slot of `fwd_egress6`.
pub const PROG_SLOT_IPV6_EGRESS: u32 = 2;
/// Slots in `FWD_PROGS`.
pub const PROG_SLOTS: u32 = 3;

// ---- Map names (also the pin file names under the pin directory). ----

pub const MAP_IFACES: &str = "FWD_IFACES";
pub const MAP_IFACE_COUNTERS: &str = "FWD_IFACE_CNT";
pub const MAP_LISTENERS: &str = "FWD_LISTENERS";
pub const MAP_ALLOW: &str = "FWD_ALLOW";
pub const MAP_RULE_COUNTERS: &str = "FWD_RULE_CNT";
pub const MAP_FLOWS: &str = "FWD_FLOWS";
pub const MAP_CONFIG: &str = "FWD_CONFIG";
pub const MAP_AUTO_SNAT: &str = "FWD_AUTO_SNAT";
pub const MAP_RULE_NAMES: &str = "FWD_RULE_NAMES";
/// Conntrack settings (`CtConfig`: timeouts, per-source limit).
pub const MAP_CT_CONFIG: &str = "FWD_CT_CONFIG";
/// Eviction candidates: original-direction keys of flows, oldest first
/// (a queue map; see `forwarder-ebpf/src/evict.rs`).
pub const MAP_CT_EVICT: &str = "FWD_CT_EVICT";
/// The route generation (`u32`, slot 0): bumped by the daemon on every
/// rtnetlink link/address/route/rule/neighbour event; a flow's cached FIB
/// answer (`FlowEntry::fib`) of another generation is looked up again.
/// Pinned, so that a restarted daemon continues the count (it bumps it on
/// start: it cannot know what changed while it was away).
pub const MAP_ROUTE_GEN: &str = "FWD_ROUTE_GEN";
/// Per-CPU room for the keys an eviction looks at.
pub const MAP_CT_KEYS: &str = "FWD_CT_KEYS";
/// Per-CPU room for the two keys of a flow being created.
pub const MAP_KEY_SCRATCH: &str = "FWD_KEY_SCRATCH";
/// Per-CPU room for the SNAT port range of a flow being created.
pub const MAP_PORT_PLAN: &str = "FWD_PORT_PLAN";
/// `FWD_PORT_PLAN`'s value: min, span, the port tried first, the
/// reopened connection's SNAT port and client port, client address (16
/// bytes, either family) and family, pad.
pub const PORT_PLAN_SIZE: u32 = 36;
/// Per-source new-flow limit state (LRU, not pinned).
pub const MAP_SRC_LIMIT: &str = "FWD_SRC_LIMIT";
/// `snat = "auto"` evidence per backend (LRU, not pinned).
pub const MAP_AUTO_EVIDENCE: &str = "FWD_AUTO_EVIDENCE";
/// Per-CPU room for building the two entries of a new flow.
pub const MAP_FLOW_SCRATCH: &str = "FWD_SCRATCH";
/// Per-CPU room for the FIB lookup parameters (TC and XDP share it: a
/// program runs to completion on its CPU, so one slot serves both).
pub const MAP_FIB_SCRATCH: &str = "FWD_FIB_SCRATCH";
/// Per-CPU room for the TCP options of a SYN whose MSS may be clamped.
pub const MAP_MSS_SCRATCH: &str = "FWD_MSS_SCRATCH";
/// Programs `fwd_ingress` tail-calls (`PROG_SLOT_*`), filled at load.
pub const MAP_PROGS: &str = "FWD_PROGS";
/// Per-CPU room for a parsed IPv6 packet (TC ingress): on the stack it
/// would not fit the 512 bytes the call chain may use.
pub const MAP_PKT6_SCRATCH: &str = "FWD_PKT6_SCRATCH";
/// The size of one `FWD_PKT6_SCRATCH` slot (the kernel's `Packet6`, which
/// asserts it).
pub const PKT6_SCRATCH_SIZE: u32 = 80;
/// Per-CPU room for a new IPv6 flow's decision (source, flags, reply
/// interface), handed from the decision to the flow's creation through
/// map memory so the verifier walks the creation once, not once per way
/// of deciding.
pub const MAP_DECISION6_SCRATCH: &str = "FWD_DECISION6_SCRATCH";
/// The size of one `FWD_DECISION6_SCRATCH` slot (the kernel's
/// `ipv6::route::Decision6`, which asserts it).
pub const DECISION6_SCRATCH_SIZE: u32 = 24;
/// The XDP accelerator's redirect targets (ifindex -> ifindex).
pub const MAP_XDP_DEVS: &str = "FWD_XDP_DEVS";
/// First fragments' ports, for their later fragments (kernel-only, LRU).
pub const MAP_FRAGS: &str = "FWD_FRAGS";
/// IPv6 first fragments' ports, for their later fragments (kernel-only,
/// LRU).
pub const MAP_FRAGS6: &str = "FWD_FRAGS6";
/// Per-CPU room to build an answer (ICMP error, TCP reset) in.
pub const MAP_REPLY_SCRATCH: &str = "FWD_REPLY_SCRATCH";
/// Targets whose neighbour does not answer (IPv4 address word -> `NeighFlags`
/// bits), written by the daemon from the kernel's neighbour table
/// (`daemon::plan::neighbours`); not pinned: each daemon rebuilds it.
pub const MAP_NEIGH: &str = "FWD_NEIGH";
/// Route facts of the IPv4 targets (address word -> `RouteHint`) for
/// kernels whose FIB lookup lacks SKIP_NEIGH or SRC (`kernel.rs`), written
/// by the daemon from `ip route get`; not pinned: each daemon rebuilds it.
pub const MAP_ROUTE_HINTS: &str = "FWD_ROUTE_HINTS";
/// aya-log's ring buffer (defined by aya-log-ebpf, drained by aya-log).
pub const MAP_AYA_LOGS: &str = "AYA_LOGS";

/// Subdirectory of the pin directory holding the program links.
pub const PIN_LINKS_DIR: &str = "links";
/// Subdirectory of the pin directory with the markers of legacy TC
/// attachment (clsact + cls_bpf filters, which cannot be pinned).
pub const PIN_TC_DIR: &str = "tc";
