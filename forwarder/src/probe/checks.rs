//! The checks of [`super::probe`] that ask the kernel something: helper
//! flags in a test run, every program type, map type and helper the object
//! uses, and the scratch-namespace probes (verifier, attach modes).
//!
//! The one fact a reader would get wrong: a helper, flag or attach mode
//! the programs have a fallback for is `Degraded` here, not `Fatal`: the
//! daemon loads the fallback (`fallback.rs`), and the check still names
//! what the kernel lacks.
use super::{object, raw, scratch, Checks, Features, Impact};

/// Whether bpf_fib_lookup accepts `flag`, with the evidence. A flag no
/// kernel has must come back EINVAL first, or the probe cannot tell.
pub(super) fn fib_flag(flag: u32) -> (Result<bool, String>, String) {
    let control = match raw::fib_lookup_rc(1 << 31) {
        Ok(rc) => rc,
        Err(e) => return (Err(e), String::new()),
    };
    if control != -libc::EINVAL {
        let e = format!("cannot tell: an unknown flag returned {control}, not -EINVAL");
        return (Err(e), String::new());
    }
    match raw::fib_lookup_rc(flag) {
        Ok(rc) => (
            Ok(rc != -libc::EINVAL),
            format!("bpf_fib_lookup returned {rc} in a test run (unknown flag: {control})"),
        ),
        Err(e) => (Err(e), String::new()),
    }
}

pub(super) const BPF_FIB_LOOKUP_SKIP_NEIGH: u32 =
    aya_obj::generated::BPF_FIB_LOOKUP_SKIP_NEIGH as u32;
/// The clock helper the programs replace with bpf_ktime_get_ns on kernels
/// without it (5.10).
const COARSE_TIME: &str = "bpf_ktime_get_coarse_ns";

pub(crate) const BPF_FIB_LOOKUP_SRC: u32 = aya_obj::generated::BPF_FIB_LOOKUP_SRC as u32;

/// Program types, map types and helpers of the object, each asked of the
/// kernel. Whether all of them exist.
pub(super) fn needs(c: &mut Checks, f: &mut Features, obj: &'static [u8]) -> bool {
    use aya::sys::{is_helper_supported, is_map_supported, is_program_supported};
    let needs = match object::needs(obj) {
        Ok(n) => n,
        Err(e) => {
            return c.add("object needs", Err(e), Impact::Fatal, "", "");
        }
    };
    let mut all = true;
    for (name, ty) in &needs.programs {
        let tn = object::program_type_name(*ty);
        let xdp = tn == "xdp";
        all &= c.add(
            format!("program {name} ({tn})"),
            is_program_supported(*ty).map_err(|e| e.to_string()),
            if xdp { Impact::Degraded } else { Impact::Fatal },
            "",
            format!("no {tn} programs: {name} cannot load"),
        ) || xdp;
    }
    // One check per map type, naming the maps of that type.
    let mut by_type: std::collections::BTreeMap<String, (aya::maps::MapType, Vec<&str>)> =
        Default::default();
    for (name, ty) in &needs.maps {
        by_type
            .entry(object::map_type_name(*ty))
            .or_insert_with(|| (*ty, Vec::new()))
            .1
            .push(name);
    }
    for (tn, (ty, names)) in by_type {
        all &= c.add(
            format!("map {tn}"),
            is_map_supported(ty).map_err(|e| e.to_string()),
            Impact::Fatal,
            names.join(", "),
            format!("no {tn} maps: the object cannot load"),
        );
    }
    for (tn, (ty, ids)) in &needs.helpers {
        let xdp = tn == "xdp";
        for id in ids {
            let name = object::helper_name(*id);
            let since = object::helper_since(*id)
                .map(|v| format!(" (Linux {v})"))
                .unwrap_or_default();
            let answer = match object::helper(*id) {
                Some(h) => is_helper_supported(*ty, h).map_err(|e| e.to_string()),
                None => Err(format!("helper #{id} unknown to this aya")),
            };
            // The one helper with a fallback (`fallback.rs`): the clock.
            if name == COARSE_TIME {
                let has = c.add(
                    format!("helper {name} ({tn})"),
                    answer,
                    Impact::Degraded,
                    "",
                    format!("{tn} programs cannot call {name}{since}: they read bpf_ktime_get_ns"),
                );
                if !xdp {
                    f.coarse_time = has;
                }
                continue;
            }
            all &= c.add(
                format!("helper {name} ({tn})"),
                answer,
                if xdp { Impact::Degraded } else { Impact::Fatal },
                "",
                format!("{tn} programs cannot call {name}{since}: the {tn} programs cannot load"),
            ) || xdp;
        }
    }
    all
}

fn outcome(o: &scratch::Outcome) -> Result<bool, String> {
    match o {
        None => Ok(false),
        Some(Ok(())) => Ok(true),
        Some(Err(e)) => Err(e.clone()),
    }
}

/// The scratch-namespace probes: the object through the verifier, then
/// every attach mode.
pub(super) fn attach_checks(
    c: &mut Checks,
    f: &mut Features,
    object: &'static [u8],
    verifier_log: Option<&std::path::Path>,
) {
    let found = match scratch::run(
        object,
        f.tcx,
        f.kernel_features,
        verifier_log.map(Into::into),
    ) {
        Ok(found) => found,
        Err(e) => {
            c.add("attach probes", Err(e), Impact::Info, "", "");
            return;
        }
    };
    let obj_ok = c.add(
        "object loads",
        outcome(&found.object),
        Impact::Fatal,
        "maps created, relocations applied",
        "the embedded object does not load",
    );
    let mut loads = obj_ok;
    for (name, r) in &found.programs {
        let why = r.as_ref().err().map(String::as_str).unwrap_or_default();
        let detail = match r {
            Ok(Some(n)) => format!("accepted, {n} instructions verified"),
            _ => "accepted".into(),
        };
        // fwd_ingress6, fwd_ingress64 (NAT64) and fwd_egress6 (the IPv6
        // stack path) are optional: any rejected, the daemon leaves the
        // FWD_PROGS slots empty and IPv6 passes to the stack untranslated.
        let ipv6 = [
            forwarder_common::PROG_INGRESS6,
            forwarder_common::PROG_INGRESS64,
            forwarder_common::PROG_EGRESS6,
        ]
        .contains(&name.as_str());
        let ok = c.add(
            format!("verifier: {name}"),
            r.clone().map(|_| true),
            if ipv6 {
                Impact::Degraded
            } else {
                Impact::Fatal
            },
            detail,
            if ipv6 {
                format!(
                    "the verifier rejects {name}: {why}; IPv6 forwards are not translated \
                     (IPv6 passes to the host's stack), IPv4 is not affected"
                )
            } else {
                format!("the verifier rejects {name}: {why}")
            },
        );
        loads &= ok || ipv6;
    }
    f.object_loads = Some(loads);
    c.add(
        "fib_lookup SRC on a route",
        outcome(&found.fib_src_route),
        if f.fib_src {
            Impact::Fatal
        } else {
            Impact::Info
        },
        "output lookup filled in the egress address",
        "BPF_FIB_LOOKUP_SRC does not fill in the source address",
    );
    c.add(
        "fib_lookup SKIP_NEIGH on a route",
        outcome(&found.fib_skip_neigh_route),
        if f.fib_skip_neigh {
            Impact::Fatal
        } else {
            Impact::Info
        },
        "NO_NEIGH without the flag, success with it",
        "BPF_FIB_LOOKUP_SKIP_NEIGH does not skip the neighbour",
    );
    let needs_prog = "needs a classifier the verifier accepted";
    if found.tcx_attach.is_some() {
        c.add(
            "TCX attach",
            outcome(&found.tcx_attach),
            Impact::Fatal,
            "veth ingress",
            "attaching with TCX failed",
        );
        c.add(
            "tc link update",
            outcome(&found.tcx_link_update),
            Impact::Fatal,
            "bpf_link_update on the TCX link",
            "no bpf_link_update on TC links: a restart cannot swap programs in place",
        );
    } else if f.tcx {
        c.skip("TCX attach", Impact::Fatal, needs_prog);
    }
    match &found.netlink_tc {
        Some(_) => {
            f.netlink_tc = Some(c.add(
                "netlink TC (clsact + cls_bpf)",
                outcome(&found.netlink_tc),
                if f.tcx { Impact::Info } else { Impact::Fatal },
                "veth ingress, direct-action",
                "cannot attach with cls_bpf (modules sch_ingress, cls_bpf?)",
            ));
            if found.netlink_tc_replace.is_some() {
                c.add(
                    "tc filter replace",
                    outcome(&found.netlink_tc_replace),
                    if f.tcx { Impact::Info } else { Impact::Fatal },
                    "the cls_bpf filter's program swapped in place",
                    "cannot replace a cls_bpf filter's program: a restart in tc-legacy mode \
                     cannot swap programs in place",
                );
            }
        }
        None => c.skip("netlink TC (clsact + cls_bpf)", Impact::Fatal, needs_prog),
    }
    match &found.xdp_driver {
        Some(_) => {
            f.xdp_driver = Some(c.add(
                "XDP native (veth)",
                outcome(&found.xdp_driver),
                Impact::Degraded,
                "driver mode",
                "no native XDP on veth: attach = \"xdp\" falls back to TC",
            ));
            c.add(
                "XDP link update",
                outcome(&found.xdp_link_update),
                Impact::Degraded,
                "bpf_link_update on the XDP link",
                "no XDP bpf_link update: a restart cannot swap the XDP program in place",
            );
            c.add(
                "XDP generic",
                outcome(&found.xdp_generic),
                Impact::Info,
                "skb mode",
                "no generic XDP",
            );
        }
        None => c.skip(
            "XDP",
            Impact::Degraded,
            "needs fwd_xdp accepted by the verifier",
        ),
    }
}
