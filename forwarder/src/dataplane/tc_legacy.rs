//! Legacy TC attachment, for kernels without TCX (before 6.6) and for
//! `attach = "tc-legacy"`: a clsact qdisc with one cls_bpf filter of ours
//! per hook, in direct-action mode.
//!
//! Our filters sit at a fixed priority and handle (`PRIORITY`, `HANDLE`)
//! and carry the program's name, which is how the next daemon finds them
//! and swaps its program in with a `tc filter replace` (RTM_NEWTFILTER
//! without NLM_F_CREATE on the same priority and handle: cls_bpf swaps the
//! program under RCU, so no packet meets an empty hook). Priority 65000
//! puts them after the filters other tools add (Cilium uses 1, tc's
//! automatic priorities count down from 49152), where TCX puts our links
//! too: last. Packets that are not ours leave with TC_ACT_UNSPEC, which
//! hands them to the next filter.
//!
//! The one fact a reader gets wrong: a filter is not a link. Nothing pins
//! it and nothing holds it: it stays until someone deletes it or the device
//! goes. So the pin directory keeps markers (empty directories under `tc/`:
//! bpffs takes no regular files) saying which hooks carry a filter of ours
//! and on which interfaces we created the clsact qdisc; `down` and the
//! sweep delete only those filters, only after checking the name, and a
//! clsact qdisc only when we created it and it is empty.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::programs::{
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions},
    SchedClassifier, TcAttachType,
};
use forwarder_common::PIN_TC_DIR;
use tracing::{debug, info, warn};

use super::tc_netlink::{self as nl, Hook};
use crate::ifaces::Iface;

/// Our filters' priority on both hooks.
pub const PRIORITY: u16 = 65000;
/// Our filters' handle (0xf0d: "fwd").
pub const HANDLE: u32 = 0xf0d;

/// A filter of ours on one hook of an interface.
#[derive(Debug)]
pub(super) struct OurFilter {
    ifindex: u32,
    hook: Hook,
    /// The program name the filter must carry to be ours.
    prog: &'static str,
    /// Its marker in the pin directory (`None` without one).
    marker: Option<PathBuf>,
}

impl From<Hook> for TcAttachType {
    fn from(h: Hook) -> TcAttachType {
        match h {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }
}

/// `tc/<ifindex>-<what>-<name>`, `what` one of "ingress", "egress" (a
/// filter of ours) or "clsact" (we created the qdisc).
fn marker(pin_dir: &Path, iface: &Iface, what: &str) -> PathBuf {
    pin_dir.join(PIN_TC_DIR).join(format!(
        "{}-{what}-{}",
        iface.ifindex,
        super::pin_names::escape(&iface.name)
    ))
}

/// The (ifindex, what, interface name) of a marker's file name.
fn parse_marker(file: &str) -> Option<(u32, &str, String)> {
    let mut parts = file.splitn(3, '-');
    let ifindex = parts.next()?.parse().ok()?;
    let what = parts.next()?;
    Some((ifindex, what, super::pin_names::unescape(parts.next()?)))
}

fn mark(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating marker {}", path.display()))
}

/// Whether `f`, found at our priority and handle, is a filter of ours.
fn ours(f: &nl::Filter, prog: &str) -> bool {
    f.kind == "bpf" && f.name.as_deref() == Some(prog)
}

/// What sits at our priority and handle on a hook.
fn at_our_slot(ifindex: u32, hook: Hook) -> Result<Option<nl::Filter>> {
    Ok(nl::filters(ifindex, hook)
        .with_context(|| format!("listing the {} filters of ifindex {ifindex}", hook.as_str()))?
        .into_iter()
        .find(|f| f.priority == PRIORITY && f.handle == HANDLE))
}

/// Makes sure the interface has a clsact qdisc, and marks it as ours when
/// this call created it. Created first, marked second: a crash in between
/// leaves a qdisc we will never delete, never a mark on someone else's.
fn ensure_clsact(iface: &Iface, pin_dir: Option<&Path>) -> Result<()> {
    let created = nl::add_clsact(iface.ifindex).with_context(|| {
        format!(
            "adding a clsact qdisc to {} (needs sch_ingress and cls_bpf)",
            iface.name
        )
    })?;
    if created {
        info!(iface = %iface.name, "created a clsact qdisc (tc-legacy)");
        if let Some(d) = pin_dir {
            mark(&marker(d, iface, "clsact"))?;
        }
        return Ok(());
    }
    match nl::ingress_slot_qdisc(iface.ifindex)?.as_deref() {
        Some("clsact") => Ok(()),
        Some(kind) => bail!(
            "{} has a {kind:?} qdisc where clsact goes (`tc qdisc show dev {} ingress`); \
             it has no egress hook, and it is not ours to replace",
            iface.name,
            iface.name
        ),
        None => bail!("{}: the clsact qdisc vanished while attaching", iface.name),
    }
}

/// Attaches `program` to one hook of `iface` as our filter: replaces the
/// program of the filter a previous daemon left (atomically), or adds it.
/// A filter of someone else at our priority and handle is an error.
pub(super) fn attach(
    program: &mut SchedClassifier,
    prog: &'static str,
    iface: &Iface,
    hook: Hook,
    pin_dir: Option<&Path>,
) -> Result<OurFilter> {
    ensure_clsact(iface, pin_dir)?;
    // Marked before the filter exists: a marker without a filter is
    // harmless (the name check finds nothing to delete), a filter without
    // a marker would outlive `down`.
    let marker = pin_dir.map(|d| marker(d, iface, hook.as_str()));
    if let Some(m) = &marker {
        mark(m)?;
    }
    let what = || {
        format!(
            "attaching {prog} to {} {} (tc-legacy: clsact + cls_bpf)",
            iface.name,
            hook.as_str()
        )
    };
    let id = match at_our_slot(iface.ifindex, hook)? {
        Some(f) if ours(&f, prog) => {
            let link = SchedClassifierLink::attached(
                &iface.name,
                hook.into(),
                PRIORITY,
                HANDLE.into(),
                None,
            )?;
            let id = program.attach_to_link(link).with_context(what)?;
            debug!(iface = %iface.name, hook = hook.as_str(), old_prog = ?f.prog_id, "replaced the program of our filter");
            id
        }
        Some(f) => bail!(
            "{}: a {} filter {} of someone else sits at priority {PRIORITY} handle \
             {HANDLE:#x}, the forwarder's place; it stays (`tc filter show dev {} {}`)",
            what(),
            f.kind,
            f.name
                .map_or("without a program name".into(), |n| format!("{n:?}")),
            iface.name,
            hook.as_str()
        ),
        None => program
            .attach_with_options(
                &iface.name,
                hook.into(),
                TcAttachOptions::Netlink(NlOptions {
                    priority: PRIORITY,
                    handle: HANDLE.into(),
                    classid: None,
                }),
            )
            .with_context(what)?,
    };
    // aya's handle deletes the filter when dropped (and the program drops
    // its handles when this process exits); the filter must outlive the
    // daemon, so let go of the handle without detaching. It holds no file
    // descriptor: forgetting it leaks nothing.
    std::mem::forget(program.take_link(id)?);
    Ok(OurFilter {
        ifindex: iface.ifindex,
        hook,
        prog,
        marker,
    })
}

/// Deletes our filter from its hook (only if what sits there is ours) and
/// its marker.
pub(super) fn release(f: OurFilter) {
    if let Err(e) = delete_ours(f.ifindex, f.hook, f.prog) {
        warn!(
            ifindex = f.ifindex,
            hook = f.hook.as_str(),
            "removing our filter: {e:#}"
        );
    }
    if let Some(m) = f.marker {
        let _ = std::fs::remove_dir(m);
    }
}

fn delete_ours(ifindex: u32, hook: Hook, prog: &str) -> Result<bool> {
    match at_our_slot(ifindex, hook)? {
        Some(f) if ours(&f, prog) => {
            nl::delete_filter(ifindex, hook, PRIORITY, HANDLE)
                .with_context(|| format!("deleting filter {PRIORITY}/{HANDLE:#x}"))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Removes the filter a previous daemon left on this hook, if a marker
/// says there is one (the interface moved to TCX).
pub(super) fn forget_hook(iface: &Iface, hook: Hook, prog: &'static str, pin_dir: &Path) {
    let m = marker(pin_dir, iface, hook.as_str());
    if m.exists() {
        release(OurFilter {
            ifindex: iface.ifindex,
            hook,
            prog,
            marker: Some(m),
        });
    }
}

/// Once no filter of ours is left on an interface (no hook marker):
/// deletes the clsact qdisc if we created it and nobody else's filter is on
/// it, and forgets that we did.
pub(super) fn release_clsact(iface: &Iface, pin_dir: &Path) {
    let m = marker(pin_dir, iface, "clsact");
    let ours_left = [Hook::Ingress, Hook::Egress]
        .iter()
        .any(|h| marker(pin_dir, iface, h.as_str()).exists());
    if m.exists() && !ours_left {
        remove_clsact_if_empty(iface.ifindex, &iface.name);
        let _ = std::fs::remove_dir(m);
    }
}

fn remove_clsact_if_empty(ifindex: u32, name: &str) {
    let empty = [Hook::Ingress, Hook::Egress]
        .into_iter()
        .all(|h| nl::filters(ifindex, h).is_ok_and(|f| f.is_empty()));
    if !empty {
        info!(
            iface = name,
            "keeping the clsact qdisc we created: other filters use it"
        );
        return;
    }
    match nl::delete_clsact(ifindex) {
        Ok(()) => info!(iface = name, "removed the clsact qdisc we created"),
        Err(e) => warn!(iface = name, "removing the clsact qdisc we created: {e}"),
    }
}

/// Removes the markers under `pin_dir/tc` of interfaces for which `keep`
/// says no, with what they stand for: our filters (checked by name), then
/// the clsact qdiscs we created if they are empty. Markers of devices that
/// no longer exist just go (their filters went with the device). Returns
/// the markers removed.
pub(super) fn remove_markers(
    pin_dir: &Path,
    keep: impl Fn(&str, u32) -> bool,
) -> Result<Vec<PathBuf>> {
    let dir = pin_dir.join(PIN_TC_DIR);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut filters = Vec::new();
    let mut qdiscs = Vec::new();
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let parsed = parse_marker(&file);
        if parsed.as_ref().is_some_and(|(i, _, n)| keep(n, *i)) {
            continue;
        }
        match parsed {
            Some((ifindex, "clsact", name)) => qdiscs.push((e.path(), ifindex, name)),
            Some((ifindex, what, _)) => filters.push((e.path(), ifindex, what.to_string())),
            None => filters.push((e.path(), 0, String::new())),
        }
    }
    let mut removed = Vec::new();
    for (path, ifindex, what) in filters {
        let hook = match what.as_str() {
            "ingress" => Some((Hook::Ingress, forwarder_common::PROG_INGRESS)),
            "egress" => Some((Hook::Egress, forwarder_common::PROG_EGRESS)),
            _ => None,
        };
        if let Some((hook, prog)) = hook.filter(|_| crate::ifaces::name_of(ifindex).is_some()) {
            delete_ours(ifindex, hook, prog).with_context(|| {
                format!("removing our {} filter (ifindex {ifindex})", hook.as_str())
            })?;
        }
        std::fs::remove_dir(&path).with_context(|| format!("removing {}", path.display()))?;
        removed.push(path);
    }
    for (path, ifindex, name) in qdiscs {
        if crate::ifaces::name_of(ifindex).is_some() {
            remove_clsact_if_empty(ifindex, &name);
        }
        std::fs::remove_dir(&path).with_context(|| format!("removing {}", path.display()))?;
        removed.push(path);
    }
    Ok(removed)
}

/// Everything tc-legacy left under `pin_dir` (for `down`): our filters,
/// the clsact qdiscs we created if empty, the markers and their directory.
pub fn teardown(pin_dir: &Path) -> Result<Vec<PathBuf>> {
    let removed = remove_markers(pin_dir, |_, _| false)?;
    let _ = std::fs::remove_dir(pin_dir.join(PIN_TC_DIR));
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_names_with_dots_and_dashes() {
        let iface = Iface {
            name: "vlan-eth0.100".into(),
            ifindex: 9,
            l3: false,
            mtu: 1500,
            kind: None,
            up: true,
        };
        let m = marker(Path::new("/p"), &iface, "clsact");
        let file = m.file_name().unwrap().to_str().unwrap();
        assert!(!file.contains('.'), "{file}");
        assert_eq!(
            parse_marker(file),
            Some((9, "clsact", "vlan-eth0.100".to_string()))
        );
        assert_eq!(parse_marker("x-ingress-eth0"), None);
    }
}
