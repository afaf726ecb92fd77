//! The third stage of the daemon, and the only code that changes the
//! kernel: a plan's config, links (detach, attach, egress, XDP) and map
//! operations, in that order.
//!
//! The map operations are a transaction as far as maps allow: they run in
//! the order `rules::diff` gives (which never admits what both the old and
//! the new file refuse, and fits the maps), and when one fails the writes
//! made so far are undone in the same safe order and the maps re-read, so
//! the daemon's [`Record`] always equals what the kernel holds, whatever
//! happened. The one fact a reader gets wrong: a failed write does not mean
//! "nothing changed"; it means "rolled back", or, when the rollback failed
//! too, "the record says exactly which mix is in force", never a guess.
use anyhow::Result;
use aya::maps::MapError;
use rules::{MapOp, Update};
use tracing::{info, warn};

use super::{
    facts,
    plan::{IfacePlan, Plan, Record},
};
use crate::{
    dataplane::{Dataplane, Maps, TcMode},
    observe::status::IfaceReport,
};

/// Test seam: faults injected into map writes (feature
/// `fault-injection`). Without the feature it is empty and never fails.
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    pub inject: Vec<Fault>,
    /// Writes seen so far, and the keys the maps hold as far as the
    /// injected room faults are concerned.
    #[cfg(feature = "fault-injection")]
    writes: usize,
    #[cfg(feature = "fault-injection")]
    listeners: std::collections::BTreeSet<forwarder_common::ListenerKey>,
    #[cfg(feature = "fault-injection")]
    allow: std::collections::BTreeSet<rules::AllowLpmKey>,
}

/// One injected fault.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The `at`-th map write (from 0, counted over everything applied with
    /// these faults, rollbacks included) fails once with `errno`.
    Write { at: usize, errno: i32 },
    /// The allow-list trie holds only this many entries: inserts beyond
    /// fail with ENOSPC, as a full map does.
    AllowRoom(usize),
    /// The same for the listener map.
    ListenerRoom(usize),
}

#[cfg(feature = "fault-injection")]
impl Faults {
    pub fn new(inject: Vec<Fault>) -> Faults {
        Faults {
            inject,
            ..Default::default()
        }
    }

    /// A run of operations starts on maps holding `r`.
    fn begin(&mut self, r: &Record) {
        self.listeners = r.entries.listeners.keys().copied().collect();
        self.allow = r.entries.allow.keys().copied().collect();
    }

    /// Whether `op` is to fail now (and how); when not, it counts as done.
    fn check(&mut self, op: &MapOp) -> Result<()> {
        let n = self.writes;
        self.writes += 1;
        let errno = |e: i32, what: &'static str| {
            Err(anyhow::Error::new(std::io::Error::from_raw_os_error(e)).context(what))
        };
        if let Some(i) = self
            .inject
            .iter()
            .position(|f| matches!(f, Fault::Write { at, .. } if *at == n))
        {
            let Fault::Write { errno: e, .. } = self.inject.remove(i) else {
                unreachable!("matched above")
            };
            return errno(e, "injected write failure");
        }
        for f in &self.inject {
            match (f, op) {
                (Fault::AllowRoom(room), MapOp::AllowInsert(k))
                    if self.allow.len() >= *room && !self.allow.contains(k) =>
                {
                    return errno(libc::ENOSPC, "injected: allow-list map full");
                }
                (Fault::ListenerRoom(room), MapOp::ListenerWrite(k, _))
                    if self.listeners.len() >= *room && !self.listeners.contains(k) =>
                {
                    return errno(libc::ENOSPC, "injected: listener map full");
                }
                _ => {}
            }
        }
        match op {
            MapOp::AllowInsert(k) => {
                self.allow.insert(*k);
            }
            MapOp::AllowRemove(k) => {
                self.allow.remove(k);
            }
            MapOp::ListenerWrite(k, _) => {
                self.listeners.insert(*k);
            }
            MapOp::ListenerRemove(k) => {
                self.listeners.remove(k);
            }
            MapOp::NameRule { .. } | MapOp::UnnameRule { .. } => {}
        }
        Ok(())
    }
}

#[cfg(not(feature = "fault-injection"))]
impl Faults {
    fn begin(&mut self, _r: &Record) {}

    fn check(&mut self, _op: &MapOp) -> Result<()> {
        Ok(())
    }
}

/// A map transaction that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} failed: {cause:#}; {}", if *.rolled_back {
    "rolled back: the maps hold the previous configuration"
} else {
    "the rollback failed too: the maps hold a mix of both (re-read; the next reload or \
     interface change retries)"
})]
pub struct WriteFailed {
    /// The operation that failed, for the message.
    pub op: String,
    pub cause: anyhow::Error,
    /// The maps hold exactly the previous configuration again.
    pub rolled_back: bool,
}

/// What applying a plan did.
#[derive(Debug)]
pub struct Applied {
    /// The interfaces as attached (or why not).
    pub ifaces: Vec<IfaceReport>,
    /// Interfaces whose TC programs could not be attached, and why: the
    /// apply failed, whatever the maps say.
    pub attach_failed: Vec<String>,
    /// The map transaction.
    pub maps: Result<(), WriteFailed>,
}

fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// One map operation. Removing a key that is already gone is not an
/// error (the goal is its absence).
fn write(maps: &mut Maps, op: &MapOp) -> Result<()> {
    let gone = |r: Result<(), MapError>| match r {
        Err(e) if !not_found(&e) => Err(e),
        _ => Ok(()),
    };
    match op {
        MapOp::NameRule { id, name } => maps.name_rule(*id, name)?,
        MapOp::UnnameRule { id } => maps.unname_rule(*id)?,
        MapOp::AllowInsert(k) => maps.insert_allow(k)?,
        MapOp::AllowRemove(k) => gone(maps.remove_allow(k))?,
        MapOp::ListenerWrite(k, v) => maps.listeners.insert(k, v, 0)?,
        MapOp::ListenerRemove(k) => gone(maps.listeners.remove(k))?,
    }
    Ok(())
}

/// Runs `ops` on maps holding `from`; the failing op and why.
fn run(
    maps: &mut Maps,
    ops: &[MapOp],
    from: &Record,
    faults: &mut Faults,
) -> Result<(), (MapOp, anyhow::Error)> {
    faults.begin(from);
    for op in ops {
        if let Err(e) = faults.check(op).and_then(|()| write(maps, op)) {
            return Err((op.clone(), e));
        }
    }
    Ok(())
}

/// Writes `update` (from `record` to `target`); on failure undoes what was
/// written, and in every case leaves `record` equal to the maps.
pub fn write_maps(
    dp: &mut Dataplane,
    update: &Update,
    record: &mut Record,
    target: Record,
    faults: &mut Faults,
) -> Result<(), WriteFailed> {
    let (op, cause) = match run(&mut dp.maps, &update.ops, record, faults) {
        Ok(()) => {
            *record = target;
            return Ok(());
        }
        Err(failed) => failed,
    };
    warn!("map update failed at {op:?}: {cause:#}; rolling back");
    let old = record.clone();
    let back = facts::read_record(&dp.maps).and_then(|now| {
        let room = dp.maps.room()?;
        let undo = rules::diff::rollback(now.state(), old.state(), room)?;
        run(&mut dp.maps, &undo.ops, &now, faults)
            .map_err(|(op, e)| e.context(format!("undoing at {op:?}")))
    });
    if let Err(e) = &back {
        warn!("rollback failed: {e:#}");
    }
    let rolled_back = match facts::read_record(&dp.maps) {
        Ok(now) => {
            let same = now.same_maps(&old);
            *record = now;
            same
        }
        Err(e) => {
            warn!("re-reading the maps after a failed update: {e:#}");
            false
        }
    };
    Err(WriteFailed {
        op: describe(&op),
        cause,
        rolled_back,
    })
}

fn describe(op: &MapOp) -> String {
    match op {
        MapOp::NameRule { id, name } => format!("naming rule {name} (id {id})"),
        MapOp::UnnameRule { id } => format!("forgetting rule id {id}"),
        MapOp::AllowInsert(_) => "adding an allow-list entry".into(),
        MapOp::AllowRemove(_) => "removing an allow-list entry".into(),
        MapOp::ListenerWrite(..) => "writing a listener".into(),
        MapOp::ListenerRemove(_) => "removing a listener".into(),
    }
}

/// The config and the map transaction of `plan`, without touching links:
/// what the BPF_PROG_TEST_RUN harness needs (its interfaces are registered
/// by hand, not attached).
pub fn apply_maps(
    dp: &mut Dataplane,
    plan: &Plan,
    record: &mut Record,
    faults: &mut Faults,
) -> Result<()> {
    dp.maps.set_config(plan.config)?;
    dp.maps.set_ct_config(plan.ct_config)?;
    write_route_hints(&mut dp.maps, &plan.route_hints)?;
    write_maps(dp, &plan.update, record, plan.record(), faults)?;
    Ok(())
}

/// Applies a whole plan: config, links, then the map transaction (whose
/// failure is reported in `Applied::maps`, after the links' reports).
pub fn apply(
    dp: &mut Dataplane,
    plan: &Plan,
    record: &mut Record,
    faults: &mut Faults,
) -> Result<Applied> {
    dp.maps.set_config(plan.config)?;
    dp.maps.set_ct_config(plan.ct_config)?;
    for d in &plan.detach {
        info!(iface = %d.iface.name, ifindex = d.iface.ifindex, "detaching ({})", d.why);
        dp.detach(d.iface.ifindex)?;
    }
    let (ifaces, failed): (Vec<_>, Vec<_>) = plan.ifaces.iter().map(|p| apply_iface(dp, p)).unzip();
    let live: std::collections::BTreeSet<(String, u32)> =
        dp.attached().map(|a| (a.name.clone(), a.ifindex)).collect();
    let removed = dp.sweep_stale(|n, i| live.contains(&(n.to_string(), i)))?;
    if !removed.is_empty() {
        info!("removed stale link pins: {}", removed.join(", "));
    }
    // After the links: the egress program that translates the stack
    // path's replies is on before a flow to a dead neighbour takes it.
    write_neighbours(&mut dp.maps, &plan.neigh)?;
    // Before the listeners: a new target's first packet finds its route
    // facts on a kernel that needs them.
    write_route_hints(&mut dp.maps, &plan.route_hints)?;
    let maps = write_maps(dp, &plan.update, record, plan.record(), faults);
    Ok(Applied {
        ifaces,
        attach_failed: failed.into_iter().flatten().collect(),
        maps,
    })
}

/// Brings `FWD_NEIGH` to the plan's dead neighbours, saying each change.
/// Read back first, not taken from the facts: a write that failed half-way
/// last time is found and completed.
fn write_neighbours(
    maps: &mut Maps,
    want: &std::collections::BTreeMap<std::net::Ipv4Addr, forwarder_common::NeighFlags>,
) -> Result<()> {
    use forwarder_common::NeighFlags;
    let have = maps.neighbours()?;
    for addr in have.keys().filter(|a| !want.contains_key(a)) {
        info!(neighbour = %addr, "next hop answers again (or is no target's next hop any more): new flows are redirected to it");
        maps.set_neighbour(*addr, None)?;
    }
    for (addr, flags) in want {
        if have.get(addr) == Some(flags) {
            continue;
        }
        if flags.contains(NeighFlags::UNREACHABLE) {
            warn!(neighbour = %addr, "next hop does not answer ARP (FAILED; an on-link target, a target's gateway, or a target behind it): flows keeping the client's address go through the stack, others are answered ICMP host unreachable");
        } else {
            info!(neighbour = %addr, "next hop left the neighbour table after failing: flows keeping the client's address stay on the stack path, others probe it again");
        }
        maps.set_neighbour(*addr, Some(*flags))?;
    }
    Ok(())
}

/// Brings `FWD_ROUTE_HINTS` to the plan's route facts (read back first,
/// as `write_neighbours`).
fn write_route_hints(
    maps: &mut Maps,
    want: &std::collections::BTreeMap<std::net::Ipv4Addr, forwarder_common::RouteHint>,
) -> Result<()> {
    let have = maps.route_hints()?;
    for addr in have.keys().filter(|a| !want.contains_key(a)) {
        maps.set_route_hint(*addr, None)?;
    }
    for (addr, hint) in want.iter().filter(|(a, h)| have.get(a) != Some(h)) {
        maps.set_route_hint(*addr, Some(*hint))?;
    }
    Ok(())
}

/// Attaches (or keeps) one interface's programs; its report, and the
/// error when the TC programs could not go on (a failed XDP attach is not
/// one: TC handles everything then).
fn apply_iface(dp: &mut Dataplane, p: &IfacePlan) -> (IfaceReport, Option<String>) {
    let report = IfaceReport {
        name: p.name.clone(),
        why: p.why.clone(),
        attach: "none".into(),
        ..Default::default()
    };
    let Some(iface) = &p.link else {
        let report = IfaceReport {
            state: "missing: waiting for it to appear".into(),
            ..report
        };
        return (report, None);
    };
    let report = IfaceReport {
        ifindex: Some(iface.ifindex),
        ..report
    };
    let (tc, tc_why) = p.tc;
    let failed = |report: IfaceReport, what: &str, e: anyhow::Error| {
        warn!(iface = %p.name, "{what} failed: {e:#}");
        let error = format!("{}: {what} failed: {e:#}", p.name);
        let report = IfaceReport {
            state: format!("{what} failed: {e:#}"),
            ..report
        };
        (report, Some(error))
    };
    if let Some(slot) = p.attach {
        let attached = (if slot.fresh {
            dp.maps.reset_iface_counters(slot.slot)
        } else {
            Ok(())
        })
        .and_then(|()| dp.attach(iface, slot.slot, tc));
        match attached {
            Ok(()) => info!(
                iface = %p.name, ifindex = iface.ifindex, l3 = iface.l3, mtu = iface.mtu,
                "attached ({} ingress; {tc_why}): {}", tc.as_str(), p.why
            ),
            Err(e) => return failed(report, "attach", e),
        }
    }
    if let Err(e) = dp.set_egress_nat(iface.ifindex, p.egress) {
        return failed(report, "attaching the egress program", e);
    }
    let mode = match p.xdp {
        Err(why) => {
            dp.detach_xdp(iface.ifindex);
            format!("tc only: {why}")
        }
        Ok(why) if dp.has_xdp(iface.ifindex) => format!("tc + xdp: {why}"),
        Ok(why) => match dp.attach_xdp(iface.ifindex) {
            Ok(()) => {
                info!(iface = %p.name, "XDP accelerator attached (native mode): {why}");
                format!("tc + xdp: {why}")
            }
            Err(e) => {
                warn!(iface = %p.name, "XDP attach failed, falling back to TC only: {e:#}");
                format!("tc only: XDP attach failed ({e:#}); TC handles everything")
            }
        },
    };
    let mut attach = dp.tc_mode(iface.ifindex).unwrap_or(tc).as_str().to_string();
    if dp.has_egress(iface.ifindex) {
        attach.push_str("+egress");
    }
    if dp.has_xdp(iface.ifindex) {
        attach.push_str("+xdp");
    }
    let report = IfaceReport {
        attach,
        mode: match tc {
            TcMode::Legacy => format!("tc-legacy: {tc_why}; {mode}"),
            TcMode::Tcx => mode,
        },
        state: if iface.up {
            "attached"
        } else {
            "attached (link down)"
        }
        .into(),
        l3: iface.l3,
        mtu: iface.mtu,
        kind: iface.kind.clone(),
        addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
        ..report
    };
    (report, None)
}
