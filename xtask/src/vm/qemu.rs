//! Running the guest: qemu under TCG (KVM does not work on these machines:
//! no vmx in the CPU flags, and -enable-kvm hangs at boot), its serial
//! console copied line by line to a file and to our stderr, and a hard
//! deadline after which qemu is killed.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

pub struct Machine<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: String,
    /// Shared read-only as the guest's root (under a tmpfs overlay).
    pub host_root: &'a Path,
    /// Shared writable: where the guest leaves its results.
    pub results: &'a Path,
    pub cpus: u32,
    pub memory_mib: u32,
}

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    /// qemu exited by itself (guest powered off or panicked) with this code.
    Exited(Option<i32>),
    /// Killed at the deadline.
    TimedOut,
}

pub struct Run {
    pub ended: Ended,
    pub elapsed: Duration,
    /// Every console line, also saved to the console file.
    pub console: Vec<String>,
}

pub const QEMU: &str = "qemu-system-x86_64";

/// Whether qemu can run at all here (installed and executable); the error
/// says why not.
pub fn available() -> Result<String> {
    let out = Command::new(QEMU)
        .arg("--version")
        .output()
        .with_context(|| format!("running {QEMU}"))?;
    anyhow::ensure!(out.status.success(), "{QEMU} --version failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

impl Machine<'_> {
    fn command(&self) -> Command {
        let mut c = Command::new(QEMU);
        c.args(["-machine", "q35", "-accel", "tcg,thread=multi,tb-size=512"])
            .args(["-cpu", "max"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &self.memory_mib.to_string()])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initramfs)
            .args(["-append", &self.cmdline])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            // No network device: nothing in the guest can reach out.
            .args(["-nic", "none", "-no-reboot"])
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
                self.host_root.display()
            ))
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=results,security_model=none",
                self.results.display()
            ));
        c
    }

    /// Boots and waits until the guest powers off or `deadline` passes.
    /// `echo` copies the console to stderr as it comes.
    pub fn run(&self, console_file: &Path, deadline: Duration, echo: bool) -> Result<Run> {
        let mut cmd = self.command();
        eprintln!("+ {cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {QEMU}"))?;
        let start = Instant::now();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let file = Arc::new(Mutex::new(
            std::fs::File::create(console_file)
                .with_context(|| format!("creating {}", console_file.display()))?,
        ));
        let mut readers = Vec::new();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().context("qemu stdout")?),
            Box::new(child.stderr.take().context("qemu stderr")?),
        ];
        for stream in streams {
            let (lines, file) = (lines.clone(), file.clone());
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                    // The serial console ends lines with \r\n.
                    let line = line.trim_end_matches('\r').to_string();
                    if echo {
                        eprintln!("{line}");
                    }
                    let _ = writeln!(file.lock().unwrap(), "{line}");
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        let ended = loop {
            if let Some(status) = child.try_wait()? {
                break Ended::Exited(status.code());
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break Ended::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        for r in readers {
            let _ = r.join();
        }
        let console = std::mem::take(&mut *lines.lock().unwrap());
        Ok(Run {
            ended,
            elapsed: start.elapsed(),
            console,
        })
    }
}

/// The first line of `console` starting with `marker`, without it.
pub fn marker<'a>(console: &'a [String], marker: &str) -> Option<&'a str> {
    console
        .iter()
        .find_map(|l| l.find(marker).map(|i| l[i + marker.len()..].trim()))
}

pub fn console_path(dir: &Path) -> PathBuf {
    dir.join("console.log")
}
