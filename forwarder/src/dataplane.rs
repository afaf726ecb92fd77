//! Loading the embedded kernel object, pinning its maps, attaching programs.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap, MapData},
    programs::{tc::SchedClassifierLinkId, SchedClassifier, TcAttachType},
    Ebpf, EbpfLoader,
};
use forwarder_common::{IfaceConfig, IFACE_L3, MAP_IFACES, MAP_IFACE_COUNTERS, MAX_IFACES};

use crate::ifaces::Iface;

/// The kernel object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("FORWARDER_EBPF_OBJ"));

pub const PROG_INGRESS: &str = "fwd_ingress";

/// Every map the daemon pins (and adopts on restart).
pub const PINNED_MAPS: &[&str] = &[MAP_IFACES, MAP_IFACE_COUNTERS];

pub struct Dataplane {
    pub ebpf: Ebpf,
    attached: Vec<(Iface, SchedClassifierLinkId)>,
}

impl Dataplane {
    /// Loads the programs. With `pin_dir`, maps are created pinned there, or
    /// adopted when already pinned (so counters and state survive restarts).
    pub fn load(pin_dir: Option<&Path>) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        let paths: Vec<(&str, PathBuf)> = pin_dir
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
        Ok(Self {
            ebpf,
            attached: Vec::new(),
        })
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
