//! Loading the embedded kernel object: the layout check of pinned maps,
//! adopting them (or pinning new ones), verifying the programs, and the
//! teardown that undoes it all.
//!
//! The one fact a reader gets wrong: a new daemon never creates a second
//! dataplane next to a pinned one. aya reuses every map pinned under the
//! pin directory (`map_pin_path`), so the programs this process loads see
//! the flows, counters and listeners of the previous daemon; that is why a
//! pinned map of another layout must be refused before loading.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, Map, MapData, MapError, ProgramArray},
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use forwarder_common::{
    conntrack::CtConfig, pinned_maps, Capacity, GlobalConfig, ABI_VERSION, GLOBAL_KERNEL_FEATURES,
    MAPS, MAP_CONFIG, MAP_FLOWS, MAP_PROGS, PIN_LINKS_DIR, PRIVATE_CONNTRACK_MAX, PROG_EGRESS,
    PROG_EGRESS6, PROG_INGRESS, PROG_INGRESS6, PROG_INGRESS64, PROG_SLOTS, PROG_SLOT_IPV6,
    PROG_SLOT_IPV6_EGRESS, PROG_SLOT_NAT64, PROG_XDP,
};
use tracing::{debug, info, warn};

use super::{maps::Maps, Dataplane};

/// The kernel object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("FORWARDER_EBPF_OBJ"));

/// Load-time settings.
#[derive(Clone, Debug)]
pub struct LoadOptions<'a> {
    /// Pin (or adopt) maps and links here; `None` for private maps and
    /// links owned by this process (test_run tests, benchmarks).
    pub pin_dir: Option<&'a Path>,
    /// Flow-table size in flows (`ENTRIES_PER_FLOW` entries each).
    pub conntrack_max: u32,
    /// aya-log level compiled into the programs at load (0 = off,
    /// 1 error ... 5 trace); the kernel skips disabled log statements.
    pub log_level: u8,
    /// What the kernel has (`forwarder_common::kernel`, from the probe),
    /// set in the programs' read-only `FWD_KERNEL_FEATURES` so the verifier
    /// sees only the branches this kernel can run.
    pub kernel_features: u32,
    /// Load the IPv6 programs (`fwd_ingress6`, `fwd_ingress64`,
    /// `fwd_egress6`) into `FWD_PROGS`. Without
    /// them the slots stay empty and fwd_ingress and fwd_egress pass IPv6
    /// on untouched: a daemon whose rules have no IPv6 forward does not
    /// pay for verifying another ~300k instructions at every start (tens
    /// of seconds on an emulated or busy machine), nor depend on a kernel
    /// accepting them.
    pub ipv6: bool,
    /// Leave the IPv6 programs out of `FWD_PROGS` without loading them,
    /// saying why (FORWARDER_FORCE_IPV6=off): what a kernel whose verifier
    /// rejects one gets, on demand. Wins over `ipv6`.
    pub ipv6_off: Option<&'static str>,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            pin_dir: None,
            conntrack_max: PRIVATE_CONNTRACK_MAX,
            log_level: 0,
            kernel_features: forwarder_common::FEATURES_ALL,
            ipv6: true,
            ipv6_off: None,
        }
    }
}

/// What adopting a pin directory found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Maps that were already pinned (and are reused).
    pub maps: usize,
    /// The pinned flow table's capacity in entries, when it differs from
    /// what `conntrack_max` asks for (it keeps its size until `down`).
    pub flows_capacity_kept: Option<u32>,
}

/// Checks that maps pinned under `pin_dir` have the layout this binary
/// uses (`forwarder_common::MAPS`), so adopting them cannot misread live
/// state. Returns how many are pinned.
pub fn check_pinned_layout(pin_dir: &Path) -> Result<usize> {
    let mut found = 0;
    let mut problems = Vec::new();
    for spec in pinned_maps() {
        let path = pin_dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        found += 1;
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .with_context(|| format!("reading pinned map {}", path.display()))?;
        let (k, v) = (info.key_size(), info.value_size());
        if (k, v) != (spec.key_size, spec.value_size) {
            problems.push(format!(
                "{}: key/value {k}/{v} bytes, expected {}/{}",
                spec.name, spec.key_size, spec.value_size
            ));
        }
        if let Capacity::Fixed(n) = spec.capacity {
            if info.max_entries() != n {
                problems.push(format!(
                    "{}: {} entries, expected {n}",
                    spec.name,
                    info.max_entries()
                ));
            }
        }
    }
    if problems.is_empty() && pin_dir.join(MAP_CONFIG).exists() {
        let cfg: Array<MapData, GlobalConfig> =
            Array::try_from(Map::Array(MapData::from_pin(pin_dir.join(MAP_CONFIG))?))?;
        let v = cfg.get(&0, 0)?.abi_version;
        if v != 0 && v != ABI_VERSION {
            problems.push(format!("layout version {v}, expected {ABI_VERSION}"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the state pinned in {dir} was written by a forwarder with another map layout \
             ({p}); adopting it could misread live flows, so nothing was loaded. To start \
             over (this forgets the flows it tracks; established connections through it \
             break): `forwarder --pin-dir {dir} down`, then start the daemon again",
            dir = pin_dir.display(),
            p = problems.join("; ")
        );
    }
    Ok(found)
}

impl Dataplane {
    /// Loads the programs. With `pin_dir`, maps are created pinned there, or
    /// adopted when already pinned (so flows, counters and listeners
    /// survive restarts); an incompatible pinned layout is an error.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let mut adopted = Adopted::default();
        let wanted_flows = Capacity::Flows.at_load(opts.conntrack_max);
        if let Some(dir) = opts.pin_dir {
            adopted.maps = check_pinned_layout(dir)?;
            if let Ok(info) = MapData::from_pin(dir.join(MAP_FLOWS)).and_then(|m| m.info()) {
                if info.max_entries() != wanted_flows {
                    adopted.flows_capacity_kept = Some(info.max_entries());
                }
            }
        }
        let mut loader = EbpfLoader::new();
        // The flow table, its eviction queue (one candidate per flow, see
        // forwarder-ebpf/src/evict.rs) and the per-source limit's LRU, sized
        // the way `check` prices them (rules::memory). A pinned map keeps
        // the size it was created with.
        for spec in MAPS.iter().filter(|m| m.capacity.follows_conntrack_max()) {
            loader.map_max_entries(spec.name, spec.capacity.at_load(opts.conntrack_max));
        }
        loader.override_global("AYA_LOG_LEVEL", &opts.log_level, false);
        loader.override_global(GLOBAL_KERNEL_FEATURES, &opts.kernel_features, true);
        let paths: Vec<(&str, PathBuf)> = opts
            .pin_dir
            .map(|d| pinned_maps().map(|m| (m.name, d.join(m.name))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).context("loading the eBPF object")?;
        for name in [PROG_INGRESS, PROG_EGRESS] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()?;
            prog.load().map_err(|e| rejected(name, &e))?;
        }
        let ipv6_off = match opts.ipv6_off {
            Some(why) => Some(why.to_string()),
            None if opts.ipv6 => fill_tail_calls(&mut ebpf)?,
            None => None,
        };
        if let Some(why) = &ipv6_off {
            warn!("{}", ipv6_off_warning(why));
        }
        let ipv6_loaded = opts.ipv6 && ipv6_off.is_none();
        if !ipv6_loaded {
            // FWD_PROGS is pinned: its slots may still hold the previous
            // daemon's IPv6 programs. Empty them, so "without the IPv6
            // programs" means what it says (all or nothing).
            clear_tail_calls(&mut ebpf)?;
        }
        let xdp: &mut Xdp = ebpf
            .program_mut(PROG_XDP)
            .with_context(|| format!("program {PROG_XDP} missing from the object"))?
            .try_into()?;
        xdp.load().map_err(|e| rejected(PROG_XDP, &e))?;
        if let Some(dir) = opts.pin_dir {
            std::fs::create_dir_all(dir.join(PIN_LINKS_DIR))?;
        }
        let maps = Maps::take(&mut ebpf)?;
        let mut dp = Self {
            ebpf,
            maps,
            pin_dir: opts.pin_dir.map(Path::to_path_buf),
            attached: BTreeMap::new(),
            adopted,
            tc_legacy: None,
            ipv6_off,
            ipv6_loaded,
        };
        if dp.adopted.maps == 0 {
            dp.maps.set_config(GlobalConfig::DEFAULT)?;
            dp.maps.set_ct_config(CtConfig::default())?;
        }
        Ok(dp)
    }
}

impl Dataplane {
    /// Loads `fwd_ingress6` now if the rules came to need it after a start
    /// without it (`LoadOptions::ipv6` false): a reload that adds the first
    /// IPv6 forward. A rejection turns the IPv6 path off, as at load.
    pub fn ensure_ipv6(&mut self) -> Result<()> {
        if self.ipv6_loaded || self.ipv6_off.is_some() {
            return Ok(());
        }
        match fill_tail_calls(&mut self.ebpf)? {
            None => self.ipv6_loaded = true,
            Some(why) => {
                clear_tail_calls(&mut self.ebpf)?;
                warn!("{}", ipv6_off_warning(&why));
                self.ipv6_off = Some(why);
            }
        }
        Ok(())
    }
}

/// Loads `fwd_ingress6`, `fwd_ingress64` (NAT64's IPv4 side) and
/// `fwd_egress6` (the replies of IPv6 flows through the stack) and puts
/// them where fwd_ingress and fwd_egress tail-call them (`FWD_PROGS`). That
/// map is pinned: a program array loses its entries when its last user
/// reference goes, so a private one would empty when the daemon exits and
/// the still-attached fwd_ingress would pass every IPv6 packet (and NAT64
/// reply) untranslated until the next daemon loads, resetting IPv6 flows.
/// The pin keeps the previous daemon's programs in place; this overwrites
/// them (the layout check made sure they speak the same ABI). `Some(why)`
/// when the verifier rejects any: nothing is written here, and the caller
/// empties every slot (`clear_tail_calls`), so fwd_ingress and fwd_egress
/// pass IPv6 to the stack untranslated (`PassNotIpv4`) and a kernel that
/// cannot take the IPv6 path still forwards IPv4. (fwd_ingress6
/// last: without the other two a NAT64 flow or a flow through the stack
/// could start whose replies nothing translates.) A missing program or map
/// is a broken object, an error.
fn fill_tail_calls(ebpf: &mut Ebpf) -> Result<Option<String>> {
    let mut fds = Vec::new();
    for (name, slot) in [
        (PROG_INGRESS64, PROG_SLOT_NAT64),
        (PROG_EGRESS6, PROG_SLOT_IPV6_EGRESS),
        (PROG_INGRESS6, PROG_SLOT_IPV6),
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?;
        if let Err(e) = prog.load() {
            return Ok(Some(rejected(name, &e).to_string()));
        }
        fds.push((name, slot, prog.fd()?.try_clone()?));
    }
    let map = ebpf
        .map_mut(MAP_PROGS)
        .with_context(|| format!("map {MAP_PROGS} missing from the kernel object"))?;
    let mut progs = ProgramArray::try_from(map)?;
    for (name, slot, fd) in fds {
        progs
            .set(slot, &fd, 0)
            .with_context(|| format!("putting {name} into {MAP_PROGS}"))?;
    }
    Ok(None)
}

/// Empties every slot of `FWD_PROGS`: what a daemon without the IPv6
/// programs must leave, since the pinned map may still hold the previous
/// daemon's. An empty slot is not an error.
fn clear_tail_calls(ebpf: &mut Ebpf) -> Result<()> {
    let map = ebpf
        .map_mut(MAP_PROGS)
        .with_context(|| format!("map {MAP_PROGS} missing from the kernel object"))?;
    let mut progs = ProgramArray::try_from(map)?;
    for slot in 0..PROG_SLOTS {
        match progs.clear_index(&slot) {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("emptying slot {slot} of {MAP_PROGS}"))
            }
        }
    }
    Ok(())
}

/// What the daemon logs and `status` shows when the IPv6 path is off.
pub fn ipv6_off_warning(why: &str) -> String {
    format!(
        "the IPv6 path is off ({why}): IPv6 forwards are not translated, IPv6 packets pass to \
         the host's stack as without the forwarder (counted as pass_not_ipv4); IPv4 forwards \
         are not affected"
    )
}

/// One line for a program the verifier refused (its last words); the whole
/// log goes to the debug log.
fn rejected(name: &str, e: &ProgramError) -> anyhow::Error {
    debug!("the verifier's log for {name}: {e}");
    anyhow::anyhow!(
        "kernel {}: the verifier rejects {name}: {} (`forwarder doctor` checks everything the \
         object needs)",
        crate::probe::kernel_release(),
        crate::probe::scratch::verifier_summary(e)
    )
}

/// Removes everything a daemon pinned under `pin_dir`: our legacy TC
/// filters (and the clsact qdiscs we created, when empty), links (the
/// programs are off their interfaces when this returns), maps (which frees
/// the flow table; unpinning `FWD_PROGS` drops its last user reference, so
/// the kernel empties it and the IPv6 programs it held, and the maps they
/// hold, go too), the directory. Returns what it removed.
pub fn teardown(pin_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = super::tc_legacy::teardown(pin_dir)?;
    let links = pin_dir.join(PIN_LINKS_DIR);
    if let Ok(rd) = std::fs::read_dir(&links) {
        for e in rd.flatten() {
            super::links::remove_link_pin(&e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
            removed.push(e.path());
        }
    }
    let _ = std::fs::remove_dir(&links);
    for spec in pinned_maps() {
        let p = pin_dir.join(spec.name);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            removed.push(p);
        }
    }
    if pin_dir.exists() {
        if let Err(e) = std::fs::remove_dir(pin_dir) {
            info!("kept {}: {e}", pin_dir.display());
        }
    }
    Ok(removed)
}
