//! The daemon's status file: what `forwarder status` shows beyond the
//! counters in the pinned maps (load result, interfaces and their attach
//! state, per-rule decisions). Written atomically (temp file + rename) so
//! readers never see half a file.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonState {
    pub pid: u32,
    pub version: String,
    pub started_unix: u64,
    pub rules_file: Option<PathBuf>,
    /// Bumped on every load attempt of the rules file (start, SIGHUP,
    /// `forwarder reload`, file change), applied or rejected; `reload`
    /// waits for it to move.
    pub generation: u64,
    /// The last load attempt.
    pub last_load: Option<LoadResult>,
    /// The last load of the rules file was rejected: its error (file, line,
    /// rule). `None` when the running configuration is the file's.
    pub rules_error: Option<String>,
    /// What the daemon found pinned at start (a restart adopts it).
    pub adopted: Option<String>,
    /// Prometheus endpoint, when enabled.
    pub metrics: Option<String>,
    pub interfaces: Vec<IfaceState>,
    pub rules: Vec<RuleStatus>,
    /// Problems with the configuration on this host that do not stop it
    /// (snat_ports overlapping the host's ephemeral ports).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoadResult {
    pub at_unix: u64,
    /// "start", "SIGHUP", "file changed".
    pub trigger: String,
    pub applied: bool,
    /// One-line summary ("4 forwards; 2 listeners added, 1 removed" or the
    /// first line of the error).
    pub summary: String,
}

/// One forward as the daemon applied it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleStatus {
    pub id: u32,
    pub name: String,
    pub iface: String,
    pub listen: String,
    pub proto: String,
    pub ports: String,
    pub target: String,
    pub snat: String,
    /// What the daemon can tell from the routing table about this rule's
    /// SNAT and path decision (each flow decides for itself; `conntrack
    /// list` shows the outcome per flow).
    pub decision: String,
    /// MSS clamp in force, if any.
    pub mss: Option<u16>,
    /// Listener entries in the kernel for this rule (0: interface missing
    /// or without addresses).
    pub listeners: usize,
}

impl RuleStatus {
    pub fn of(id: u32, f: &rules::Forward) -> Self {
        RuleStatus {
            id,
            name: f.name.clone(),
            iface: f.iface.clone(),
            listen: f.listen.to_string(),
            proto: f.proto.as_str().to_string(),
            ports: f.ports.to_string(),
            target: f.target.to_string(),
            snat: f.snat.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IfaceState {
    pub name: String,
    pub ifindex: Option<u32>,
    /// "tcx", "tcx+xdp", or "none".
    pub attach: String,
    /// The attach mode chosen and why (`[interface.NAME] attach`).
    #[serde(default)]
    pub mode: String,
    /// "attached", or why not ("missing: ...").
    pub state: String,
    /// Why the daemon uses this interface.
    pub why: String,
    #[serde(default)]
    pub l3: bool,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub addrs: Vec<String>,
}

pub fn status_path(run_dir: &Path) -> PathBuf {
    run_dir.join("status.json")
}

pub fn write(run_dir: &Path, state: &DaemonState) -> Result<()> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))?;
    let tmp = run_dir.join(".status.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, status_path(run_dir))?;
    Ok(())
}

pub fn read(run_dir: &Path) -> Result<DaemonState> {
    let p = status_path(run_dir);
    let text = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

/// The daemon named by the status file, if that process still runs.
pub fn running_pid(run_dir: &Path) -> Option<u32> {
    let st = read(run_dir).ok()?;
    // SAFETY: signal 0 only checks for existence.
    (st.pid != 0 && unsafe { libc::kill(st.pid as i32, 0) } == 0).then_some(st.pid)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
