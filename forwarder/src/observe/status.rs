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
    /// How the rules file is watched (inotify, polling and why).
    #[serde(default)]
    pub rules_watch: Option<String>,
    /// This node's name for `nodes = [...]`.
    #[serde(default)]
    pub node: Option<String>,
    /// Forwards of the file scoped to other nodes (not applied here).
    #[serde(default)]
    pub other_nodes: Vec<String>,
    pub interfaces: Vec<IfaceReport>,
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
    /// The load failed while writing the maps and could not roll back:
    /// they hold a mix of the old and the new file until the daemon's
    /// retry (the status says exactly which entries are in force only in
    /// the daemon's record; `forwarder status` shows the counters).
    #[serde(default)]
    pub maps_mixed: bool,
    /// What the load changed, when it applied (`forwarder reload` prints
    /// it; `forwarder diff` gives the same before).
    #[serde(default)]
    pub changes: Option<crate::daemon::changes::Changes>,
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
    /// or without addresses, or paused).
    pub listeners: usize,
    /// The DNS name of the target, as the daemon follows it.
    #[serde(default)]
    pub resolution: Option<NameStatus>,
}

/// A forward's DNS-name target: what it resolves to, since when, and
/// whether the forward is paused.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameStatus {
    pub name: String,
    /// "resolved", "stale" (re-resolving fails; the last answer is kept),
    /// "paused" (no address), "resolving" (no answer yet) or "adopted" (no
    /// answer yet; the address the maps a previous daemon left forward to).
    pub state: String,
    /// The address in force: the lowest of `answers`.
    pub addr: Option<String>,
    pub answers: Vec<String>,
    /// When the address in force was last confirmed (Unix seconds).
    pub resolved_unix: Option<u64>,
    /// The TTL of that answer, in seconds.
    pub ttl: Option<u32>,
    /// When the name is asked for next (Unix seconds).
    pub next_unix: u64,
    /// Why the last lookup failed.
    pub error: Option<String>,
    /// Why the forward has no listener, when it is paused (the name does
    /// not resolve, or its answer cannot be a target).
    pub paused: Option<String>,
    pub failures: u64,
    pub changes: u64,
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

/// One interface as the daemon uses it (`status` shows these).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IfaceReport {
    pub name: String,
    pub ifindex: Option<u32>,
    /// "tcx", "tcx+egress", "tcx+xdp", "tcx+egress+xdp", or "none".
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

/// Creates the run directory root-only (0700) when it does not exist. An
/// existing one keeps its mode (it may be shared, like /run itself); the
/// files in it are 0600 anyway.
pub fn ensure_run_dir(run_dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if run_dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))
}

/// Writes the status file atomically (a temporary file renamed over it),
/// readable by root only: it names the rules file and the interfaces.
pub fn write(run_dir: &Path, state: &DaemonState) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    ensure_run_dir(run_dir)?;
    let tmp = run_dir.join(".status.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    // A temporary file left by an older version may have another mode.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(&serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&tmp, status_path(run_dir))
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

pub fn read(run_dir: &Path) -> Result<DaemonState> {
    let p = status_path(run_dir);
    let text = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
