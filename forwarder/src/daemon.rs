//! The daemon's core: from the rules file and the kernel's current facts
//! (interfaces, addresses, routes) to attached programs and map contents.
//! `reconcile` is idempotent, so start-up, reloads and netlink events all go
//! through the same path.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use anyhow::{Context, Result};
use aya::maps::lpm_trie::Key as LpmKey;
use forwarder_common::{GlobalConfig, RuleName, LISTEN_MSS_CLAMP};
use rtnetlink::Handle;
use rules::{AllowLpmKey, Compiled, IfaceState, MapEntries, MssClamp, Snat};
use tracing::{info, warn};

use crate::{
    dataplane::Dataplane,
    ifaces::Iface,
    netlink,
    state::{self, DaemonState, IfaceState as IfaceStatus, LoadResult, RuleStatus},
};

/// IPv4 + TCP headers without options: MSS = MTU - 40.
const TCPIP_HLEN: u32 = 40;

pub struct Daemon {
    pub dp: Dataplane,
    pub rules_path: PathBuf,
    pub run_dir: PathBuf,
    pub loaded: rules::Loaded,
    ids: BTreeMap<String, u32>,
    compiled: Compiled,
    entries: MapEntries,
    iface_status: Vec<IfaceStatus>,
    rule_status: Vec<RuleStatus>,
    rules_error: Option<String>,
    started_unix: u64,
    generation: u64,
    last_load: Option<LoadResult>,
    adopted: Option<String>,
    pub metrics: Option<String>,
    netlink: Handle,
}

/// Reads and validates the rules file; the error text is the rendered
/// diagnostics (file, line, column, rule, what and how to fix).
pub fn load_rules(path: &std::path::Path) -> Result<rules::Loaded, String> {
    rules::load_file(path).map_err(|e| match e.diagnostics() {
        Some(d) => d.to_string(),
        None => e.to_string(),
    })
}

/// Map contents already in the kernel (adopted from a previous daemon), so
/// the first reconcile diffs against what is really there: stale entries
/// are removed, unchanged ones are not rewritten.
fn current_entries(dp: &mut Dataplane) -> Result<MapEntries> {
    let mut out = MapEntries::default();
    for r in dp.listeners()?.iter() {
        let (k, v) = r?;
        out.listeners.insert(k, v);
    }
    for k in dp.allow()?.keys() {
        let k = k?;
        out.allow.insert(
            AllowLpmKey {
                prefix_len: k.prefix_len(),
                data: k.data(),
            },
            (),
        );
    }
    Ok(out)
}

impl Daemon {
    pub fn new(
        mut dp: Dataplane,
        rules_path: PathBuf,
        run_dir: PathBuf,
        loaded: rules::Loaded,
    ) -> Result<Self> {
        let ids = dp.recorded_rule_ids()?;
        let entries = current_entries(&mut dp)?;
        let adopted = (dp.adopted.maps > 0).then(|| {
            format!(
                "adopted pinned state: {} maps, {} rules, {} listener entries",
                dp.adopted.maps,
                ids.len(),
                entries.listeners.len()
            )
        });
        Ok(Daemon {
            dp,
            rules_path,
            run_dir,
            loaded,
            ids,
            compiled: Compiled::default(),
            entries,
            iface_status: Vec::new(),
            rule_status: Vec::new(),
            rules_error: None,
            started_unix: state::now_unix(),
            generation: 0,
            last_load: None,
            adopted,
            metrics: None,
            netlink: netlink::connect()?,
        })
    }

    pub fn timeouts(&self) -> rules::Timeouts {
        self.loaded.rules.global.timeouts
    }

    /// Rule names by id, for metrics and logs.
    pub fn rule_names(&self) -> BTreeMap<u32, String> {
        self.ids.iter().map(|(n, i)| (*i, n.clone())).collect()
    }

    /// The first load (the file was validated before the dataplane loaded).
    pub async fn start(&mut self) -> Result<()> {
        for w in crate::snat_ports::warnings(&self.loaded.rules.global.snat_ports) {
            warn!("{w}");
        }
        self.generation += 1;
        let r = self.reconcile().await;
        self.record_load("start", r.as_ref().err().map(|e| format!("{e:#}")));
        self.write_state()?;
        r
    }

    /// Re-reads the rules file. An invalid file changes nothing: the running
    /// configuration stays and the error is kept for `status`.
    pub async fn reload(&mut self, trigger: &str) -> Result<()> {
        self.generation += 1;
        let result = match load_rules(&self.rules_path) {
            Ok(loaded) => {
                let old = std::mem::replace(&mut self.loaded, loaded);
                match self.reconcile().await {
                    Ok(()) => {
                        self.rules_error = None;
                        info!(file = %self.rules_path.display(), trigger, "rules applied");
                        Ok(())
                    }
                    Err(e) => {
                        // Keep describing what is in force; a failure midway
                        // leaves extra, never missing, forwarding (see
                        // rules::diff), and the next event retries.
                        self.loaded = old;
                        Err(e)
                    }
                }
            }
            Err(text) => {
                warn!(
                    trigger,
                    "rules file rejected, keeping the running configuration:\n{text}"
                );
                self.rules_error = Some(text.clone());
                Err(anyhow::anyhow!(text))
            }
        };
        self.record_load(trigger, result.as_ref().err().map(|e| format!("{e:#}")));
        self.write_state()?;
        result
    }

    fn record_load(&mut self, trigger: &str, error: Option<String>) {
        let summary = match &error {
            None => format!(
                "{} forwards, {} listener entries, {} allow-list entries",
                self.compiled.rules.len(),
                self.entries.listeners.len(),
                self.entries.allow.len()
            ),
            Some(e) => e.lines().next().unwrap_or_default().to_string(),
        };
        self.last_load = Some(LoadResult {
            at_unix: state::now_unix(),
            trigger: trigger.to_string(),
            applied: error.is_none(),
            summary,
        });
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
        self.dp.set_ct_config(g.ct_config())?;
        let names = self.loaded.rules.forwards.iter().map(|f| f.name.as_str());
        let ids = rules::assign_ids(&self.ids, names);
        let compiled = rules::compile(&self.loaded.rules, &ids).context("compiling rules")?;

        let links = netlink::links(&self.netlink).await?;
        let addrs = netlink::v4_addrs(&self.netlink).await?;
        let mut routes: BTreeMap<String, Option<netlink::Route>> = BTreeMap::new();
        for f in &self.loaded.rules.forwards {
            let r = netlink::route_get(&self.netlink, f.target.addr).await;
            routes.insert(f.name.clone(), r);
        }
        let name_of = |ifindex: u32| links.values().find(|l| l.ifindex == ifindex);

        // Interfaces: where packets arrive (`in`) and where replies come
        // back (the route to each target).
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for f in &self.loaded.rules.forwards {
            wanted
                .entry(f.iface.clone())
                .or_insert_with(|| format!("listens for {}", f.name));
        }
        for f in &self.loaded.rules.forwards {
            if let Some(l) = routes[&f.name].and_then(|r| name_of(r.oif)) {
                wanted
                    .entry(l.name.clone())
                    .or_insert_with(|| format!("route to {} ({})", f.target.addr, f.name));
            }
        }

        // Let go of interfaces no longer wanted, gone, or re-created (a new
        // ifindex under the old name: the old links died with the device).
        let stale: Vec<Iface> = self
            .dp
            .attached()
            .filter(|a| {
                !wanted.contains_key(&a.name)
                    || links.get(&a.name).map(|l| l.ifindex) != Some(a.ifindex)
            })
            .cloned()
            .collect();
        for a in stale {
            info!(iface = %a.name, ifindex = a.ifindex, "detaching (no longer used or gone)");
            self.dp.detach(a.ifindex)?;
        }

        // Egress translation is needed where replies of stack-path flows
        // leave: the listening interface of every forward whose flows may
        // go through the stack (no SNAT of ours, and a target that is not
        // on-link, or path = "stack").
        let mut egress: BTreeSet<&str> = BTreeSet::new();
        for f in &self.loaded.rules.forwards {
            let on_link = routes[&f.name].is_some_and(|r| r.gateway.is_none());
            let routable = routes[&f.name].is_some();
            let stack = match (f.snat, f.path) {
                (Snat::Fixed(_) | Snat::Masquerade, _) => false,
                (_, rules::PathMode::Stack) => true,
                (_, rules::PathMode::Redirect) => !routable,
                (_, rules::PathMode::Auto) => !on_link,
            };
            if stack {
                egress.insert(f.iface.as_str());
            }
        }
        let registered = self.dp.registered()?;
        let mut status = Vec::new();
        for (name, why) in &wanted {
            let Some(iface) = links.get(name) else {
                status.push(IfaceStatus {
                    name: name.clone(),
                    ifindex: None,
                    attach: "none".into(),
                    state: "missing: waiting for it to appear".into(),
                    why: why.clone(),
                    ..Default::default()
                });
                continue;
            };
            if !self.dp.is_attached(iface.ifindex) {
                let slot = match registered.get(&iface.ifindex) {
                    Some(cfg) => cfg.slot,
                    None => {
                        let used: BTreeSet<u32> =
                            self.dp.registered()?.values().map(|c| c.slot).collect();
                        let slot = (0..forwarder_common::MAX_IFACES)
                            .find(|s| !used.contains(s))
                            .context("no free interface counter slot")?;
                        self.dp.reset_iface_counters(slot)?;
                        slot
                    }
                };
                match self.dp.attach(iface, slot) {
                    Ok(()) => info!(
                        iface = %name, ifindex = iface.ifindex, l3 = iface.l3, mtu = iface.mtu,
                        "attached (tcx ingress): {why}"
                    ),
                    Err(e) => {
                        warn!(iface = %name, "attach failed: {e:#}");
                        status.push(IfaceStatus {
                            name: name.clone(),
                            ifindex: Some(iface.ifindex),
                            attach: "none".into(),
                            state: format!("attach failed: {e:#}"),
                            why: why.clone(),
                            ..Default::default()
                        });
                        continue;
                    }
                }
            }
            if let Err(e) = self
                .dp
                .set_egress_nat(iface.ifindex, egress.contains(name.as_str()))
            {
                warn!(iface = %name, "egress program: {e:#}");
            }
            let setting = self
                .loaded
                .rules
                .interfaces
                .get(name)
                .map(|s| s.attach)
                .unwrap_or_default();
            let mode = match xdp_choice(setting, iface) {
                Err(why) => {
                    self.dp.detach_xdp(iface.ifindex);
                    format!("tc only: {why}")
                }
                Ok(why) if self.dp.has_xdp(iface.ifindex) => format!("tc + xdp: {why}"),
                Ok(why) => match self.dp.attach_xdp(iface.ifindex) {
                    Ok(()) => {
                        info!(iface = %name, "XDP accelerator attached (native mode): {why}");
                        format!("tc + xdp: {why}")
                    }
                    Err(e) => {
                        warn!(iface = %name, "XDP attach failed, falling back to TC only: {e:#}");
                        format!("tc only: XDP attach failed ({e:#}); TC handles everything")
                    }
                },
            };
            status.push(IfaceStatus {
                name: name.clone(),
                ifindex: Some(iface.ifindex),
                attach: match (
                    self.dp.has_egress(iface.ifindex),
                    self.dp.has_xdp(iface.ifindex),
                ) {
                    (false, false) => "tcx",
                    (true, false) => "tcx+egress",
                    (false, true) => "tcx+xdp",
                    (true, true) => "tcx+egress+xdp",
                }
                .into(),
                mode,
                state: if iface.up {
                    "attached"
                } else {
                    "attached (link down)"
                }
                .into(),
                why: why.clone(),
                l3: iface.l3,
                mtu: iface.mtu,
                kind: iface.kind.clone(),
                addrs: addrs
                    .get(&iface.ifindex)
                    .map(|a| a.iter().map(Ipv4Addr::to_string).collect())
                    .unwrap_or_default(),
            });
        }
        let attached: BTreeSet<(String, u32)> = self
            .dp
            .attached()
            .map(|a| (a.name.clone(), a.ifindex))
            .collect();
        let removed = self
            .dp
            .sweep_stale(|n, i| attached.contains(&(n.to_string(), i)))?;
        if !removed.is_empty() {
            info!("removed stale link pins: {}", removed.join(", "));
        }

        let mut entries = rules::materialize(&compiled, |n| {
            links.get(n).map(|l| IfaceState {
                ifindex: l.ifindex,
                addrs: addrs.get(&l.ifindex).cloned().unwrap_or_default(),
            })
        });
        // mss_clamp = "auto": the narrower of the listening interface and
        // the interface toward the target (the path MTU as far as this host
        // can see it), minus IPv4 and TCP headers.
        let mut mss_of: BTreeMap<u32, u16> = BTreeMap::new();
        for r in &compiled.rules {
            let f = &r.forward;
            let mss = match f.mss_clamp {
                MssClamp::Fixed(m) => Some(m),
                MssClamp::Off => None,
                MssClamp::Auto => {
                    let in_mtu = links.get(&f.iface).map(|l| l.mtu).filter(|m| *m > 0);
                    let out_mtu = routes[&f.name]
                        .and_then(|r| name_of(r.oif))
                        .map(|l| l.mtu)
                        .filter(|m| *m > 0);
                    let mtu = match (in_mtu, out_mtu) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    mtu.map(|m| m.saturating_sub(TCPIP_HLEN).clamp(536, 65495) as u16)
                }
            };
            if let Some(m) = mss {
                mss_of.insert(r.id, m);
            }
        }
        for v in entries.listeners.values_mut() {
            if let Some(m) = mss_of.get(&v.rule_id) {
                v.flags |= LISTEN_MSS_CLAMP;
                v.mss = *m;
            }
        }

        // New ids start from zero counters and are named in the maps
        // before any listener can use them.
        {
            let mut names = self.dp.rule_names()?;
            for (name, id) in &ids {
                if self.ids.get(name) != Some(id) {
                    names.set(*id, RuleName::new(name), 0)?;
                }
            }
        }
        for (name, id) in &ids {
            if self.ids.get(name) != Some(id) {
                self.dp.reset_rule_counters(*id)?;
            }
        }
        self.apply(&entries)?;
        {
            let mut names = self.dp.rule_names()?;
            for (name, id) in &self.ids {
                if !ids.contains_key(name) {
                    names.set(*id, RuleName::default(), 0)?;
                }
            }
        }
        for name in &entries.missing_ifaces {
            warn!(iface = %name, "interface does not exist (yet): its forwards wait for it");
        }
        info!(
            forwards = compiled.rules.len(),
            listeners = entries.listeners.len(),
            allow = entries.allow.len(),
            "maps in sync"
        );

        let rule_status: Vec<RuleStatus> = compiled
            .rules
            .iter()
            .map(|r| {
                let mut s = RuleStatus::of(r.id, &r.forward);
                s.mss = mss_of.get(&r.id).copied();
                s.listeners = entries
                    .listeners
                    .values()
                    .filter(|v| v.rule_id == r.id)
                    .count();
                s.decision = explain_decision(&r.forward, routes[&r.forward.name], &links);
                s
            })
            .collect();
        // Say how each forward's flows will be treated, whenever that
        // changes (a new rule, a route or interface change).
        for s in &rule_status {
            let before = self.rule_status.iter().find(|o| o.name == s.name);
            if before.is_none_or(|o| o.decision != s.decision || o.mss != s.mss) {
                info!(
                    rule = %s.name,
                    listeners = s.listeners,
                    mss = ?s.mss,
                    "{}",
                    s.decision
                );
            }
        }
        self.rule_status = rule_status;
        self.ids = ids;
        self.compiled = compiled;
        self.entries = entries;
        self.iface_status = status;
        Ok(())
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
                m.insert(&LpmKey::new(k.prefix_len, k.data), 1, 0)?;
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
            let _ = m.remove(&LpmKey::new(k.prefix_len, k.data));
        }
        Ok(())
    }

    pub fn write_state(&self) -> Result<()> {
        let st = DaemonState {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix: self.started_unix,
            rules_file: Some(self.rules_path.clone()),
            generation: self.generation,
            last_load: self.last_load.clone(),
            rules_error: self.rules_error.clone(),
            adopted: self.adopted.clone(),
            metrics: self.metrics.clone(),
            interfaces: self.iface_status.clone(),
            rules: self.rule_status.clone(),
            warnings: crate::snat_ports::warnings(&self.loaded.rules.global.snat_ports),
        };
        state::write(&self.run_dir, &st)
    }

    pub fn sweep(&mut self) -> Result<crate::sweeper::SweepStats> {
        let t = self.timeouts();
        let now = crate::sweeper::monotonic_ns();
        let stats = crate::sweeper::sweep(self.dp.flows_data()?, &t, now)?;
        let mut learned = self.dp.auto_snat()?;
        crate::sweeper::sweep_auto_snat(&mut learned, now);
        Ok(stats)
    }
}

/// Whether an interface gets the XDP accelerator besides TC: `Ok(why)` to
/// try native XDP, `Err(why)` for TC only.
pub fn xdp_choice(setting: rules::AttachMode, iface: &Iface) -> Result<&'static str, &'static str> {
    use rules::AttachMode;
    if setting == AttachMode::Tc {
        return Err("configured attach = \"tc\"");
    }
    if iface.l3 {
        return Err("an L3 device (no link header) has no XDP");
    }
    if setting == AttachMode::Xdp {
        return Ok("configured attach = \"xdp\"");
    }
    match iface.kind.as_deref() {
        None => Ok("auto: a NIC, where native XDP handles established flows before the stack"),
        Some("bridge") => Err("auto: a bridge runs XDP in generic mode only, slower than TC"),
        Some("veth") => Err(
            "auto: XDP on a veth takes GSO away from its peer, which slows bulk TCP through it several times",
        ),
        Some(_) => Err("auto: a virtual device (XDP on stacked or virtual devices is generic-mode or unreliable)"),
    }
}

/// What can be said from the routing table about a forward's SNAT and
/// path decision. The kernel decides per flow with the same FIB, so this is
/// a forecast for `status` and the log, not a second implementation.
fn explain_decision(
    f: &rules::Forward,
    route: Option<netlink::Route>,
    links: &BTreeMap<String, Iface>,
) -> String {
    let oif = route.and_then(|r| links.values().find(|l| l.ifindex == r.oif));
    let via = |r: &netlink::Route| match r.gateway {
        None => format!(
            "redirected straight to {} (on-link)",
            oif.map_or("?", |l| l.name.as_str())
        ),
        Some(g) => format!(
            "through the stack (target behind gateway {g} on {})",
            oif.map_or("?", |l| l.name.as_str())
        ),
    };
    match (f.snat, route) {
        (Snat::Off, None) => "client address kept; no forwarding route to the target: through the \
             stack (virtual or local target), replies translated back at egress"
            .into(),
        (Snat::Off, Some(r)) => format!("client address kept; {}", via(&r)),
        (Snat::Fixed(a), Some(_)) => format!(
            "source rewritten to {a}; redirected to {}",
            oif.map_or("?", |l| l.name.as_str())
        ),
        (Snat::Masquerade, Some(r)) => format!(
            "source rewritten to {} (masquerade); redirected to {}",
            r.prefsrc
                .map_or("the egress address".into(), |a| a.to_string()),
            oif.map_or("?", |l| l.name.as_str())
        ),
        (Snat::Fixed(_) | Snat::Masquerade, None) => {
            "no forwarding route to the target: new flows are dropped (counted as errors) \
             until one exists"
                .into()
        }
        (Snat::Auto, None) => format!(
            "client address kept: the target has no forwarding route (a virtual address such \
             as a ClusterIP, or local), so flows go through the stack (which cannot take a \
             SNAT) and replies are translated back at egress of {}",
            f.iface
        ),
        (Snat::Auto, Some(r)) if oif.is_some_and(|l| l.name == f.iface) => format!(
            "SNAT to {}: the target is reached through {} itself, so its replies would \
             bypass this host",
            r.prefsrc
                .map_or("the egress address".into(), |a| a.to_string()),
            f.iface
        ),
        (Snat::Auto, Some(r)) => format!(
            "client address kept when the route back to the client leaves through {} \
             (decided per flow), else SNAT; a backend whose answers bypass this host is \
             switched to SNAT on the client's first SYN retransmit; {}",
            f.iface,
            via(&r)
        ),
    }
}
