//! Whether there is a pinned dataplane for `status`, `conntrack` and `diff`
//! to read, and the sentence to say when there is not.
//!
//! The one fact a reader gets wrong: "no daemon" is not "not running". The
//! pinned programs forward without a daemon (after `systemctl stop`, a
//! crash, an upgrade), so these commands read the pins whether or not a
//! daemon runs; only when nothing is pinned is there nothing to report
//! (exit 3), and a bpffs the caller may not read is a permission problem,
//! not an absent forwarder.
use std::{io::ErrorKind, path::Path};

use anyhow::{bail, Result};
use forwarder_common::MAP_FLOWS;

use super::exit::NotRunning;
use crate::observe::running;

/// Ok when the flow table is pinned under `pin_dir`; else why not, as
/// [`NotRunning`] (nothing pinned) or a plain error (no permission).
pub fn require(pin_dir: &Path, run_dir: Option<&Path>) -> Result<()> {
    let flows = pin_dir.join(MAP_FLOWS);
    match std::fs::symlink_metadata(&flows) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => bail!(
            "cannot read {}: permission denied (the pinned maps are root's: run as root)",
            pin_dir.display()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let daemon = run_dir.and_then(running::running_pid);
            Err(NotRunning(match daemon {
                Some(pid) => format!(
                    "the forwarder daemon (pid {pid}) runs, but nothing is pinned under {}: is \
                     it still loading, or does it use another --pin-dir?",
                    pin_dir.display()
                ),
                None => format!(
                    "the forwarder is not running: no daemon{}, and no dataplane is pinned under \
                     {} (start it with `systemctl start forwarder` or `forwarder run --rules \
                     FILE`)",
                    run_dir.map_or(String::new(), |r| format!(
                        " holds {}",
                        running::lock_path(r).display()
                    )),
                    pin_dir.display()
                ),
            })
            .into())
        }
        Err(e) => bail!("cannot read {}: {e}", flows.display()),
    }
}
