//! Everything the harness writes into the dataplane's maps, in one place.
//!
//! The rules go in the way the daemon puts them in: its own facts stage
//! (rtnetlink, in the fixture's namespace), `plan` and `apply_maps`, with
//! a [`Record`] of what the maps hold carried from call to call; so the
//! listeners, allow-list, SNAT port range, rule names and the MSS of
//! `mss_clamp = "auto"` are the daemon's, not a copy. What the daemon does
//! through links (registering an attached interface, the egress flag, the
//! XDP devmap) is done here by hand, because test_run feeds the programs
//! without attaching them. The last part (flows, auto-SNAT learning) is
//! state the programs keep themselves, which tests set to reach a
//! situation (an adopted table, a swept entry, an aged learning) without
//! waiting for it.
use anyhow::{bail, ensure, Context, Result};
use forwarder::daemon::{
    apply::{apply_maps, Faults},
    facts::{self, Facts},
    plan,
};
use forwarder_common::{AutoSnatKey, FlowEntry, FlowKey, IfaceConfig, IfaceFlags};

use super::host::{Host, NAT64_IF, SLOTS, TS_IF};

impl Host {
    /// Registers the fixture's interfaces in FWD_IFACES with their counter
    /// slots (tailscale0 as an L3 device, fwd64 as the NAT64 pool's), as
    /// the daemon does on attach.
    pub(super) fn register_ifaces(&mut self) -> Result<()> {
        for (name, slot) in SLOTS {
            let ifindex = self.ifindex(name);
            let flags = match name {
                TS_IF => IfaceFlags::L3,
                NAT64_IF => IfaceFlags::NAT64_DEV,
                _ => IfaceFlags::empty(),
            };
            self.dp
                .maps
                .ifaces
                .insert(ifindex, IfaceConfig { slot, flags }, 0)?;
        }
        Ok(())
    }

    /// Takes `name` out of FWD_IFACES, as the daemon does on detach: the
    /// programs then treat it as a device that is not theirs.
    pub fn unregister_iface(&mut self, name: &str) -> Result<()> {
        let ifindex = self.ifindex(name);
        self.dp.maps.ifaces.remove(&ifindex)?;
        Ok(())
    }

    /// Loads a rules file text and applies it as the daemon's reconcile
    /// does to the maps: facts from the namespace (links with their MTUs,
    /// addresses, the route to every target), `plan`, `apply_maps`.
    pub fn rules(&mut self, text: &str) -> Result<()> {
        let loaded = match rules::load_str("test.toml", text) {
            Ok(l) => l,
            Err(d) => bail!("rules do not load:\n{d}"),
        };
        // test_run fixtures write addresses: no names to resolve.
        let facts = self.facts(
            loaded
                .rules
                .forwards
                .iter()
                .filter_map(|f| f.target.fixed_addr()),
        )?;
        let plan = plan::plan(&loaded.rules, &facts, &self.record)?;
        let missing: Vec<&str> = plan
            .ifaces
            .iter()
            .filter(|i| i.link.is_none())
            .map(|i| i.name.as_str())
            .collect();
        ensure!(
            missing.is_empty(),
            "rules name interfaces the fixture lacks: {missing:?}"
        );
        apply_maps(
            &mut self.dp,
            &plan,
            &mut self.record,
            &mut Faults::default(),
        )?;
        self.ids = plan.ids.clone();
        Ok(())
    }

    /// The daemon's facts about the fixture's namespace, with the routes
    /// to `targets` (the calling thread is in the namespace, and so is the
    /// netlink socket opened here).
    pub fn facts(&self, targets: impl IntoIterator<Item = std::net::IpAddr>) -> Result<Facts> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("runtime for the netlink facts")?;
        rt.block_on(async {
            let handle = facts::connect()?;
            Facts::gather(&handle, targets, Default::default(), &self.dp).await
        })
    }

    /// Turns egress translation on or off for an interface
    /// (`IfaceFlags::EGRESS_NAT`): the daemon sets it on the listening interfaces
    /// of forwards whose flows may go through the stack; without it the
    /// egress program leaves every packet alone, uncounted.
    pub fn egress_nat(&mut self, name: &str, on: bool) -> Result<()> {
        let ifindex = self.ifindex(name);
        self.dp.set_egress_nat(ifindex, on)
    }

    /// Makes `name` a redirect target of the XDP accelerator or not, as
    /// `Dataplane::attach_xdp` / `detach_xdp` do (FWD_XDP_DEVS, ifindex ->
    /// ifindex). The program itself is not attached: test_run feeds it.
    pub fn xdp_dev(&mut self, name: &str, on: bool) -> Result<()> {
        let ifindex = self.ifindex(name);
        let devs = &mut self.dp.maps.xdp_devs;
        if on {
            devs.insert(ifindex, ifindex, None, 0)?;
        } else {
            devs.remove(ifindex)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------
    // State the programs keep, set directly

    /// Inserts a flow entry as userspace (an adopted table) would.
    pub fn insert_flow(&mut self, key: FlowKey, entry: FlowEntry) -> Result<()> {
        self.dp.maps.flows.insert(key, entry, 0)?;
        Ok(())
    }

    /// Removes one flow entry, as the sweeper does when it expires.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<()> {
        self.dp.maps.flows.remove(key)?;
        Ok(())
    }

    /// Sets when the auto-SNAT learning `key` happened (CLOCK_MONOTONIC_COARSE
    /// ns, like the programs' stamps), to age it.
    pub fn set_auto_snat_learned_at(&mut self, key: AutoSnatKey, at_ns: u64) -> Result<()> {
        self.dp.maps.auto_snat.insert(key, at_ns, 0)?;
        Ok(())
    }
}
