//! `forwarder run`: the daemon.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use forwarder::{
    bpffs,
    dataplane::Dataplane,
    ifaces,
    state::{self, DaemonState, IfaceState},
};
use tracing::{info, warn};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Interfaces to attach to (counters only until rules name them).
    #[arg(long = "iface", value_name = "IFACE")]
    ifaces: Vec<String>,
    /// Keep the pinned maps when stopping (so counters survive a restart).
    #[arg(long)]
    keep_pins: bool,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, env = "FORWARDER_LOG", default_value = "info")]
    log_level: String,
}

pub fn run(pin_dir: &Path, run_dir: &Path, args: RunArgs) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "forwarder run needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for bpffs)"
    );
    bpffs::ensure_pin_dir(pin_dir)?;
    let mut dp = Dataplane::load(Some(pin_dir))?;
    info!(pin_dir = %pin_dir.display(), "dataplane loaded");

    let mut st = DaemonState {
        pid: std::process::id(),
        started_unix: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        rules_file: None,
        rules_error: None,
        interfaces: Vec::new(),
    };
    for (slot, name) in args.ifaces.iter().enumerate() {
        let entry = match ifaces::lookup(name).and_then(|i| {
            dp.attach(&i, slot as u32)?;
            Ok(i)
        }) {
            Ok(i) => {
                info!(iface = %name, ifindex = i.ifindex, l3 = i.l3, "attached (tcx ingress)");
                IfaceState {
                    name: name.clone(),
                    ifindex: Some(i.ifindex),
                    attach: "tcx".into(),
                    state: "attached".into(),
                }
            }
            Err(e) => {
                warn!(iface = %name, "not attached: {e:#}");
                IfaceState {
                    name: name.clone(),
                    ifindex: None,
                    attach: "none".into(),
                    state: format!("missing: {e:#}"),
                }
            }
        };
        st.interfaces.push(entry);
    }
    state::write(run_dir, &st)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(wait_for_stop())?;

    info!("stopping: detaching programs");
    dp.detach_all()?;
    drop(dp);
    if !args.keep_pins {
        remove_pins(pin_dir);
    }
    let _ = std::fs::remove_file(state::status_path(run_dir));
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    Ok(())
}

fn remove_pins(pin_dir: &Path) {
    for name in forwarder::dataplane::PINNED_MAPS {
        let p: PathBuf = pin_dir.join(name);
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir(pin_dir);
}
