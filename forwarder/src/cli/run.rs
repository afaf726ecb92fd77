//! `forwarder run`: the daemon.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    daemon::{events, load_rules, Daemon},
    dataplane::{self, bpffs, Dataplane, LoadOptions},
    observe::{metrics, running, status},
};
use anyhow::Result;
use tracing::{info, warn};

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

/// The environment variable that makes every interface use legacy TC
/// attachment even where the kernel has TCX (a test and operations knob:
/// the e2e suite runs with it to cover the mode kernels before 6.6 get).
pub const FORCE_ATTACH_ENV: &str = "FORWARDER_FORCE_ATTACH";

/// Why every interface gets legacy TC, as far as FORCE_ATTACH_ENV says.
fn tc_legacy_reason() -> Result<Option<&'static str>> {
    match std::env::var(FORCE_ATTACH_ENV).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("tc-legacy") => Ok(Some("FORWARDER_FORCE_ATTACH=tc-legacy")),
        Ok(other) => anyhow::bail!(
            "{FORCE_ATTACH_ENV}={other:?}: the only value is \"tc-legacy\" (unset it for the \
             automatic choice)"
        ),
    }
}

/// The environment variable that leaves the IPv6 path out (`off`): what a
/// kernel whose verifier rejects `fwd_ingress6` gets, for operations (IPv6
/// untouched by the forwarder) and the e2e test of that degraded mode.
pub const FORCE_IPV6_ENV: &str = "FORWARDER_FORCE_IPV6";

/// Why the IPv6 path is to stay out, as far as FORCE_IPV6_ENV says.
fn ipv6_off_reason() -> Result<Option<&'static str>> {
    match std::env::var(FORCE_IPV6_ENV).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("off") => Ok(Some("FORWARDER_FORCE_IPV6=off")),
        Ok(other) => anyhow::bail!(
            "{FORCE_IPV6_ENV}={other:?}: the only value is \"off\" (unset it to load the IPv6 \
             path)"
        ),
    }
}

/// Asks the kernel for everything the forwarder needs (`forwarder doctor`
/// without the scratch-namespace part) and refuses to start, naming what is
/// missing, when something is; what only takes something away is logged.
/// `Some(why)` when TC must be attached the legacy way (no TCX).
/// Also the `FWD_KERNEL_FEATURES` word the programs load with (what the
/// kernel has, minus FORWARDER_FORCE_FALLBACK).
fn kernel_fit() -> Result<(Option<&'static str>, u32)> {
    let found = crate::probe::probe(&crate::probe::ProbeOptions::default());
    if let Some(refusal) = found.refusal() {
        anyhow::bail!("{refusal}");
    }
    for c in found.degraded() {
        warn!("{}", c.advice);
    }
    let word = found.features.kernel_features;
    for what in crate::probe::fallback::describe(word) {
        info!("kernel programs loaded with a fallback: {what}");
    }
    let legacy = (!found.features.tcx).then_some("the kernel has no TCX (Linux 6.6)");
    Ok((legacy, word))
}

pub fn run(pin_dir: &Path, run_dir: &Path, args: RunArgs) -> Result<ExitCode> {
    // The daemon must not die of a closed pipe (a metrics client, a
    // journald restart): writes fail with EPIPE instead (see `cli::main`).
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
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
    let tc_legacy = tc_legacy_reason()?;
    let ipv6_off = ipv6_off_reason()?;
    // Held until the process ends: `reload`, `down` and a second `run`
    // find this daemon by it, not by a pid that may have been recycled.
    let _lock = running::DaemonLock::take(run_dir)?;
    let (no_tcx, kernel_features) = kernel_fit()?;
    let tc_legacy = tc_legacy.or(no_tcx);
    bpffs::ensure_pin_dir(pin_dir)?;
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(pin_dir),
        conntrack_max: loaded.rules.global.conntrack_max,
        log_level: kernel_log_level(&level),
        kernel_features,
        // A reload that adds the first IPv6 forward loads it then
        // (`Dataplane::ensure_ipv6`).
        ipv6: loaded.rules.forwards.iter().any(rules::needs_ipv6),
        ipv6_off,
    })?;
    dp.tc_legacy = tc_legacy;
    if let Some(why) = tc_legacy {
        info!("TC programs are attached the legacy way (clsact + cls_bpf): {why}");
    }
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
            tokio::spawn(events::forward_kernel_log(log));
        }
        let metrics = match metrics_addr {
            Some(addr) => Some(metrics::serve(addr, pin_dir.to_path_buf(), run_dir.to_path_buf()).await?),
            None => None,
        };
        if let Some(m) = &metrics {
            d.metrics = Some(m.addr.to_string());
            d.publish();
        }
        crate::notify::ready(d.last_load());
        events::serve(&mut d, !args.no_watch).await?;
        crate::notify::stopping();
        if teardown {
            info!("stopping: removing programs, links and pins");
            d.dp.detach_all()?;
            d.remove_nat64_dev().await?;
            drop(d);
            let removed = dataplane::teardown(pin_dir)?;
            info!(removed = removed.len(), "torn down");
        } else {
            info!("stopping: programs stay attached and keep forwarding; the next daemon adopts them (`forwarder down` removes them)");
            d.dp.leave_running();
        }
        let _ = std::fs::remove_file(status::status_path(run_dir));
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
