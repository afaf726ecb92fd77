//! Drop-ins: `rules.d/*.toml` next to `rules.toml` (for any main file
//! `NAME.toml`, the directory `NAME.d`), for forwards that another tool
//! generates or another team owns. They hold `[[forward]]` sections only;
//! `[global]` and `[interface.NAME]` stay in the main file, where one
//! reader finds them. The files load as one: names are unique across all
//! of them, overlaps are checked across all of them, and every message
//! names the file it is about.
//!
//! The one fact a reader gets wrong: a drop-in is not applied on its own.
//! The main file and every drop-in load completely or not at all, like one
//! file; a bad drop-in keeps the running configuration, all of it, in
//! force. Files are read in name order; names starting with `.` (editor
//! swap files) or not ending in `.toml` (`team.toml~`, `.dpkg-old`) are
//! skipped.
use std::path::{Path, PathBuf};

use toml_edit::ImDocument;

use crate::{diagnostics::Sink, parse::Parsed};

/// The drop-in directory of `main`: `rules.toml` -> `rules.d`.
pub fn dropin_dir(main: &Path) -> PathBuf {
    let stem = main
        .file_stem()
        .map_or_else(|| "rules".into(), |s| s.to_string_lossy().into_owned());
    main.with_file_name(format!("{stem}.d"))
}

/// Whether `name` is read as a drop-in.
pub fn is_dropin(name: &str) -> bool {
    name.ends_with(".toml") && !name.starts_with('.')
}

/// The drop-ins of `main`, in name order; none when the directory does not
/// exist.
pub fn dropin_files(main: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = dropin_dir(main);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for e in entries {
        let e = e?;
        if e.file_name().to_str().is_some_and(is_dropin) && !e.path().is_dir() {
            files.push(e.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Moves every span of a file's parse by `by` bytes: its place in the
/// text of all files.
pub(crate) fn shift(parsed: &mut Parsed, by: usize) {
    let move_span = |s: &mut crate::diagnostics::Span| {
        if let Some(r) = s {
            *r = r.start + by..r.end + by;
        }
    };
    let all = parsed
        .spans
        .iter_mut()
        .chain(parsed.partial.iter_mut().map(|p| &mut p.spans));
    for sp in all {
        move_span(&mut sp.table);
        sp.fields.values_mut().for_each(move_span);
        sp.allow.iter_mut().for_each(move_span);
        sp.nodes.iter_mut().for_each(move_span);
    }
    parsed.global_spans.values_mut().for_each(move_span);
}

/// Reports sections a drop-in may not have (`[global]`, `[interface]`);
/// `text` is the drop-in's, the sink's base its offset.
pub(crate) fn check_sections(text: &str, sink: &mut Sink) {
    let Ok(doc) = ImDocument::parse(text) else {
        return; // the parse already said why
    };
    for key in ["global", "interface"] {
        if let Some(k) = doc.as_table().key(key) {
            sink.error(
                &k.span(),
                None,
                format!("[{key}] is not allowed in a drop-in"),
                Some(
                    "drop-ins hold [[forward]] sections only; [global] and [interface.NAME] \
                     belong in the main rules file"
                        .into(),
                ),
            );
        }
    }
}

/// The forwards of a drop-in's parse appended to the main file's.
pub(crate) fn merge(into: &mut Parsed, dropin: Parsed) {
    into.rules.forwards.extend(dropin.rules.forwards);
    into.spans.extend(dropin.spans);
    into.partial.extend(dropin.partial);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_named_after_the_main_file() {
        assert_eq!(
            dropin_dir(Path::new("/etc/forwarder/rules.toml")),
            Path::new("/etc/forwarder/rules.d")
        );
        assert_eq!(
            dropin_dir(Path::new("/etc/pve/forwarder/cluster.toml")),
            Path::new("/etc/pve/forwarder/cluster.d")
        );
        assert_eq!(dropin_dir(Path::new("rules.toml")), Path::new("rules.d"));
        assert!(is_dropin("team.toml"));
        for skipped in [".team.toml.swp", "team.toml~", ".hidden.toml", "team.conf"] {
            assert!(!is_dropin(skipped), "{skipped}");
        }
    }

    fn load(main: &str, dropins: &[(&str, &str)]) -> Result<crate::Loaded, crate::Diagnostics> {
        let files: Vec<(String, String)> = dropins
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        crate::load_sources("rules.toml", main, &files, None)
    }

    fn fwd(name: &str, port: u16) -> String {
        format!("[[forward]]\nname = \"{name}\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = {port}\nto = \"192.168.100.80\"\n")
    }

    #[test]
    fn drop_ins_add_forwards_and_messages_name_their_file() {
        let l = load(&fwd("web", 80), &[("rules.d/team.toml", &fwd("ssh", 22))]).unwrap();
        let names: Vec<&str> = l.rules.forwards.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["web", "ssh"]);

        let bad = format!("# team a\n\n{}", fwd("ssh", 0));
        let e = load(
            &fwd("web", 80),
            &[
                ("rules.d/a.toml", &fwd("db", 5432)),
                ("rules.d/team.toml", &bad),
            ],
        )
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(
            text.lines().next().unwrap(),
            "rules.d/team.toml:7:8: error: forward \"ssh\": port 0 is not a valid port",
            "{text}"
        );
    }

    #[test]
    fn names_are_unique_and_listeners_exclusive_across_files() {
        let e = load(
            &fwd("web", 80),
            &[("rules.d/team.toml", &format!("\n{}", fwd("web", 81)))],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("rules.d/team.toml:3:8: error: forward \"web\": duplicate forward name \"web\" (first defined on line 2)"),
            "{e}"
        );
        let e = load(&fwd("web", 80), &[("rules.d/team.toml", &fwd("web2", 80))])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("rules.d/team.toml:5:8: error: forward \"web2\":"),
            "{e}"
        );
        assert!(e.contains("overlaps forward \"web\" on line 1"), "{e}");
        // And the other way round: a main-file forward after... the main
        // file is first, so a drop-in's is named by its file.
        let e = load(
            &fwd("a", 80),
            &[
                ("rules.d/1.toml", &fwd("b", 81)),
                ("rules.d/2.toml", &fwd("b", 82)),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("(first defined on line 2 of rules.d/1.toml)"),
            "{e}"
        );
    }

    #[test]
    fn global_and_interface_sections_stay_in_the_main_file() {
        let dropin = format!(
            "[global]\nconntrack_max = 10\n\n{}[interface.vmbr0]\nattach = \"tc\"\n",
            fwd("ssh", 22)
        );
        let e = load(&fwd("web", 80), &[("rules.d/team.toml", &dropin)]).unwrap_err();
        let errors: Vec<String> = e.errors().map(|d| d.render(&e.file)).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0]
                .starts_with("rules.d/team.toml:1:2: error: [global] is not allowed in a drop-in"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with(
                "rules.d/team.toml:10:2: error: [interface] is not allowed in a drop-in"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn a_syntax_error_in_a_drop_in_names_it() {
        let e = load(
            &fwd("web", 80),
            &[("rules.d/team.toml", "[[forward]]\nto = 10.0.0.1\n")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("rules.d/team.toml:2:"), "{e}");
        assert!(e.contains("quote the address"), "{e}");
    }
}
