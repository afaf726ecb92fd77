//! The BPF_PROG_TEST_RUN harness: the dataplane's kernel programs (TC
//! ingress, TC egress, the XDP accelerator) run on crafted frames, and
//! every effect is checked: verdict, output frame, counters, flow table.
//!
//! The fact a reader gets wrong: nothing is sent. test_run only reports a
//! redirect (TC_ACT_REDIRECT, XDP_REDIRECT); whatever happens after the
//! program (the devmap transmit, the stack, the peer) is the end-to-end
//! tests'. The programs' FIB and neighbour lookups are real, though: they
//! run in the network namespace of the calling thread, which `Host` moves
//! into a namespace built like the Proxmox host:
//!
//! ```text
//!  peer ns                   host ns (the test thread moves in here)
//!  lan ─────── veth ─────── vmbr0       192.168.1.55/24
//!  vm  ─────── veth ─────── vmbr1       192.168.100.1/24   (VMs on-link)
//!                           tailscale0  100.100.1.1/24, tun, MTU 1280,
//!                                       route 8.0.0.0/24 (a subnet router)
//!  no route to 10.43.0.0/16 (ClusterIPs), no default route
//! ```
//!
//! The parts:
//! * [`host`]: that fixture, with the dataplane loaded (not attached);
//! * [`apply`]: everything the harness writes into the maps: the rules
//!   through the daemon's own facts -> plan -> `apply_maps`; by hand only
//!   what the daemon does through links (interfaces, egress/XDP flags) and
//!   flow-table state;
//! * [`prog`]: one program run (the contexts, the verdicts), through
//!   [`syscall`] (the bpf(2) command, shared with the bench tool);
//! * [`snapshot`]: every counter and map entry the programs write, and
//!   what changed between two snapshots;
//! * [`frames`]: frames built with etherparse, checksum arithmetic of its
//!   own (no code shared with the programs), etherparse's reading of the
//!   output; [`expect`]: the frames a translation must produce;
//! * [`ipv6`]: the IPv6 side of the fixture (addresses, the fixture with
//!   them set, IPv6 frames and their reading) for the NAT66/NAT64 tables;
//! * [`tc`]: a TC step (frame in; verdict, counters, output, flows checked)
//!   and flow-entry checks; [`xdp`]: the same for the accelerator, and its
//!   fixture (neighbours, devmap).
//!
//! A behaviour file (tests/tests/test_run/NAME.rs, `mod NAME;` in its
//! main.rs) imports `testrun::{frames::*, tc::*}` (or `xdp::*`), loads its
//! rules with `Host::for_test` and runs a table of [`tc::Step`]s through
//! [`tc::step`].
pub mod apply;
pub mod expect;
pub mod frames;
pub mod host;
pub mod ipv6;
pub mod prog;
pub mod snapshot;
pub mod syscall;
pub mod tc;
pub mod xdp;

pub use host::*;
pub use prog::*;
pub use snapshot::*;
