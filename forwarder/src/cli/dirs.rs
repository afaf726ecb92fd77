//! `--pin-dir` and `--run-dir`: where the daemon's state lives, offered only
//! by the commands that use it (`run`, `status`, `conntrack`, `diff`, `reload`,
//! `down`), so the offline commands' help does not list them.
//!
//! The fact a reader gets wrong: the options are still accepted *before* the
//! command (`forwarder --pin-dir D status`, the 0.1 form that scripts and the
//! test harness use), hidden from the help. The order of precedence is
//! after the command > before the command > FORWARDER_PIN_DIR /
//! FORWARDER_RUN_DIR > the default.
use std::path::PathBuf;

use clap::{parser::ValueSource, ArgMatches};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/forwarder";
pub const DEFAULT_RUN_DIR: &str = "/run/forwarder";

/// For commands that read or write the pinned maps and links.
#[derive(clap::Args, Debug, Clone)]
pub struct PinDir {
    /// Where maps (and links) are pinned on bpffs.
    // global: `conntrack list|flush` take it after their own name too.
    #[arg(long, global = true, value_name = "DIR", env = "FORWARDER_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// For commands that read or write the daemon's status file.
#[derive(clap::Args, Debug, Clone)]
pub struct RunDir {
    /// Where the daemon writes its status file.
    #[arg(long, value_name = "DIR", env = "FORWARDER_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
}

/// The hidden top-level form (see the module comment).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LeadingDirs {
    #[arg(
        long = "pin-dir",
        id = "leading_pin_dir",
        hide = true,
        value_name = "DIR"
    )]
    pub pin_dir: Option<PathBuf>,
    #[arg(
        long = "run-dir",
        id = "leading_run_dir",
        hide = true,
        value_name = "DIR"
    )]
    pub run_dir: Option<PathBuf>,
}

impl LeadingDirs {
    /// A directory given before the command wins over the environment and
    /// the default, not over the same option given after the command.
    /// `command` is the matches of the command that owns `id`.
    pub fn resolve(leading: &Option<PathBuf>, command: &ArgMatches, id: &str, own: &mut PathBuf) {
        if let Some(dir) = leading {
            if command.value_source(id) != Some(ValueSource::CommandLine) {
                *own = dir.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Cli {
        let m = Cli::command().try_get_matches_from(args).unwrap();
        let mut cli = Cli::from_arg_matches(&m).unwrap();
        cli.apply_leading_dirs(&m);
        cli
    }

    fn help(cmd: &str) -> String {
        let mut c = Cli::command();
        c.build();
        c.find_subcommand_mut(cmd)
            .unwrap()
            .render_long_help()
            .to_string()
    }

    #[test]
    fn offline_commands_neither_list_nor_accept_the_daemon_directories() {
        for cmd in ["check", "explain", "import"] {
            let h = help(cmd);
            assert!(
                !h.contains("--pin-dir") && !h.contains("--run-dir"),
                "{cmd} --help:\n{h}"
            );
        }
        assert!(Cli::command()
            .try_get_matches_from(["forwarder", "check", "--pin-dir", "/x", "r.toml"])
            .is_err());
        let top = Cli::command().render_long_help().to_string();
        assert!(!top.contains("--pin-dir"), "{top}");
    }

    #[test]
    fn daemon_commands_list_the_directories_they_use() {
        for (cmd, pin, run) in [
            ("run", true, true),
            ("status", true, true),
            ("diff", true, true),
            ("down", true, true),
            ("conntrack", true, false),
            ("reload", false, true),
        ] {
            let h = help(cmd);
            assert_eq!(h.contains("--pin-dir"), pin, "{cmd} --help:\n{h}");
            assert_eq!(h.contains("--run-dir"), run, "{cmd} --help:\n{h}");
        }
        let h = help("status");
        assert!(
            h.contains("FORWARDER_PIN_DIR") && h.contains("/sys/fs/bpf/forwarder"),
            "{h}"
        );
    }

    #[test]
    fn directories_before_the_command_still_work_and_after_wins() {
        let Command::Status { pin, run, .. } =
            parse(&["forwarder", "--pin-dir", "/a", "--run-dir", "/b", "status"]).command
        else {
            panic!()
        };
        assert_eq!(
            (pin.pin_dir.to_str(), run.run_dir.to_str()),
            (Some("/a"), Some("/b"))
        );
        let Command::Down { pin, .. } =
            parse(&["forwarder", "--pin-dir", "/a", "down", "--pin-dir", "/c"]).command
        else {
            panic!()
        };
        assert_eq!(pin.pin_dir.to_str(), Some("/c"));
        for args in [
            &["forwarder", "--pin-dir", "/a", "conntrack", "list"][..],
            &["forwarder", "conntrack", "list", "--pin-dir", "/a"][..],
            &[
                "forwarder",
                "conntrack",
                "--pin-dir",
                "/a",
                "flush",
                "--all",
            ][..],
        ] {
            let Command::Conntrack { pin, .. } = parse(args).command else {
                panic!()
            };
            assert_eq!(pin.pin_dir.to_str(), Some("/a"), "{args:?}");
        }
        let Command::Reload { run, .. } = parse(&["forwarder", "reload"]).command else {
            panic!()
        };
        // FORWARDER_RUN_DIR is not set in the test environment.
        if std::env::var_os("FORWARDER_RUN_DIR").is_none() {
            assert_eq!(run.run_dir.to_str(), Some(super::DEFAULT_RUN_DIR));
        }
    }
}
