//! Loading the embedded kernel object, pinning (or adopting) its maps and
//! links, attaching programs.
//!
//! With a pin directory every map and every program link is pinned there,
//! so the dataplane keeps forwarding while no daemon runs (crash, upgrade,
//! restart) and a new daemon adopts the state: it loads its own program
//! instances, reuses the pinned maps (flows, counters, listeners), and swaps
//! its programs into the pinned links atomically (bpf_link_update), so not
//! one packet meets a half-configured interface.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{HashMap, Map, MapData},
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use forwarder_common::{
    conntrack::CtConfig, AllowKey, AutoSnatKey, Counter, FlowEntry, FlowKey, GlobalConfig,
    IfaceConfig, ListenerKey, ListenerValue, RuleCounters, RuleName, ABI_VERSION, HOOKS,
    IFACE_EGRESS_NAT, IFACE_L3, MAP_ALLOW, MAP_AUTO_SNAT, MAP_CONFIG, MAP_CT_CONFIG, MAP_CT_EVICT,
    MAP_FLOWS, MAP_IFACES, MAP_IFACE_COUNTERS, MAP_LISTENERS, MAP_RULE_COUNTERS, MAP_RULE_NAMES,
    MAX_IFACES, MAX_RULES, REASONS, SNAT_PORTS_DEFAULT,
};
use tracing::{debug, info, warn};

use crate::ifaces::Iface;

/// The kernel object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("FORWARDER_EBPF_OBJ"));

pub const PROG_INGRESS: &str = "fwd_ingress";
pub const PROG_EGRESS: &str = "fwd_egress";
pub const PROG_XDP: &str = "fwd_xdp";
/// The devmap of XDP redirect targets (not pinned: rebuilt by each daemon
/// before it attaches or adopts an XDP link).
pub const MAP_XDP_DEVS: &str = "FWD_XDP_DEVS";
/// Subdirectory of the pin directory holding the program links.
pub const LINKS_DIR: &str = "links";

/// Every map the daemon pins (and adopts on restart), with the key and
/// value sizes this binary expects: a pinned map of another shape was
/// written by an incompatible forwarder and must not be adopted.
pub const PINNED_MAPS: &[(&str, usize, usize)] = &[
    (MAP_IFACES, 4, size_of::<IfaceConfig>()),
    (MAP_IFACE_COUNTERS, 4, size_of::<Counter>()),
    (
        MAP_LISTENERS,
        size_of::<ListenerKey>(),
        size_of::<ListenerValue>(),
    ),
    // LPM trie keys carry the prefix length in front.
    (MAP_ALLOW, 4 + size_of::<AllowKey>(), 1),
    (MAP_RULE_COUNTERS, 4, size_of::<RuleCounters>()),
    (MAP_FLOWS, size_of::<FlowKey>(), size_of::<FlowEntry>()),
    (MAP_CONFIG, 4, size_of::<GlobalConfig>()),
    (MAP_AUTO_SNAT, size_of::<AutoSnatKey>(), 8),
    (MAP_RULE_NAMES, 4, size_of::<RuleName>()),
    (MAP_CT_CONFIG, 4, size_of::<CtConfig>()),
    // A queue map: no key.
    (MAP_CT_EVICT, 0, size_of::<FlowKey>()),
];

/// Array maps whose size is part of the layout (counter blocks indexed by
/// slot, hook and reason; rule ids).
const FIXED_SIZES: &[(&str, u32)] = &[
    (MAP_IFACE_COUNTERS, MAX_IFACES * HOOKS * REASONS),
    (MAP_RULE_COUNTERS, MAX_RULES),
    (MAP_RULE_NAMES, MAX_RULES),
];

/// Load-time settings.
#[derive(Clone, Debug)]
pub struct LoadOptions<'a> {
    /// Pin (or adopt) maps and links here; `None` for private maps and
    /// links owned by this process (test_run tests, benchmarks).
    pub pin_dir: Option<&'a Path>,
    /// Flow-table size in flows (two entries each).
    pub conntrack_max: u32,
    /// aya-log level compiled into the programs at load (0 = off,
    /// 1 error ... 5 trace); the kernel skips disabled log statements.
    pub log_level: u8,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            pin_dir: None,
            conntrack_max: 65536,
            log_level: 0,
        }
    }
}

/// The TC ingress hook every used interface gets.
const INGRESS: (TcAttachType, &str, &str) = (TcAttachType::Ingress, PROG_INGRESS, "ingress");
/// The TC egress hook, only where replies of stack-path flows may leave
/// (see `set_egress_nat`): everywhere else it would only cost time.
const EGRESS: (TcAttachType, &str, &str) = (TcAttachType::Egress, PROG_EGRESS, "egress");

enum Link {
    /// Lives in bpffs; removing the file detaches it.
    Pinned(PathBuf),
    /// Owned by this process; detached when dropped.
    Owned(FdLink),
}

struct Attachment {
    iface: Iface,
    ingress: Link,
    /// The egress program's link, where it is needed.
    egress: Option<Link>,
    /// The XDP accelerator's link, when it runs on this interface.
    xdp: Option<Link>,
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

pub struct Dataplane {
    pub ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    attached: BTreeMap<u32, Attachment>,
    pub adopted: Adopted,
}

/// Checks that maps pinned under `pin_dir` have the layout this binary
/// uses, so adopting them cannot misread live state.
pub fn check_pinned_layout(pin_dir: &Path) -> Result<usize> {
    let mut found = 0;
    let mut problems = Vec::new();
    for (name, key, value) in PINNED_MAPS {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        found += 1;
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .with_context(|| format!("reading pinned map {}", path.display()))?;
        let (k, v) = (info.key_size() as usize, info.value_size() as usize);
        if (k, v) != (*key, *value) {
            problems.push(format!(
                "{name}: key/value {k}/{v} bytes, expected {key}/{value}"
            ));
        }
        if let Some((_, n)) = FIXED_SIZES.iter().find(|(m, _)| m == name) {
            if info.max_entries() != *n {
                problems.push(format!(
                    "{name}: {} entries, expected {n}",
                    info.max_entries()
                ));
            }
        }
    }
    if problems.is_empty() && pin_dir.join(MAP_CONFIG).exists() {
        let cfg: aya::maps::Array<MapData, GlobalConfig> =
            aya::maps::Array::try_from(Map::Array(MapData::from_pin(pin_dir.join(MAP_CONFIG))?))?;
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

/// bpffs refuses names with dots (reserved for the kernel's own files,
/// `bpf_lookup` returns EPERM), and interface names may contain them
/// (`eth0.100`): escape them, and the escape character, URL-style.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2E")
}

fn unescape(name: &str) -> String {
    name.replace("%2E", ".").replace("%25", "%")
}

/// `links/<ifindex>-<hook>-<name>`: the ifindex tells a re-created
/// interface (new index, old links dead) from the one the link was made on.
fn link_pin(pin_dir: &Path, iface: &Iface, hook: &str) -> PathBuf {
    pin_dir
        .join(LINKS_DIR)
        .join(format!("{}-{hook}-{}", iface.ifindex, escape(&iface.name)))
}

/// The (ifindex, interface name) a link pin file name refers to.
fn parse_link_pin(file: &str) -> Option<(u32, String)> {
    let mut parts = file.splitn(3, '-');
    let ifindex = parts.next()?.parse().ok()?;
    let _hook = parts.next()?;
    Some((ifindex, unescape(parts.next()?)))
}

impl Dataplane {
    /// Loads the programs. With `pin_dir`, maps are created pinned there, or
    /// adopted when already pinned (so flows, counters and listeners
    /// survive restarts); an incompatible pinned layout is an error.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let mut adopted = Adopted::default();
        let wanted_flows = opts.conntrack_max.saturating_mul(2).max(2);
        if let Some(dir) = opts.pin_dir {
            adopted.maps = check_pinned_layout(dir)?;
            if let Ok(info) = MapData::from_pin(dir.join(MAP_FLOWS)).and_then(|m| m.info()) {
                if info.max_entries() != wanted_flows {
                    adopted.flows_capacity_kept = Some(info.max_entries());
                }
            }
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_FLOWS, wanted_flows);
        // One eviction candidate per flow (see forwarder-ebpf conntrack.rs).
        loader.map_max_entries(MAP_CT_EVICT, opts.conntrack_max.max(1));
        loader.override_global("AYA_LOG_LEVEL", &opts.log_level, false);
        let paths: Vec<(&str, PathBuf)> = opts
            .pin_dir
            .map(|d| PINNED_MAPS.iter().map(|(m, ..)| (*m, d.join(m))).collect())
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
            prog.load()
                .with_context(|| format!("the verifier rejected {name}"))?;
        }
        let xdp: &mut Xdp = ebpf
            .program_mut(PROG_XDP)
            .context("program fwd_xdp missing from the object")?
            .try_into()?;
        xdp.load().context("the verifier rejected fwd_xdp")?;
        if let Some(dir) = opts.pin_dir {
            std::fs::create_dir_all(dir.join(LINKS_DIR))?;
        }
        let mut dp = Self {
            ebpf,
            pin_dir: opts.pin_dir.map(Path::to_path_buf),
            attached: BTreeMap::new(),
            adopted,
        };
        if dp.adopted.maps == 0 {
            dp.set_config(GlobalConfig {
                abi_version: ABI_VERSION,
                snat_port_min: SNAT_PORTS_DEFAULT.0,
                snat_port_max: SNAT_PORTS_DEFAULT.1,
                flags: 0,
                _pad: 0,
            })?;
            dp.set_ct_config(CtConfig::default())?;
        }
        Ok(dp)
    }

    /// Conntrack timeouts and the per-source limit (`FWD_CT_CONFIG`).
    pub fn set_ct_config(&mut self, cfg: CtConfig) -> Result<()> {
        let mut m: aya::maps::Array<&mut MapData, CtConfig> =
            aya::maps::Array::try_from(self.ebpf.map_mut(MAP_CT_CONFIG).context("FWD_CT_CONFIG")?)?;
        m.set(0, cfg, 0)?;
        Ok(())
    }

    pub fn set_config(&mut self, cfg: GlobalConfig) -> Result<()> {
        let mut m: aya::maps::Array<&mut MapData, GlobalConfig> =
            aya::maps::Array::try_from(self.ebpf.map_mut(MAP_CONFIG).context("FWD_CONFIG")?)?;
        m.set(0, cfg, 0)?;
        Ok(())
    }

    pub fn listeners(&mut self) -> Result<HashMap<&mut MapData, ListenerKey, ListenerValue>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(MAP_LISTENERS).context("FWD_LISTENERS")?,
        )?)
    }

    pub fn allow(&mut self) -> Result<aya::maps::LpmTrie<&mut MapData, AllowKey, u8>> {
        Ok(aya::maps::LpmTrie::try_from(
            self.ebpf.map_mut(MAP_ALLOW).context("FWD_ALLOW")?,
        )?)
    }

    pub fn flows(&mut self) -> Result<HashMap<&mut MapData, FlowKey, FlowEntry>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(MAP_FLOWS).context("FWD_FLOWS")?,
        )?)
    }

    /// The flow table's map, for batched reads and deletes.
    pub fn flows_data(&self) -> Result<&MapData> {
        match self.ebpf.map(MAP_FLOWS).context("FWD_FLOWS")? {
            Map::HashMap(m) => Ok(m),
            _ => anyhow::bail!("FWD_FLOWS is not a hash map"),
        }
    }

    pub fn auto_snat(&mut self) -> Result<HashMap<&mut MapData, AutoSnatKey, u64>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(MAP_AUTO_SNAT).context("FWD_AUTO_SNAT")?,
        )?)
    }

    pub fn rule_names(&mut self) -> Result<aya::maps::Array<&mut MapData, RuleName>> {
        Ok(aya::maps::Array::try_from(
            self.ebpf
                .map_mut(MAP_RULE_NAMES)
                .context("FWD_RULE_NAMES")?,
        )?)
    }

    /// Rule ids by name as recorded in the (possibly adopted) maps.
    pub fn recorded_rule_ids(&mut self) -> Result<BTreeMap<String, u32>> {
        let m = self.rule_names()?;
        let mut out = BTreeMap::new();
        for id in 0..MAX_RULES {
            if let Some(n) = m.get(&id, 0)?.as_str() {
                out.insert(n.to_string(), id);
            }
        }
        Ok(out)
    }

    /// Zeroes a rule's counters (a new rule taking a free id).
    pub fn reset_rule_counters(&mut self, id: u32) -> Result<()> {
        let mut m: aya::maps::PerCpuArray<&mut MapData, RuleCounters> =
            aya::maps::PerCpuArray::try_from(
                self.ebpf
                    .map_mut(MAP_RULE_COUNTERS)
                    .context("FWD_RULE_CNT")?,
            )?;
        let n = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        m.set(
            id,
            aya::maps::PerCpuValues::try_from(vec![RuleCounters::default(); n])?,
            0,
        )?;
        Ok(())
    }

    /// Zeroes an interface counter slot (a slot taken by a new interface).
    pub fn reset_iface_counters(&mut self, slot: u32) -> Result<()> {
        let mut m: aya::maps::PerCpuArray<&mut MapData, Counter> =
            aya::maps::PerCpuArray::try_from(
                self.ebpf
                    .map_mut(MAP_IFACE_COUNTERS)
                    .context("FWD_IFACE_CNT")?,
            )?;
        let n = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for i in slot * HOOKS * REASONS..(slot + 1) * HOOKS * REASONS {
            m.set(
                i,
                aya::maps::PerCpuValues::try_from(vec![Counter::default(); n])?,
                0,
            )?;
        }
        Ok(())
    }

    pub fn is_attached(&self, ifindex: u32) -> bool {
        self.attached.contains_key(&ifindex)
    }

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

    pub fn ifaces_map(&mut self) -> Result<HashMap<&mut MapData, u32, IfaceConfig>> {
        Ok(HashMap::try_from(
            self.ebpf
                .map_mut(MAP_IFACES)
                .context("map FWD_IFACES missing")?,
        )?)
    }

    /// Interfaces registered in the (possibly adopted) config map.
    pub fn registered(&mut self) -> Result<BTreeMap<u32, IfaceConfig>> {
        Ok(self.ifaces_map()?.iter().filter_map(|r| r.ok()).collect())
    }

    /// Registers an interface (counter slot, link type) and attaches the
    /// TC ingress program to it with TCX: into the pinned link when a
    /// previous daemon left one (atomic program swap), else as a new link.
    pub fn attach(&mut self, iface: &Iface, slot: u32) -> Result<()> {
        anyhow::ensure!(
            slot < MAX_IFACES,
            "at most {MAX_IFACES} interfaces are supported"
        );
        // An adopted entry keeps its egress flag until the daemon has
        // recomputed it: clearing it, even briefly, would let replies of
        // stack-path flows leave untranslated.
        let egress = self
            .ifaces_map()?
            .get(&iface.ifindex, 0)
            .map_or(0, |c| c.flags & IFACE_EGRESS_NAT);
        let cfg = IfaceConfig {
            slot,
            flags: if iface.l3 { IFACE_L3 } else { 0 } | egress,
        };
        // Registered before the programs see its packets, so the first
        // packet is already counted in the right slot.
        self.ifaces_map()?.insert(iface.ifindex, cfg, 0)?;
        let (ty, prog, hook) = INGRESS;
        let ingress = self.attach_hook(iface, ty, prog, hook)?;
        self.attached.insert(
            iface.ifindex,
            Attachment {
                iface: iface.clone(),
                ingress,
                egress: None,
                xdp: None,
            },
        );
        Ok(())
    }

    /// Adds the XDP accelerator (native mode) to an interface that already
    /// has the TC programs. The interface becomes a redirect target of the
    /// accelerator first, so a link adopted from a previous daemon never
    /// runs against an empty devmap.
    pub fn attach_xdp(&mut self, ifindex: u32) -> Result<()> {
        let iface = self
            .attached
            .get(&ifindex)
            .context("attach the TC programs first")?
            .iface
            .clone();
        if self.attached[&ifindex].xdp.is_some() {
            return Ok(());
        }
        {
            let mut devs: aya::maps::DevMapHash<&mut MapData> = aya::maps::DevMapHash::try_from(
                self.ebpf.map_mut(MAP_XDP_DEVS).context("FWD_XDP_DEVS")?,
            )?;
            devs.insert(ifindex, ifindex, None, 0)?;
        }
        let pin = self.pin_dir.as_deref().map(|d| link_pin(d, &iface, "xdp"));
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_XDP)
            .context("program fwd_xdp missing")?
            .try_into()?;
        let link = pinned_link(
            prog,
            pin,
            &iface,
            "xdp",
            |prog, fd| {
                let id = prog.attach_to_link(XdpLink::try_from(fd)?)?;
                drop(prog.take_link(id)?);
                Ok(())
            },
            |prog| {
                let id = prog
                    .attach_to_if_index(iface.ifindex, XdpMode::Driver)
                    .with_context(|| {
                        format!("attaching fwd_xdp to {} (native mode)", iface.name)
                    })?;
                Ok(prog.take_link(id)?.try_into()?)
            },
        );
        match link {
            Ok(l) => {
                if let Some(a) = self.attached.get_mut(&ifindex) {
                    a.xdp = Some(l);
                }
                Ok(())
            }
            Err(e) => {
                self.forget_xdp_dev(ifindex);
                Err(e)
            }
        }
    }

    fn forget_xdp_dev(&mut self, ifindex: u32) {
        if let Some(m) = self.ebpf.map_mut(MAP_XDP_DEVS) {
            if let Ok(mut devs) = aya::maps::DevMapHash::<&mut MapData>::try_from(m) {
                let _ = devs.remove(ifindex);
            }
        }
    }

    /// Removes the XDP accelerator from an interface (TC stays).
    pub fn detach_xdp(&mut self, ifindex: u32) {
        let link = self.attached.get_mut(&ifindex).and_then(|a| a.xdp.take());
        match link {
            Some(l) => {
                self.forget_xdp_dev(ifindex);
                release(l);
            }
            // An XDP link a previous daemon pinned that this configuration
            // no longer wants (attach changed to "tc"): remove it too.
            None => {
                let pin = self.attached.get(&ifindex).and_then(|a| {
                    self.pin_dir
                        .as_deref()
                        .map(|d| link_pin(d, &a.iface, "xdp"))
                });
                if let Some(pin) = pin {
                    let _ = std::fs::remove_file(pin);
                }
            }
        }
    }

    pub fn has_xdp(&self, ifindex: u32) -> bool {
        self.attached.get(&ifindex).is_some_and(|a| a.xdp.is_some())
    }

    fn attach_hook(
        &mut self,
        iface: &Iface,
        ty: TcAttachType,
        prog: &str,
        hook: &str,
    ) -> Result<Link> {
        let pin = self.pin_dir.as_deref().map(|d| link_pin(d, iface, hook));
        pinned_link(
            self.program(prog)?,
            pin,
            iface,
            hook,
            |program, fd| {
                let id = program.attach_to_link(SchedClassifierLink::try_from(fd)?)?;
                drop(program.take_link(id)?);
                Ok(())
            },
            |program| {
                let id = program
                    .attach(&iface.name, ty)
                    .with_context(|| format!("attaching {prog} to {} {hook} (TCX)", iface.name))?;
                Ok(program.take_link(id)?.try_into()?)
            },
        )
    }

    /// Whether the egress program runs on this interface: attached (or
    /// adopted) and told to translate (`IFACE_EGRESS_NAT`), or told to stop
    /// and detached. Interfaces that only see redirected traffic go without
    /// it, so their packets do not pay for a second program.
    ///
    /// Interfaces registered without being attached by this instance
    /// (BPF_PROG_TEST_RUN tests) only get the flag.
    pub fn set_egress_nat(&mut self, ifindex: u32, on: bool) -> Result<()> {
        let iface = self.attached.get(&ifindex).map(|a| a.iface.clone());
        if let (true, Some(iface)) = (on, &iface) {
            if !self.has_egress(ifindex) {
                let (ty, prog, hook) = EGRESS;
                let link = self.attach_hook(iface, ty, prog, hook)?;
                if let Some(a) = self.attached.get_mut(&ifindex) {
                    a.egress = Some(link);
                }
            }
        }
        {
            let mut m = self.ifaces_map()?;
            if let Ok(mut cfg) = m.get(&ifindex, 0) {
                let flags = if on {
                    cfg.flags | IFACE_EGRESS_NAT
                } else {
                    cfg.flags & !IFACE_EGRESS_NAT
                };
                if flags != cfg.flags {
                    cfg.flags = flags;
                    m.insert(ifindex, cfg, 0)?;
                }
            }
        }
        if let (false, Some(iface)) = (on, iface) {
            match self
                .attached
                .get_mut(&ifindex)
                .and_then(|a| a.egress.take())
            {
                Some(l) => release(l),
                // A link a previous daemon pinned and this one does not need.
                None => {
                    if let Some(pin) = self
                        .pin_dir
                        .as_deref()
                        .map(|d| link_pin(d, &iface, "egress"))
                    {
                        let _ = std::fs::remove_file(pin);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn has_egress(&self, ifindex: u32) -> bool {
        self.attached
            .get(&ifindex)
            .is_some_and(|a| a.egress.is_some())
    }

    pub fn attached(&self) -> impl Iterator<Item = &Iface> {
        self.attached.values().map(|a| &a.iface)
    }

    /// Detaches from one interface and forgets it in the config map.
    pub fn detach(&mut self, ifindex: u32) -> Result<()> {
        self.detach_xdp(ifindex);
        if let Some(a) = self.attached.remove(&ifindex) {
            if let Some(l) = a.egress {
                release(l);
            }
            release(a.ingress);
        }
        let _ = self.ifaces_map()?.remove(&ifindex);
        Ok(())
    }

    /// Detaches every program this instance attached and forgets the
    /// interfaces in the config map (a full teardown).
    pub fn detach_all(&mut self) -> Result<()> {
        let all: Vec<u32> = self.attached.keys().copied().collect();
        for i in all {
            self.detach(i)?;
        }
        Ok(())
    }

    /// Leaves every pinned link in place (the programs keep forwarding
    /// without a daemon) and lets go of this process's handles.
    pub fn leave_running(&mut self) {
        self.attached.clear();
    }

    /// Removes link pins of interfaces that are gone or were re-created
    /// (their links died with the old device), and config entries of
    /// interfaces that no longer exist.
    pub fn sweep_stale(&mut self, live: impl Fn(&str, u32) -> bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        if let Some(dir) = self.pin_dir.as_ref().map(|d| d.join(LINKS_DIR)) {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ok = parse_link_pin(&name).is_some_and(|(i, n)| live(&n, i));
                    if !ok {
                        let _ = std::fs::remove_file(e.path());
                        removed.push(name);
                    }
                }
            }
        }
        let registered = self.registered()?;
        for ifindex in registered.keys() {
            let alive = crate::ifaces::name_of(*ifindex).is_some_and(|n| live(&n, *ifindex));
            if !alive && !self.attached.contains_key(ifindex) {
                let _ = self.ifaces_map()?.remove(ifindex);
            }
        }
        Ok(removed)
    }
}

/// One program link on an interface, for any program type: with a pin
/// path, the link a previous daemon pinned there is adopted (`adopt` swaps
/// our program into it with bpf_link_update; the pin keeps it, our handle
/// can go) or, when there is none or it is unusable, a new one is made
/// (`attach`) and pinned. Without a pin path the link is owned by us.
fn pinned_link<P>(
    program: &mut P,
    pin: Option<PathBuf>,
    iface: &Iface,
    hook: &str,
    adopt: impl FnOnce(&mut P, FdLink) -> Result<()>,
    attach: impl FnOnce(&mut P) -> Result<FdLink>,
) -> Result<Link> {
    if let Some(pin) = pin.as_ref().filter(|p| p.exists()) {
        match PinnedLink::from_pin(pin)
            .map_err(anyhow::Error::from)
            .and_then(|l| adopt(program, l.into()))
        {
            Ok(()) => {
                debug!(iface = %iface.name, hook, "adopted pinned link");
                return Ok(Link::Pinned(pin.clone()));
            }
            Err(e) => {
                warn!(iface = %iface.name, hook, "pinned link unusable ({e:#}); attaching anew");
                let _ = std::fs::remove_file(pin);
            }
        }
    }
    let link = attach(program)?;
    match pin {
        Some(pin) => {
            link.pin(&pin)
                .with_context(|| format!("pinning link {}", pin.display()))?;
            Ok(Link::Pinned(pin))
        }
        None => Ok(Link::Owned(link)),
    }
}

fn release(l: Link) {
    match l {
        // Removing the bpffs file drops the last reference: the kernel
        // detaches the program from the interface.
        Link::Pinned(p) => {
            if let Err(e) = std::fs::remove_file(&p) {
                warn!("removing link pin {}: {e}", p.display());
            }
        }
        Link::Owned(l) => drop(l),
    }
}

/// Removes everything a daemon pinned under `pin_dir`: links (which
/// detaches the programs), maps (which frees the flow table), the
/// directory. Returns what it removed.
pub fn teardown(pin_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let links = pin_dir.join(LINKS_DIR);
    if let Ok(rd) = std::fs::read_dir(&links) {
        for e in rd.flatten() {
            std::fs::remove_file(e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
            removed.push(e.path());
        }
    }
    let _ = std::fs::remove_dir(&links);
    for (name, ..) in PINNED_MAPS {
        let p = pin_dir.join(name);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_round_trip_names_with_dots_and_dashes() {
        let iface = Iface {
            name: "vlan-eth0.100%".into(),
            ifindex: 7,
            l3: false,
            mtu: 1500,
            kind: None,
            up: true,
        };
        let p = link_pin(Path::new("/x"), &iface, "egress");
        let file = p.file_name().unwrap().to_str().unwrap();
        assert!(!file.contains('.'), "{file}");
        assert_eq!(parse_link_pin(file), Some((7, iface.name.clone())));
        assert_eq!(parse_link_pin("junk"), None);
    }
}
