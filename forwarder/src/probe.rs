//! What this kernel can do for the forwarder, found by asking it: program
//! and map types are created, helpers are loaded in tiny programs, helper
//! flags are run (BPF_PROG_TEST_RUN), attach modes are tried on a veth pair
//! in a scratch namespace, and the real object is loaded.
//!
//! The one fact a reader would get wrong: nothing here is decided from the
//! version number. Distribution kernels backport features and leave others
//! out (Debian's 6.1 has BTF but no TCX; a 6.6 may lack cls_bpf), so the
//! version only appears in messages, to say where a feature arrived.
//!
//! `forwarder doctor` prints the result; the daemon calls [`probe`] at
//! start (without the scratch-namespace part: it loads and attaches for
//! real right after, and reports the verifier's words itself).
use serde::Serialize;

pub mod object;
mod raw;
pub mod scratch;

pub use raw::kernel_release;

/// A probe's answer.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Yes,
    No,
    /// The probe itself failed (the detail says how); treated as "no".
    Error,
    /// Not probed (needs root, or something it builds on is missing).
    Skipped,
}

/// What a "no" means for the forwarder as built.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    /// The daemon cannot work (or would silently break forwards).
    Fatal,
    /// It works with less (a fallback, a missing extra).
    Degraded,
    /// Worth knowing, changes nothing.
    Info,
}

#[derive(Serialize, Clone, Debug)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub impact: Impact,
    /// The evidence: an error, the verifier's last words, a path.
    pub detail: String,
    /// One line on what a "no" means and what to do; empty for "yes".
    pub advice: String,
}

/// The answers the daemon decides on.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Features {
    pub root: bool,
    pub btf: bool,
    pub bpffs: bool,
    /// BPF_LINK_CREATE knows TCX (6.6): pinnable TC links.
    pub tcx: bool,
    /// bpf_fib_lookup accepts BPF_FIB_LOOKUP_SKIP_NEIGH (6.3).
    pub fib_skip_neigh: bool,
    /// bpf_fib_lookup accepts BPF_FIB_LOOKUP_SRC (6.8).
    pub fib_src: bool,
    pub map_lookup_batch: bool,
    /// Every program type, map type and helper the object uses exists.
    pub object_needs_met: bool,
    /// From the scratch-namespace probes (`None`: not run).
    pub object_loads: Option<bool>,
    pub netlink_tc: Option<bool>,
    pub xdp_driver: Option<bool>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Probe {
    /// `uname -r`.
    pub kernel: String,
    pub features: Features,
    pub checks: Vec<Check>,
}

impl Probe {
    /// Checks that answered "no" (or failed) and stop the daemon.
    pub fn fatal(&self) -> impl Iterator<Item = &Check> {
        self.problems(Impact::Fatal)
    }

    /// Checks that answered "no" (or failed) and leave the daemon with less.
    pub fn degraded(&self) -> impl Iterator<Item = &Check> {
        self.problems(Impact::Degraded)
    }

    /// Why the daemon must not start here, in one line naming each missing
    /// piece ("kernel 5.10.0: sched_cls programs cannot call
    /// bpf_ktime_get_coarse_ns (Linux 5.11) ..."); `None` when it can.
    pub fn refusal(&self) -> Option<String> {
        let fatal: Vec<&str> = self.fatal().map(|c| c.advice.as_str()).collect();
        (!fatal.is_empty()).then(|| {
            format!(
                "not starting: {} (`forwarder doctor` lists everything)",
                fatal.join("; ")
            )
        })
    }

    /// Skipped checks are not problems: what made them skip is one.
    fn problems(&self, impact: Impact) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(move |c| matches!(c.status, Status::No | Status::Error) && c.impact == impact)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    /// Also load the real object and attach it every way, in a scratch
    /// network namespace (`doctor`; takes a second or two).
    pub attach: bool,
    /// Probe this object instead of the embedded one (`doctor --object`:
    /// would a candidate build load on this kernel?).
    pub object: Option<&'static [u8]>,
    /// Write the whole verifier log of each rejected program to
    /// `<dir>/<program>.log` (`doctor --verifier-log`).
    pub verifier_log: Option<std::path::PathBuf>,
}

struct Checks {
    kernel: String,
    list: Vec<Check>,
}

impl Checks {
    /// Records a probe's answer; `advice` is shown when it is not "yes".
    fn add(
        &mut self,
        name: impl Into<String>,
        answer: Result<bool, String>,
        impact: Impact,
        detail: impl Into<String>,
        advice: impl Into<String>,
    ) -> bool {
        let (status, detail) = match answer {
            Ok(true) => (Status::Yes, detail.into()),
            Ok(false) => (Status::No, detail.into()),
            Err(e) => (Status::Error, e),
        };
        let advice = if status == Status::Yes {
            String::new()
        } else {
            format!("kernel {}: {}", self.kernel, advice.into())
        };
        self.list.push(Check {
            name: name.into(),
            status,
            impact,
            detail,
            advice,
        });
        status == Status::Yes
    }

    fn skip(&mut self, name: &str, impact: Impact, why: &str) {
        self.list.push(Check {
            name: name.into(),
            status: Status::Skipped,
            impact,
            detail: why.into(),
            advice: String::new(),
        });
    }
}

/// Probes this kernel for everything the embedded object and the daemon
/// use. Never fails: a probe that cannot run says so in its check.
pub fn probe(opts: &ProbeOptions) -> Probe {
    let kernel = kernel_release();
    let mut c = Checks {
        kernel: kernel.clone(),
        list: Vec::new(),
    };
    let mut f = Features::default();
    c.add("kernel", Ok(true), Impact::Info, kernel.clone(), "");
    // SAFETY: geteuid has no preconditions.
    f.root = c.add(
        "root",
        Ok(unsafe { libc::geteuid() } == 0),
        Impact::Fatal,
        "",
        "not root: loading and attaching BPF programs needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN",
    );
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux");
    f.btf = c.add(
        "kernel BTF",
        Ok(btf.exists()),
        Impact::Info,
        btf.display().to_string(),
        "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF): the object needs none today; bpftool shows less",
    );
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let mounted = crate::dataplane::bpffs::is_bpffs(std::path::Path::new("/sys/fs/bpf"));
    f.bpffs = c.add(
        "bpffs",
        Ok(fs
            .lines()
            .any(|l| l.split_whitespace().last() == Some("bpf"))),
        Impact::Fatal,
        if mounted {
            "/sys/fs/bpf is mounted"
        } else {
            "/sys/fs/bpf not mounted yet (the daemon mounts it)"
        },
        "no bpf filesystem: nothing can be pinned, so the dataplane cannot outlive the daemon",
    );
    if !f.root {
        for n in [
            "object needs",
            "TCX",
            "bpf_fib_lookup flags",
            "map batch ops",
        ] {
            c.skip(n, Impact::Fatal, "needs root");
        }
        return Probe {
            kernel,
            features: f,
            checks: c.list,
        };
    }
    let object = opts.object.unwrap_or(crate::dataplane::OBJECT);
    f.object_needs_met = needs(&mut c, object);
    f.tcx = c.add(
        "TCX (tc links)",
        raw::tcx_supported(),
        Impact::Info,
        "BPF_LINK_CREATE with BPF_TCX_INGRESS",
        "no TCX (Linux 6.6): the TC programs are attached the legacy way \
         (clsact qdisc + cls_bpf filters over netlink, `attach = \"tc-legacy\"`)",
    );
    let (answer, detail) = fib_flag(BPF_FIB_LOOKUP_SKIP_NEIGH);
    f.fib_skip_neigh = c.add(
        "fib_lookup SKIP_NEIGH",
        answer,
        Impact::Fatal,
        detail,
        "bpf_fib_lookup rejects BPF_FIB_LOOKUP_SKIP_NEIGH (Linux 6.3): every route lookup \
         of this object fails, so SNATed forwards drop and the rest go through the stack",
    );
    let (answer, detail) = fib_flag(BPF_FIB_LOOKUP_SRC);
    f.fib_src = c.add(
        "fib_lookup SRC",
        answer,
        Impact::Fatal,
        detail,
        "bpf_fib_lookup rejects BPF_FIB_LOOKUP_SRC (Linux 6.8): the per-flow route lookup \
         fails, so snat = \"masquerade\", \"auto\" and fixed-address SNAT cannot forward",
    );
    f.map_lookup_batch = c.add(
        "map batch ops",
        raw::map_lookup_batch_supported(),
        Impact::Degraded,
        "BPF_MAP_LOOKUP_BATCH on a hash map",
        "no BPF_MAP_LOOKUP_BATCH (Linux 5.6): the sweeper, status and conntrack \
         list/flush read and delete flows in batches and fail",
    );
    if opts.attach {
        attach_checks(&mut c, &mut f, object, opts.verifier_log.as_deref());
    }
    Probe {
        kernel,
        features: f,
        checks: c.list,
    }
}

/// Whether bpf_fib_lookup accepts `flag`, with the evidence. A flag no
/// kernel has must come back EINVAL first, or the probe cannot tell.
fn fib_flag(flag: u32) -> (Result<bool, String>, String) {
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

const BPF_FIB_LOOKUP_SKIP_NEIGH: u32 = aya_obj::generated::BPF_FIB_LOOKUP_SKIP_NEIGH as u32;
const BPF_FIB_LOOKUP_SRC: u32 = aya_obj::generated::BPF_FIB_LOOKUP_SRC as u32;

/// Program types, map types and helpers of the object, each asked of the
/// kernel. Whether all of them exist.
fn needs(c: &mut Checks, obj: &'static [u8]) -> bool {
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
fn attach_checks(
    c: &mut Checks,
    f: &mut Features,
    object: &'static [u8],
    verifier_log: Option<&std::path::Path>,
) {
    let found = match scratch::run(object, f.tcx, verifier_log.map(Into::into)) {
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
        // fwd_ingress6 is optional: rejected, the daemon leaves its
        // FWD_PROGS slot empty and IPv6 passes to the stack untranslated.
        let ipv6 = name == forwarder_common::PROG_INGRESS6;
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

#[cfg(test)]
mod tests;
