//! The daemon's status file: what `forwarder status` shows beyond the
//! counters (load result, interfaces and their attach state). Written
//! atomically (temp file + rename) so readers never see half a file.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonState {
    pub pid: u32,
    pub started_unix: u64,
    pub rules_file: Option<PathBuf>,
    /// The last load of the rules file: `None` when it was applied.
    pub rules_error: Option<String>,
    pub interfaces: Vec<IfaceState>,
    pub rules: Vec<RuleStatus>,
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
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IfaceState {
    pub name: String,
    pub ifindex: Option<u32>,
    /// "tcx" when attached.
    pub attach: String,
    /// "attached", or why not ("missing: ...").
    pub state: String,
    /// Why the daemon uses this interface.
    pub why: String,
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
