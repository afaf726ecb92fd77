//! The kernel memory the dataplane's maps reserve when they are created,
//! computed from the layout table (`forwarder_common::MAPS`) and a rules
//! file's `conntrack_max`: what `forwarder check` prints.
//!
//! The one fact a reader gets wrong: a BPF hash map is not "entries x
//! (key + value)". A preallocated hash reserves every element at creation,
//! each with a kernel header (`struct htab_elem`, 48 bytes on 64-bit), key
//! and value each rounded up to 8 bytes, plus one bucket (16 bytes) per
//! power of two at or above the size, plus one spare element per CPU; a
//! hash created with `BPF_F_NO_PREALLOC` reserves only its buckets and
//! then costs an element (plus an 8-byte free-list node) per entry written;
//! a per-CPU array stores each value once per possible CPU. The costs below
//! are the kernel's own accounting (`map_mem_usage`, shown as `memlock` in
//! /proc/PID/fdinfo and `bytes_memlock` by bpftool, Linux 6.4 and newer);
//! tests/tests/cli_check_memory.rs compares them with a loaded dataplane.
use forwarder_common::{MapKind, MapSpec, BPF_F_NO_PREALLOC, MAPS};

/// `struct htab_elem` before its key on 64-bit kernels.
pub const HTAB_ELEM_HEADER: u64 = 48;
/// `struct bucket` (list head and lock) of a hash map.
pub const HTAB_BUCKET: u64 = 16;
/// The per-CPU pointer a per-CPU array keeps for each element.
pub const PERCPU_POINTER: u64 = 8;
/// The free-list node (`struct llist_node`) the kernel counts with each
/// element of a hash that is not preallocated.
pub const LLIST_NODE: u64 = 8;
/// A memory page, for the ring buffer's accounting.
const PAGE: u64 = 4096;

/// One map's reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapMemory {
    pub name: &'static str,
    pub entries: u64,
    /// Bytes per entry as the kernel accounts them (per-CPU copies
    /// included).
    pub per_entry: u64,
    /// Everything reserved at creation. A map that is not preallocated
    /// costs `per_entry` more for each entry it holds.
    pub bytes: u64,
    /// How the figure is made, for the reader.
    pub how: String,
}

/// What every map of the object reserves, on a machine with `cpus`
/// possible CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub cpus: u32,
    pub conntrack_max: u32,
    pub maps: Vec<MapMemory>,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.maps.iter().map(|m| m.bytes).sum()
    }

    /// The map called `name`.
    pub fn map(&self, name: &str) -> Option<&MapMemory> {
        self.maps.iter().find(|m| m.name == name)
    }
}

fn round8(n: u32) -> u64 {
    u64::from(n).div_ceil(8) * 8
}

/// The reservation of one map with `entries` entries.
pub fn map_memory(spec: &MapSpec, entries: u32, cpus: u32) -> MapMemory {
    let n = u64::from(entries);
    let cpus64 = u64::from(cpus);
    let buckets = u64::from(entries.next_power_of_two()) * HTAB_BUCKET;
    let elem = HTAB_ELEM_HEADER + round8(spec.key_size) + round8(spec.value_size);
    let (per_entry, bytes, how) = match spec.kind {
        MapKind::Hash if spec.flags & BPF_F_NO_PREALLOC != 0 => (
            elem + LLIST_NODE,
            buckets,
            format!(
                "16 B per bucket up front, {} B per entry as added (48 header + key {} + value \
                 {} + 8 list node)",
                elem + LLIST_NODE,
                round8(spec.key_size),
                round8(spec.value_size)
            ),
        ),
        MapKind::Hash => (
            elem,
            // One spare element per CPU (for updates that replace).
            elem * (n + cpus64) + buckets,
            format!(
                "{elem} B per entry (48 header + key {} + value {}), 16 B per bucket",
                round8(spec.key_size),
                round8(spec.value_size)
            ),
        ),
        MapKind::LruHash => (
            elem,
            elem * n + buckets,
            format!("{elem} B per entry, 16 B per bucket (LRU)"),
        ),
        MapKind::Array => {
            let v = round8(spec.value_size);
            (v, v * n, format!("{v} B per entry"))
        }
        MapKind::PerCpuArray => {
            let v = round8(spec.value_size) * cpus64 + PERCPU_POINTER;
            (
                v,
                v * n,
                format!(
                    "{} B x {cpus} CPUs + 8 B per entry",
                    round8(spec.value_size)
                ),
            )
        }
        // A program pointer per entry.
        MapKind::ProgArray => (8, 8 * n, "8 B per entry (a program pointer)".to_string()),
        // One preallocated slot per entry (and one spare).
        MapKind::Queue => {
            let v = u64::from(spec.value_size);
            (v, v * (n + 1), format!("{v} B per entry"))
        }
        // Not preallocated: a node per prefix in use, nothing up front.
        MapKind::LpmTrie => (0, 0, "allocated per prefix as used".into()),
        // The kernel keeps a pointer per bucket; devices come and go.
        MapKind::DevMapHash => (
            0,
            u64::from(entries.next_power_of_two()) * 8,
            "8 B per bucket".into(),
        ),
        MapKind::RingBuf => (
            0,
            // Data pages, mapped twice, plus the consumer/producer pages.
            n + 2 * PAGE + (n / PAGE * 2 + 2) * 8,
            "the buffer and its control pages".into(),
        ),
    };
    MapMemory {
        name: spec.name,
        entries: n,
        per_entry,
        bytes,
        how,
    }
}

/// Every map of the object as a daemon creates it for `conntrack_max`.
pub fn estimate(conntrack_max: u32, cpus: u32) -> MemoryEstimate {
    let maps = MAPS
        .iter()
        .map(|spec| map_memory(spec, spec.capacity.at_load(conntrack_max), cpus))
        .collect();
    MemoryEstimate {
        cpus,
        conntrack_max,
        maps,
    }
}

/// What one more flow of `conntrack_max` costs on a machine with `cpus`
/// CPUs: its two flow-table entries and their buckets, its slot in the
/// eviction queue and its share of the per-source limit's LRU (the
/// difference between two tables of powers of two, where the buckets grow
/// in step with the entries).
pub fn bytes_per_flow(cpus: u32) -> u64 {
    const N: u32 = 1 << 20;
    (estimate(2 * N, cpus).total() - estimate(N, cpus).total()) / u64::from(N)
}

/// Bytes as "12.3 MiB" (binary units, like `free -h`).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The lines `check` prints: the total and the maps that matter.
pub fn render(m: &MemoryEstimate) -> String {
    let mut out = format!(
        "kernel memory the table sizes reserve: {} (conntrack_max {}, {} CPUs; each flow of \
         conntrack_max {} B)\n",
        human(m.total()),
        m.conntrack_max,
        m.cpus,
        bytes_per_flow(m.cpus)
    );
    let mut maps: Vec<&MapMemory> = m.maps.iter().filter(|x| x.bytes >= 1 << 20).collect();
    maps.sort_by_key(|m| std::cmp::Reverse(m.bytes));
    for x in maps {
        out += &format!(
            "  {:<15} {:>10} {:>9} entries, {}\n",
            x.name,
            human(x.bytes),
            x.entries,
            x.how
        );
    }
    let small: u64 = m
        .maps
        .iter()
        .filter(|x| x.bytes < 1 << 20)
        .map(|x| x.bytes)
        .sum();
    out += &format!(
        "  {:<15} {:>10} (the other maps; allow-list prefixes take memory as they are added)\n",
        "others",
        human(small)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use forwarder_common::{
        Capacity, MAP_CT_EVICT, MAP_FLOWS, MAP_LISTENERS, MAP_RULE_COUNTERS, MAP_SRC_LIMIT,
    };

    /// The figures of bpftool's `bytes_memlock` on Linux 6.18 for maps
    /// created by hand, minus the map's own struct (under 1 KiB): the
    /// formulas above reproduce the kernel's accounting.
    #[test]
    fn formulas_match_the_kernels_accounting_of_handmade_maps() {
        let spec = |kind, key_size, value_size| MapSpec {
            name: "t",
            kind,
            key_size,
            value_size,
            capacity: Capacity::Limit(0),
            flags: 0,
            pinned: false,
        };
        let cases = [
            // kind, key, value, entries, bytes_memlock with 2 CPUs
            (MapKind::Hash, 48, 136, 1024, 255_328),
            (MapKind::Hash, 48, 136, 1000, 249_760),
            (MapKind::Hash, 48, 136, 65_536, 16_254_304),
            (MapKind::Hash, 16, 8, 4096, 361_504),
            (MapKind::LruHash, 24, 8, 4096, 394_112),
            (MapKind::Array, 4, 136, 1024, 139_576),
            (MapKind::PerCpuArray, 4, 16, 3072, 123_192),
        ];
        for (kind, k, v, n, kernel) in cases {
            let ours = map_memory(&spec(kind, k, v), n, 2).bytes;
            assert!(
                kernel >= ours && kernel - ours < 1024,
                "{kind:?} {k}/{v} x {n}: ours {ours}, kernel {kernel}"
            );
        }
    }

    #[test]
    fn the_flow_table_follows_conntrack_max() {
        let small = estimate(1000, 2);
        let big = estimate(1_000_000, 2);
        let f = |m: &MemoryEstimate| m.map(MAP_FLOWS).unwrap().clone();
        assert_eq!(f(&small).entries, 2000);
        assert_eq!(f(&big).entries, 2_000_000);
        assert!(f(&big).bytes > 2_000_000 * f(&big).per_entry);
        // Everything else is the same.
        assert_eq!(
            small.map(MAP_LISTENERS).unwrap().bytes,
            big.map(MAP_LISTENERS).unwrap().bytes
        );
        // Per-CPU arrays grow with CPUs.
        let c = |cpus| estimate(1000, cpus).map(MAP_RULE_COUNTERS).unwrap().bytes;
        assert!(c(64) > 30 * c(2));
    }

    /// Listeners change only on loads, so their map is allocated as
    /// written: a file with a handful of forwards does not pay for the
    /// 262144 entries of the largest (issue 20: 34 MiB before).
    #[test]
    fn the_listener_map_reserves_only_its_buckets() {
        let m = estimate(262_144, 2);
        let l = m.map(MAP_LISTENERS).unwrap();
        assert_eq!(l.entries, 262_144);
        assert_eq!(l.bytes, 262_144 * HTAB_BUCKET, "{l:?}");
        assert_eq!(l.per_entry, 128, "{l:?}");
        // The flow table, its eviction queue (one key per flow) and the
        // per-source limit's LRU (one source per four flows) grow with
        // conntrack_max; everything else stays small (the largest rest:
        // the listener buckets' 4 MiB).
        let per_flow = m.map(MAP_FLOWS).unwrap().bytes
            + m.map(MAP_CT_EVICT).unwrap().bytes
            + m.map(MAP_SRC_LIMIT).unwrap().bytes;
        let not_flows = m.total() - per_flow;
        assert!(not_flows < 7 << 20, "{}", human(not_flows));
    }

    /// Issue 20: a handful of forwards at the defaults under 40 MiB. What a
    /// file's forwards add is listener entries (128 B each), so the
    /// reservation is the figure; tests/tests/memory_footprint.rs reads it
    /// from the kernel. The per-CPU counters grow with the host: the
    /// target holds up to 10 possible CPUs (24 before the FIB cache of
    /// issue 19 made a flow entry 16 B larger, 12 before the IPv6 fragment
    /// map FWD_FRAGS6).
    #[test]
    fn the_defaults_reserve_under_40_mib_up_to_10_cpus() {
        let at = |cpus| estimate(forwarder_common::DEFAULT_CONNTRACK_MAX, cpus).total();
        assert!(at(10) < 40 << 20, "{}", human(at(10)));
        assert!(at(11) > 40 << 20, "{}", human(at(11)));
        // What each flow of conntrack_max costs: two entries of 208 B and
        // their buckets, a 40 B queue slot, a quarter of an LRU source.
        assert_eq!(bytes_per_flow(2), 2 * (208 + 16) + 40 + (72 + 16) / 4);
        assert_eq!(bytes_per_flow(2), bytes_per_flow(64));
    }

    #[test]
    fn the_per_source_lru_follows_conntrack_max() {
        let lru = |flows| estimate(flows, 2).map(MAP_SRC_LIMIT).unwrap().entries;
        assert_eq!(lru(65_536), 16_384);
        assert_eq!(lru(262_144), 65_536);
        assert_eq!(lru(1), u64::from(forwarder_common::MIN_RATE_SOURCES));
    }

    #[test]
    fn the_report_names_the_total_and_the_big_maps() {
        let text = render(&estimate(262_144, 2));
        assert!(
            text.starts_with("kernel memory the table sizes reserve: "),
            "{text}"
        );
        assert!(text.contains("FWD_FLOWS"), "{text}");
        assert!(text.contains("524288 entries"), "{text}");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100), "100 B");
    }
}
