//! The guest's initramfs: static busybox, the kernel modules needed to
//! reach the host's file system (virtio, 9p, overlayfs) and a stage-1 init.
//!
//! No root file system image is built. Stage 1 mounts the host's `/`
//! read-only over 9p, lays a tmpfs overlay on it (so tests may write
//! anywhere; nothing reaches the host), and switches into it to run the
//! stage-2 script named on the kernel command line (`vmtest.script=`). The
//! guest therefore runs the host's own binaries, tools and test executables
//! at the same paths.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::kernel::Kernel;

/// Modules (with their dependencies) stage 1 loads before it can mount.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The marker stage 1 prints when it cannot reach the host's file system;
/// the host treats it as a harness failure (not a test failure).
pub const STAGE1_FAILED: &str = "VMTEST-STAGE1-FAILED";

/// Stage 1 (busybox sh). `poweroff -f` is the reboot syscall itself: qemu
/// runs with -no-reboot, so a panic (init exiting) ends the VM as well.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "vm-init: $*"; echo "@STAGE1_FAILED@"; poweroff -f; }
for m in /modules/*.ko; do insmod "$m" || fail "insmod $m failed"; done
script=
for w in $(cat /proc/cmdline); do
  case "$w" in vmtest.script=*) script="${w#vmtest.script=}";; esac
done
[ -n "$script" ] || fail "no vmtest.script= on the kernel command line"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \
  || fail "mounting the host's root over 9p failed"
mount -t tmpfs -o size=75% rw /rw || fail "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
  || fail "overlay mount failed"
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
[ -f "/newroot$script" ] || fail "stage 2 script $script not found on the host's root"
exec switch_root /newroot /bin/sh "$script"
"#;

/// Builds `<dir>/initramfs.cpio` for `kernel`; returns its path.
pub fn build(kernel: &Kernel, dir: &Path) -> Result<PathBuf> {
    let staging = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&staging);
    for d in [
        "bin", "proc", "sys", "dev", "lower", "rw", "newroot", "modules",
    ] {
        std::fs::create_dir_all(staging.join(d))?;
    }
    let busybox = Path::new("/bin/busybox");
    if !is_static(busybox)? {
        bail!("/bin/busybox is not statically linked: install busybox-static");
    }
    std::fs::copy(busybox, staging.join("bin/busybox"))?;
    for (i, module) in boot_modules(kernel)?.iter().enumerate() {
        let name = module.file_name().context("module path")?.to_string_lossy();
        copy_module(module, &staging.join("modules"), &format!("{i:02}-{name}"))?;
    }
    let init = staging.join("init");
    std::fs::write(&init, INIT.replace("@STAGE1_FAILED@", STAGE1_FAILED))?;
    make_executable(&init)?;
    let out = dir.join("initramfs.cpio");
    let file = std::fs::File::create(&out)?;
    // `find` lists the tree; cpio writes the newc archive the kernel unpacks.
    let list = Command::new("find")
        .arg(".")
        .current_dir(&staging)
        .output()
        .context("find")?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(&staging)
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("spawning cpio (apt-get install cpio)")?;
    std::io::Write::write_all(cpio.stdin.as_mut().context("cpio stdin")?, &list.stdout)?;
    drop(cpio.stdin.take());
    if !cpio.wait()?.success() {
        bail!("cpio failed");
    }
    Ok(out)
}

/// Copies a module as a plain `.ko`: busybox's insmod cannot unpack the
/// xz/zstd-compressed modules of newer Debian kernels (6.12 ships
/// `.ko.xz`), the kernel takes them either way.
fn copy_module(module: &Path, dir: &Path, name: &str) -> Result<()> {
    let tool = [(".ko.xz", "xz"), (".ko.zst", "zstd"), (".ko.gz", "gzip")]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext));
    match tool {
        None => {
            std::fs::copy(module, dir.join(name))
                .with_context(|| format!("copying {}", module.display()))?;
        }
        Some((ext, tool)) => {
            let plain = format!("{}.ko", name.strip_suffix(ext).unwrap_or(name));
            let out = Command::new(tool)
                .arg("-dc")
                .arg(module)
                .output()
                .with_context(|| format!("running {tool} to unpack {}", module.display()))?;
            if !out.status.success() {
                bail!("{tool} -dc {} failed", module.display());
            }
            std::fs::write(dir.join(plain), out.stdout)?;
        }
    }
    Ok(())
}

fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The module files for BOOT_MODULES in load order, from modprobe's own
/// dependency resolution on the unpacked tree (the same order modprobe
/// would insmod them in).
fn boot_modules(kernel: &Kernel) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for m in BOOT_MODULES {
        let out = Command::new("modprobe")
            .arg("-d")
            .arg(&kernel.root)
            .args(["-S", &kernel.release, "--show-depends", m])
            .output()
            .context("running modprobe (apt-get install kmod)")?;
        if !out.status.success() {
            bail!(
                "{}: no module {m}: {}",
                kernel.package,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "insmod /path/to/x.ko [params]"; "builtin x" needs nothing.
            if let Some(p) = line.strip_prefix("insmod ") {
                let p = PathBuf::from(p.split_whitespace().next().unwrap_or_default());
                if !files.contains(&p) {
                    files.push(p);
                }
            }
        }
    }
    Ok(files)
}

/// An ELF without a PT_INTERP program header needs no dynamic loader.
fn is_static(path: &Path) -> Result<bool> {
    let out = Command::new("file")
        .arg("-L")
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    match out {
        Ok(s) if !s.is_empty() => Ok(s.contains("statically linked")),
        // No `file`: trust the package that provides it.
        _ => Ok(Command::new("dpkg-query")
            .args(["-S", &path.to_string_lossy()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("busybox-static"))
            .unwrap_or(false)),
    }
}
