//! Watching the rules file. The directory is watched, not the file: editors
//! and config tools replace files by writing a temporary file and renaming
//! it over the old one, which a watch on the old inode would never see.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Sends `()` for every event that may have changed `file` (the caller
/// debounces). Keep the watcher alive as long as events are wanted.
pub fn rules_file(file: &Path) -> Result<(RecommendedWatcher, UnboundedReceiver<()>)> {
    let file =
        std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))?;
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let name = file.file_name().map(|n| n.to_os_string());
    let (tx, rx) = unbounded_channel();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if ev.kind.is_access() {
            return;
        }
        if ev
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            let _ = tx.send(());
        }
    })
    .context("creating the rules file watcher")?;
    w.watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok((w, rx))
}
