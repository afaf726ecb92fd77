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

mod checks;
pub mod fallback;
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
    /// The TC programs may call bpf_ktime_get_coarse_ns (5.11).
    pub coarse_time: bool,
    /// What the programs are loaded with (`fallback::word`: the three
    /// above, minus FORWARDER_FORCE_FALLBACK).
    pub kernel_features: u32,
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
    f.object_needs_met = checks::needs(&mut c, &mut f, object);
    f.tcx = c.add(
        "TCX (tc links)",
        raw::tcx_supported(),
        Impact::Info,
        "BPF_LINK_CREATE with BPF_TCX_INGRESS",
        "no TCX (Linux 6.6): the TC programs are attached the legacy way \
         (clsact qdisc + cls_bpf filters over netlink, `attach = \"tc-legacy\"`)",
    );
    let (answer, detail) = checks::fib_flag(checks::BPF_FIB_LOOKUP_SKIP_NEIGH);
    f.fib_skip_neigh = c.add(
        "fib_lookup SKIP_NEIGH",
        answer,
        Impact::Degraded,
        detail,
        "bpf_fib_lookup rejects BPF_FIB_LOOKUP_SKIP_NEIGH (Linux 6.3): the programs take \
         the egress interface of a target whose neighbour is unresolved from the daemon's \
         route facts",
    );
    let (answer, detail) = checks::fib_flag(checks::BPF_FIB_LOOKUP_SRC);
    f.fib_src = c.add(
        "fib_lookup SRC",
        answer,
        Impact::Degraded,
        detail,
        "bpf_fib_lookup rejects BPF_FIB_LOOKUP_SRC (Linux 6.8): the masquerade source is the \
         daemon's `ip route get` answer for the target, and ICMP errors the programs build \
         come from the address the packet was sent to",
    );
    f.map_lookup_batch = c.add(
        "map batch ops",
        raw::map_lookup_batch_supported(),
        Impact::Degraded,
        "BPF_MAP_LOOKUP_BATCH on a hash map",
        "no BPF_MAP_LOOKUP_BATCH (Linux 5.6): the sweeper, status and conntrack \
         list/flush read and delete flows in batches and fail",
    );
    // What the programs load with; a force switch the daemon would not
    // understand stops it (a test must not silently run the fast path).
    let forced = fallback::forced_by_env();
    f.kernel_features = fallback::word(&f, *forced.as_ref().unwrap_or(&0));
    let what = fallback::describe(f.kernel_features);
    c.add(
        "fallbacks",
        forced.as_ref().map(|_| true).map_err(Clone::clone),
        Impact::Fatal,
        if what.is_empty() {
            "none".to_string()
        } else {
            what.join("; ")
        },
        forced.err().unwrap_or_default(),
    );
    if opts.attach {
        checks::attach_checks(&mut c, &mut f, object, opts.verifier_log.as_deref());
    }
    Probe {
        kernel,
        features: f,
        checks: c.list,
    }
}

#[cfg(test)]
mod tests;
