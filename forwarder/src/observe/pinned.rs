//! Reading the dataplane's state from its pinned maps: per-CPU counters,
//! rule names, the flow table. `status`, `conntrack` and the metrics
//! endpoint all read through here, so they work whether or not a daemon
//! runs (the dataplane keeps forwarding without one).
//!
//! The one fact a reader gets wrong: every per-CPU value is one number per
//! possible CPU; a reader sums them (`sum_cpus`), the kernel never does.
use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use forwarder_common::{
    iface_counter_index, AutoSnatKey, Counter, FlowEntry, FlowFlags, FlowKey, Hook, IfaceConfig,
    Reason, RuleCounters, RuleName, MAP_AUTO_SNAT, MAP_FLOWS, MAP_IFACES, MAP_IFACE_COUNTERS,
    MAP_RULE_COUNTERS, MAP_RULE_NAMES, MAX_RULES, RULE_DROP_NAMES,
};
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReasonCount {
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// One hook's counters on one interface.
#[derive(Clone, Debug, Serialize)]
pub struct HookCounters {
    pub hook: &'static str,
    pub reasons: Vec<ReasonCount>,
}

impl HookCounters {
    pub fn total(&self) -> (u64, u64) {
        self.reasons
            .iter()
            .fold((0, 0), |(p, b), r| (p + r.packets, b + r.bytes))
    }

    pub fn get(&self, reason: Reason) -> &ReasonCount {
        &self.reasons[reason as usize]
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct IfaceCounters {
    pub ifindex: u32,
    pub name: Option<String>,
    pub l3: bool,
    pub slot: u32,
    pub hooks: Vec<HookCounters>,
}

impl IfaceCounters {
    pub fn hook(&self, hook: Hook) -> &HookCounters {
        &self.hooks[hook as usize]
    }
}

pub fn sum_cpus(values: impl IntoIterator<Item = Counter>) -> Counter {
    values.into_iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

pub fn read_iface_counters<T: std::borrow::Borrow<MapData>>(
    ifaces: &HashMap<T, u32, IfaceConfig>,
    counters: &PerCpuArray<T, Counter>,
) -> Result<Vec<IfaceCounters>> {
    let mut out = Vec::new();
    for entry in ifaces.iter() {
        let (ifindex, cfg) = entry?;
        let mut hooks = Vec::new();
        for hook in Hook::ALL {
            let mut reasons = Vec::with_capacity(Reason::ALL.len());
            for reason in Reason::ALL {
                let per_cpu = counters.get(&iface_counter_index(cfg.slot, hook, reason), 0)?;
                let c = sum_cpus(per_cpu.iter().copied());
                reasons.push(ReasonCount {
                    reason: reason.name(),
                    packets: c.packets,
                    bytes: c.bytes,
                });
            }
            hooks.push(HookCounters {
                hook: hook.name(),
                reasons,
            });
        }
        out.push(IfaceCounters {
            ifindex,
            name: crate::ifaces::name_of(ifindex),
            l3: cfg.flags.contains(forwarder_common::IfaceFlags::L3),
            slot: cfg.slot,
            hooks,
        });
    }
    out.sort_by_key(|c| c.ifindex);
    Ok(out)
}

pub fn open_pinned(pin_dir: &Path, name: &str) -> Result<MapData> {
    let p = pin_dir.join(name);
    MapData::from_pin(&p).with_context(|| {
        format!(
            "opening pinned map {} (has a daemon run with --pin-dir {}?)",
            p.display(),
            pin_dir.display()
        )
    })
}

/// Opens the pinned interface counters.
pub fn read_pinned(pin_dir: &Path) -> Result<Vec<IfaceCounters>> {
    let ifaces: HashMap<MapData, u32, IfaceConfig> =
        HashMap::try_from(Map::HashMap(open_pinned(pin_dir, MAP_IFACES)?))?;
    let counters: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, MAP_IFACE_COUNTERS)?))?;
    read_iface_counters(&ifaces, &counters)
}

/// One rule's counters summed over CPUs, plus its live flows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RuleCount {
    pub id: u32,
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub snat_flows: u64,
    pub stack_flows: u64,
    pub mss_clamped: u64,
    pub active_flows: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

/// Conntrack table fill.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableFill {
    pub flows: u64,
    pub entries: u64,
    pub capacity_entries: u32,
}

/// Rule names by id from the pinned name map.
pub fn read_rule_names(pin_dir: &Path) -> Result<BTreeMap<u32, String>> {
    let names: Array<MapData, RuleName> =
        Array::try_from(Map::Array(open_pinned(pin_dir, MAP_RULE_NAMES)?))?;
    let mut out = BTreeMap::new();
    for id in 0..MAX_RULES {
        if let Some(n) = names.get(&id, 0)?.as_str() {
            out.insert(id, n.to_string());
        }
    }
    Ok(out)
}

/// The pinned flow table's map and capacity (entries).
pub fn open_flows(pin_dir: &Path) -> Result<(MapData, u32)> {
    let data = open_pinned(pin_dir, MAP_FLOWS)?;
    let capacity = data.info()?.max_entries();
    Ok((data, capacity))
}

/// Every entry of the pinned flow table (batched reads).
pub fn read_flows(pin_dir: &Path) -> Result<(Vec<(FlowKey, FlowEntry)>, u32)> {
    let (data, capacity) = open_flows(pin_dir)?;
    Ok((crate::dataplane::batch::dump(&data)?, capacity))
}

/// Live flows per rule and the table's fill: one walk of the flow table.
#[derive(Clone, Debug, Default)]
pub struct FlowCounts {
    pub per_rule: BTreeMap<u32, u64>,
    pub fill: TableFill,
}

/// Counts the pinned flow table (batched reads of every entry: at a
/// million flows a fraction of a second of CPU, so callers that may run
/// often keep the result a while, see `metrics`).
pub fn count_flows(pin_dir: &Path) -> Result<FlowCounts> {
    let (flows, capacity) = read_flows(pin_dir)?;
    let mut out = FlowCounts {
        fill: TableFill {
            capacity_entries: capacity,
            ..Default::default()
        },
        ..Default::default()
    };
    for (_, e) in &flows {
        out.fill.entries += 1;
        if !e.flags.contains(FlowFlags::REPLY) {
            out.fill.flows += 1;
            *out.per_rule.entry(e.rule_id).or_default() += 1;
        }
    }
    Ok(out)
}

/// Every named rule's counters (cheap: one per-CPU array read per rule),
/// with `active_flows` from `flows`.
pub fn read_rule_counters(pin_dir: &Path, flows: &FlowCounts) -> Result<Vec<RuleCount>> {
    let names = read_rule_names(pin_dir)?;
    let counters: PerCpuArray<MapData, RuleCounters> =
        PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, MAP_RULE_COUNTERS)?))?;
    let mut out = Vec::new();
    for (&id, name) in &names {
        let mut sum = RuleCount {
            id,
            name: name.clone(),
            active_flows: flows.per_rule.get(&id).copied().unwrap_or(0),
            ..Default::default()
        };
        let mut drops = [0u64; RULE_DROP_NAMES.len()];
        for c in counters.get(&id, 0)?.iter() {
            sum.packets += c.packets;
            sum.bytes += c.bytes;
            sum.new_flows += c.new_flows;
            sum.snat_flows += c.snat_flows;
            sum.stack_flows += c.stack_flows;
            sum.mss_clamped += c.mss_clamped;
            for (d, v) in drops.iter_mut().zip(c.drops.iter()) {
                *d += v;
            }
        }
        sum.drops = RULE_DROP_NAMES.iter().copied().zip(drops).collect();
        out.push(sum);
    }
    Ok(out)
}

/// Every named rule's counters and the flow table's fill, from pinned maps.
pub fn read_rules_pinned(pin_dir: &Path) -> Result<(Vec<RuleCount>, TableFill)> {
    let flows = count_flows(pin_dir)?;
    Ok((read_rule_counters(pin_dir, &flows)?, flows.fill))
}

/// A backend `snat = "auto"` switched to SNAT, and how long ago.
#[derive(Clone, Debug, Serialize)]
pub struct Learned {
    pub rule_id: u32,
    pub backend: String,
    pub age_s: u64,
}

pub fn read_learned(pin_dir: &Path) -> Result<Vec<Learned>> {
    let m: HashMap<MapData, AutoSnatKey, u64> =
        HashMap::try_from(Map::LruHashMap(open_pinned(pin_dir, MAP_AUTO_SNAT)?))?;
    let now = crate::daemon::sweeper::monotonic_ns();
    let mut out: Vec<Learned> = m
        .iter()
        .flatten()
        .filter(|(_, at)| now.saturating_sub(*at) < forwarder_common::AUTO_SNAT_TTL_NS)
        .map(|(k, at)| Learned {
            rule_id: k.rule_id,
            backend: std::net::Ipv4Addr::from(forwarder_common::addr_v4_octets(&k.addr))
                .to_string(),
            age_s: now.saturating_sub(at) / 1_000_000_000,
        })
        .collect();
    out.sort_by(|a, b| (a.rule_id, &a.backend).cmp(&(b.rule_id, &b.backend)));
    Ok(out)
}
