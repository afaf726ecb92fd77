//! Typed handles on every map the daemon reads or writes, taken out of the
//! loaded object once (`Maps::take`), so a missing or mistyped map is one
//! error at load, with one wording, instead of a lookup by name at each use.
//!
//! The one fact a reader gets wrong: these handles are the same kernel maps
//! the programs use, pinned or not; writing through them is writing the
//! live dataplane. The daemon does that only from `daemon::apply`.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::{
    maps::{
        lpm_trie::Key as LpmKey, Array, DevMapHash, HashMap, IterableMap, LpmTrie, Map, MapData,
        MapError, PerCpuArray, PerCpuValues,
    },
    Ebpf,
};
use forwarder_common::{
    conntrack::CtConfig, AllowKey, AutoSnatKey, Counter, FlowEntry, FlowKey, GlobalConfig,
    IfaceConfig, ListenerKey, ListenerValue, NeighFlags, RouteHint, RuleCounters, RuleName, HOOKS,
    MAP_ALLOW, MAP_AUTO_SNAT, MAP_CONFIG, MAP_CT_CONFIG, MAP_FLOWS, MAP_IFACES, MAP_IFACE_COUNTERS,
    MAP_LISTENERS, MAP_NEIGH, MAP_ROUTE_GEN, MAP_ROUTE_HINTS, MAP_RULE_COUNTERS, MAP_RULE_NAMES,
    MAP_XDP_DEVS, MAX_RULES, REASONS,
};
use rules::{AllowLpmKey, MapEntries, Room};

pub struct Maps {
    /// Interfaces the programs act on (ifindex -> counter slot, flags).
    pub ifaces: HashMap<MapData, u32, IfaceConfig>,
    pub iface_counters: PerCpuArray<MapData, Counter>,
    pub listeners: HashMap<MapData, ListenerKey, ListenerValue>,
    /// Allow-list prefixes (value unused: presence is the answer).
    pub allow: LpmTrie<MapData, AllowKey, u8>,
    pub rule_counters: PerCpuArray<MapData, RuleCounters>,
    pub flows: HashMap<MapData, FlowKey, FlowEntry>,
    pub config: Array<MapData, GlobalConfig>,
    /// Conntrack timeouts and the per-source limit.
    pub ct_config: Array<MapData, CtConfig>,
    /// `snat = "auto"` learnings (an LRU hash; aya opens it as a hash).
    pub auto_snat: HashMap<MapData, AutoSnatKey, u64>,
    pub rule_names: Array<MapData, RuleName>,
    /// The XDP accelerator's redirect targets.
    pub xdp_devs: DevMapHash<MapData>,
    /// The route generation (`daemon::route_gen`).
    pub route_gen: Array<MapData, u32>,
    /// On-link targets whose neighbour is dead (IPv4 address word as the
    /// kernel reads it -> `NeighFlags`).
    pub neigh: HashMap<MapData, u32, u32>,
    /// Route facts of the IPv4 targets (address word -> `RouteHint`), for
    /// kernels whose FIB lookup lacks SKIP_NEIGH or SRC.
    pub route_hints: HashMap<MapData, u32, RouteHint>,
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from the kernel object"))?;
    T::try_from(map)
        .with_context(|| format!("map {name}: not the type forwarder_common::MAPS says"))
}

/// Zeroes for every CPU, to reset a per-CPU slot.
fn zeroes<T: aya::Pod + Default + Clone>() -> Result<PerCpuValues<T>> {
    let n = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    Ok(PerCpuValues::try_from(vec![T::default(); n])?)
}

impl Maps {
    /// Takes every map the daemon uses out of the loaded object. What stays
    /// in `Ebpf` are the programs and maps only the kernel touches
    /// (scratch space, aya-log's ring buffer).
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        Ok(Maps {
            ifaces: take(ebpf, MAP_IFACES)?,
            iface_counters: take(ebpf, MAP_IFACE_COUNTERS)?,
            listeners: take(ebpf, MAP_LISTENERS)?,
            allow: take(ebpf, MAP_ALLOW)?,
            rule_counters: take(ebpf, MAP_RULE_COUNTERS)?,
            flows: take(ebpf, MAP_FLOWS)?,
            config: take(ebpf, MAP_CONFIG)?,
            ct_config: take(ebpf, MAP_CT_CONFIG)?,
            auto_snat: take(ebpf, MAP_AUTO_SNAT)?,
            rule_names: take(ebpf, MAP_RULE_NAMES)?,
            xdp_devs: take(ebpf, MAP_XDP_DEVS)?,
            route_gen: take(ebpf, MAP_ROUTE_GEN)?,
            neigh: take(ebpf, MAP_NEIGH)?,
            route_hints: take(ebpf, MAP_ROUTE_HINTS)?,
        })
    }

    /// What `FWD_NEIGH` holds: dead neighbours and what the kernel does
    /// about them.
    pub fn neighbours(&self) -> Result<BTreeMap<std::net::Ipv4Addr, NeighFlags>> {
        let mut out = BTreeMap::new();
        for r in self.neigh.iter() {
            let (k, v) = r.context("reading FWD_NEIGH")?;
            out.insert(k.to_ne_bytes().into(), NeighFlags::from_bits(v));
        }
        Ok(out)
    }

    /// Writes (`Some`) or removes (`None`) what the kernel does about the
    /// neighbour `addr`.
    pub fn set_neighbour(
        &mut self,
        addr: std::net::Ipv4Addr,
        flags: Option<NeighFlags>,
    ) -> Result<()> {
        let key = u32::from_ne_bytes(addr.octets());
        match flags {
            Some(f) => self.neigh.insert(key, f.bits(), 0),
            None => match self.neigh.remove(&key) {
                Err(MapError::KeyNotFound) => Ok(()),
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                r => r,
            },
        }
        .with_context(|| format!("writing FWD_NEIGH for {addr}"))?;
        // Flows read this into their cached FIB answer (`FibFlags`): the
        // answers cached before it are stale now.
        crate::daemon::route_gen::bump(&mut self.route_gen)?;
        Ok(())
    }

    /// What `FWD_ROUTE_HINTS` holds.
    pub fn route_hints(&self) -> Result<BTreeMap<std::net::Ipv4Addr, RouteHint>> {
        let mut out = BTreeMap::new();
        for r in self.route_hints.iter() {
            let (k, v) = r.context("reading FWD_ROUTE_HINTS")?;
            out.insert(k.to_ne_bytes().into(), v);
        }
        Ok(out)
    }

    /// Writes (`Some`) or removes (`None`) the route facts of target `addr`.
    pub fn set_route_hint(
        &mut self,
        addr: std::net::Ipv4Addr,
        hint: Option<RouteHint>,
    ) -> Result<()> {
        let key = u32::from_ne_bytes(addr.octets());
        match hint {
            Some(h) => self.route_hints.insert(key, h, 0),
            None => match self.route_hints.remove(&key) {
                Err(MapError::KeyNotFound) => Ok(()),
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                r => r,
            },
        }
        .with_context(|| format!("writing FWD_ROUTE_HINTS for {addr}"))
    }

    pub fn set_config(&mut self, cfg: GlobalConfig) -> Result<()> {
        self.config.set(0, cfg, 0).context("writing FWD_CONFIG")
    }

    /// Conntrack timeouts and the per-source limit (`FWD_CT_CONFIG`).
    pub fn set_ct_config(&mut self, cfg: CtConfig) -> Result<()> {
        self.ct_config
            .set(0, cfg, 0)
            .context("writing FWD_CT_CONFIG")
    }

    pub fn config(&self) -> Result<GlobalConfig> {
        Ok(self.config.get(&0, 0)?)
    }

    /// Rule ids by name as the (possibly adopted) name map records them.
    pub fn rule_ids(&self) -> Result<BTreeMap<String, u32>> {
        let mut out = BTreeMap::new();
        for id in 0..MAX_RULES {
            if let Some(n) = self.rule_names.get(&id, 0)?.as_str() {
                out.insert(n.to_string(), id);
            }
        }
        Ok(out)
    }

    /// Names rule `id` and zeroes its counters (a rule taking an id).
    pub fn name_rule(&mut self, id: u32, name: &str) -> Result<()> {
        self.rule_names.set(id, RuleName::new(name), 0)?;
        self.rule_counters.set(id, zeroes()?, 0)?;
        Ok(())
    }

    /// Clears the name of an id no rule uses any more.
    pub fn unname_rule(&mut self, id: u32) -> Result<()> {
        Ok(self.rule_names.set(id, RuleName::default(), 0)?)
    }

    /// Zeroes an interface counter block (a slot taken by a new interface).
    pub fn reset_iface_counters(&mut self, slot: u32) -> Result<()> {
        for i in slot * HOOKS * REASONS..(slot + 1) * HOOKS * REASONS {
            self.iface_counters.set(i, zeroes()?, 0)?;
        }
        Ok(())
    }

    /// Interfaces registered in the (possibly adopted) config map.
    pub fn registered(&self) -> BTreeMap<u32, IfaceConfig> {
        self.ifaces.iter().filter_map(|r| r.ok()).collect()
    }

    /// The listener and allow-list entries the kernel holds now.
    pub fn entries(&self) -> Result<MapEntries> {
        let mut out = MapEntries::default();
        for r in self.listeners.iter() {
            let (k, v) = r.context("reading FWD_LISTENERS")?;
            out.listeners.insert(k, v);
        }
        for k in self.allow.keys() {
            let k = k.context("reading FWD_ALLOW")?;
            out.allow.insert(
                AllowLpmKey {
                    prefix_len: k.prefix_len(),
                    data: k.data(),
                },
                (),
            );
        }
        Ok(out)
    }

    pub fn insert_allow(&mut self, k: &AllowLpmKey) -> Result<(), MapError> {
        self.allow.insert(&LpmKey::new(k.prefix_len, k.data), 1, 0)
    }

    pub fn remove_allow(&mut self, k: &AllowLpmKey) -> Result<(), MapError> {
        self.allow.remove(&LpmKey::new(k.prefix_len, k.data))
    }

    /// How many listener and allow-list entries the maps take (a pinned
    /// map keeps the size it was created with).
    pub fn room(&self) -> Result<Room> {
        Ok(Room {
            listeners: self.listeners.map().info()?.max_entries() as usize,
            allow: self.allow.map().info()?.max_entries() as usize,
        })
    }

    /// The flow table's map, for batched reads and deletes.
    pub fn flow_table(&self) -> &MapData {
        self.flows.map()
    }
}
