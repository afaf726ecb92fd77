//! The kernel side as the daemon holds it: the loaded programs (`load`),
//! typed handles on their maps (`maps`), and their links on interfaces
//! (`links`); `bpffs` makes sure pins can live, `batch` reads and deletes
//! big maps in batches, `sys` makes the bpf(2) calls aya does not wrap.
//!
//! The one fact a reader gets wrong: a `Dataplane` with a pin directory is
//! not owned by this process. Dropping it (or the process dying) leaves
//! every pinned map and link in place and forwarding; only `teardown` (or
//! `forwarder down`) removes them.
pub mod batch;
pub mod bpffs;
mod links;
mod load;
pub mod maps;
pub mod sys;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, Result};
use aya::{programs::SchedClassifier, Ebpf};
use forwarder_common::{PROG_EGRESS, PROG_INGRESS};

pub use load::{check_pinned_layout, teardown, Adopted, LoadOptions, OBJECT};
pub use maps::Maps;

use links::Attachment;

pub struct Dataplane {
    /// The loaded programs, and the maps only the kernel uses (scratch
    /// space, aya-log's ring buffer); the others are in `maps`.
    pub ebpf: Ebpf,
    pub maps: Maps,
    pin_dir: Option<PathBuf>,
    /// Interfaces this instance attached to (or adopted), by ifindex.
    attached: BTreeMap<u32, Attachment>,
    pub adopted: Adopted,
}

impl Dataplane {
    /// A TC program of the object (`PROG_INGRESS`, `PROG_EGRESS`).
    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?)
    }

    pub fn ingress_program(&mut self) -> Result<&mut SchedClassifier> {
        self.program(PROG_INGRESS)
    }

    pub fn egress_program(&mut self) -> Result<&mut SchedClassifier> {
        self.program(PROG_EGRESS)
    }

    pub fn is_attached(&self, ifindex: u32) -> bool {
        self.attached.contains_key(&ifindex)
    }
}
