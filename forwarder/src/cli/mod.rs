//! The command line: the `Cli` definition (also used to generate man pages
//! and shell completions) and one module per command.
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod check_table;
pub mod conntrack;
pub mod control;
pub mod diff;
pub mod dirs;
pub mod doctor;
pub mod exit;
pub mod host;
pub mod import;
pub mod migrate;
pub mod offline;
pub mod pins;
pub mod run;
pub mod status;

/// eBPF port forwarder and NAT manager.
///
/// Reads one rules file, loads in-kernel programs that do DNAT/SNAT port
/// forwarding with their own connection tracking, and keeps the kernel maps in
/// sync with the file.
#[derive(Parser, Debug)]
#[command(
    name = "forwarder",
    version,
    about,
    long_about,
    after_help = "Examples:\n  forwarder check /etc/forwarder/rules.toml\n  forwarder run --rules /etc/forwarder/rules.toml\n  forwarder status\n  forwarder conntrack list --rule web\n  forwarder import --from-running > rules.toml\n\nThe rules format: /usr/share/doc/forwarder/rules.md (docs/rules.md in the source).\nOne man page per command: man forwarder, man forwarder-run, ...\n\nExit status: 0 success or yes, 1 no or invalid, 2 usage, 3 not running (man forwarder:\nEXIT STATUS). --json prints errors as JSON too."
)]
pub struct Cli {
    #[command(flatten)]
    pub leading_dirs: dirs::LeadingDirs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (root): load, attach, keep the maps in sync with the
    /// rules file and the interfaces.
    #[command(
        after_help = "Exit status: 0 stopped by SIGTERM or SIGINT (the programs keep forwarding \
                      unless --teardown-on-exit); 1 did not start (an invalid rules file, not \
                      root, another daemon holds the run directory, the kernel refused the \
                      programs) or failed while running."
    )]
    Run {
        #[command(flatten)]
        pin: dirs::PinDir,
        #[command(flatten)]
        run: dirs::RunDir,
        #[command(flatten)]
        args: run::RunArgs,
    },
    /// Show the running configuration, counters, decisions and table fill.
    Status {
        #[command(flatten)]
        pin: dirs::PinDir,
        #[command(flatten)]
        run: dirs::RunDir,
        #[command(flatten)]
        args: status::StatusArgs,
    },
    /// List or flush live flows (like conntrack -L / -D).
    Conntrack {
        #[command(flatten)]
        pin: dirs::PinDir,
        #[command(subcommand)]
        cmd: conntrack::ConntrackCmd,
    },
    /// Make the running daemon re-read its rules file and report the result
    /// and what it changed (exit 0 applied, 1 rejected, 3 no daemon).
    #[command(
        after_help = "Exit status: 0 the daemon applied the file (what changed is listed); 1 \
                      it rejected it (every error listed; the running configuration is \
                      unchanged) or did not answer within 15 s; 3 no daemon runs."
    )]
    Reload {
        #[command(flatten)]
        run: dirs::RunDir,
        /// Machine-readable output (errors too).
        #[arg(long)]
        json: bool,
    },
    /// What applying a rules file would change against what runs (exit 0
    /// no change, 1 changes).
    Diff {
        #[command(flatten)]
        pin: dirs::PinDir,
        #[command(flatten)]
        run: dirs::RunDir,
        #[command(flatten)]
        args: diff::DiffArgs,
    },
    /// Stop the daemon and remove every program, link and pin it created.
    #[command(
        after_help = "Exit status: 0 nothing of the forwarder is left (also when nothing ran \
                      or was pinned); 1 the daemon did not stop within 15 s, or a pin could \
                      not be removed."
    )]
    Down {
        #[command(flatten)]
        pin: dirs::PinDir,
        #[command(flatten)]
        run: dirs::RunDir,
        /// Machine-readable output (errors too).
        #[arg(long)]
        json: bool,
    },
    /// Validate a rules file, print its forwards and the kernel memory its table sizes reserve
    /// (exit 0 valid, 1 not).
    Check(offline::CheckArgs),
    /// Offline: which forward a packet matches and how it is translated.
    Explain(offline::ExplainArgs),
    /// Translate iptables, nftables, UFW and socat setups into a rules file.
    Import(import::ImportArgs),
    /// After switching: NAT rules and socat processes that still handle the forwards' traffic.
    MigrateCheck(migrate::MigrateCheckArgs),
    /// Probe the kernel for everything the forwarder needs (root; starts
    /// nothing): a table of what is there and what is missing.
    Doctor(doctor::DoctorArgs),
}

impl Cli {
    /// Applies `--pin-dir`/`--run-dir` given before the command (see
    /// `dirs`); `matches` are the ones `self` was parsed from.
    pub fn apply_leading_dirs(&mut self, matches: &clap::ArgMatches) {
        let Some((_, sub)) = matches.subcommand() else {
            return;
        };
        let lead = &self.leading_dirs;
        let (pin, run) = match &mut self.command {
            Command::Run { pin, run, .. }
            | Command::Status { pin, run, .. }
            | Command::Diff { pin, run, .. }
            | Command::Down { pin, run, .. } => (Some(pin), Some(run)),
            Command::Conntrack { pin, .. } => (Some(pin), None),
            Command::Reload { run, .. } => (None, Some(run)),
            _ => (None, None),
        };
        if let Some(p) = pin {
            dirs::LeadingDirs::resolve(&lead.pin_dir, sub, "pin_dir", &mut p.pin_dir);
        }
        if let Some(r) = run {
            dirs::LeadingDirs::resolve(&lead.run_dir, sub, "run_dir", &mut r.run_dir);
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON: its errors are JSON too.
    pub fn json(&self) -> bool {
        match self {
            Command::Status { args, .. } => args.json,
            Command::Conntrack { cmd, .. } => cmd.json(),
            Command::Reload { json, .. } | Command::Down { json, .. } => *json,
            Command::Diff { args, .. } => args.json,
            Command::Check(a) => a.json,
            Command::Explain(a) => a.json,
            Command::Import(a) => a.json,
            Command::MigrateCheck(a) => a.json,
            Command::Doctor(a) => a.json,
            Command::Run { .. } => false,
        }
    }
}

/// Parses the command line and runs the command; the process exit code.
pub fn main() -> ExitCode {
    // A closed pipe (`forwarder status | head`) ends the process quietly,
    // as it ends any Unix tool, instead of a panic in `println!`: Rust
    // ignores SIGPIPE by default. The daemon ignores it again (`run`).
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| exit::usage(e));
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| exit::usage(e));
    cli.apply_leading_dirs(&matches);
    let json = cli.command.json();
    let result = match cli.command {
        Command::Run { pin, run, args } => run::run(&pin.pin_dir, &run.run_dir, args),
        Command::Status { pin, run, args } => status::status(&pin.pin_dir, &run.run_dir, args),
        Command::Conntrack { pin, cmd } => conntrack::conntrack(&pin.pin_dir, cmd),
        Command::Reload { run, json } => control::reload(&run.run_dir, json),
        Command::Diff { pin, run, args } => diff::diff(&pin.pin_dir, &run.run_dir, args),
        Command::Down { pin, run, json } => control::down(&pin.pin_dir, &run.run_dir, json),
        Command::Check(args) => offline::check(args),
        Command::Explain(args) => offline::explain(args),
        Command::Import(args) => import::import(args),
        Command::MigrateCheck(args) => migrate::migrate_check(args),
        Command::Doctor(args) => doctor::doctor(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => ExitCode::from(exit::report(&e, json)),
    }
}
