//! `forwarder status | head` must not panic: every command ends quietly
//! when its output pipe is closed, as Unix tools do (killed by SIGPIPE, no
//! "failed printing to stdout: Broken pipe" panic). The pipe's read end is
//! closed before the command starts, so its first write always meets a
//! closed pipe.
use std::{
    os::{fd::FromRawFd, unix::process::ExitStatusExt},
    process::{Command, Stdio},
};

use forwarder_tests::{
    daemon::forwarder_bin, lanvm::LanVm, require_root, topology::TempDir, Daemon,
};

/// Runs `forwarder ARGS` (in `ns` when given) with stdout a pipe nobody
/// reads; panics unless it ended quietly.
fn closed_pipe(ns: Option<&str>, args: &[&str]) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors, which we own from here.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: closing our own read end: nobody will ever read.
    unsafe { libc::close(fds[0]) };
    // SAFETY: the write end is ours; Stdio takes it over.
    let stdout = unsafe { Stdio::from_raw_fd(fds[1]) };
    let bin = forwarder_bin();
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let sigpipe = out.status.signal() == Some(libc::SIGPIPE);
    assert!(
        (sigpipe || out.status.code() == Some(0)) && stderr.is_empty(),
        "forwarder {args:?} on a closed pipe: {:?}, stderr: {stderr}",
        out.status
    );
}

#[test]
fn offline_commands_end_quietly_on_a_closed_pipe() {
    let dir = TempDir::new("pipe").unwrap();
    let f = dir.file("r.toml");
    let mut text = String::new();
    for i in 0..200 {
        text += &format!(
            "[[forward]]\nname = \"f{i}\"\nin = \"vmbr0\"\nlisten = \"192.168.1.55\"\nport = {}\nto = \"192.168.100.80\"\n",
            1000 + i
        );
    }
    std::fs::write(&f, &text).unwrap();
    let nat = dir.file("nat.rules");
    std::fs::write(
        &nat,
        "*nat\n-A PREROUTING -i vmbr0 -d 192.168.1.55/32 -p tcp --dport 80 -j DNAT --to-destination 192.168.100.80:80\nCOMMIT\n",
    )
    .unwrap();
    let f = f.to_str().unwrap();
    for args in [
        &["check", "--offline", f][..],
        &["check", "--offline", "--json", f],
        &[
            "explain",
            f,
            "--in",
            "vmbr0",
            "--from",
            "1.2.3.4:5",
            "--to",
            "192.168.1.55:1000",
        ],
        &["import", "iptables", nat.to_str().unwrap()],
        &["--help"],
        &["status", "--help"],
    ] {
        closed_pipe(None, args);
    }
}

#[test]
fn status_and_conntrack_end_quietly_on_a_closed_pipe() {
    if !require_root("status_and_conntrack_end_quietly_on_a_closed_pipe") {
        return;
    }
    let t = LanVm::build("pipe", &[80]).unwrap();
    let path = t.rules_path();
    std::fs::write(
        &path,
        "[[forward]]\nname = \"web\"\nin = \"lan0\"\nlisten = \"192.168.1.55\"\nport = 8080\nto = \"192.168.100.80:80\"\nsnat = \"masquerade\"\n",
    )
    .unwrap();
    let d = Daemon::start(&t.host, &["--rules", path.to_str().unwrap()]).unwrap();
    assert!(t.wait_forwarding(8080, 80));
    let (pin, run) = (d.pin_dir.to_str().unwrap(), d.run_dir.to_str().unwrap());
    for cmd in [
        &["status"][..],
        &["status", "--json"],
        &["conntrack", "list"],
        &["diff"],
    ] {
        let mut args = vec!["--pin-dir", pin, "--run-dir", run];
        args.extend_from_slice(cmd);
        closed_pipe(Some(&t.host.name), &args);
    }
}
