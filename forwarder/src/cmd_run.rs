//! `forwarder run`: the daemon.
use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use forwarder::{
    bpffs,
    daemon::{load_rules, Daemon},
    dataplane::{Dataplane, LoadOptions},
};
use tracing::{debug, info, warn};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The rules file (TOML; see docs/rules.md).
    #[arg(long, short = 'r', value_name = "FILE")]
    rules: std::path::PathBuf,
    /// Keep the pinned maps when stopping (so counters survive a restart).
    #[arg(long)]
    keep_pins: bool,
    /// Log level (error, warn, info, debug, trace); overrides the rules file.
    #[arg(long, env = "FORWARDER_LOG")]
    log_level: Option<String>,
}

pub fn run(pin_dir: &Path, run_dir: &Path, args: RunArgs) -> Result<ExitCode> {
    // Refuse to start on a bad file, with the rules-file error text.
    let loaded = match load_rules(&args.rules) {
        Ok(l) => l,
        Err(text) => {
            eprintln!("{text}");
            eprintln!(
                "forwarder: not starting: {} has errors",
                args.rules.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let level = args
        .log_level
        .clone()
        .unwrap_or_else(|| loaded.rules.global.log_level.as_str().to_string());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&level))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if loaded.rules.global.log_format == rules::LogFormat::Json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    for w in loaded.warnings.warnings() {
        warn!("{}", w.render(&args.rules.display().to_string()));
    }
    anyhow::ensure!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() } == 0,
        "forwarder run needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for bpffs)"
    );
    bpffs::ensure_pin_dir(pin_dir)?;
    let dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(pin_dir),
        conntrack_max: loaded.rules.global.conntrack_max,
    })?;
    info!(pin_dir = %pin_dir.display(), "dataplane loaded");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut daemon = rt.block_on(async {
        let mut d = Daemon::new(dp, args.rules.clone(), run_dir.to_path_buf(), loaded)?;
        d.reconcile().await?;
        anyhow::Ok(d)
    })?;
    rt.block_on(serve(&mut daemon))?;

    info!("stopping: detaching programs");
    daemon.dp.detach_all()?;
    drop(daemon);
    if !args.keep_pins {
        remove_pins(pin_dir);
    }
    let _ = std::fs::remove_file(forwarder::state::status_path(run_dir));
    Ok(ExitCode::SUCCESS)
}

/// The event loop: signals and the conntrack sweeper.
async fn serve(d: &mut Daemon) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut sweep = tokio::time::interval(sweep_interval(&d.timeouts()));
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); return Ok(()) }
            _ = int.recv() => { info!("SIGINT"); return Ok(()) }
            _ = hup.recv() => {
                info!("SIGHUP: reloading rules");
                if let Err(e) = d.reload().await {
                    warn!("reload failed: {e:#}");
                }
                sweep = tokio::time::interval(sweep_interval(&d.timeouts()));
            }
            _ = sweep.tick() => match d.sweep() {
                Ok(s) if s.expired + s.orphans > 0 => info!(flows = s.flows, expired = s.expired, orphans = s.orphans, "conntrack sweep"),
                Ok(s) => debug!(flows = s.flows, "conntrack sweep"),
                Err(e) => warn!("conntrack sweep failed: {e:#}"),
            },
        }
    }
}

/// Often enough that the shortest timeout is honoured within about half of
/// itself, never more than once a second (each sweep walks the table).
fn sweep_interval(t: &rules::Timeouts) -> Duration {
    let shortest = [t.tcp_close, t.udp, t.icmp, t.tcp_syn_sent]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(10));
    (shortest / 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

fn remove_pins(pin_dir: &Path) {
    for name in forwarder::dataplane::PINNED_MAPS {
        let _ = std::fs::remove_file(pin_dir.join(name));
    }
    let _ = std::fs::remove_dir(pin_dir);
}
