//! `forwarder check` and `explain`: argument parsing and printing
//! around the `rules` crate, which holds all of the logic.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
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
    /// The packet's source (IPv6 as [ADDR]:PORT).
    #[arg(long, value_name = "IP:PORT")]
    pub from: SocketAddr,
    /// The packet's destination (IPv6 as [ADDR]:PORT).
    #[arg(long, value_name = "IP:PORT")]
    pub to: SocketAddr,
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: ProtoArg,
    /// An address of an interface, for `listen = "interface"` forwards
    /// (repeatable), e.g. tailscale0=100.118.5.68 or tailscale0=fd7a:115c:a1e0::1.
    #[arg(long = "iface-addr", value_name = "NAME=IP", value_parser = ex::parse_iface_addr)]
    pub iface_addr: Vec<(String, IpAddr)>,
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
    let mut iface_addrs: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
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
