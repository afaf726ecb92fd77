//! `forwarder import`: files, standard input or the running system to a
//! rules file. All translation is in `rules::import`; this module reads
//! inputs and, for `--from-running`, asks the live system (read-only:
//! `iptables-save`, `nft -j list ruleset`, `ip route get`, `/proc`).
use std::{
    io::Read,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use rules::import::{self, HostView, Input, LiveHost, Options, Source};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SourceArg {
    Iptables,
    Nft,
    Ufw,
    Socat,
}

#[derive(clap::Args, Debug)]
#[command(after_help = IMPORT_EXAMPLES)]
pub struct ImportArgs {
    /// What to import: iptables (iptables-save, `iptables -S`, scripts,
    /// /etc/network/interfaces), nft (`nft -j list ruleset` or the text
    /// form), ufw (`ufw status`, user.rules, `ufw ...` lines) or socat
    /// (units, scripts). Files of any of these kinds are recognised
    /// whichever is named.
    #[arg(value_enum)]
    pub source: Option<SourceArg>,
    /// Files to read; none or `-` reads standard input.
    pub files: Vec<PathBuf>,
    /// Read the live rules instead: iptables-save (and iptables-legacy-save
    /// when it says legacy tables exist), ip6tables-save, `nft -j list
    /// ruleset` and running socat processes; routes decide which forwards a
    /// `-o IFACE` MASQUERADE applies to.
    #[arg(long)]
    pub from_running: bool,
    /// Interface for rules and listeners that name none (DNAT without -i,
    /// socat, which binds to addresses).
    #[arg(long = "in", value_name = "IFACE")]
    pub iface: Option<String>,
    /// An interface's address and network (repeatable), e.g.
    /// vmbr1=192.168.100.1/24: which forwards leave by vmbr1 (for `-o vmbr1`
    /// SNAT rules) and which interface owns a socat bind address. Read
    /// from /etc/network/interfaces when that file is imported.
    #[arg(long = "iface-net", value_name = "IFACE=ADDR/LEN", value_parser = parse_iface_net)]
    pub iface_net: Vec<(String, IpNet)>,
    /// UFW rules (`ufw status` output, user.rules, a script of `ufw`
    /// lines) to turn into allow-lists of the imported forwards.
    #[arg(long, value_name = "FILE")]
    pub ufw: Vec<PathBuf>,
    /// With `import ufw`: the rules file to add the allow-lists to; the
    /// patched file is printed.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Print one JSON object instead: the rules file as text, the number of
    /// forwards, and every line not translated (errors are JSON too).
    #[arg(long)]
    pub json: bool,
}

const IMPORT_EXAMPLES: &str = "Examples:
  forwarder import --from-running > rules.toml
  forwarder import iptables /etc/network/interfaces > rules.toml
  iptables-save | forwarder import iptables > rules.toml
  iptables -t nat -S | forwarder import iptables --in vmbr0
  forwarder import nft /etc/nftables.conf
  forwarder import socat /etc/systemd/system/*-proxy.service --in tailscale0 --ufw ufw-status.txt
  forwarder import ufw ufw-status.txt --rules /etc/forwarder/rules.toml

The rules file goes to stdout; every line that was not translated is listed on
stderr and at the end of the file with its file:line and why.

Exit status: 0 everything was translated; 1 something was left out, or nothing
was translated at all (the file is still printed).";

fn parse_iface_net(s: &str) -> Result<(String, IpNet), String> {
    let (name, net) = s.split_once('=').ok_or("expected IFACE=ADDR/LEN")?;
    let net: IpNet = net
        .parse()
        .map_err(|_| format!("`{net}` is not ADDR/LEN"))?;
    Ok((name.to_owned(), net))
}

fn read_input(path: &Path) -> Result<Input> {
    if path == Path::new("-") {
        return read_stdin();
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(Input {
        name: path.display().to_string(),
        text,
    })
}

fn read_stdin() -> Result<Input> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read standard input")?;
    Ok(Input {
        name: String::new(),
        text,
    })
}

pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let source = match (args.source, args.from_running) {
        (Some(s), _) => match s {
            SourceArg::Iptables => Source::Iptables,
            SourceArg::Nft => Source::Nft,
            SourceArg::Ufw => Source::Ufw,
            SourceArg::Socat => Source::Socat,
        },
        (None, true) => Source::Iptables,
        (None, false) => bail!(
            "say what to import (iptables, nft, ufw, socat) or use --from-running; see --help"
        ),
    };
    let mut inputs = if args.from_running {
        if !args.files.is_empty() {
            bail!("--from-running reads the live system; give files without it");
        }
        running_inputs()?
    } else if args.files.is_empty() {
        vec![read_stdin()?]
    } else {
        args.files
            .iter()
            .map(|p| read_input(p))
            .collect::<Result<Vec<_>>>()?
    };
    let ufw = args
        .ufw
        .iter()
        .map(|p| read_input(p))
        .collect::<Result<Vec<_>>>()?;
    if let (Source::Ufw, Some(rules_path)) = (source, &args.rules) {
        let text = std::fs::read_to_string(rules_path)
            .with_context(|| format!("{}: cannot read", rules_path.display()))?;
        inputs.extend(ufw);
        return match import::ufw::patch(&rules_path.display().to_string(), &text, &inputs) {
            Ok(imported) => Ok(finish(&imported, false, args.json)),
            Err(diags) => Err(super::exit::InvalidRules(diags).into()),
        };
    }
    if source == Source::Ufw {
        bail!("`import ufw` adds allow-lists to forwards: give the rules file with --rules FILE, or pass the UFW rules to a forward import with --ufw FILE");
    }
    inputs.extend(ufw);
    let live = Live;
    let opts = Options {
        source,
        host: HostView {
            iface_nets: args.iface_net,
            default_iface: args.iface,
            live: args.from_running.then_some(&live as &dyn LiveHost),
        },
        from_running: args.from_running,
    };
    let imported = import::import(&inputs, &opts);
    Ok(finish(&imported, true, args.json))
}

/// Prints the file and the report (or one JSON object); the exit code: 1
/// when something was left out or nothing at all was translated.
fn finish(imported: &import::Imported, validate: bool, json: bool) -> ExitCode {
    let mut code = imported.exit_code();
    let nothing = imported.rules.forwards.is_empty();
    if nothing {
        code = 1;
    }
    let problems = if validate {
        match imported.validate("<generated>") {
            Ok(loaded) => Ok(loaded.warnings),
            Err(diags) => {
                code = 1;
                Err(diags)
            }
        }
    } else {
        Ok(rules::Diagnostics::default())
    };
    if json {
        let entries: Vec<serde_json::Value> = imported
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "kind": match e.kind {
                        import::Kind::Left => "not_translated",
                        import::Kind::Kept => "stays_in_firewall",
                        import::Kind::Note => "note",
                    },
                    "source": e.origin.source,
                    "line": e.origin.line,
                    "text": e.origin.text,
                    "reason": e.reason,
                })
            })
            .collect();
        let (warnings, errors) = match &problems {
            Ok(w) => (super::exit::diagnostics_json(w), Vec::new()),
            Err(d) => (Vec::new(), super::exit::diagnostics_json(d)),
        };
        super::exit::print_json(&serde_json::json!({
            "rules": imported.toml,
            "forwards": imported.rules.forwards.len(),
            "entries": entries,
            "warnings": warnings,
            "errors": errors,
            "exit_code": code,
        }));
        return ExitCode::from(code);
    }
    print!("{}", imported.toml);
    let report = imported.report();
    match problems {
        Ok(w) if !w.is_empty() => eprintln!("{w}"),
        Ok(_) => {}
        Err(diags) => eprintln!("the generated rules need editing before they load:\n{diags}"),
    }
    eprint!("{report}");
    if nothing {
        eprintln!("forwarder import: nothing was translated into a forward (exit 1)");
    }
    ExitCode::from(code)
}

/// Output of a read-only command, or `None` when it is not installed.
pub(crate) fn capture(args: &[&str]) -> Option<(String, String)> {
    let out = Command::new(args[0]).args(&args[1..]).output().ok()?;
    Some((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The live rules and socat processes, each as an input named after
/// where it came from.
pub fn running_inputs() -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    if let Some((out, err)) = capture(&["iptables-save"]) {
        // The nf_tables backend warns on stderr when legacy tables exist;
        // read them too.
        let legacy = err.contains("iptables-legacy tables present");
        inputs.push(Input {
            name: "iptables-save".into(),
            text: out,
        });
        if legacy {
            if let Some((out, _)) = capture(&["iptables-legacy-save"]) {
                inputs.push(Input {
                    name: "iptables-legacy-save".into(),
                    text: out,
                });
            }
        }
    }
    if let Some((out, _)) = capture(&["ip6tables-save"]) {
        inputs.push(Input {
            name: "ip6tables-save".into(),
            text: out,
        });
    }
    if let Some((out, _)) = capture(&["nft", "-j", "list", "ruleset"]) {
        if out.trim_start().starts_with('{') {
            inputs.push(Input {
                name: "nft -j list ruleset".into(),
                text: out,
            });
        }
    }
    for (pid, cmdline) in socat_processes() {
        inputs.push(Input {
            name: format!("pid {pid}"),
            text: format!("{cmdline}\n"),
        });
    }
    if inputs.is_empty() {
        bail!("none of iptables-save, ip6tables-save, nft could be run, and no socat runs");
    }
    Ok(inputs)
}

/// Running socat processes of this network namespace (a socat elsewhere
/// listens on other interfaces): (pid, command line, shell-quoted).
pub fn socat_processes() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let own_ns = std::fs::read_link("/proc/self/ns/net").ok();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_link(e.path().join("ns/net")).ok() != own_ns {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .first()
            .is_some_and(|a| a.rsplit('/').next() == Some("socat"))
        {
            let quoted: Vec<String> = args
                .iter()
                .map(|a| {
                    shlex::try_quote(a)
                        .map(|q| q.into_owned())
                        .unwrap_or_else(|_| a.clone())
                })
                .collect();
            out.push((pid, quoted.join(" ")));
        }
    }
    out.sort();
    out
}

/// Routes and addresses of the running system, from iproute2's JSON.
#[derive(Default)]
struct Live;

impl LiveHost for Live {
    fn route(&self, addr: IpAddr) -> Option<String> {
        let (out, _) = capture(&["ip", "-j", "route", "get", &addr.to_string()])?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.get(0)?.get("dev")?.as_str().map(str::to_owned)
    }
    fn owner(&self, addr: IpAddr) -> Option<String> {
        let (out, _) = capture(&["ip", "-j", "addr", "show"])?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.as_array()?.iter().find_map(|link| {
            let has = link["addr_info"]
                .as_array()?
                .iter()
                .any(|a| a["local"].as_str() == Some(&addr.to_string()));
            has.then(|| link["ifname"].as_str().map(str::to_owned))
                .flatten()
        })
    }
}
