//! Watching the rules file, wherever and however it is replaced.
//!
//! Three ways a rules file changes, and what each needs:
//!
//! * Editors and config tools write a new file and rename it over the old
//!   one: a watch on the old inode would never see it, so directories are
//!   watched, not files.
//! * A Kubernetes ConfigMap volume is a chain of symlinks: `rules.toml ->
//!   ..data/rules.toml`, `..data -> ..2026_01_02_03_04_05.123`. kubelet
//!   updates it by writing a new timestamped directory, swapping `..data`
//!   with a rename, and deleting the old directory. The event is a rename of
//!   `..data`, never an event named `rules.toml`. So the whole resolution
//!   chain is followed: every symlink on the way to the file and the file
//!   itself are watched for (in their directories), and the chain is
//!   resolved again after each of them changes. The old directory
//!   disappearing is not on the new chain and is not "the file removed".
//! * Proxmox's /etc/pve (pmxcfs) is a FUSE file system replicated by
//!   corosync; NFS and CIFS are network file systems. inotify only sees
//!   writes made through this machine's kernel, so a write on another node
//!   arrives without any event: where the file lives on such a file system
//!   (statfs magic), it is also polled (read and compared).
//!
//! * Drop-ins (`rules.d/*.toml` next to `rules.toml`) come and go as files
//!   in a directory that may not exist yet: the directory is resolved and
//!   watched like the file (its symlinks followed, polled on FUSE), and any
//!   event in it compares again.
//!
//! Whatever noticed it, a change is only reported when the content of the
//! file and its drop-ins (or whether they can be read at all) differs from
//! what was last seen: `touch`, a chmod, a swap to identical content, an
//! editor's swap file in rules.d or the old ConfigMap directory's removal
//! cause no reload.
use std::{
    collections::BTreeSet,
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Component, Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

/// Symlink hops followed before giving up (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Keeps the watch running; dropping it stops the watching thread.
pub struct RulesWatch {
    stop: mpsc::Sender<Msg>,
    /// How the file is watched and why, for `status` and the log.
    pub description: String,
}

impl Drop for RulesWatch {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
    }
}

enum Msg {
    Fs(notify::Event),
    Stop,
}

/// Sends `()` whenever the content of `file` (followed through symlinks)
/// changes; the caller debounces. Keep the returned guard alive as long as
/// events are wanted.
pub fn rules_file(
    file: &Path,
    global: &rules::Global,
) -> Result<(RulesWatch, UnboundedReceiver<()>)> {
    let file =
        std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))?;
    let (tx, rx) = unbounded_channel();
    let (msg_tx, msg_rx) = mpsc::channel();
    let fs_tx = msg_tx.clone();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if !ev.kind.is_access() {
                let _ = fs_tx.send(Msg::Fs(ev));
            }
        }
    })
    .context("creating the rules file watcher")?;
    let mut state = WatchState {
        dropins: rules::dropins::dropin_dir(&file),
        dir_chain: Resolved::default(),
        file,
        setting: global.rules_watch,
        interval: global.rules_poll_interval,
        chain: Resolved::default(),
        watched: BTreeSet::new(),
        watcher,
        poll: None,
        last: None,
        tx,
    };
    state.refresh()?;
    state.last = Some(state.read_all());
    let description = state.describe();
    std::thread::Builder::new()
        .name("rules-watch".into())
        .spawn(move || state.run(msg_rx))
        .context("starting the rules watch thread")?;
    Ok((
        RulesWatch {
            stop: msg_tx,
            description,
        },
        rx,
    ))
}

/// A file's content, or why it cannot be read (a change either way is
/// reported, so a deleted file shows up in `status` as a rejected load).
type Content = std::result::Result<Vec<u8>, std::io::ErrorKind>;

fn read(path: &Path) -> Content {
    std::fs::read(path).map_err(|e| e.kind())
}

/// The main file's content and each drop-in's, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    main: Content,
    dropins: std::result::Result<Vec<(PathBuf, Content)>, std::io::ErrorKind>,
}

struct WatchState {
    file: PathBuf,
    /// The drop-in directory (`rules.d` for `rules.toml`).
    dropins: PathBuf,
    /// Its resolution, like `chain`'s.
    dir_chain: Resolved,
    setting: rules::RulesWatch,
    interval: Duration,
    chain: Resolved,
    /// Directories with an inotify watch.
    watched: BTreeSet<PathBuf>,
    watcher: RecommendedWatcher,
    /// Why the file is polled, when it is.
    poll: Option<String>,
    last: Option<Snapshot>,
    tx: UnboundedSender<()>,
}

impl WatchState {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut next_poll = Instant::now() + self.interval;
        loop {
            let msg = if self.poll.is_some() {
                match rx.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return,
                }
            };
            match msg {
                Some(Msg::Stop) => return,
                Some(Msg::Fs(ev)) => {
                    // An overflowed inotify queue lost events: look anyway.
                    let relevant = ev.need_rescan() || ev.paths.iter().any(|p| self.concerns(p));
                    if !relevant {
                        continue;
                    }
                    // A link on the way may now point elsewhere.
                    if let Err(e) = self.refresh() {
                        warn!("rules file watch: {e:#}");
                    }
                    self.compare();
                }
                None => {
                    // The poll: the same read and compare. A pmxcfs write on
                    // another node can also swap a link, so resolve again.
                    next_poll = Instant::now() + self.interval;
                    if let Err(e) = self.refresh() {
                        warn!("rules file watch: {e:#}");
                    }
                    self.compare();
                }
            }
        }
    }

    /// Whether an event on `path` may change what the rules are: a link
    /// or the end of the file's or the drop-in directory's chain, or a file
    /// in that directory.
    fn concerns(&self, path: &Path) -> bool {
        self.chain.paths.contains(path)
            || self.dir_chain.paths.contains(path)
            || path.parent() == Some(self.dir_chain.target.as_path())
    }

    fn read_all(&self) -> Snapshot {
        Snapshot {
            main: read(&self.file),
            dropins: rules::dropins::dropin_files(&self.file)
                .map(|files| {
                    files
                        .into_iter()
                        .map(|p| {
                            let c = read(&p);
                            (p, c)
                        })
                        .collect()
                })
                .map_err(|e| e.kind()),
        }
    }

    /// Reports a change of content since the last one seen.
    fn compare(&mut self) {
        let now = self.read_all();
        if self.last.as_ref() != Some(&now) {
            self.last = Some(now);
            let _ = self.tx.send(());
        }
    }

    /// Resolves the chain again, watches the directories it now passes
    /// through (and lets go of the others), and decides about polling.
    fn refresh(&mut self) -> Result<()> {
        self.chain = resolve(&self.file);
        self.dir_chain = resolve(&self.dropins);
        let mut dirs: BTreeSet<PathBuf> = self
            .chain
            .paths
            .iter()
            .chain(&self.dir_chain.paths)
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        // The drop-ins themselves are events in their directory.
        if self.dir_chain.target.is_dir() {
            dirs.insert(self.dir_chain.target.clone());
        }
        for gone in self.watched.difference(&dirs).cloned().collect::<Vec<_>>() {
            // Fails when the directory is already gone (the old ConfigMap
            // directory): the kernel dropped that watch by itself.
            let _ = self.watcher.unwatch(&gone);
            self.watched.remove(&gone);
        }
        let mut result = Ok(());
        for dir in dirs.difference(&self.watched).cloned().collect::<Vec<_>>() {
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                // A directory that does not exist (yet) is found again once
                // the chain resolves further; its parent is watched.
                Err(e) if dir.exists() => {
                    result = Err(e).with_context(|| format!("watching {}", dir.display()));
                }
                Err(_) => {}
            }
        }
        let poll = match self.setting {
            rules::RulesWatch::Inotify => None,
            rules::RulesWatch::Poll => Some("rules_watch = \"poll\"".to_string()),
            rules::RulesWatch::Auto => remote_fs(&self.chain.target)
                .or_else(|| remote_fs(&self.dir_chain.target))
                .map(|(fs, path)| {
                    format!(
                        "{} is on {fs}, where inotify does not see writes made on other machines",
                        path.display()
                    )
                }),
        };
        if poll != self.poll && self.last.is_some() {
            match &poll {
                Some(why) => info!("rules file now also polled: {why}"),
                None => info!("rules file no longer polled: inotify sees every change"),
            }
        }
        self.poll = poll;
        result
    }

    fn describe(&self) -> String {
        let links = self.chain.links.len();
        let followed = match links {
            0 => String::new(),
            1 => ", through 1 symlink".to_string(),
            n => format!(", through {n} symlinks"),
        };
        let what = format!(
            "{} and {}/*.toml",
            self.file.display(),
            self.dropins.display()
        );
        match &self.poll {
            None => format!("inotify on {what}{followed}"),
            Some(why) => format!(
                "polled every {:?} and inotify on {what}{followed}: {why}",
                self.interval
            ),
        }
    }
}

/// Every path the resolution of a file name passes through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Resolved {
    /// Each symlink followed (as a path with no symlink before its last
    /// component), the first missing component if resolution stopped
    /// there, and the file it ends at.
    paths: BTreeSet<PathBuf>,
    links: Vec<PathBuf>,
    /// Where the chain ends (the file, or the first missing component).
    target: PathBuf,
}

/// Resolves `file` one component at a time, like the kernel does, noting
/// every symlink on the way: the ones a ConfigMap update swaps are
/// intermediate components (`..data`), not the file name.
fn resolve(file: &Path) -> Resolved {
    let mut out = Resolved::default();
    let mut pending: Vec<PathBuf> = Vec::new();
    push_components(&mut pending, file);
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c.as_os_str() == ".." {
            // `cur` has no symlinks in it: going up lexically is going up.
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() && hops < MAX_SYMLINKS => {
                hops += 1;
                out.paths.insert(next.clone());
                out.links.push(next.clone());
                let Ok(target) = std::fs::read_link(&next) else {
                    break;
                };
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                push_components(&mut pending, &target);
            }
            Ok(_) => cur = next,
            Err(_) => {
                // Missing: its creation (in its parent, which exists) is the
                // event to wait for.
                out.paths.insert(next.clone());
                cur = next;
                break;
            }
        }
    }
    for c in pending.into_iter().rev() {
        cur.push(c);
    }
    out.paths.insert(cur.clone());
    out.target = cur;
    out
}

/// Pushes the normal and `..` components of `p` so that popping yields them
/// in order.
fn push_components(stack: &mut Vec<PathBuf>, p: &Path) {
    let comps: Vec<PathBuf> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    stack.extend(comps.into_iter().rev());
}

/// statfs `f_type` of file systems where a file can change without an
/// inotify event here (include/uapi/linux/magic.h, fs/smb, fs/ceph).
const REMOTE_FS: &[(u32, &str)] = &[
    (0x6573_5546, "a FUSE file system (such as pmxcfs)"),
    (0x0000_6969, "NFS"),
    (0x0000_517b, "SMB"),
    (0xff53_4d42, "CIFS"),
    (0xfe53_4d42, "SMB2"),
    (0x00c3_6400, "CephFS"),
    (0x0102_1997, "9p"),
    (0x5346_414f, "AFS"),
    (0x6b41_4653, "kAFS"),
    (0x7375_7245, "Coda"),
    (0x0116_1970, "GFS2"),
    (0x7461_636f, "OCFS2"),
    (0x0bd0_0bd0, "Lustre"),
    (0x4750_4653, "GPFS"),
];

/// The statfs `f_type` of `path`, or of its nearest existing ancestor.
pub fn fs_magic(path: &Path) -> Option<u32> {
    let mut p = Some(path);
    while let Some(cur) = p {
        let c = CString::new(cur.as_os_str().as_bytes()).ok()?;
        // SAFETY: statfs writes into the zeroed struct we own.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 {
            // f_type is a signed long on most targets; magics are 32-bit.
            return Some(st.f_type as u32);
        }
        p = cur.parent();
    }
    None
}

/// Which remote or FUSE file system `path` lives on, if any.
pub fn remote_fs_name(magic: u32) -> Option<&'static str> {
    REMOTE_FS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

fn remote_fs(path: &Path) -> Option<(&'static str, PathBuf)> {
    remote_fs_name(fs_magic(path)?).map(|n| (n, path.to_path_buf()))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod dropin_tests;
