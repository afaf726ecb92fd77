//! `forwarder check` and `explain`: argument parsing and printing
//! around the `rules` crate, which holds all of the logic.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Result;
use rules::{explain as ex, report, Diagnostic, HostFacts, LoadError, Loaded, Severity, L4};
use serde_json::{json, Value};

use super::exit::{self, InvalidRules};

#[path = "explain_host.rs"]
mod explain_host;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 the file is valid (warnings and notes allowed); 1 it is \
                        not, every error listed with file, line, rule and a fix."
)]
pub struct CheckArgs {
    /// The rules file to validate (with the drop-ins of its .d directory).
    pub file: PathBuf,
    /// Machine-readable output (errors too).
    #[arg(long)]
    pub json: bool,
    /// Judge the file alone: do not read this host's interfaces, addresses,
    /// listening sockets, FORWARD rules and netfilter's connection count
    /// (for a file meant for another machine).
    #[arg(long)]
    pub offline: bool,
    /// This node's name for `nodes = [...]` (default: the hostname).
    #[arg(long, env = "FORWARDER_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ProtoArg {
    Tcp,
    Udp,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 the packet is forwarded; 1 it is not: it matches no \
                        forward, or its forward refuses the source (the output says which), or \
                        the file is invalid."
)]
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
    /// What a target's DNS name resolves to (repeatable; IPv4: names are
    /// resolved for A records only), e.g.
    /// immich-server.immich.svc.cluster.local=10.43.12.7. Without it a
    /// name is shown as resolved at run time.
    #[arg(long = "resolve", value_name = "NAME=IP", value_parser = ex::parse_resolve)]
    pub resolve: Vec<(String, Ipv4Addr)>,
    /// Look the targets up now, as the daemon would: their DNS names
    /// (through `dns_server`, or the system's resolver; `--resolve` takes
    /// precedence), and the matched target's route and next hop's
    /// neighbour entry (a next hop that does not answer ARP changes what
    /// its flows get: the stack's or a PREROUTING DNAT's answer, or ICMP
    /// host unreachable).
    #[arg(long)]
    pub lookup: bool,
    /// Machine-readable output (errors too).
    #[arg(long)]
    pub json: bool,
}

/// Loads a rules file (judged against `host` when given); an invalid one
/// is an [`InvalidRules`] error, printed by `main` as text or JSON.
pub fn load(file: &Path, host: Option<&HostFacts>) -> Result<Loaded> {
    match rules::load_file_on(file, host) {
        Ok(loaded) => Ok(loaded),
        Err(LoadError::Invalid(diags)) => Err(InvalidRules(diags).into()),
        Err(e @ LoadError::Io { .. }) => Err(e.into()),
    }
}

fn note(message: String, help: Option<String>) -> Diagnostic {
    Diagnostic {
        severity: Severity::Note,
        file: None,
        location: None,
        context: None,
        message,
        help,
    }
}

pub fn check(args: CheckArgs) -> Result<ExitCode> {
    crate::node::init(args.node_name.clone());
    let (host, unread) = if args.offline {
        (None, Some("--offline".to_string()))
    } else {
        match super::host::read(crate::node::name()) {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    };
    let mut loaded = load(&args.file, host.as_ref())?;
    if let Some(why) = unread {
        loaded.warnings.items.insert(
            0,
            note(
                format!("not checked against this host ({why}): whether listen addresses are assigned here, local services refused sources would reach, and the FORWARD rules flows on the redirect path skip"),
                Some("run `forwarder check` on the host the file is for".into()),
            ),
        );
    }
    if !args.offline {
        // Host facts the file cannot know: the SNAT ports against this
        // host's ephemeral range (issue 11).
        for w in crate::snat_ports::warnings(&loaded.rules.global.snat_ports) {
            loaded.warnings.items.push(Diagnostic {
                severity: Severity::Warning,
                ..note(
                    w,
                    Some("set [global] snat_ports below 32768 (the default)".into()),
                )
            });
        }
    }
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u32);
    let memory = rules::memory::estimate(loaded.rules.global.conntrack_max, cpus);
    if !args.offline {
        if let Some((message, help)) = super::check_table::small_table_note(
            memory.conntrack_max,
            super::check_table::netfilter_table(),
            rules::memory::bytes_per_flow(cpus),
        ) {
            loaded.warnings.items.push(note(message, Some(help)));
        }
    }
    if args.json {
        exit::print_json(&check_json(&loaded, &memory));
    } else {
        print!("{}", report::check_report(&loaded, Some(&memory)));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_json(loaded: &Loaded, memory: &rules::memory::MemoryEstimate) -> Value {
    let diags = exit::diagnostics_json(&loaded.warnings);
    let of = |sev: &str| -> Vec<&Value> { diags.iter().filter(|d| d["severity"] == sev).collect() };
    let forwards: Vec<Value> = loaded
        .rules
        .forwards
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "description": f.description,
                "in": f.iface,
                "listen": f.listen.to_string(),
                "proto": f.proto.as_str(),
                "ports": f.ports.to_string(),
                "to": f.target.to_string(),
                "snat": f.snat.to_string(),
                "allow": f.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "mss_clamp": f.mss_clamp.to_string(),
                "path": f.path.as_str(),
                "reject": f.reject.as_str(),
                "nodes": f.nodes,
            })
        })
        .collect();
    json!({
        "file": loaded.warnings.file,
        "valid": true,
        "forwards": forwards,
        "warnings": of("warning"),
        "notes": of("note"),
        "memory": {
            "total_bytes": memory.total(),
            "cpus": memory.cpus,
            "conntrack_max": memory.conntrack_max,
            "bytes_per_flow": rules::memory::bytes_per_flow(memory.cpus),
            "maps": memory.maps.iter().map(|m| json!({
                "name": m.name,
                "entries": m.entries,
                "bytes_per_entry": m.per_entry,
                "bytes": m.bytes,
                "how": m.how,
            })).collect::<Vec<_>>(),
        },
    })
}

pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let loaded = load(&args.file, None)?;
    let mut iface_addrs: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (name, addr) in args.iface_addr {
        iface_addrs.entry(name).or_default().push(addr);
    }
    let mut resolved: BTreeMap<String, Ipv4Addr> = args.resolve.into_iter().collect();
    if args.lookup {
        for (name, line) in lookup_names(&loaded.rules, &resolved)? {
            // With --json, stdout is the JSON document alone.
            if args.json {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            if let Some(a) = name {
                resolved.insert(a.0, a.1);
            }
        }
    }
    let mut query = ex::Query {
        iface: args.iface,
        from: args.from,
        to: args.to,
        proto: match args.proto {
            ProtoArg::Tcp => L4::Tcp,
            ProtoArg::Udp => L4::Udp,
        },
        iface_addrs,
        resolved,
        host_notes: BTreeMap::new(),
    };
    let mut explanation = ex::explain(&loaded.rules, &query);
    if args.lookup {
        // The matched forward's target, as this host's tables see it now;
        // asked again with what they say.
        if let ex::Explanation::Translated { rule, original, .. } = &explanation {
            let forward = loaded.rules.forward(rule);
            if let (Some(f), ex::Endpoint::Known(t)) = (forward, &original.after.dst) {
                if let Some(note) = explain_host::dead_next_hop(f, t.ip())? {
                    query.host_notes.insert(t.ip(), note);
                    explanation = ex::explain(&loaded.rules, &query);
                }
            }
        }
    }
    if args.json {
        exit::print_json(&explain_json(&query, &explanation));
    } else {
        print!("{}", ex::render(&loaded.rules, &query, &explanation));
    }
    Ok(match explanation {
        ex::Explanation::Translated { .. } => ExitCode::SUCCESS,
        ex::Explanation::Refused { .. } | ex::Explanation::NoMatch { .. } => {
            ExitCode::from(exit::FAILURE)
        }
    })
}

fn explain_json(q: &ex::Query, e: &ex::Explanation) -> Value {
    let rewrite = |r: &ex::Rewrite| {
        json!({
            "before": {"src": r.before.src.to_string(), "dst": r.before.dst.to_string()},
            "after": {"src": r.after.src.to_string(), "dst": r.after.dst.to_string()},
        })
    };
    let packet = json!({
        "in": q.iface,
        "proto": q.proto.as_str(),
        "from": q.from.to_string(),
        "to": q.to.to_string(),
    });
    match e {
        ex::Explanation::Translated {
            rule,
            original,
            reply,
            notes,
        } => json!({
            "packet": packet,
            "verdict": "forwarded",
            "forward": rule,
            "original": rewrite(original),
            "reply": rewrite(reply),
            "notes": notes,
        }),
        ex::Explanation::Refused { rule, reason } => json!({
            "packet": packet,
            "verdict": "refused",
            "forward": rule,
            "reason": reason,
        }),
        ex::Explanation::NoMatch { reasons } => json!({
            "packet": packet,
            "verdict": "no_match",
            "reasons": reasons,
        }),
    }
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
