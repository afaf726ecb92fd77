//! Size defaults and limits: how many entries each map holds, what the
//! flow table defaults to, the SNAT port range, and the byte sizes of
//! values whose struct lives in only one crate (or in the kernel's uapi).
//!
//! Only the index spaces ([`MAX_IFACES`], [`MAX_RULES`]) are layout; the
//! others are limits a pinned map keeps from the daemon that created it.

/// Maximum number of interfaces the dataplane keeps counters for.
pub const MAX_IFACES: u32 = 64;
/// Maximum number of rules (size of the per-rule counter array).
pub const MAX_RULES: u32 = 1024;
/// Maximum number of listener entries (one per address x protocol x port).
pub const MAX_LISTENERS: u32 = 262_144;
/// Maximum number of allow-list prefixes over all rules.
pub const MAX_ALLOW_PREFIXES: u32 = 16_384;
/// Backends remembered by `snat = "auto"` learning (LRU).
pub const MAX_AUTO_SNAT: u32 = 4096;
/// Flow-table entries per tracked flow: one per direction.
pub const ENTRIES_PER_FLOW: u32 = 2;
/// Flows the table holds when the rules file does not say
/// (`[global] conntrack_max`): netfilter's `nf_conntrack_max` on a host
/// with 1 to 4 GiB of RAM (a larger host gets 262,144, a smaller one
/// less). netfilter allocates an entry when a connection starts, so its
/// limit costs nothing until it is used; this table is preallocated
/// (a flood must not find the kernel short of memory mid-packet), so its
/// limit is paid at load: about 28 MiB here, 112 MiB at 262,144. A handful
/// of port forwards rarely holds more than a few thousand flows; a host
/// that needs more says so with `conntrack_max` (docs/rules.md, "Sizing").
pub const DEFAULT_CONNTRACK_MAX: u32 = 65_536;
/// Flow-table entries the daemon's sweeper reads per step (one step a
/// second): its CPU and memory are bounded by this, not by the table's
/// size (issue 19). Here because the benchmark report states it.
pub const SWEEP_STEP_ENTRIES: usize = 16_384;
/// Flows of a private (unpinned) dataplane when its loader does not say:
/// BPF_PROG_TEST_RUN tests and benchmarks, which need no production table.
pub const PRIVATE_CONNTRACK_MAX: u32 = 65_536;
/// Flows of the table per source the per-source limit remembers (an LRU:
/// a source pushed out starts with a fresh allowance). A source's state
/// matters only until its allowance has refilled (`new_flows_burst` over
/// the rate: two seconds at "20/s"); forgetting it later changes nothing.
/// Real clients each hold several flows; a crowd of distinct sources
/// opening flows within seconds is a spoofed flood, which eviction, not
/// this limit, is for.
pub const FLOWS_PER_RATE_SOURCE: u32 = 4;
/// The per-source limit's LRU never holds fewer sources than this.
pub const MIN_RATE_SOURCES: u32 = 1024;

/// Sources the per-source limit remembers for a table of `conntrack_max`
/// flows.
pub const fn rate_sources(conntrack_max: u32) -> u32 {
    let n = conntrack_max / FLOWS_PER_RATE_SOURCE;
    if n < MIN_RATE_SOURCES {
        MIN_RATE_SOURCES
    } else {
        n
    }
}

/// The per-source LRU's size in the object (a daemon sizes it at load).
pub const DEFAULT_RATE_SOURCES: u32 = rate_sources(DEFAULT_CONNTRACK_MAX);
/// SNAT source ports when the rules file does not say (`[global]
/// snat_ports`), inclusive, host order; also what the kernel uses while
/// `FWD_CONFIG` holds no range. All of 1024-32767: below Linux's default
/// ephemeral range (`ip_local_port_range`, 32768-60999), from which the
/// host picks ports for its own connections; a SNAT port there could
/// collide with one of them and hijack its replies.
pub const DEFAULT_SNAT_PORT_MIN: u16 = 1024;
pub const DEFAULT_SNAT_PORT_MAX: u16 = 32_767;
/// aya-log-ebpf's ring buffer size in bytes (its `AYA_LOGS` definition).
pub const AYA_LOGS_BYTES: u32 = 1 << 17;
/// `struct bpf_fib_lookup` (include/uapi/linux/bpf.h), the value of the FIB
/// scratch maps.
pub const FIB_LOOKUP_PARAMS_SIZE: u32 = 64;
/// `FWD_MSS_SCRATCH`'s value: the at most 40 option bytes of a TCP header,
/// and room for what a walk step reads past the last byte it checks.
pub const MSS_SCRATCH_SIZE: u32 = 64;
/// `struct bpf_devmap_val` (ifindex + program fd), a devmap's value.
pub const DEVMAP_VAL_SIZE: u32 = 8;
/// Dead neighbours the kernel is told about at once (`FWD_NEIGH`): only
/// on-link targets of the rules are followed, so this bounds targets that
/// are down at the same time, not the neighbour table.
pub const MAX_NEIGH: u32 = 1024;
/// IPv4 targets with route facts at once (`FWD_ROUTE_HINTS`): one target
/// per forward at most.
pub const MAX_ROUTE_HINTS: u32 = MAX_RULES;
/// Fragmented datagrams in flight at once (the fragment map's LRU size).
/// An entry lives for microseconds to milliseconds in practice; an LRU of
/// this size only loses one under a flood of fragments, which then pass
/// to the stack.
pub const MAX_FRAGMENTED: u32 = 8192;
/// The fragment map's key (source, destination, IP id, protocol) and value
/// (ports, when seen): kernel-only, defined in forwarder-ebpf's `frag`.
pub const FRAG_KEY_SIZE: u32 = 12;
pub const FRAG_PORTS_SIZE: u32 = 16;
/// IPv6 fragmented datagrams in flight at once (`FWD_FRAGS6`'s LRU
/// size): only end hosts fragment IPv6, and an entry is needed for the
/// microseconds between a datagram's first and last fragment; a quarter
/// of the IPv4 map's keeps the defaults' kernel memory under 40 MiB
/// (the map costs 104 B an entry).
pub const MAX_FRAGMENTED6: u32 = 2048;
/// The IPv6 fragment map's key (source, destination, identification,
/// protocol): kernel-only, defined in forwarder-ebpf's `ipv6::frag6`; its
/// value is the IPv4 map's.
pub const FRAG6_KEY_SIZE: u32 = 40;
/// The answer scratch: IPv4 + ICMP headers, the quote (an IPv4 header
/// with options, 8 bytes after it), then two link addresses
/// (forwarder-ebpf's `reply`).
pub const REPLY_SCRATCH_SIZE: u32 = 20 + 8 + (60 + 8) + 12;
