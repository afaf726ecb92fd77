//! `forwarder run`: the daemon.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use crate::{
    bpffs,
    daemon::{load_rules, Daemon},
    dataplane::{self, Dataplane, LoadOptions},
    metrics, netlink, watch,
};
use anyhow::{Context, Result};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The rules file (TOML; see docs/rules.md). Edits are applied live.
    #[arg(long, short = 'r', value_name = "FILE")]
    rules: PathBuf,
    /// On SIGTERM/SIGINT remove every program, link and pin (like
    /// `forwarder down`) instead of leaving the dataplane forwarding for
    /// the next daemon to adopt.
    #[arg(long)]
    teardown_on_exit: bool,
    /// Do not watch the rules file; apply edits only on SIGHUP or
    /// `forwarder reload`.
    #[arg(long)]
    no_watch: bool,
    /// Log level (error, warn, info, debug, trace); overrides the rules file.
    #[arg(long, env = "FORWARDER_LOG")]
    log_level: Option<String>,
    /// This node's name for `nodes = [...]` in the rules file (default: the
    /// hostname). The Kubernetes DaemonSet passes the node name.
    #[arg(long, env = "FORWARDER_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
}

/// aya-log's numbering (aya_log_common::Level): 1 error ... 5 trace.
fn kernel_log_level(level: &str) -> u8 {
    match level.split(',').next().unwrap_or("info").trim() {
        "error" => 1,
        "warn" => 2,
        "info" => 3,
        "debug" => 4,
        "trace" => 5,
        _ => 3,
    }
}

pub fn run(pin_dir: &Path, run_dir: &Path, args: RunArgs) -> Result<ExitCode> {
    crate::node::init(args.node_name.clone());
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
    if let Some(pid) = crate::state::running_pid(run_dir) {
        if pid != std::process::id() {
            anyhow::bail!(
                "another forwarder daemon (pid {pid}) runs with run directory {}",
                run_dir.display()
            );
        }
    }
    bpffs::ensure_pin_dir(pin_dir)?;
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(pin_dir),
        conntrack_max: loaded.rules.global.conntrack_max,
        log_level: kernel_log_level(&level),
    })?;
    if dp.adopted.maps > 0 {
        info!(pin_dir = %pin_dir.display(), maps = dp.adopted.maps, "adopting the pinned dataplane: established flows continue");
    } else {
        info!(pin_dir = %pin_dir.display(), "dataplane loaded");
    }
    if let Some(cap) = dp.adopted.flows_capacity_kept {
        warn!(
            "the pinned flow table holds {} flows, conntrack_max asks for {}; it keeps its size \
             until `forwarder down` (resizing would drop established flows)",
            cap / 2,
            loaded.rules.global.conntrack_max
        );
    }
    let kernel_log = aya_log::EbpfLogger::init(&mut dp.ebpf)
        .map_err(|e| warn!("kernel log records unavailable: {e}"))
        .ok();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let teardown = args.teardown_on_exit;
    rt.block_on(async move {
        let metrics_addr = loaded.rules.global.metrics;
        let mut d = Daemon::new(dp, args.rules.clone(), run_dir.to_path_buf(), loaded)?;
        d.start().await?;
        if let Some(log) = kernel_log {
            tokio::spawn(forward_kernel_log(log));
        }
        let metrics = match metrics_addr {
            Some(addr) => Some(metrics::serve(addr, pin_dir.to_path_buf(), run_dir.to_path_buf()).await?),
            None => None,
        };
        if let Some(m) = &metrics {
            d.metrics = Some(m.addr.to_string());
            d.write_state()?;
        }
        serve(&mut d, !args.no_watch).await?;
        if teardown {
            info!("stopping: removing programs, links and pins");
            d.dp.detach_all()?;
            drop(d);
            let removed = dataplane::teardown(pin_dir)?;
            info!(removed = removed.len(), "torn down");
        } else {
            info!("stopping: programs stay attached and keep forwarding; the next daemon adopts them (`forwarder down` removes them)");
            d.dp.leave_running();
        }
        let _ = std::fs::remove_file(crate::state::status_path(run_dir));
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn forward_kernel_log(log: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring-buffer map fd, which stays open and
    // the same for as long as the logger (moved into the AsyncFd) lives.
    let Ok(mut fd) = (unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(log, tokio::io::Interest::READABLE)
    }) else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// Debounce for rules-file events: editors write in several steps.
const FILE_SETTLE: Duration = Duration::from_millis(250);
/// Debounce for netlink events: an interface coming up brings a burst of
/// link, address and route messages; reconcile once they settle, well
/// within a second.
const NETLINK_SETTLE: Duration = Duration::from_millis(100);

/// The event loop: signals, file changes, netlink events, the sweeper.
async fn serve(d: &mut Daemon, watch_file: bool) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut sweep = tokio::time::interval(sweep_interval(&d.timeouts()));
    let (_watcher, mut file_events) = if watch_file {
        let (w, rx) = watch::rules_file(&d.rules_path, &d.loaded.rules.global)?;
        info!("rules file: {}", w.description);
        d.rules_watch = Some(w.description.clone());
        d.write_state()?;
        (Some(w), Some(rx))
    } else {
        (None, None)
    };
    let mut nl = netlink::watch()?;
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut file_due = far;
    let mut netlink_due = far;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); return Ok(()) }
            _ = int.recv() => { info!("SIGINT"); return Ok(()) }
            _ = hup.recv() => {
                info!("SIGHUP: reloading rules");
                if let Err(e) = d.reload("SIGHUP").await {
                    warn!("reload failed: {e:#}");
                }
                file_due = far;
                sweep = tokio::time::interval(sweep_interval(&d.timeouts()));
            }
            Some(()) = async { match file_events.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                file_due = Instant::now() + FILE_SETTLE;
            }
            _ = tokio::time::sleep_until(file_due) => {
                file_due = far;
                info!(file = %d.rules_path.display(), "rules file changed: reloading");
                if let Err(e) = d.reload("file changed").await {
                    warn!("reload failed: {e:#}");
                }
                sweep = tokio::time::interval(sweep_interval(&d.timeouts()));
            }
            Some(_) = nl.next() => {
                if netlink_due == far {
                    netlink_due = Instant::now() + NETLINK_SETTLE;
                }
            }
            _ = tokio::time::sleep_until(netlink_due) => {
                netlink_due = far;
                debug!("interfaces, addresses or routes changed: reconciling");
                match d.reconcile().await {
                    Ok(()) => d.write_state()?,
                    Err(e) => warn!("reconcile after a netlink event failed: {e:#}"),
                }
            }
            _ = sweep.tick() => {
                let t0 = Instant::now();
                match d.sweep() {
                    Ok(s) if s.expired + s.orphans > 0 => info!(flows = s.flows, expired = s.expired, orphans = s.orphans, "conntrack sweep"),
                    Ok(s) => debug!(flows = s.flows, "conntrack sweep"),
                    Err(e) => warn!("conntrack sweep failed: {e:#}"),
                }
                // A huge table takes a while to walk: keep the sweeper
                // under a tenth of a core by spacing sweeps out.
                let took = t0.elapsed();
                let want = sweep_interval(&d.timeouts()).max(took * 10);
                if want != sweep.period() {
                    sweep = tokio::time::interval_at(Instant::now() + want, want);
                }
            }
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
