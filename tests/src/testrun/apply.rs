//! Everything the harness writes into the dataplane's maps, in one place:
//! the registered interfaces, the compiled rules (global config,
//! listeners, allow-list), the egress-translation and XDP-target flags, and
//! the flow-table state a test sets up directly.
//!
//! The first part is what the daemon's reconcile writes, re-done here with
//! the real rules compiler (`rules::compile` + `materialize`); it is meant
//! to become a call of the daemon's own apply step, so nothing else in the
//! harness writes a map. The last part (flows, auto-SNAT learning) is state
//! the programs keep themselves, which tests set to reach a situation (an
//! adopted table, a swept entry, an aged learning) without waiting for it.
use std::collections::BTreeMap;

use anyhow::{bail, ensure, Result};
use forwarder_common::{AutoSnatKey, FlowEntry, FlowKey, GlobalConfig, IfaceConfig, IfaceFlags};

use super::host::{Host, SLOTS, TS_IF};

impl Host {
    /// Registers the fixture's interfaces in FWD_IFACES with their counter
    /// slots (tailscale0 as an L3 device), as the daemon does on attach.
    pub(super) fn register_ifaces(&mut self) -> Result<()> {
        for (name, slot) in SLOTS {
            let ifindex = self.ifindex(name);
            let flags = if name == TS_IF {
                IfaceFlags::L3
            } else {
                IfaceFlags::empty()
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

    /// Loads a rules file text through the real rules compiler and writes
    /// its listeners, allow-list and SNAT port range into the maps (what
    /// the daemon's reconcile does, minus `mss_clamp = "auto"`, which needs
    /// the path MTU: use a fixed clamp).
    pub fn rules(&mut self, text: &str) -> Result<()> {
        let loaded = match rules::load_str("test.toml", text) {
            Ok(l) => l,
            Err(d) => bail!("rules do not load:\n{d}"),
        };
        let ids = rules::assign_ids(
            &BTreeMap::new(),
            loaded.rules.forwards.iter().map(|f| f.name.as_str()),
        );
        let compiled = rules::compile(&loaded.rules, &ids)?;
        let mut states = BTreeMap::new();
        for (name, _) in SLOTS {
            states.insert(
                name.to_string(),
                rules::IfaceState {
                    ifindex: self.ifindex(name),
                    addrs: self.addrs(name)?,
                },
            );
        }
        let entries = rules::materialize(&compiled, |n| states.get(n).cloned());
        ensure!(
            entries.missing_ifaces.is_empty(),
            "rules name interfaces the fixture lacks: {:?}",
            entries.missing_ifaces
        );
        let g = &loaded.rules.global;
        self.dp
            .maps
            .set_config(GlobalConfig::new(g.snat_ports.start(), g.snat_ports.end()))?;
        for k in entries.allow.keys() {
            self.dp.maps.insert_allow(k)?;
        }
        for (k, v) in &entries.listeners {
            self.dp.maps.listeners.insert(k, v, 0)?;
        }
        self.ids = ids;
        Ok(())
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
