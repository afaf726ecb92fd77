//! The rules watch on real files in a temp directory: the kubelet
//! ConfigMap layout, the content gate, polling, file system detection.
//! Absence of an event is checked over a short window after the change it
//! would come from; presence is waited for with a generous deadline.
use std::{os::unix::fs::symlink, path::PathBuf};

use super::*;

/// A directory removed on drop (dropin_tests.rs uses it too).
pub(super) struct Dir(pub(super) PathBuf);

impl Dir {
    pub(super) fn new(label: &str) -> Dir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("fwd-watch-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What kubelet's AtomicWriter does for one ConfigMap key: a new
/// `..<timestamp>` directory with the payload, a `..data_tmp` symlink to it
/// renamed over `..data`, the visible `rules.toml -> ..data/rules.toml`
/// created once, and the previous timestamp directory removed.
fn kubelet_write(dir: &Path, stamp: &str, content: &str) {
    let ts = format!("..2026_01_02_03_04_{stamp}.123456789");
    std::fs::create_dir(dir.join(&ts)).unwrap();
    std::fs::write(dir.join(&ts).join("rules.toml"), content).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if std::fs::symlink_metadata(dir.join("rules.toml")).is_err() {
        symlink("..data/rules.toml", dir.join("rules.toml")).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

fn global(setting: rules::RulesWatch, interval_ms: u64) -> rules::Global {
    rules::Global {
        rules_watch: setting,
        rules_poll_interval: Duration::from_millis(interval_ms),
        ..Default::default()
    }
}

/// Waits up to 10 s for an event.
fn event(rx: &mut UnboundedReceiver<()>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if rx.try_recv().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Events arriving within `ms` (after a change that must not cause one).
fn events_within(rx: &mut UnboundedReceiver<()>, ms: u64) -> usize {
    std::thread::sleep(Duration::from_millis(ms));
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

#[test]
fn resolve_notes_every_link_of_a_configmap_volume() {
    let d = Dir::new("resolve");
    kubelet_write(&d.0, "05", "a");
    let r = resolve(&d.0.join("rules.toml"));
    let ts = d.0.join("..2026_01_02_03_04_05.123456789");
    assert_eq!(r.links, vec![d.0.join("rules.toml"), d.0.join("..data")]);
    assert_eq!(r.target, ts.join("rules.toml"));
    assert!(r.paths.contains(&d.0.join("..data")));
    // `..` in a link target, and a missing file: the first missing
    // component is what to wait for.
    std::fs::create_dir(d.0.join("sub")).unwrap();
    symlink("../sub/../missing/x", d.0.join("sub/up")).unwrap();
    let r = resolve(&d.0.join("sub/up"));
    assert_eq!(r.target, d.0.join("missing/x"));
    assert!(r.paths.contains(&d.0.join("missing")));
}

#[test]
fn a_configmap_swap_is_one_change_and_the_old_directory_going_is_none() {
    let d = Dir::new("configmap");
    kubelet_write(&d.0, "05", "one");
    let file = d.0.join("rules.toml");
    let (w, mut rx) = rules_file(&file, &global(rules::RulesWatch::Inotify, 2000)).unwrap();
    assert!(
        w.description.contains("through 2 symlinks"),
        "{}",
        w.description
    );
    kubelet_write(&d.0, "06", "two");
    assert!(event(&mut rx), "the ..data swap was not seen");
    // The old timestamp directory was removed after the swap: no second
    // event, and the file reads as the new content.
    assert_eq!(events_within(&mut rx, 300), 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "two");
    // Twice more: the watch follows the chain into each new directory.
    kubelet_write(&d.0, "07", "three");
    assert!(event(&mut rx));
    kubelet_write(&d.0, "08", "three");
    assert_eq!(events_within(&mut rx, 300), 0, "same content is no change");
}

#[test]
fn only_content_changes_count() {
    let d = Dir::new("gate");
    let file = d.0.join("rules.toml");
    std::fs::write(&file, "a").unwrap();
    let (_w, mut rx) = rules_file(&file, &global(rules::RulesWatch::Inotify, 2000)).unwrap();
    // touch, chmod, an identical rename-over, an unrelated file: nothing.
    let f = std::fs::File::options().append(true).open(&file).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(d.0.join("tmp"), "a").unwrap();
    std::fs::rename(d.0.join("tmp"), &file).unwrap();
    std::fs::write(d.0.join("other.toml"), "b").unwrap();
    assert_eq!(events_within(&mut rx, 300), 0);
    std::fs::write(&file, "b").unwrap();
    assert!(event(&mut rx));
    // Removal is a change (status shows the file cannot be read), and so is
    // its return.
    std::fs::remove_file(&file).unwrap();
    assert!(event(&mut rx));
    std::fs::write(&file, "b").unwrap();
    assert!(event(&mut rx));
}

/// A write through a hard link in another directory changes the file with
/// no inotify event in the watched directory: what a write on another
/// pmxcfs node looks like from here. Only polling sees it.
#[test]
fn polling_sees_what_inotify_cannot() {
    let d = Dir::new("poll");
    let file = d.0.join("rules.toml");
    std::fs::create_dir(d.0.join("elsewhere")).unwrap();
    std::fs::write(&file, "a").unwrap();
    let other_node = d.0.join("elsewhere/rules.toml");
    std::fs::hard_link(&file, &other_node).unwrap();
    let write_remotely = |s: &str| {
        use std::io::Write;
        let mut f = std::fs::File::options()
            .write(true)
            .truncate(true)
            .open(&other_node)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    };

    let (w, mut rx) = rules_file(&file, &global(rules::RulesWatch::Inotify, 100)).unwrap();
    assert!(w.description.starts_with("inotify on"), "{}", w.description);
    write_remotely("b");
    assert_eq!(
        events_within(&mut rx, 500),
        0,
        "inotify saw a remote write?"
    );
    drop(w);

    let (w, mut rx) = rules_file(&file, &global(rules::RulesWatch::Poll, 100)).unwrap();
    assert!(
        w.description
            .starts_with("polled every 100ms and inotify on"),
        "{}",
        w.description
    );
    write_remotely("c");
    assert!(event(&mut rx), "the poll did not see the remote write");
    assert_eq!(events_within(&mut rx, 400), 0, "one change, one event");
}

#[test]
fn file_systems_are_told_apart_by_statfs_magic() {
    // /proc and the temp directory are local; FUSE and NFS magics are not.
    for local in [Path::new("/proc/self/status"), &std::env::temp_dir()] {
        let magic = fs_magic(local).unwrap();
        assert_eq!(
            remote_fs_name(magic),
            None,
            "{}: {magic:#x}",
            local.display()
        );
    }
    assert_eq!(
        remote_fs_name(libc::FUSE_SUPER_MAGIC as u32),
        Some("a FUSE file system (such as pmxcfs)")
    );
    assert_eq!(remote_fs_name(libc::NFS_SUPER_MAGIC as u32), Some("NFS"));
    // A path that does not exist is judged by its nearest ancestor.
    assert_eq!(
        fs_magic(Path::new("/proc/no/such/file")),
        fs_magic(Path::new("/proc"))
    );
}
