//! The daemon's event loop: signals, rules-file changes, netlink events,
//! DNS lookups of target names (when one is due, and when one finishes)
//! and the sweeper's timer, each turned into a reload, a reconcile, a
//! lookup or a sweep of the `Daemon`.
//!
//! The one fact a reader gets wrong: events are debounced, not queued. A
//! burst of netlink messages (an interface coming up brings links,
//! addresses and routes) or of file writes (an editor saving) ends in one
//! reconcile once it settles, and since reconcile reads the facts whole,
//! nothing a message said is lost by skipping it.
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{facts, route_gen, sweeper, watch, Daemon};

pub async fn forward_kernel_log(log: aya_log::EbpfLogger<&'static dyn log::Log>) {
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

/// After a failed reconcile (a write that failed, a netlink error), the
/// first retry; each further failure doubles the wait, up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The event loop: signals, file changes, netlink events, the sweeper.
pub async fn serve(d: &mut Daemon, watch_file: bool) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut sweep = tokio::time::interval(sweeper::TICK);
    let (_watcher, mut file_events) = if watch_file {
        let (w, rx) = watch::rules_file(&d.rules_path, &d.loaded.rules.global)?;
        info!("rules file: {}", w.description);
        d.rules_watch = Some(w.description.clone());
        d.publish();
        (Some(w), Some(rx))
    } else {
        (None, None)
    };
    let mut nl = facts::watch()?;
    let mut route_events = route_gen::watch()?;
    // Whatever changed while no daemon listened.
    d.routes_changed();
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut file_due = far;
    let mut netlink_due = far;
    let mut retry = RETRY_FIRST;
    // After each reload or reconcile: a failed one is tried again (the
    // record says what the maps hold, so the retry converges from there).
    let schedule = |d: &Daemon, due: &mut Instant, retry: &mut Duration| {
        if d.failed() {
            *due = (*due).min(Instant::now() + *retry);
            *retry = (*retry * 2).min(RETRY_MAX);
        } else {
            *retry = RETRY_FIRST;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); return Ok(()) }
            _ = int.recv() => { info!("SIGINT"); return Ok(()) }
            _ = hup.recv() => {
                info!("SIGHUP: reloading rules");
                if let Err(e) = d.reload("SIGHUP").await {
                    warn!("reload failed: {e:#}");
                }
                schedule(d, &mut netlink_due, &mut retry);
                file_due = far;
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
                schedule(d, &mut netlink_due, &mut retry);
            }
            Some(()) = route_events.next() => d.routes_changed(),
            Some((msg, _)) = nl.next() => {
                if netlink_due == far && d.netlink_event_matters(&msg) {
                    netlink_due = Instant::now() + NETLINK_SETTLE;
                }
            }
            _ = tokio::time::sleep_until(netlink_due) => {
                netlink_due = far;
                debug!("interfaces, addresses, routes or target neighbours changed: reconciling");
                match d.reconcile().await {
                    Ok(()) => d.publish(),
                    Err(e) => warn!("reconcile failed (retrying in {retry:?}): {e:#}"),
                }
                schedule(d, &mut netlink_due, &mut retry);
            }
            _ = tokio::time::sleep_until(d.names.next_due().unwrap_or(far)) => {
                d.names.start_due();
            }
            done = d.names.next_done() => {
                if d.name_looked_up(done) {
                    // The listeners follow the new address now; an
                    // established flow keeps its translation.
                    netlink_due = netlink_due.min(Instant::now());
                }
            }
            _ = sweep.tick() => {
                // One bounded step per tick (`sweeper::STEP_ENTRIES`): the
                // sweeper's CPU does not grow with the table.
                match d.sweep() {
                    Ok(Some(s)) if s.expired + s.orphans > 0 => info!(flows = s.flows, expired = s.expired, orphans = s.orphans, "conntrack sweep"),
                    Ok(Some(s)) => debug!(flows = s.flows, "conntrack sweep"),
                    Ok(None) => {}
                    Err(e) => warn!("conntrack sweep failed: {e:#}"),
                }
            }
        }
    }
}
