//! The watch of the drop-in directory (`rules.d` next to `rules.toml`):
//! created later, files added, edited, renamed into place and removed, a
//! symlinked directory swapped, and what is no change (editor swap files,
//! a drop-in rewritten with the same content). Presence of an event is
//! waited for generously; absence is checked over a short window.
use std::{
    os::unix::fs::symlink,
    path::Path,
    time::{Duration, Instant},
};

use tokio::sync::mpsc::UnboundedReceiver;

use super::{rules_file, tests::Dir};

fn global(setting: rules::RulesWatch) -> rules::Global {
    rules::Global {
        rules_watch: setting,
        rules_poll_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

fn event(rx: &mut UnboundedReceiver<()>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if rx.try_recv().is_ok() {
            // Drain what the same change caused (several inotify events).
            std::thread::sleep(Duration::from_millis(100));
            while rx.try_recv().is_ok() {}
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn quiet(rx: &mut UnboundedReceiver<()>) -> bool {
    std::thread::sleep(Duration::from_millis(300));
    rx.try_recv().is_err()
}

/// Writes a file as editors and config tools do: a new file renamed over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn drop_ins_added_edited_and_removed_are_changes_and_swap_files_are_not() {
    let d = Dir::new("edits");
    let main = d.0.join("rules.toml");
    std::fs::write(&main, "# main").unwrap();
    let (w, mut rx) = rules_file(&main, &global(rules::RulesWatch::Inotify)).unwrap();
    assert!(
        w.description
            .ends_with(&format!("and {}/*.toml", d.0.join("rules.d").display())),
        "{}",
        w.description
    );
    // The directory appears, empty: nothing to load differently.
    let dir = d.0.join("rules.d");
    std::fs::create_dir(&dir).unwrap();
    assert!(quiet(&mut rx), "an empty drop-in directory is no change");
    replace(&dir.join("team.toml"), "# team");
    assert!(event(&mut rx), "a new drop-in");
    std::fs::write(dir.join("team.toml"), "# team, edited in place").unwrap();
    assert!(event(&mut rx), "a drop-in edited in place");
    replace(&dir.join("team.toml"), "# team, edited in place");
    assert!(quiet(&mut rx), "the same content renamed over is no change");
    std::fs::write(dir.join(".team.toml.swp"), "vim").unwrap();
    std::fs::write(dir.join("team.toml~"), "backup").unwrap();
    assert!(quiet(&mut rx), "editor files are not drop-ins");
    std::fs::remove_file(dir.join("team.toml")).unwrap();
    assert!(event(&mut rx), "a removed drop-in");
    // The main file is still watched.
    replace(&main, "# main, edited");
    assert!(event(&mut rx), "the main file");
    drop(w);
}

#[test]
fn a_symlinked_drop_in_directory_swapped_is_a_change() {
    let d = Dir::new("swap");
    let main = d.0.join("rules.toml");
    std::fs::write(&main, "# main").unwrap();
    for v in ["v1", "v2"] {
        std::fs::create_dir(d.0.join(v)).unwrap();
        std::fs::write(d.0.join(v).join("team.toml"), format!("# {v}")).unwrap();
    }
    symlink("v1", d.0.join("rules.d")).unwrap();
    let (_w, mut rx) = rules_file(&main, &global(rules::RulesWatch::Inotify)).unwrap();
    // Swap the link atomically, as kubelet swaps `..data`.
    symlink("v2", d.0.join("rules.d.new")).unwrap();
    std::fs::rename(d.0.join("rules.d.new"), d.0.join("rules.d")).unwrap();
    assert!(event(&mut rx), "the swapped directory");
    // The watch follows into the new target.
    std::fs::write(d.0.join("v2/other.toml"), "# other").unwrap();
    assert!(event(&mut rx), "a drop-in added behind the new link");
    std::fs::write(d.0.join("v1/late.toml"), "# old target").unwrap();
    assert!(quiet(&mut rx), "the old target is no longer the directory");
}

#[test]
fn polling_sees_drop_in_changes_without_inotify_events() {
    let d = Dir::new("poll");
    let main = d.0.join("rules.toml");
    std::fs::write(&main, "# main").unwrap();
    std::fs::create_dir(d.0.join("rules.d")).unwrap();
    let (w, mut rx) = rules_file(&main, &global(rules::RulesWatch::Poll)).unwrap();
    assert!(
        w.description.starts_with("polled every 100ms"),
        "{}",
        w.description
    );
    std::fs::write(d.0.join("rules.d/team.toml"), "# team").unwrap();
    assert!(event(&mut rx), "seen (by inotify or the poll)");
}
