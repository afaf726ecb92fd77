//! Loading the embedded kernel object, pinning its maps, attaching programs.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap, MapData},
    programs::{tc::SchedClassifierLinkId, SchedClassifier, TcAttachType},
    Ebpf, EbpfLoader,
};
use forwarder_common::{
    FlowEntry, FlowKey, GlobalConfig, IfaceConfig, ListenerKey, ListenerValue, RuleCounters,
    ABI_VERSION, IFACE_L3, MAP_ALLOW, MAP_CONFIG, MAP_FLOWS, MAP_IFACES, MAP_IFACE_COUNTERS,
    MAP_LISTENERS, MAP_RULE_COUNTERS, MAX_IFACES,
};

use crate::ifaces::Iface;

/// The kernel object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("FORWARDER_EBPF_OBJ"));

pub const PROG_INGRESS: &str = "fwd_ingress";

/// Every map the daemon pins (and adopts on restart).
pub const PINNED_MAPS: &[&str] = &[
    MAP_IFACES,
    MAP_IFACE_COUNTERS,
    MAP_LISTENERS,
    MAP_ALLOW,
    MAP_RULE_COUNTERS,
    MAP_FLOWS,
    MAP_CONFIG,
];

/// Load-time settings.
#[derive(Clone, Debug)]
pub struct LoadOptions<'a> {
    /// Pin (or adopt) maps here; `None` for private maps (test_run tests).
    pub pin_dir: Option<&'a Path>,
    /// Flow-table size in flows (two entries each).
    pub conntrack_max: u32,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            pin_dir: None,
            conntrack_max: 65536,
        }
    }
}

pub struct Dataplane {
    pub ebpf: Ebpf,
    attached: Vec<(Iface, SchedClassifierLinkId)>,
}

impl Dataplane {
    /// Loads the programs. With `pin_dir`, maps are created pinned there, or
    /// adopted when already pinned (so counters and state survive restarts).
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_FLOWS, opts.conntrack_max.saturating_mul(2).max(2));
        let paths: Vec<(&str, PathBuf)> = opts
            .pin_dir
            .map(|d| PINNED_MAPS.iter().map(|m| (*m, d.join(m))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).context("loading the eBPF object")?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROG_INGRESS)
            .context("program fwd_ingress missing from the object")?
            .try_into()?;
        prog.load().context("verifier rejected fwd_ingress")?;
        let mut dp = Self {
            ebpf,
            attached: Vec::new(),
        };
        dp.set_config(GlobalConfig {
            abi_version: ABI_VERSION,
            snat_port_min: 32768,
            snat_port_max: 60999,
            flags: 0,
            _pad: 0,
        })?;
        Ok(dp)
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

    pub fn allow(
        &mut self,
    ) -> Result<aya::maps::LpmTrie<&mut MapData, forwarder_common::AllowKey, u8>> {
        Ok(aya::maps::LpmTrie::try_from(
            self.ebpf.map_mut(MAP_ALLOW).context("FWD_ALLOW")?,
        )?)
    }

    pub fn flows(&mut self) -> Result<HashMap<&mut MapData, FlowKey, FlowEntry>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(MAP_FLOWS).context("FWD_FLOWS")?,
        )?)
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

    pub fn is_attached(&self, ifindex: u32) -> bool {
        self.attached.iter().any(|(i, _)| i.ifindex == ifindex)
    }

    pub fn ingress_program(&mut self) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(PROG_INGRESS)
            .context("program fwd_ingress missing")?
            .try_into()?)
    }

    fn ifaces_map(&mut self) -> Result<HashMap<&mut MapData, u32, IfaceConfig>> {
        Ok(HashMap::try_from(
            self.ebpf
                .map_mut(MAP_IFACES)
                .context("map FWD_IFACES missing")?,
        )?)
    }

    /// Registers an interface (counter slot, link type) and attaches the
    /// ingress program to it with TCX.
    pub fn attach(&mut self, iface: &Iface, slot: u32) -> Result<()> {
        anyhow::ensure!(
            slot < MAX_IFACES,
            "at most {MAX_IFACES} interfaces are supported"
        );
        let cfg = IfaceConfig {
            slot,
            flags: if iface.l3 { IFACE_L3 } else { 0 },
        };
        self.ifaces_map()?.insert(iface.ifindex, cfg, 0)?;
        let link = self
            .ingress_program()?
            .attach(&iface.name, TcAttachType::Ingress)
            .with_context(|| format!("attaching to {} ingress (TCX)", iface.name))?;
        self.attached.push((iface.clone(), link));
        Ok(())
    }

    pub fn attached(&self) -> impl Iterator<Item = &Iface> {
        self.attached.iter().map(|(i, _)| i)
    }

    /// Detaches every program this instance attached and forgets the
    /// interfaces in the config map.
    pub fn detach_all(&mut self) -> Result<()> {
        let attached = std::mem::take(&mut self.attached);
        for (iface, link) in attached {
            self.ingress_program()?.detach(link)?;
            let _ = self.ifaces_map()?.remove(&iface.ifindex);
        }
        Ok(())
    }
}
