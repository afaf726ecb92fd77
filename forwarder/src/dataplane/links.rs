//! Program links on interfaces: attaching TC ingress and egress (TCX, or
//! the legacy clsact + cls_bpf way: `tc_legacy`) and the XDP accelerator,
//! adopting what a previous daemon left, detaching.
//!
//! With a pin directory every link is pinned under `links/`, so the
//! dataplane keeps forwarding while no daemon runs, and the next daemon
//! swaps its own programs into the pinned links atomically
//! (bpf_link_update): not one packet meets a half-configured interface.
//! Legacy filters need no pin to live on; the next daemon finds them by
//! priority, handle and name and replaces their program just as atomically.
//! The one fact a reader gets wrong: a pinned link lives as long as its pin
//! file, but deleting the file detaches the program only a moment after
//! the unlink returns (see `sys`); every pin is removed with
//! [`remove_link_pin`], which detaches first, so a detach is done when it
//! returns.
use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use aya::programs::{
    links::{FdLink, LinkOrder, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
    TcAttachType, Xdp, XdpMode,
};
use forwarder_common::{
    IfaceConfig, IfaceFlags, MAX_IFACES, NAT64_DEV, PIN_LINKS_DIR, PROG_EGRESS, PROG_INGRESS,
    PROG_XDP,
};
use tracing::{debug, warn};

use super::{
    pin_names::{link_pin, parse_link_pin},
    sys,
    tc_legacy::{self, OurFilter},
    tc_netlink::Hook,
    Dataplane, TcMode,
};
use crate::ifaces::Iface;

/// The TC ingress hook every used interface gets.
const INGRESS: (Hook, &str) = (Hook::Ingress, PROG_INGRESS);
/// The TC egress hook, only where replies of stack-path flows may leave
/// (see `set_egress_nat`): everywhere else it would only cost time.
const EGRESS: (Hook, &str) = (Hook::Egress, PROG_EGRESS);

pub(super) enum Link {
    /// Lives in bpffs; released with [`remove_link_pin`].
    Pinned(PathBuf),
    /// Owned by this process; detached when dropped.
    Owned(FdLink),
    /// A cls_bpf filter of ours: lives until deleted (`tc_legacy`).
    Filter(OurFilter),
}

pub(super) struct Attachment {
    iface: Iface,
    /// How `ingress` and `egress` are attached.
    mode: TcMode,
    ingress: Link,
    /// The egress program's link, where it is needed.
    egress: Option<Link>,
    /// The XDP accelerator's link, when it runs on this interface.
    xdp: Option<Link>,
}

impl Dataplane {
    /// Registers an interface (counter slot, link type) and attaches the
    /// TC ingress program to it in `mode`: into what a previous daemon left
    /// (a pinned TCX link, or our cls_bpf filter: an atomic program swap),
    /// else anew. An interface attached in the other mode moves over, the
    /// new hooks first, then the old ones go (its egress program moves too).
    pub fn attach(&mut self, iface: &Iface, slot: u32, mode: TcMode) -> Result<()> {
        anyhow::ensure!(
            slot < MAX_IFACES,
            "at most {MAX_IFACES} interfaces are supported"
        );
        // An adopted entry keeps its egress flag until the daemon has
        // recomputed it: clearing it, even briefly, would let replies of
        // stack-path flows leave untranslated.
        let egress = self
            .maps
            .ifaces
            .get(&iface.ifindex, 0)
            .map_or(IfaceFlags::empty(), |c| c.flags & IfaceFlags::EGRESS_NAT);
        let mut flags = egress;
        flags.set(IfaceFlags::L3, iface.l3);
        // Where fwd_ingress64 runs at egress (see `daemon::nat64dev`).
        flags.set(IfaceFlags::NAT64_DEV, iface.name == NAT64_DEV);
        let cfg = IfaceConfig { slot, flags };
        // Registered before the programs see its packets, so the first
        // packet is already counted in the right slot.
        self.maps.ifaces.insert(iface.ifindex, cfg, 0)?;
        if self.tc_mode(iface.ifindex) == Some(mode) {
            // Attached like this already: attaching again would adopt the
            // very link (or filter) that releasing the "old" one removes.
            return Ok(());
        }
        let ingress = self.attach_hook(iface, INGRESS, mode)?;
        let had_egress = self.has_egress(iface.ifindex);
        let egress = match had_egress {
            true => match self.attach_hook(iface, EGRESS, mode) {
                Ok(l) => Some(l),
                Err(e) => {
                    release(ingress);
                    return Err(e);
                }
            },
            false => None,
        };
        self.clear_other_mode(iface, INGRESS, mode);
        if had_egress {
            self.clear_other_mode(iface, EGRESS, mode);
        }
        let old = self.attached.remove(&iface.ifindex);
        let xdp = old.and_then(|mut old| {
            for l in [Some(old.ingress), old.egress.take()].into_iter().flatten() {
                release(l);
            }
            old.xdp
        });
        self.attached.insert(
            iface.ifindex,
            Attachment {
                iface: iface.clone(),
                mode,
                ingress,
                egress,
                xdp,
            },
        );
        Ok(())
    }

    /// Removes what a previous daemon left on a hook in the other mode
    /// (before a mode change or a kernel update), once ours is in place.
    fn clear_other_mode(&self, iface: &Iface, (hook, prog): (Hook, &'static str), mode: TcMode) {
        let Some(d) = self.pin_dir.as_deref() else {
            return;
        };
        match mode {
            TcMode::Legacy => {
                let pin = link_pin(d, iface, hook.as_str());
                if pin.exists() {
                    debug!(iface = %iface.name, hook = hook.as_str(), "removing the TCX link of before");
                    let _ = remove_link_pin(&pin);
                }
            }
            TcMode::Tcx => {
                tc_legacy::forget_hook(iface, hook, prog, d);
                tc_legacy::release_clsact(iface, d);
            }
        }
    }

    /// How an attached interface's TC programs are attached.
    pub fn tc_mode(&self, ifindex: u32) -> Option<TcMode> {
        self.attached.get(&ifindex).map(|a| a.mode)
    }

    /// Adds the XDP accelerator (native mode) to an interface that already
    /// has the TC programs. The interface becomes a redirect target of the
    /// accelerator first, so a link adopted from a previous daemon never
    /// runs against an empty devmap.
    pub fn attach_xdp(&mut self, ifindex: u32) -> Result<()> {
        let iface = self
            .attached
            .get(&ifindex)
            .context("attach the TC programs first")?
            .iface
            .clone();
        if self.attached[&ifindex].xdp.is_some() {
            return Ok(());
        }
        self.maps.xdp_devs.insert(ifindex, ifindex, None, 0)?;
        let pin = self.pin_dir.as_deref().map(|d| link_pin(d, &iface, "xdp"));
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_XDP)
            .with_context(|| format!("program {PROG_XDP} missing"))?
            .try_into()?;
        let link = pinned_link(
            prog,
            pin,
            &iface,
            "xdp",
            |prog, fd| {
                let id = prog.attach_to_link(XdpLink::try_from(fd)?)?;
                drop(prog.take_link(id)?);
                Ok(())
            },
            |prog| {
                let id = prog
                    .attach_to_if_index(iface.ifindex, XdpMode::Driver)
                    .with_context(|| {
                        format!("attaching fwd_xdp to {} (native mode)", iface.name)
                    })?;
                Ok(prog.take_link(id)?.try_into()?)
            },
        );
        match link {
            Ok(l) => {
                if let Some(a) = self.attached.get_mut(&ifindex) {
                    a.xdp = Some(l);
                }
                Ok(())
            }
            Err(e) => {
                self.forget_xdp_dev(ifindex);
                Err(e)
            }
        }
    }

    fn forget_xdp_dev(&mut self, ifindex: u32) {
        let _ = self.maps.xdp_devs.remove(ifindex);
    }

    /// Removes the XDP accelerator from an interface (TC stays).
    pub fn detach_xdp(&mut self, ifindex: u32) {
        let link = self.attached.get_mut(&ifindex).and_then(|a| a.xdp.take());
        match link {
            Some(l) => {
                self.forget_xdp_dev(ifindex);
                release(l);
            }
            // An XDP link a previous daemon pinned that this configuration
            // no longer wants (attach changed to "tc"): remove it too.
            None => {
                let pin = self.attached.get(&ifindex).and_then(|a| {
                    self.pin_dir
                        .as_deref()
                        .map(|d| link_pin(d, &a.iface, "xdp"))
                });
                if let Some(pin) = pin {
                    let _ = remove_link_pin(&pin);
                }
            }
        }
    }

    pub fn has_xdp(&self, ifindex: u32) -> bool {
        self.attached.get(&ifindex).is_some_and(|a| a.xdp.is_some())
    }

    /// One TC hook in `mode` (callers then `clear_other_mode`).
    fn attach_hook(
        &mut self,
        iface: &Iface,
        (hook, prog): (Hook, &'static str),
        mode: TcMode,
    ) -> Result<Link> {
        let pin_dir = self.pin_dir.clone();
        let pin = pin_dir
            .as_deref()
            .map(|d| link_pin(d, iface, hook.as_str()));
        let program = self.program(prog)?;
        if mode == TcMode::Legacy {
            let f = tc_legacy::attach(program, prog, iface, hook, pin_dir.as_deref())?;
            return Ok(Link::Filter(f));
        }
        pinned_link(
            program,
            pin,
            iface,
            hook.as_str(),
            |program, fd| {
                let id = program.attach_to_link(SchedClassifierLink::try_from(fd)?)?;
                drop(program.take_link(id)?);
                Ok(())
            },
            |program| {
                let id = program
                    .attach_with_options(
                        &iface.name,
                        TcAttachType::from(hook),
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .with_context(|| {
                        format!("attaching {prog} to {} {} (TCX)", iface.name, hook.as_str())
                    })?;
                Ok(program.take_link(id)?.try_into()?)
            },
        )
    }

    /// Whether the egress program runs on this interface: attached (or
    /// adopted) and told to translate (`IfaceFlags::EGRESS_NAT`), or told to stop
    /// and detached. Interfaces that only see redirected traffic go without
    /// it, so their packets do not pay for a second program.
    ///
    /// Interfaces registered without being attached by this instance
    /// (BPF_PROG_TEST_RUN tests) only get the flag.
    pub fn set_egress_nat(&mut self, ifindex: u32, on: bool) -> Result<()> {
        let attached = self
            .attached
            .get(&ifindex)
            .map(|a| (a.iface.clone(), a.mode));
        let iface = attached.as_ref().map(|(i, _)| i.clone());
        if let (true, Some((iface, mode))) = (on, &attached) {
            if !self.has_egress(ifindex) {
                let link = self.attach_hook(iface, EGRESS, *mode)?;
                self.clear_other_mode(iface, EGRESS, *mode);
                if let Some(a) = self.attached.get_mut(&ifindex) {
                    a.egress = Some(link);
                }
            }
        }
        if let Ok(mut cfg) = self.maps.ifaces.get(&ifindex, 0) {
            let before = cfg.flags;
            cfg.flags.set(IfaceFlags::EGRESS_NAT, on);
            if cfg.flags != before {
                self.maps.ifaces.insert(ifindex, cfg, 0)?;
            }
        }
        if let (false, Some(iface)) = (on, iface) {
            match self
                .attached
                .get_mut(&ifindex)
                .and_then(|a| a.egress.take())
            {
                Some(l) => release(l),
                // A link (or filter) a previous daemon left and this one
                // does not need.
                None => {
                    if let Some(d) = self.pin_dir.as_deref() {
                        let _ = remove_link_pin(&link_pin(d, &iface, "egress"));
                        let (hook, prog) = EGRESS;
                        tc_legacy::forget_hook(&iface, hook, prog, d);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn has_egress(&self, ifindex: u32) -> bool {
        self.attached
            .get(&ifindex)
            .is_some_and(|a| a.egress.is_some())
    }

    pub fn attached(&self) -> impl Iterator<Item = &Iface> {
        self.attached.values().map(|a| &a.iface)
    }

    /// Detaches from one interface and forgets it in the config map.
    pub fn detach(&mut self, ifindex: u32) -> Result<()> {
        self.detach_xdp(ifindex);
        if let Some(a) = self.attached.remove(&ifindex) {
            if let Some(l) = a.egress {
                release(l);
            }
            release(a.ingress);
            if let Some(d) = self.pin_dir.as_deref() {
                tc_legacy::release_clsact(&a.iface, d);
            }
        }
        let _ = self.maps.ifaces.remove(&ifindex);
        Ok(())
    }

    /// Detaches every program this instance attached and forgets the
    /// interfaces in the config map (a full teardown).
    pub fn detach_all(&mut self) -> Result<()> {
        let all: Vec<u32> = self.attached.keys().copied().collect();
        for i in all {
            self.detach(i)?;
        }
        Ok(())
    }

    /// Leaves every pinned link in place (the programs keep forwarding
    /// without a daemon) and lets go of this process's handles.
    pub fn leave_running(&mut self) {
        self.attached.clear();
    }

    /// Removes link pins of interfaces that are gone or were re-created
    /// (their links died with the old device) or are no longer attached,
    /// our legacy filters there (and the markers saying so), and config
    /// entries of interfaces that no longer exist.
    pub fn sweep_stale(&mut self, live: impl Fn(&str, u32) -> bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        if let Some(dir) = self.pin_dir.as_deref() {
            for p in tc_legacy::remove_markers(dir, &live)? {
                removed.push(format!(
                    "{}/{}",
                    forwarder_common::PIN_TC_DIR,
                    p.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
        if let Some(dir) = self.pin_dir.as_ref().map(|d| d.join(PIN_LINKS_DIR)) {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ok = parse_link_pin(&name).is_some_and(|(i, n)| live(&n, i));
                    if !ok {
                        let _ = remove_link_pin(&e.path());
                        removed.push(name);
                    }
                }
            }
        }
        for ifindex in self.maps.registered().keys() {
            let alive = crate::ifaces::name_of(*ifindex).is_some_and(|n| live(&n, *ifindex));
            if !alive && !self.attached.contains_key(ifindex) {
                let _ = self.maps.ifaces.remove(ifindex);
            }
        }
        Ok(removed)
    }
}

/// One program link on an interface, for any program type: with a pin
/// path, the link a previous daemon pinned there is adopted (`adopt` swaps
/// our program into it with bpf_link_update; the pin keeps it, our handle
/// can go) or, when there is none or it is unusable, a new one is made
/// (`attach`) and pinned. Without a pin path the link is owned by us.
fn pinned_link<P>(
    program: &mut P,
    pin: Option<PathBuf>,
    iface: &Iface,
    hook: &str,
    adopt: impl FnOnce(&mut P, FdLink) -> Result<()>,
    attach: impl FnOnce(&mut P) -> Result<FdLink>,
) -> Result<Link> {
    if let Some(pin) = pin.as_ref().filter(|p| p.exists()) {
        match PinnedLink::from_pin(pin)
            .map_err(anyhow::Error::from)
            .and_then(|l| adopt(program, l.into()))
        {
            Ok(()) => {
                debug!(iface = %iface.name, hook, "adopted pinned link");
                return Ok(Link::Pinned(pin.clone()));
            }
            Err(e) => {
                warn!(iface = %iface.name, hook, "pinned link unusable ({e:#}); attaching anew");
                let _ = remove_link_pin(pin);
            }
        }
    }
    let link = attach(program)?;
    match pin {
        Some(pin) => {
            link.pin(&pin)
                .with_context(|| format!("pinning link {}", pin.display()))?;
            Ok(Link::Pinned(pin))
        }
        None => Ok(Link::Owned(link)),
    }
}

fn release(l: Link) {
    match l {
        Link::Pinned(p) => match remove_link_pin(&p) {
            // Gone already: a mode change removed it first.
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                warn!("removing link pin {}: {e}", p.display())
            }
            _ => {}
        },
        // Closing the last fd of a link frees it before close() returns.
        Link::Owned(l) => drop(l),
        Link::Filter(f) => tc_legacy::release(f),
    }
}

/// Takes the program of the link pinned at `pin` off its interface, then
/// removes the pin. A link whose interface is gone is detached already
/// (the detach fails harmlessly); the pin goes all the same.
pub fn remove_link_pin(pin: &Path) -> io::Result<()> {
    if let Err(e) = sys::detach_pinned_link(pin) {
        debug!("detaching the link pinned at {}: {e}", pin.display());
    }
    std::fs::remove_file(pin)
}
