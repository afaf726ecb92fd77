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

use anyhow::{bail, ensure, Context, Result};
use aya::maps::MapData;
use forwarder::dataplane::MAP_XDP_DEVS;
use forwarder_common::{
    AutoSnatKey, FlowEntry, FlowKey, GlobalConfig, IfaceConfig, ABI_VERSION, IFACE_L3,
};

use super::host::{Host, SLOTS, TS_IF};

impl Host {
    /// Registers the fixture's interfaces in FWD_IFACES with their counter
    /// slots (tailscale0 as an L3 device), as the daemon does on attach.
    pub(super) fn register_ifaces(&mut self) -> Result<()> {
        for (name, slot) in SLOTS {
            let ifindex = self.ifindex(name);
            let flags = if name == TS_IF { IFACE_L3 } else { 0 };
            self.dp
                .ifaces_map()?
                .insert(ifindex, IfaceConfig { slot, flags }, 0)?;
        }
        Ok(())
    }

    /// Takes `name` out of FWD_IFACES, as the daemon does on detach: the
    /// programs then treat it as a device that is not theirs.
    pub fn unregister_iface(&mut self, name: &str) -> Result<()> {
        let ifindex = self.ifindex(name);
        self.dp.ifaces_map()?.remove(&ifindex)?;
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
        self.dp.set_config(GlobalConfig {
            abi_version: ABI_VERSION,
            snat_port_min: g.snat_ports.start(),
            snat_port_max: g.snat_ports.end(),
            flags: 0,
            _pad: 0,
        })?;
        {
            let mut allow = self.dp.allow()?;
            for k in entries.allow.keys() {
                allow.insert(&aya::maps::lpm_trie::Key::new(k.prefix_len, k.data), 1, 0)?;
            }
        }
        let mut listeners = self.dp.listeners()?;
        for (k, v) in &entries.listeners {
            listeners.insert(k, v, 0)?;
        }
        self.ids = ids;
        Ok(())
    }

    /// Turns egress translation on or off for an interface
    /// (`IFACE_EGRESS_NAT`): the daemon sets it on the listening interfaces
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
        let mut devs: aya::maps::DevMapHash<&mut MapData> = aya::maps::DevMapHash::try_from(
            self.dp.ebpf.map_mut(MAP_XDP_DEVS).context("FWD_XDP_DEVS")?,
        )?;
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
        self.dp.flows()?.insert(key, entry, 0)?;
        Ok(())
    }

    /// Removes one flow entry, as the sweeper does when it expires.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<()> {
        self.dp.flows()?.remove(key)?;
        Ok(())
    }

    /// Sets when the auto-SNAT learning `key` happened (CLOCK_MONOTONIC_COARSE
    /// ns, like the programs' stamps), to age it.
    pub fn set_auto_snat_learned_at(&mut self, key: AutoSnatKey, at_ns: u64) -> Result<()> {
        self.dp.auto_snat()?.insert(key, at_ns, 0)?;
        Ok(())
    }
}
