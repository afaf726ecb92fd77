//! The built kernel object against forwarder-common's layout table: every
//! map of the object is in `forwarder_common::MAPS` with the same type, key
//! size, value size, size and flags, and every row of the table is in the object.
//! The kernel side names its maps with literals (aya's `#[map]` takes no
//! constants), so this is what keeps the two in one place. No root needed:
//! the object is only parsed.
use aya_obj::{EbpfSectionKind, Object};
use forwarder::dataplane::OBJECT;
use forwarder_common::{
    map_spec, MapKind, MAPS, PROG_EGRESS, PROG_INGRESS, PROG_INGRESS6, PROG_INGRESS64, PROG_XDP,
};

/// Maps of the object that hold global variables (`.rodata`, `.bss`,
/// `.data`: aya-log's level, for one): not maps the programs look up by
/// name, so not in the table.
fn is_data_section(kind: EbpfSectionKind) -> bool {
    matches!(
        kind,
        EbpfSectionKind::Data | EbpfSectionKind::Rodata | EbpfSectionKind::Bss
    )
}

#[test]
fn every_map_of_the_object_is_in_the_layout_table_with_its_sizes() {
    let obj = Object::parse(OBJECT).expect("parsing the embedded eBPF object");
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (name, map) in &obj.maps {
        if is_data_section(map.section_kind()) {
            continue;
        }
        seen.push(name.clone());
        let Some(spec) = map_spec(name) else {
            problems.push(format!(
                "{name}: in the object but not in forwarder_common::MAPS (add a row, and a \
                 MAP_* name; the daemon's adoption and ARCHITECTURE.md go by that table)"
            ));
            continue;
        };
        let got = (
            map.map_type(),
            map.key_size(),
            map.value_size(),
            map.max_entries(),
            map.map_flags(),
        );
        let want = (
            spec.kind.bpf_map_type(),
            spec.key_size,
            spec.value_size,
            spec.capacity.in_object(),
            spec.flags,
        );
        if got != want {
            problems.push(format!(
                "{name}: (type, key, value, max_entries, flags) {got:?} in the object, {want:?} in \
                 forwarder_common::MAPS"
            ));
        }
    }
    for spec in MAPS {
        if !seen.iter().any(|n| n == spec.name) {
            problems.push(format!(
                "{}: in forwarder_common::MAPS but not in the object",
                spec.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the kernel object and forwarder-common disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_programs_the_loader_names_are_in_the_object() {
    let obj = Object::parse(OBJECT).expect("parsing the embedded eBPF object");
    for name in [
        PROG_INGRESS,
        PROG_EGRESS,
        PROG_INGRESS6,
        PROG_INGRESS64,
        PROG_XDP,
    ] {
        assert!(
            obj.programs.contains_key(name),
            "program {name} missing from the object (has {:?})",
            obj.programs.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_table_names_real_map_types() {
    // A guard on the table itself: the kinds are the kernel's numbers.
    assert_eq!(MapKind::Hash.bpf_map_type(), 1);
    assert_eq!(MapKind::LpmTrie.bpf_map_type(), 11);
    assert_eq!(MapKind::RingBuf.bpf_map_type(), 27);
}
