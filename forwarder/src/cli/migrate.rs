//! `forwarder migrate-check`: after switching to the forwarder, the
//! netfilter NAT rules and socat processes that still handle the forwards'
//! traffic. Read-only: it runs iptables-save, `nft -j list ruleset` and
//! reads /proc; the matching is `rules::import::migrate`.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use rules::import::{migrate, Input};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  forwarder migrate-check\n  forwarder migrate-check --rules /etc/forwarder/rules.toml\n\nExit 0: nothing else handles the forwards' traffic; 1: something does (listed)."
)]
pub struct MigrateCheckArgs {
    /// The rules file the forwarder runs.
    #[arg(long, default_value = "/etc/forwarder/rules.toml")]
    pub rules: PathBuf,
}

pub fn migrate_check(args: MigrateCheckArgs) -> Result<ExitCode> {
    let loaded = match rules::load_file(&args.rules) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
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
