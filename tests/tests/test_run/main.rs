//! BPF_PROG_TEST_RUN tests of the dataplane: the specification of what the
//! kernel programs do with each packet, one file per behaviour.
//!
//! Every test builds its own namespace standing in for the Proxmox host,
//! loads its own dataplane there with the rules it names (compiled by the
//! real rules compiler), and feeds crafted frames to the programs, checking
//! the verdict, the output frame (fields and every checksum through
//! etherparse, then byte for byte against a frame built independently),
//! the exact counter deltas and the flow-table changes of each step. The
//! harness, its fixture topology and what a step checks are in
//! `forwarder_tests::testrun` (tests/src/testrun/).
//!
//! Adding a behaviour: a new file here with a module comment saying what
//! the behaviour is (and an ASCII topology when the scenario adds to the
//! fixture's), `mod` it below, and write tests named as sentences, each
//! `let Some(mut h) = Host::for_test(64, RULES) else { return };` followed
//! by a table of `tc::Step`s (or `xdp::XdpCase`s) run through `tc::step`.
//! nextest runs each test in its own process; plain `cargo test` runs them
//! as threads, which is fine too: each thread enters its own namespace.

// TC ingress and egress.
mod allow_lists;
mod auto_snat;
mod counters;
mod fib_cache;
mod icmp6_errors;
mod icmp_echo;
mod icmp_errors;
mod ipv6_answers;
mod l3_tun;
mod left_alone;
mod limits;
mod mss;
mod nat64;
mod nat64_errors;
mod nat64_pool;
mod nat64_stack_path;
mod nat66;
mod nat66_ext_headers;
mod nat66_fragments;
mod nat66_stack_path;
mod neighbours;
mod port_ranges;
mod replies;
mod snat_modes;
mod stack_path;
mod tcp_lifecycle;
mod udp;

// Connection tracking (issue 11): states, windows, eviction, expiry in
// the kernel, interface binding, SNAT ports, per-source limit, learning.
mod ct_auto_snat;
mod ct_eviction;
mod ct_expiry;
mod ct_fragments;
mod ct_iface;
mod ct_rate_limit;
mod ct_reopen;
mod ct_reopen6;
mod ct_rst_fin;
mod ct_snat_ports;
mod ct_support;
mod ct_tcp_states;
mod ct_udp_states;

// The XDP accelerator.
mod xdp_forwarding;
mod xdp_left_to_tc;
mod xdp_next_hops;
