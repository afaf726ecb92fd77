//! The house limit on file size, as a lint step: no Rust source file over
//! 500 lines, no test file over 1,000 (docs/house-style: a file that long
//! holds more than one idea; split it by meaning).
//!
//! A test file is one under a `tests` directory (the `tests` crate with its
//! harness, or a crate's integration tests) or one named `tests.rs` or
//! `*_tests.rs` (a module's unit tests moved out with `#[path]`). Every other
//! `.rs` file of the repository counts as source, the kernel crate's too;
//! build output (`target`) and hidden directories are skipped.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Most lines of a source file.
pub const SOURCE_LIMIT: usize = 500;
/// Most lines of a test file.
pub const TEST_LIMIT: usize = 1000;

/// Files over the limit that are being split on other branches, so the
/// lint can run today. This list must shrink to empty: remove a file when
/// its split lands (the lint says when one is back within its limit), and
/// never add one.
pub const ALLOWED_OVER: &[&str] = &[];

/// One file over its limit.
#[derive(Debug, PartialEq, Eq)]
pub struct Oversized {
    /// Relative to the checked root, with `/` separators.
    pub path: String,
    pub lines: usize,
    pub limit: usize,
}

/// Whether `rel` (relative to the repository root) is a test file.
pub fn is_test_file(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || rel
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "tests"))
}

/// Every `.rs` file below `root` over its limit, sorted by path.
pub fn oversized(root: &Path) -> Result<Vec<Oversized>> {
    let mut files = Vec::new();
    rust_files(root, &mut files)?;
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let lines = text.lines().count();
        let limit = if is_test_file(rel) {
            TEST_LIMIT
        } else {
            SOURCE_LIMIT
        };
        if lines > limit {
            let path = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push(Oversized { path, lines, limit });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out)?;
            }
        } else if kind.is_file() && name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The lint step: fails listing every file over its limit that is not in
/// `allowed`; mentions allowed files that are back within their limit.
pub fn check(root: &Path, allowed: &[&str]) -> Result<()> {
    let over = oversized(root)?;
    for path in allowed {
        if !over.iter().any(|o| o.path == *path) {
            eprintln!("file sizes: {path} is within its limit now: remove it from ALLOWED_OVER");
        }
    }
    let offenders: Vec<String> = over
        .iter()
        .filter(|o| !allowed.contains(&o.path.as_str()))
        .map(|o| format!("  {}: {} lines (limit {})", o.path, o.lines, o.limit))
        .collect();
    if !offenders.is_empty() {
        bail!(
            "files over the size limit (split them by meaning):\n{}",
            offenders.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_lines(root: &Path, rel: &str, lines: usize) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "x\n".repeat(lines)).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-file-sizes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn lists_source_and_test_files_over_their_limits() {
        let root = scratch("limits");
        write_lines(&root, "rules/src/big.rs", 501);
        write_lines(&root, "rules/src/fits.rs", 500);
        write_lines(&root, "forwarder/src/daemon/plan_tests.rs", 900);
        write_lines(&root, "tests/src/harness.rs", 1001);
        write_lines(&root, "rules/tests/props.rs", 1000);
        write_lines(&root, "target/debug/build/generated.rs", 5000);
        write_lines(&root, "rules/src/notes.txt", 5000);
        let over = oversized(&root).unwrap();
        assert_eq!(
            over,
            vec![
                Oversized {
                    path: "rules/src/big.rs".into(),
                    lines: 501,
                    limit: SOURCE_LIMIT
                },
                Oversized {
                    path: "tests/src/harness.rs".into(),
                    lines: 1001,
                    limit: TEST_LIMIT
                },
            ]
        );
        let err = check(&root, &[]).unwrap_err().to_string();
        assert!(
            err.contains("rules/src/big.rs: 501 lines (limit 500)"),
            "{err}"
        );
        assert!(err.contains("tests/src/harness.rs: 1001 lines"), "{err}");
        // An allowed file is passed over, the others still fail.
        let err = check(&root, &["rules/src/big.rs"]).unwrap_err().to_string();
        assert!(!err.contains("big.rs"), "{err}");
        check(&root, &["rules/src/big.rs", "tests/src/harness.rs"]).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_repository_keeps_its_limits() {
        check(&crate::root(), ALLOWED_OVER).unwrap();
    }
}
