//! The command line: the `Cli` definition (also used to generate man pages
//! and shell completions) and one module per command.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

pub mod conntrack;
pub mod control;
pub mod doctor;
pub mod offline;
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
    after_help = "Examples:\n  forwarder check /etc/forwarder/rules.toml\n  forwarder run --rules /etc/forwarder/rules.toml\n  forwarder status\n  forwarder conntrack list --rule web\n  forwarder import iptables < iptables-save.txt > rules.toml\n\nThe rules format: docs/rules.md. Operating the daemon: README.md."
)]
pub struct Cli {
    /// Where maps (and links) are pinned on bpffs.
    #[arg(
        long,
        global = true,
        env = "FORWARDER_PIN_DIR",
        default_value = "/sys/fs/bpf/forwarder"
    )]
    pub pin_dir: PathBuf,
    /// Where the daemon writes its status file.
    #[arg(
        long,
        global = true,
        env = "FORWARDER_RUN_DIR",
        default_value = "/run/forwarder"
    )]
    pub run_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (root): load, attach, keep the maps in sync with the
    /// rules file and the interfaces.
    Run(run::RunArgs),
    /// Show the running configuration, counters, decisions and table fill.
    Status(status::StatusArgs),
    /// List or flush live flows (like conntrack -L / -D).
    #[command(subcommand)]
    Conntrack(conntrack::ConntrackCmd),
    /// Make the running daemon re-read its rules file and report the result.
    Reload,
    /// Stop the daemon and remove every program, link and pin it created.
    Down,
    /// Validate a rules file and print its forwards (exit 0 valid, 1 not).
    Check(offline::CheckArgs),
    /// Offline: which forward a packet matches and how it is translated.
    Explain(offline::ExplainArgs),
    /// Translate iptables-save output or socat units into a rules file.
    Import(offline::ImportArgs),
    /// Probe the kernel for everything the forwarder needs (root; starts
    /// nothing): a table of what is there and what is missing.
    Doctor(doctor::DoctorArgs),
}

/// Parses the command line and runs the command; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&cli.pin_dir, &cli.run_dir, args),
        Command::Status(args) => status::status(&cli.pin_dir, &cli.run_dir, args),
        Command::Conntrack(c) => conntrack::conntrack(&cli.pin_dir, c),
        Command::Reload => control::reload(&cli.run_dir),
        Command::Down => control::down(&cli.pin_dir, &cli.run_dir),
        Command::Check(args) => offline::check(args),
        Command::Explain(args) => offline::explain(args),
        Command::Import(args) => offline::import(args),
        Command::Doctor(args) => doctor::doctor(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
