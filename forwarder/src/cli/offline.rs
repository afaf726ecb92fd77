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
    /// What a target's DNS name resolves to (repeatable), e.g.
    /// immich-server.immich.svc.cluster.local=10.43.12.7. Without it a
    /// name is shown as resolved at run time.
    #[arg(long = "resolve", value_name = "NAME=IP", value_parser = ex::parse_resolve)]
    pub resolve: Vec<(String, Ipv4Addr)>,
    /// Look the targets' DNS names up now, as the daemon would (through
    /// `dns_server`, or the system's resolver); `--resolve` takes precedence.
    #[arg(long)]
    pub lookup: bool,
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
    let mut iface_addrs: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    for (name, addr) in args.iface_addr {
        iface_addrs.entry(name).or_default().push(addr);
    }
    let mut resolved: BTreeMap<String, Ipv4Addr> = args.resolve.into_iter().collect();
    if args.lookup {
        for (name, line) in lookup_names(&loaded.rules, &resolved)? {
            println!("{line}");
            if let Some(a) = name {
                resolved.insert(a.0, a.1);
            }
        }
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
        resolved,
    };
    let explanation = ex::explain(&loaded.rules, &query);
    print!("{}", ex::render(&loaded.rules, &query, &explanation));
    Ok(ExitCode::SUCCESS)
}

/// A name and the address a lookup found for it (when any), and a line
/// saying what happened.
type LookedUp = (Option<(String, Ipv4Addr)>, String);

/// `explain --lookup`: each target name not stated with `--resolve`, looked
/// up now.
fn lookup_names(
    rules: &rules::RuleSet,
    stated: &BTreeMap<String, Ipv4Addr>,
) -> Result<Vec<LookedUp>> {
    use crate::daemon::{lookup::lookup_once, resolve::Outcome};
    let mut names: Vec<&str> = rules
        .forwards
        .iter()
        .filter_map(|f| f.target.name())
        .filter(|n| !stated.contains_key(*n))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let servers = &rules.global.dns_servers;
    Ok(rt.block_on(async {
        let mut out = Vec::new();
        for name in names {
            out.push(match lookup_once(servers, name).await {
                Outcome::Answer { mut addrs, ttl } => {
                    addrs.sort_unstable();
                    let list: Vec<String> = addrs.iter().map(Ipv4Addr::to_string).collect();
                    (
                        Some((name.to_owned(), addrs[0])),
                        format!(
                            "looked up {name}: {} (TTL {ttl}s; the lowest is used)",
                            list.join(", ")
                        ),
                    )
                }
                Outcome::Failed(e) => (
                    None,
                    format!("looked up {name}: {e}: the daemon would pause its forwards"),
                ),
            });
        }
        out
    }))
}
