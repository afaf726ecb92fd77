//! `forwarder migrate-check`: after switching to the forwarder, the
//! netfilter NAT rules and socat processes that still handle the forwards'
//! traffic. Read-only: it runs iptables-save, `nft -j list ruleset` and
//! reads /proc; the matching is `rules::import::migrate`.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use rules::import::{migrate, Input};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  forwarder migrate-check\n  forwarder migrate-check --rules /etc/forwarder/rules.toml\n\nExit status: 0 nothing else handles the forwards' traffic; 1 something does (listed), or the rules file is invalid."
)]
pub struct MigrateCheckArgs {
    /// The rules file the forwarder runs.
    #[arg(long, default_value = "/etc/forwarder/rules.toml")]
    pub rules: PathBuf,
    /// Machine-readable output (errors too).
    #[arg(long)]
    pub json: bool,
}

pub fn migrate_check(args: MigrateCheckArgs) -> Result<ExitCode> {
    let loaded = super::offline::load(&args.rules, None)?;
    let inputs: Vec<Input> = super::import::running_inputs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.name.starts_with("pid "))
        .collect();
    let mut findings = migrate::nat_rules(&loaded.rules, &inputs);
    findings.extend(migrate::socat_processes(
        &loaded.rules,
        &super::import::socat_processes(),
    ));
    if args.json {
        let list: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "source": f.origin.source,
                    "line": f.origin.line,
                    "text": f.origin.text,
                    "forward": f.forward,
                    "what": f.what,
                })
            })
            .collect();
        super::exit::print_json(&serde_json::json!({
            "forwards_checked": loaded.rules.forwards.len(),
            "findings": list,
        }));
        return Ok(ExitCode::from(u8::from(!findings.is_empty())));
    }
    for f in &findings {
        println!("{}", f.render());
    }
    println!(
        "forwarder migrate-check: {} forward(s) checked; {} rule(s) or process(es) still handle their traffic",
        loaded.rules.forwards.len(),
        findings.len()
    );
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
