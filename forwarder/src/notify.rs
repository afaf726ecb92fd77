//! The systemd readiness protocol (`Type=notify`, sd_notify(3)): READY=1
//! once the first load is applied, RELOADING=1 / READY=1 around every
//! reload, STATUS= with the last load's result, STOPPING=1 on the way out.
//!
//! The fact a reader gets wrong: READY=1 is sent after a *rejected* reload
//! too. Readiness means "serving the configuration in force", and a bad file
//! leaves the previous one forwarding; the rejection is in STATUS= (shown by
//! `systemctl status`) and in `forwarder reload`'s exit code. Without
//! NOTIFY_SOCKET (not under systemd) every call does nothing.
use tracing::debug;

use crate::observe::status::LoadResult;

/// READY=1 with the load's outcome as STATUS=: after the first load and
/// after every reload, applied or rejected.
pub fn ready(load: Option<&LoadResult>) {
    let status = load.map(status_line).unwrap_or_default();
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
}

/// RELOADING=1 with the CLOCK_MONOTONIC time systemd (253+) uses to match
/// it to the reload it asked for; READY=1 must follow (see `ready`).
pub fn reloading() {
    let mut states = vec![
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::Status("reloading the rules file"),
    ];
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => debug!("no CLOCK_MONOTONIC for MONOTONIC_USEC: {e}"),
    }
    send(&states);
}

/// STOPPING=1: the daemon is leaving (the dataplane may stay).
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// What `systemctl status` shows on its "Status:" line.
pub fn status_line(load: &LoadResult) -> String {
    if load.applied {
        format!("{} ({})", load.summary, load.trigger)
    } else {
        format!(
            "rules rejected ({}), previous configuration still in force: {}",
            load.trigger, load.summary
        )
    }
}

fn send(states: &[sd_notify::NotifyState]) {
    // A failure to notify is not a failure to forward: systemd times the
    // start out on its own if READY never arrives.
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(applied: bool, summary: &str) -> LoadResult {
        LoadResult {
            at_unix: 0,
            trigger: "SIGHUP".into(),
            applied,
            summary: summary.into(),
            ..Default::default()
        }
    }

    #[test]
    fn status_says_whether_the_file_was_applied() {
        assert_eq!(
            status_line(&load(true, "2 forwards, 2 listener entries")),
            "2 forwards, 2 listener entries (SIGHUP)"
        );
        let rejected = status_line(&load(false, "rules.toml:3:1: error: ..."));
        assert!(
            rejected.starts_with(
                "rules rejected (SIGHUP), previous configuration still in force: rules.toml:3:1"
            ),
            "{rejected}"
        );
    }
}
