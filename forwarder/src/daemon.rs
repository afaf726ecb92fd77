//! The daemon's core: from the rules file and the kernel's current facts
//! (interfaces, addresses, routes) to attached programs and map contents.
//! `reconcile` is idempotent, so start-up, reloads and (later) netlink
//! events all go through the same path.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use forwarder_common::GlobalConfig;
use rtnetlink::Handle;
use rules::{Compiled, IfaceState, MapEntries};
use tracing::{info, warn};

use crate::{
    dataplane::Dataplane,
    ifaces, netlink,
    state::{self, DaemonState, IfaceState as IfaceStatus, RuleStatus},
};

pub struct Daemon {
    pub dp: Dataplane,
    pub rules_path: PathBuf,
    pub run_dir: PathBuf,
    pub loaded: rules::Loaded,
    ids: BTreeMap<String, u32>,
    compiled: Compiled,
    entries: MapEntries,
    /// Interface name -> counter slot, stable for the daemon's lifetime.
    slots: BTreeMap<String, u32>,
    iface_status: Vec<IfaceStatus>,
    rules_error: Option<String>,
    started_unix: u64,
    netlink: Handle,
}

/// Reads and validates the rules file; the error text is the rendered
/// diagnostics (file, line, column, rule, what and how to fix).
pub fn load_rules(path: &Path) -> Result<rules::Loaded, String> {
    rules::load_file(path).map_err(|e| match e.diagnostics() {
        Some(d) => d.to_string(),
        None => e.to_string(),
    })
}

impl Daemon {
    pub fn new(
        dp: Dataplane,
        rules_path: PathBuf,
        run_dir: PathBuf,
        loaded: rules::Loaded,
    ) -> Result<Self> {
        Ok(Daemon {
            dp,
            rules_path,
            run_dir,
            loaded,
            ids: BTreeMap::new(),
            compiled: Compiled::default(),
            entries: MapEntries::default(),
            slots: BTreeMap::new(),
            iface_status: Vec::new(),
            rules_error: None,
            started_unix: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
            netlink: netlink::connect()?,
        })
    }

    pub fn timeouts(&self) -> rules::Timeouts {
        self.loaded.rules.global.timeouts
    }

    /// Re-reads the rules file. An invalid file changes nothing: the running
    /// configuration stays and the error is kept for `status`.
    pub async fn reload(&mut self) -> Result<()> {
        match load_rules(&self.rules_path) {
            Ok(loaded) => {
                self.loaded = loaded;
                self.rules_error = None;
                info!(file = %self.rules_path.display(), "rules reloaded");
                self.reconcile().await
            }
            Err(text) => {
                warn!("rules file rejected, keeping the running configuration:\n{text}");
                self.rules_error = Some(text);
                self.write_state()
            }
        }
    }

    /// Brings attachments and maps in line with the rules and the kernel.
    pub async fn reconcile(&mut self) -> Result<()> {
        let g = &self.loaded.rules.global;
        self.dp.set_config(GlobalConfig {
            abi_version: forwarder_common::ABI_VERSION,
            snat_port_min: g.snat_ports.start(),
            snat_port_max: g.snat_ports.end(),
            flags: 0,
            _pad: 0,
        })?;
        let names = self.loaded.rules.forwards.iter().map(|f| f.name.as_str());
        let ids = rules::assign_ids(&self.ids, names);
        let compiled = rules::compile(&self.loaded.rules, &ids).context("compiling rules")?;

        // Interfaces: where packets arrive (`in`) and where replies come
        // back (the route to each target).
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for f in &self.loaded.rules.forwards {
            wanted
                .entry(f.iface.clone())
                .or_insert_with(|| format!("listens for {}", f.name));
        }
        for f in &self.loaded.rules.forwards {
            match netlink::route_oif(&self.netlink, f.target.addr).await {
                Ok(Some(oif)) => match ifaces::name_of(oif) {
                    Some(name) => {
                        wanted
                            .entry(name)
                            .or_insert_with(|| format!("route to {} ({})", f.target.addr, f.name));
                    }
                    None => {
                        warn!(rule = %f.name, "route to {} uses ifindex {oif} which has no name", f.target.addr)
                    }
                },
                Ok(None) => warn!(rule = %f.name, "no route to target {}", f.target.addr),
                Err(e) => warn!(rule = %f.name, "route lookup for {} failed: {e:#}", f.target.addr),
            }
        }
        let mut facts: BTreeMap<String, IfaceState> = BTreeMap::new();
        let mut status = Vec::new();
        for (name, why) in &wanted {
            let iface = match ifaces::lookup(name) {
                Ok(i) => i,
                Err(e) => {
                    warn!(iface = %name, "not attached ({why}): {e:#}");
                    status.push(IfaceStatus {
                        name: name.clone(),
                        ifindex: None,
                        attach: "none".into(),
                        state: format!("missing: {e:#}"),
                        why: why.clone(),
                    });
                    continue;
                }
            };
            let next = self.slots.len() as u32;
            let slot = *self.slots.entry(name.clone()).or_insert(next);
            if !self.dp.is_attached(iface.ifindex) {
                self.dp.attach(&iface, slot)?;
                info!(iface = %name, ifindex = iface.ifindex, l3 = iface.l3, "attached (tcx ingress): {why}");
            }
            let addrs: Vec<Ipv4Addr> = netlink::v4_addrs(&self.netlink, iface.ifindex)
                .await
                .unwrap_or_default();
            facts.insert(
                name.clone(),
                IfaceState {
                    ifindex: iface.ifindex,
                    addrs,
                },
            );
            status.push(IfaceStatus {
                name: name.clone(),
                ifindex: Some(iface.ifindex),
                attach: "tcx".into(),
                state: "attached".into(),
                why: why.clone(),
            });
        }

        let entries = rules::materialize(&compiled, |n| facts.get(n).cloned());
        for id in ids.values() {
            if !self.ids.values().any(|old| old == id) {
                self.dp.reset_rule_counters(*id)?;
            }
        }
        self.apply(&entries)?;
        info!(
            forwards = compiled.rules.len(),
            listeners = entries.listeners.len(),
            allow = entries.allow.len(),
            "maps in sync"
        );
        self.ids = ids;
        self.compiled = compiled;
        self.entries = entries;
        self.iface_status = status;
        self.write_state()
    }

    /// Applies the difference to the maps in the order documented in
    /// `rules::diff`: allow inserts, listener writes, listener removes,
    /// allow removes.
    fn apply(&mut self, new: &MapEntries) -> Result<()> {
        let listeners = rules::diff(&self.entries.listeners, &new.listeners);
        let allow = rules::diff(&self.entries.allow, &new.allow);
        {
            let mut m = self.dp.allow()?;
            for (k, _) in allow.writes() {
                m.insert(&aya::maps::lpm_trie::Key::new(k.prefix_len, k.data), 1, 0)?;
            }
        }
        {
            let mut m = self.dp.listeners()?;
            for (k, v) in listeners.writes() {
                m.insert(k, v, 0)?;
            }
            for k in &listeners.removes {
                let _ = m.remove(k);
            }
        }
        let mut m = self.dp.allow()?;
        for k in &allow.removes {
            let _ = m.remove(&aya::maps::lpm_trie::Key::new(k.prefix_len, k.data));
        }
        Ok(())
    }

    pub fn write_state(&self) -> Result<()> {
        let st = DaemonState {
            pid: std::process::id(),
            started_unix: self.started_unix,
            rules_file: Some(self.rules_path.clone()),
            rules_error: self.rules_error.clone(),
            interfaces: self.iface_status.clone(),
            rules: self
                .compiled
                .rules
                .iter()
                .map(|r| RuleStatus::of(r.id, &r.forward))
                .collect(),
        };
        state::write(&self.run_dir, &st)
    }

    pub fn sweep(&mut self) -> Result<crate::sweeper::SweepStats> {
        let t = self.timeouts();
        let mut flows = self.dp.flows()?;
        crate::sweeper::sweep(&mut flows, &t, crate::sweeper::monotonic_ns())
    }
}
