//! The forwarder's userspace: a thin IO shell over the pure logic in `rules`
//! and the ABI in `forwarder-common`. One module per concern.
pub mod batch;
pub mod bpffs;
pub mod cli;
pub mod counters;
pub mod daemon;
pub mod dataplane;
pub mod ifaces;
pub mod metrics;
pub mod netlink;
pub mod snat_ports;
pub mod state;
pub mod sweeper;
pub mod watch;
