//! Stage 2 in the guest: prepare the system (writable /run and /tmp,
//! bpffs, the kernel's modules), run the tests, leave the results on the
//! host, power off. And the host side that reads those results back.
//!
//! Results travel through a second, writable 9p share (`results`, mounted
//! at /vm-out), not through the console: the console carries kernel
//! messages mixed into the output and may be cut short by a crash, while
//! `rc` in the share is written only when the command really ended.
use std::path::{Path, PathBuf};

/// Modules loaded up front, so a missing one shows at boot instead of as a
/// test failure (the rest, netfilter's pieces, the kernel loads on demand
/// through the host's modprobe). tun must be loaded by hand: /dev/net/tun
/// only exists once it is.
const GUEST_MODULES: &[&str] = &[
    "veth",
    "bridge",
    "tun",
    "sch_ingress",
    "cls_bpf",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
];

/// Where stage 2 mounts the results share.
const OUT: &str = "/vm-out";
pub const READY: &str = "VMTEST-READY";
pub const DONE: &str = "VMTEST-DONE";

/// What the guest runs once it is up.
pub enum Payload {
    /// nextest on the host's already built test binaries.
    Nextest {
        nextest: PathBuf,
        binaries_metadata: PathBuf,
        cargo_metadata: PathBuf,
        filter: String,
        test_threads: Option<u32>,
    },
    /// Any shell command (`--exec`), e.g. `target/debug/forwarder doctor`.
    Shell(String),
}

pub struct Stage2<'a> {
    pub workspace: &'a Path,
    pub modules_dir: &'a Path,
    pub release: &'a str,
    pub payload: Payload,
    /// Seconds the payload may run before it is stopped (nextest then still
    /// prints its summary).
    pub budget_secs: u64,
    pub env: Vec<(String, String)>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Stage2<'_> {
    /// The script (POSIX sh, run by the host's /bin/sh inside the guest).
    pub fn script(&self) -> String {
        let mut s = String::from(
            "#!/bin/sh\n# Stage 2 of `cargo xtask vm-test` (generated; see xtask/src/vm/guest.rs).\n",
        );
        for (k, v) in &self.env {
            s += &format!("export {k}={}\n", quote(v));
        }
        let out = OUT;
        s += &format!(
            r#"export HOME=/root LANG=C.UTF-8
# Fresh tmpfs on /run, /tmp and /var/tmp would hide a checkout (and its
# kernel modules) that lives under one of them, as a CI checkout in /tmp
# does: keep the root as it is at /mnt/host-root and bind those paths back.
mkdir -p /mnt/host-root
mount --bind / /mnt/host-root
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
for d in {ws} {mods}; do
  case "$d" in
    /run/*|/tmp/*|/var/tmp/*) mkdir -p "$d" && mount --bind "/mnt/host-root$d" "$d" ;;
  esac
done
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t bpf bpf /sys/fs/bpf
mkdir -p {out}
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results {out}; then
  echo "vm: cannot mount the results share"; /bin/busybox poweroff -f
fi
# The kernel's modules, where the host's modprobe (and the kernel's
# on-demand loading, which calls it) looks for them.
mkdir -p /lib/modules
ln -sfn {mods} /lib/modules/{rel}
for m in {modules}; do modprobe "$m" || echo "vm: modprobe $m failed"; done
ip link set lo up
hostname forwarder-vm
echo "{READY} kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
cd {ws}
"#,
            mods = quote(&self.modules_dir.to_string_lossy()),
            rel = self.release,
            modules = GUEST_MODULES.join(" "),
            ws = quote(&self.workspace.to_string_lossy()),
        );
        let cmd = match &self.payload {
            Payload::Nextest {
                nextest,
                binaries_metadata,
                cargo_metadata,
                filter,
                test_threads,
            } => {
                let threads = test_threads
                    .map(|n| format!(" --test-threads {n}"))
                    .unwrap_or_default();
                format!(
                    "{} nextest run --binaries-metadata {} --cargo-metadata {} \
                     --workspace-remap {} --no-fail-fast{threads} -E {}",
                    quote(&nextest.to_string_lossy()),
                    quote(&binaries_metadata.to_string_lossy()),
                    quote(&cargo_metadata.to_string_lossy()),
                    quote(&self.workspace.to_string_lossy()),
                    quote(filter),
                )
            }
            Payload::Shell(c) => format!("sh -c {}", quote(c)),
        };
        s += &format!(
            r#"( timeout --signal=TERM --kill-after=30 {budget} {cmd} 2>&1; echo $? > {out}/rc.tmp ) | tee {out}/output.log
mv {out}/rc.tmp {out}/rc
dmesg > {out}/dmesg.txt
echo "{DONE} rc=$(cat {out}/rc) uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
/bin/busybox poweroff -f
"#,
            budget = self.budget_secs,
        );
        s
    }
}

/// What the guest left in the results share.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code of the payload; `None` when the guest never finished it.
    pub rc: Option<i32>,
    /// nextest's closing line, e.g. "15 tests run: 13 passed, 2 failed, 40 skipped".
    pub summary: Option<String>,
    pub passed: u32,
    pub failed: u32,
    /// Tests nextest reported as FAIL or TIMEOUT.
    pub failures: Vec<String>,
}

pub fn read_outcome(out_dir: &Path) -> Outcome {
    let rc = std::fs::read_to_string(out_dir.join("rc"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let log = std::fs::read_to_string(out_dir.join("output.log")).unwrap_or_default();
    Outcome {
        rc,
        ..parse_nextest(&log)
    }
}

/// Reads nextest's human output: the `Summary [..]` line and the names of
/// failed tests (`FAIL [ 1.0s] (1/9) crate::binary test`).
pub fn parse_nextest(log: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in log.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("Summary [") {
            let s = rest.split_once(']').map_or(rest, |(_, s)| s).trim();
            o.summary = Some(s.to_string());
            for part in s.split([':', ',']) {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(what)) = (w.next(), w.next()) {
                    let n: u32 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => o.passed = n,
                        "failed" | "timed" => o.failed += n,
                        _ => {}
                    }
                }
            }
        }
        for tag in ["FAIL [", "TIMEOUT ["] {
            if let Some(rest) = t.strip_prefix(tag) {
                if let Some((_, name)) = rest.split_once(") ") {
                    let name = name.trim().to_string();
                    if !o.failures.contains(&name) {
                        o.failures.push(name);
                    }
                }
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
        FAIL [  95.418s] (1/3) forwarder-tests::proxmox_e2e forwarder_replaces_iptables
  stdout ───
        PASS [  81.896s] (2/3) forwarder-tests::proxmox_e2e iptables_baseline_proves_the_harness
     TIMEOUT [ 300.001s] (3/3) forwarder-tests::tailnet_e2e forwarder_replaces_socat_units
────────────
     Summary [ 112.417s] 3 tests run: 1 passed, 1 failed, 1 timed out, 4 skipped
        FAIL [  95.418s] (1/3) forwarder-tests::proxmox_e2e forwarder_replaces_iptables
";

    #[test]
    fn nextest_summary_and_failures_are_read() {
        let o = parse_nextest(LOG);
        assert_eq!(
            o.summary.as_deref(),
            Some("3 tests run: 1 passed, 1 failed, 1 timed out, 4 skipped")
        );
        assert_eq!((o.passed, o.failed), (1, 2));
        assert_eq!(
            o.failures,
            [
                "forwarder-tests::proxmox_e2e forwarder_replaces_iptables",
                "forwarder-tests::tailnet_e2e forwarder_replaces_socat_units"
            ]
        );
    }

    #[test]
    fn a_log_without_summary_reports_nothing_passed() {
        let o = parse_nextest("error: no tests to run\n");
        assert_eq!(o.summary, None);
        assert_eq!(o.passed, 0);
    }

    #[test]
    fn script_quotes_the_filter_and_ends_with_poweroff() {
        let s = Stage2 {
            workspace: Path::new("/w"),
            modules_dir: Path::new("/w/target/vm/k/lib/modules/6.1.0-57-amd64"),
            release: "6.1.0-57-amd64",
            payload: Payload::Nextest {
                nextest: "/usr/local/bin/cargo-nextest".into(),
                binaries_metadata: "/w/b.json".into(),
                cargo_metadata: "/w/c.json".into(),
                filter: "test(/it's/)".into(),
                test_threads: Some(2),
            },
            budget_secs: 600,
            env: vec![("FORWARDER_BIN".into(), "/w/target/debug/forwarder".into())],
        }
        .script();
        assert!(s.contains(r"-E 'test(/it'\''s/)'"), "{s}");
        assert!(s.contains("--test-threads 2"));
        assert!(s.contains("export FORWARDER_BIN='/w/target/debug/forwarder'"));
        assert!(s.trim_end().ends_with("poweroff -f"));
    }
}
