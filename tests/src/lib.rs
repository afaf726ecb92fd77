//! Test support: network namespaces, veth pairs, bridges, processes and the
//! forwarder daemon, each behind a guard that cleans up on Drop (also when a
//! test panics). Names carry a `fwt-<pid>-` prefix so parallel tests never
//! collide, and `sweep()` removes leftovers of test processes that died.
pub mod cli;
pub mod client;
pub mod cluster;
// The conformance suite's scenario kit (sockets and captures in namespaces).
#[cfg(feature = "dataplane")]
pub mod conformance;
pub mod daemon;
pub mod dns;
pub mod dual_stack;
pub mod k3s;
pub mod k3s6;
pub mod kernel_memory;
pub mod lanvm;
pub mod netns;
pub mod privilege;
pub mod process;
pub mod proxmox6;
pub mod routed_line;
pub mod servers;
pub mod tailnet;
// The BPF_PROG_TEST_RUN harness. Needs the forwarder crate (and
// etherparse): off in xtask's build (see Cargo.toml).
#[cfg(feature = "dataplane")]
pub mod testrun;
pub mod topology;

pub use daemon::Daemon;
pub use netns::{Bpffs, Netns};
pub use privilege::require_root;
pub use process::Bg;
