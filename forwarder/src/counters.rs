//! Reading the per-CPU counters (from a live `Ebpf` or from pinned maps).
use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use forwarder_common::{
    iface_counter_index, Counter, IfaceConfig, Reason, MAP_IFACES, MAP_IFACE_COUNTERS,
};
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReasonCount {
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IfaceCounters {
    pub ifindex: u32,
    pub name: Option<String>,
    pub l3: bool,
    pub reasons: Vec<ReasonCount>,
}

impl IfaceCounters {
    pub fn total(&self) -> (u64, u64) {
        self.reasons
            .iter()
            .fold((0, 0), |(p, b), r| (p + r.packets, b + r.bytes))
    }

    pub fn get(&self, reason: Reason) -> &ReasonCount {
        &self.reasons[reason as usize]
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
        let mut reasons = Vec::with_capacity(Reason::ALL.len());
        for reason in Reason::ALL {
            let per_cpu = counters.get(&iface_counter_index(cfg.slot, reason), 0)?;
            let c = sum_cpus(per_cpu.iter().copied());
            reasons.push(ReasonCount {
                reason: reason.name(),
                packets: c.packets,
                bytes: c.bytes,
            });
        }
        out.push(IfaceCounters {
            ifindex,
            name: crate::ifaces::name_of(ifindex),
            l3: cfg.flags & forwarder_common::IFACE_L3 != 0,
            reasons,
        });
    }
    out.sort_by_key(|c| c.ifindex);
    Ok(out)
}

/// Opens the pinned counter maps of a running (or stopped) daemon.
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
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub active_flows: u64,
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

/// Conntrack table fill.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableFill {
    pub flows: u64,
    pub entries: u64,
    pub capacity_entries: u32,
}

pub fn open_pinned(pin_dir: &Path, name: &str) -> Result<MapData> {
    let p = pin_dir.join(name);
    MapData::from_pin(&p).with_context(|| {
        format!(
            "opening pinned map {} (is the daemon running with --pin-dir {}?)",
            p.display(),
            pin_dir.display()
        )
    })
}

/// Per-rule counters for `ids` and the flow table's fill, from pinned maps.
pub fn read_rules_pinned(pin_dir: &Path, ids: &[u32]) -> Result<(Vec<RuleCount>, TableFill)> {
    use forwarder_common::{
        FlowEntry, FlowKey, RuleCounters, FLOW_REPLY, MAP_FLOWS, MAP_RULE_COUNTERS, RULE_DROP_NAMES,
    };
    let counters: PerCpuArray<MapData, RuleCounters> =
        PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, MAP_RULE_COUNTERS)?))?;
    let flows_data = open_pinned(pin_dir, MAP_FLOWS)?;
    let capacity = flows_data.info()?.max_entries();
    let flows: HashMap<MapData, FlowKey, FlowEntry> = HashMap::try_from(Map::HashMap(flows_data))?;
    let mut active: std::collections::HashMap<u32, u64> = Default::default();
    let mut fill = TableFill {
        capacity_entries: capacity,
        ..Default::default()
    };
    for (_, e) in flows.iter().flatten() {
        fill.entries += 1;
        if e.flags & FLOW_REPLY == 0 {
            fill.flows += 1;
            *active.entry(e.rule_id).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for &id in ids {
        let mut sum = RuleCount {
            id,
            active_flows: active.get(&id).copied().unwrap_or(0),
            ..Default::default()
        };
        let mut drops = [0u64; RULE_DROP_NAMES.len()];
        for c in counters.get(&id, 0)?.iter() {
            sum.packets += c.packets;
            sum.bytes += c.bytes;
            sum.new_flows += c.new_flows;
            for (d, v) in drops.iter_mut().zip(c.drops.iter()) {
                *d += v;
            }
        }
        sum.drops = RULE_DROP_NAMES.iter().copied().zip(drops).collect();
        out.push(sum);
    }
    Ok((out, fill))
}
