//! Older kernels to boot: Debian's own kernel packages, fetched with
//! `apt-get download` and unpacked with `dpkg-deb -x`, cached under
//! `target/vm/kernels/`.
//!
//! The one fact a reader would get wrong: the machine's own apt sources are
//! not used. A private apt state (`target/vm/apt/`) lists exactly the suites
//! that carry the kernels we boot, so `--kernel 5.10` (bullseye) works on a
//! bookworm host and nothing in /etc/apt is touched. Only the `-amd64`
//! flavour boots here: `-cloud-amd64` has no 9p, which the guest mounts the
//! host's root with.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};

use crate::run;

const DEBIAN: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel series we know where to find: the package names are
/// `<prefix><N><suffix>` and the highest N is the newest build.
pub struct Series {
    pub name: &'static str,
    /// Where users meet it (for the summary and the report).
    pub found_on: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    /// apt sources lines (archive, suite).
    suites: &'static [(&'static str, &'static str)],
}

/// What is obtainable from Debian's archive. Linux 5.15 (Ubuntu 22.04's) is
/// not: Debian shipped it only in bullseye-backports, which is gone from the
/// mirrors (404), and Ubuntu's archive is not reachable from these machines.
pub const SERIES: &[Series] = &[
    Series {
        name: "6.1",
        found_on: "Debian 12 (bookworm), k3s nodes on Debian",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64-unsigned",
        suites: &[(DEBIAN, "bookworm"), (SECURITY, "bookworm-security")],
    },
    Series {
        name: "5.10",
        found_on: "Debian 11 (bullseye)",
        prefix: "linux-image-5.10.0-",
        suffix: "-amd64-unsigned",
        suites: &[(DEBIAN, "bullseye"), (SECURITY, "bullseye-security")],
    },
    Series {
        name: "6.12",
        found_on: "Debian 13 (trixie); bookworm-backports/-security",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64-unsigned",
        suites: &[
            (DEBIAN, "bookworm-backports"),
            (SECURITY, "bookworm-security"),
        ],
    },
];

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the guest, e.g. 6.1.0-57-amd64.
    pub release: String,
    pub package: String,
    pub vmlinuz: PathBuf,
    /// The unpacked tree: `lib/modules/<release>` (with modules.dep) and
    /// `boot/`.
    pub root: PathBuf,
}

impl Kernel {
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

pub fn series(name: &str) -> Result<&'static Series> {
    SERIES.iter().find(|s| s.name == name).with_context(|| {
        let known: Vec<&str> = SERIES.iter().map(|s| s.name).collect();
        format!(
            "unknown kernel series {name:?}; known: {} (or pass a Debian package name \
             such as linux-image-6.1.0-57-amd64-unsigned)",
            known.join(", ")
        )
    })
}

/// Private apt configuration: its own sources, lists and cache.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(dir: PathBuf, suites: &[(&str, &str)]) -> Result<Apt> {
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        let sources: String = suites
            .iter()
            .map(|(uri, suite)| format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"))
            .collect();
        let path = dir.join("sources.list");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&path, sources)?;
            // Lists of other suites would otherwise count as fresh.
            let _ = std::fs::remove_file(dir.join("updated"));
        }
        Ok(Apt { dir })
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        let d = self.dir.display();
        for opt in [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".to_string(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            // The files land in a root-owned directory: no _apt sandbox.
            "APT::Sandbox::User=root".to_string(),
        ] {
            c.args(["-o", &opt]);
        }
        c
    }

    /// `apt-get update` at most once a day.
    fn update(&self) -> Result<()> {
        let stamp = self.dir.join("updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < Duration::from_secs(24 * 3600));
        if fresh {
            return Ok(());
        }
        run(self.command("apt-get").args(["update", "-qq"]))?;
        std::fs::write(stamp, "")?;
        Ok(())
    }

    fn names(&self, pattern: &str) -> Result<Vec<String>> {
        let out = self
            .command("apt-cache")
            .args(["search", "--names-only", pattern])
            .output()
            .context("running apt-cache")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(str::to_string)
            .collect())
    }
}

/// The newest package of a series: the highest number after the prefix.
fn newest(series: &Series, names: &[String]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| {
            // All digits: `57-cloud` or `57-rt` are other flavours.
            let mid = n.strip_prefix(series.prefix)?.strip_suffix(series.suffix)?;
            Some((mid.parse::<u64>().ok()?, n.clone()))
        })
        .max()
        .map(|(_, n)| n)
}

/// Finds, downloads and unpacks the kernel `spec` (a series name or a
/// package name) under `cache`. A kernel unpacked before is reused when the
/// archive cannot be reached.
pub fn fetch(spec: &str, cache: &Path) -> Result<Kernel> {
    let (package, apt) = if spec.starts_with("linux-image-") {
        let s = SERIES
            .iter()
            .find(|s| spec.starts_with(s.prefix))
            .unwrap_or(&SERIES[0]);
        (spec.to_string(), Apt::new(cache.join("apt"), s.suites)?)
    } else {
        let s = series(spec)?;
        let apt = Apt::new(cache.join("apt"), s.suites)?;
        let found = apt
            .update()
            .and_then(|_| {
                let pattern = format!(
                    "^{}[0-9].*{}$",
                    regex_escape(s.prefix),
                    regex_escape(s.suffix)
                );
                apt.names(&pattern)
            })
            .map(|names| newest(s, &names));
        match found {
            Ok(Some(p)) => (p, apt),
            Ok(None) => bail!(
                "no package {}N{} found in {:?}",
                s.prefix,
                s.suffix,
                s.suites
            ),
            Err(e) => match cached(cache, s) {
                Some(k) => {
                    eprintln!("vm: cannot reach the archive ({e:#}); using {}", k.package);
                    return Ok(k);
                }
                None => return Err(e),
            },
        }
    };
    let root = cache.join("kernels").join(&package);
    if let Some(k) = complete(&root, &package) {
        return Ok(k);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    apt.update()?;
    run(apt
        .command("apt-get")
        .current_dir(&root)
        .args(["download", "-qq", &package]))?;
    let deb = std::fs::read_dir(&root)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    std::fs::remove_file(&deb)?;
    let release = release_of(&root)?;
    // The package ships modules.order/builtin but not modules.dep (its
    // postinst runs depmod): build it, so modprobe resolves dependencies.
    run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    std::fs::write(root.join(".complete"), &release)?;
    complete(&root, &package).context("unpacked kernel is incomplete")
}

fn complete(root: &Path, package: &str) -> Option<Kernel> {
    let release = std::fs::read_to_string(root.join(".complete")).ok()?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    vmlinuz.is_file().then(|| Kernel {
        release: release.clone(),
        package: package.to_string(),
        vmlinuz,
        root: root.to_path_buf(),
    })
}

fn cached(cache: &Path, s: &Series) -> Option<Kernel> {
    let names: Vec<String> = std::fs::read_dir(cache.join("kernels"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let p = newest(s, &names)?;
    complete(&cache.join("kernels").join(&p), &p)
}

/// The release (`uname -r`) of an unpacked package: its modules directory.
fn release_of(root: &Path) -> Result<String> {
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(rd) = std::fs::read_dir(root.join(base)) {
            if let Some(e) = rd.flatten().next() {
                if base != "lib/modules" {
                    // Normalise to lib/modules for modprobe -d.
                    std::fs::create_dir_all(root.join("lib"))?;
                    std::os::unix::fs::symlink("../usr/lib/modules", root.join("lib/modules"))?;
                }
                return Ok(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    bail!("no lib/modules/<release> in {}", root.display())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc = matches!(c, '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '^' | '$');
            esc.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_compares_abi_numbers_not_strings() {
        let s = series("6.1").unwrap();
        let names: Vec<String> = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            "linux-image-6.1.0-100-rt-amd64-unsigned",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            newest(s, &names).as_deref(),
            Some("linux-image-6.1.0-57-amd64-unsigned")
        );
        let s = series("6.12").unwrap();
        let names = vec![
            "linux-image-6.12.95+deb12-amd64-unsigned".to_string(),
            "linux-image-6.12.107+deb12-amd64-unsigned".to_string(),
        ];
        assert_eq!(
            newest(s, &names).as_deref(),
            Some("linux-image-6.12.107+deb12-amd64-unsigned")
        );
    }

    #[test]
    fn apt_patterns_are_escaped() {
        assert_eq!(regex_escape("6.12.+deb"), "6\\.12\\.\\+deb");
    }
}
