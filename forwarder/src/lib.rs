//! The forwarder's userspace: a thin IO shell over the pure logic in `rules`
//! and the contract in `forwarder-common`.
//!
//! * [`cli`]: the command line, one module per command.
//! * [`daemon`]: facts (rtnetlink, the rules file) -> plan (pure) -> apply
//!   (the only code that writes the kernel), the event loop, the sweeper.
//! * [`dataplane`]: loading the kernel object, typed map handles, links.
//! * [`observe`]: pinned maps read back, the status file, metrics.
pub mod cli;
pub mod daemon;
pub mod dataplane;
pub mod ifaces;
pub mod node;
pub mod notify;
pub mod observe;
pub mod probe;
pub mod snat_ports;
