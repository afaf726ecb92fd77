//! What the embedded kernel object asks of the kernel, read from the object
//! itself (not from a list kept by hand, which would go stale): its program
//! types, its map types, and the helpers each program calls, subprograms
//! included.
use std::collections::{BTreeMap, BTreeSet, HashSet};

use aya::{maps::MapType, programs::ProgramType};
use aya_obj::{
    generated::{bpf_func_id, bpf_map_type},
    obj::ProgramSection,
    Object,
};

/// Every program type, map type and helper the object uses.
#[derive(Debug, Clone)]
pub struct Needs {
    /// (program name, type).
    pub programs: Vec<(String, ProgramType)>,
    /// (map name, type), sorted by name.
    pub maps: Vec<(String, MapType)>,
    /// Helper ids each program type calls.
    pub helpers: BTreeMap<String, (ProgramType, BTreeSet<u32>)>,
}

const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
/// src_reg of a helper call; 1 is a BPF-to-BPF call, 2 a kfunc.
const HELPER: u8 = 0;

fn program_type(section: &ProgramSection) -> Option<ProgramType> {
    match section {
        ProgramSection::SchedClassifier => Some(ProgramType::SchedClassifier),
        ProgramSection::Xdp { .. } => Some(ProgramType::Xdp),
        _ => None,
    }
}

/// A name for a program type, as bpftool spells it.
pub fn program_type_name(t: ProgramType) -> &'static str {
    match t {
        ProgramType::SchedClassifier => "sched_cls",
        ProgramType::Xdp => "xdp",
        _ => "other",
    }
}

/// A name for a map type, as bpftool spells it.
pub fn map_type_name(t: MapType) -> String {
    let debug = format!("{t:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out.replace("per_cpu", "percpu")
        .replace("dev_map_hash", "devmap_hash")
        .replace("ring_buf", "ringbuf")
}

/// `bpf_func_id` for a helper number, when this aya knows it.
pub fn helper(id: u32) -> Option<bpf_func_id> {
    if id == 0 || id >= bpf_func_id::__BPF_FUNC_MAX_ID as u32 {
        return None;
    }
    // SAFETY: bpf_func_id is a #[repr(u32)] enum whose variants are the
    // kernel's helper numbers, every value from 0 to __BPF_FUNC_MAX_ID
    // (exclusive) in order (the uapi header generates them with
    // ___BPF_FUNC_MAPPER, one after another); `id` is inside that range.
    Some(unsafe { std::mem::transmute::<u32, bpf_func_id>(id) })
}

/// `bpf_fib_lookup` for BPF_FUNC_fib_lookup.
pub fn helper_name(id: u32) -> String {
    match helper(id) {
        Some(h) => format!("{h:?}").replacen("BPF_FUNC_", "bpf_", 1),
        None => format!("helper #{id}"),
    }
}

/// Reads what `object` needs. Subprograms are linked into each program
/// first (as aya does before loading), so a helper called from a shared
/// function counts for every program type that calls that function.
pub fn needs(object: &[u8]) -> Result<Needs, String> {
    let mut obj = Object::parse(object).map_err(|e| format!("parsing the object: {e}"))?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    obj.relocate_calls(&text_sections)
        .map_err(|e| format!("linking the object's functions: {e}"))?;
    let mut programs = Vec::new();
    let mut helpers: BTreeMap<String, (ProgramType, BTreeSet<u32>)> = BTreeMap::new();
    for (name, prog) in &obj.programs {
        let Some(ty) = program_type(&prog.section) else {
            continue;
        };
        programs.push((name.clone(), ty));
        let entry = helpers
            .entry(program_type_name(ty).to_string())
            .or_insert_with(|| (ty, BTreeSet::new()));
        if let Some(f) = obj.functions.get(&prog.function_key()) {
            for i in &f.instructions {
                if i.code == CALL && i.src_reg() == HELPER {
                    entry.1.insert(i.imm as u32);
                }
            }
        }
    }
    programs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut maps: Vec<(String, MapType)> = obj
        .maps
        .iter()
        .filter_map(|(name, m)| {
            // .bss/.data/.rodata of the object are array maps too.
            bpf_map_type::try_from(m.map_type())
                .ok()
                .and_then(|t| MapType::try_from(t).ok())
                .map(|t| (name.clone(), t))
        })
        .collect();
    maps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Needs {
        programs,
        maps,
        helpers,
    })
}

/// The first kernel each helper the object uses appeared in, for messages
/// (the probe itself never decides from these).
pub fn helper_since(id: u32) -> Option<&'static str> {
    Some(match id {
        1..=3 => "3.19",
        // bpf_ktime_get_ns: the clock of kernels without the coarse one.
        5 | 7 => "4.1",
        9..=11 => "4.1",
        // bpf_tail_call (fwd_ingress to fwd_ingress6).
        12 => "4.2",
        23 => "4.4",
        26 => "4.5",
        28 => "4.6",
        // bpf_skb_change_proto (NAT64's family change).
        31 => "4.8",
        38 | 39 => "4.9",
        43 => "4.10",
        50 => "4.13",
        51 => "4.14",
        69 => "4.18",
        // bpf_sk_lookup_tcp/udp, bpf_sk_release, bpf_map_push/pop_elem
        // (SNAT ports never a local socket's; the eviction queue).
        84..=88 => "4.20",
        130..=133 => "5.8",
        152 => "5.10",
        160 => "5.11",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_needs_classifiers_xdp_and_its_helpers() {
        let n = needs(crate::dataplane::OBJECT).unwrap();
        let types: BTreeSet<&str> = n
            .programs
            .iter()
            .map(|(_, t)| program_type_name(*t))
            .collect();
        assert_eq!(types, BTreeSet::from(["sched_cls", "xdp"]));
        let tc = &n.helpers["sched_cls"].1;
        // bpf_fib_lookup and bpf_redirect_neigh are called from
        // subprograms of the classifiers, not from their entry functions:
        // linking must have pulled them in.
        for h in [69, 152] {
            assert!(tc.contains(&h), "sched_cls lacks {}", helper_name(h));
        }
        // Every helper the object calls has a name and a first kernel for
        // the messages (a new helper must be added to helper_since).
        for (_, set) in n.helpers.values() {
            for h in set {
                assert!(helper(*h).is_some(), "unknown helper #{h}");
                assert!(
                    helper_since(*h).is_some(),
                    "{} not in helper_since",
                    helper_name(*h)
                );
            }
        }
        assert!(n
            .maps
            .iter()
            .any(|(name, _)| name == forwarder_common::MAP_FLOWS));
    }

    #[test]
    fn names_read_like_bpftool() {
        assert_eq!(helper_name(69), "bpf_fib_lookup");
        assert_eq!(map_type_name(MapType::LpmTrie), "lpm_trie");
        assert_eq!(map_type_name(MapType::PerCpuArray), "percpu_array");
        assert_eq!(map_type_name(MapType::DevMapHash), "devmap_hash");
        assert_eq!(map_type_name(MapType::RingBuf), "ringbuf");
        assert_eq!(map_type_name(MapType::LruHash), "lru_hash");
    }
}
