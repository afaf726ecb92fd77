//! The kernel side as the daemon holds it: the loaded programs (`load`),
//! typed handles on their maps (`maps`), and their links on interfaces
//! (`links`; the legacy clsact + cls_bpf way in `tc_legacy`, over
//! `tc_netlink`); `bpffs` makes sure pins can live, `batch` reads and
//! deletes big maps in batches, `sys` makes the bpf(2) calls aya does not
//! wrap.
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
mod pin_names;
pub mod sys;
pub mod tc_legacy;
pub mod tc_netlink;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, Result};
use aya::{programs::SchedClassifier, Ebpf};
use forwarder_common::{PROG_EGRESS, PROG_INGRESS};

pub use load::{check_pinned_layout, ipv6_off_warning, teardown, Adopted, LoadOptions, OBJECT};
pub use maps::Maps;

use links::Attachment;

/// How the TC programs are attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcMode {
    /// TCX links (Linux 6.6), pinned.
    #[default]
    Tcx,
    /// A clsact qdisc and cls_bpf filters in direct-action mode
    /// (`tc_legacy`): kernels without TCX, or `attach = "tc-legacy"`.
    Legacy,
}

impl TcMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TcMode::Tcx => "tcx",
            TcMode::Legacy => "tc-legacy",
        }
    }
}

pub struct Dataplane {
    /// The loaded programs, and the maps only the kernel uses (scratch
    /// space, aya-log's ring buffer); the others are in `maps`.
    pub ebpf: Ebpf,
    pub maps: Maps,
    pin_dir: Option<PathBuf>,
    /// Interfaces this instance attached to (or adopted), by ifindex.
    attached: BTreeMap<u32, Attachment>,
    pub adopted: Adopted,
    /// Why every interface is to get its TC programs the legacy way (set
    /// at start from the kernel probe or FORWARDER_FORCE_ATTACH); `None`:
    /// TCX, unless the rules say `attach = "tc-legacy"`.
    pub tc_legacy: Option<&'static str>,
    /// Why the IPv6 programs (`fwd_ingress6`, `fwd_ingress64`,
    /// `fwd_egress6`) are not in `FWD_PROGS` (the verifier rejected one, or
    /// FORWARDER_FORCE_IPV6=off); `None`: IPv6 forwards are translated.
    pub ipv6_off: Option<String>,
    /// The IPv6 programs are in `FWD_PROGS` (see `ensure_ipv6`).
    ipv6_loaded: bool,
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
