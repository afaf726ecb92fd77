//! What an operator sees: the pinned maps read back (`pinned`), the
//! daemon's status file (`status`), whether a daemon runs (`running`) and
//! the Prometheus endpoint (`metrics`).
//!
//! The one fact a reader gets wrong: none of this asks the daemon. The CLI
//! reads the pinned maps and the status file directly, so `status` and
//! `conntrack` work while no daemon runs, which is exactly when the pinned
//! dataplane goes on forwarding alone.
pub mod metrics;
pub mod pinned;
pub mod running;
pub mod status;
