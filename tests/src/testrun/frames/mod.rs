//! Frames for the BPF_PROG_TEST_RUN tests, in four parts:
//!
//! - `fixture`: the addresses, MACs and flow keys/entries of the fixture;
//! - `build`: frames built with etherparse (its checksums), and the
//!   mutations hostile or awkward cases need (options, TTL, truncation);
//! - `csum`: checksum arithmetic of this module's own (RFC 1071, no code
//!   shared with the programs), to build the frames a test expects (see
//!   `expect`);
//! - `verify`: etherparse's reading of the frames the programs left, every
//!   checksum recomputed.
//!
//! Frames are Ethernet, from `mac_of(source)` to `HOST_MAC`, IPv4 with
//! TTL 64 and a 20-byte header unless a helper says otherwise. Everything
//! is re-exported here: tests write `frames::tcp`, not the part's path.
mod build;
mod csum;
mod fixture;
mod verify;

pub use build::*;
pub use csum::*;
pub use fixture::*;
pub use verify::*;
