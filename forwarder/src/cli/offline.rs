//! `forwarder check` and `explain`: argument parsing and printing
//! around the `rules` crate, which holds all of the logic.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Result;
use rules::{explain as ex, report, LoadError, Loaded, L4};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The rules file to validate.
    pub file: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ProtoArg {
    Tcp,
    Udp,
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The rules file.
    pub file: PathBuf,
    /// Interface the packet arrives on.
    #[arg(long = "in", value_name = "IFACE")]
    pub iface: String,
    /// The packet's source.
    #[arg(long, value_name = "IP:PORT")]
    pub from: SocketAddrV4,
    /// The packet's destination.
    #[arg(long, value_name = "IP:PORT")]
    pub to: SocketAddrV4,
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: ProtoArg,
    /// An address of an interface, for `listen = "interface"` forwards
    /// (repeatable), e.g. tailscale0=100.118.5.68.
    #[arg(long = "iface-addr", value_name = "NAME=IP", value_parser = ex::parse_iface_addr)]
    pub iface_addr: Vec<(String, Ipv4Addr)>,
}

/// Loads a rules file; validation errors are printed and mapped to exit 1.
fn load(file: &Path) -> Result<std::result::Result<Loaded, ExitCode>> {
    match rules::load_file(file) {
        Ok(loaded) => Ok(Ok(loaded)),
        Err(LoadError::Invalid(diags)) => {
            eprintln!("{diags}");
            let n = diags.errors().count();
            eprintln!(
                "{}: {n} error{}, not loaded",
                diags.file,
                if n == 1 { "" } else { "s" }
            );
            Ok(Err(ExitCode::from(1)))
        }
        Err(e @ LoadError::Io { .. }) => Err(e.into()),
    }
}

pub fn check(args: CheckArgs) -> Result<ExitCode> {
    Ok(match load(&args.file)? {
        Ok(loaded) => {
            print!("{}", report::check_report(&loaded));
            // Host facts the file cannot know: on the machine it is
            // checked on (where it normally runs).
            for w in crate::snat_ports::warnings(&loaded.rules.global.snat_ports) {
                eprintln!("warning (this host): {w}");
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    })
}

pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let loaded = match load(&args.file)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut iface_addrs: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    for (name, addr) in args.iface_addr {
        iface_addrs.entry(name).or_default().push(addr);
    }
    let query = ex::Query {
        iface: args.iface,
        from: args.from,
        to: args.to,
        proto: match args.proto {
            ProtoArg::Tcp => L4::Tcp,
            ProtoArg::Udp => L4::Udp,
        },
        iface_addrs,
    };
    let explanation = ex::explain(&loaded.rules, &query);
    print!("{}", ex::render(&loaded.rules, &query, &explanation));
    Ok(ExitCode::SUCCESS)
}
