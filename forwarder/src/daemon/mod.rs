//! The daemon: from the rules file and the kernel's facts to attached
//! programs and map contents, in three stages.
//!
//! ```text
//!  rules file ─┐
//!  rtnetlink ──┼─ facts ──> plan (pure) ──> apply (the only kernel writes)
//!  dataplane ──┘                                 │
//!              record (what the maps hold) <─────┘
//! ```
//!
//! `reconcile` is idempotent, so start-up, reloads and netlink events all go
//! through it (`events` is the loop that calls it). The one fact a reader
//! gets wrong: the record, not the rules file, is what the next plan diffs
//! against, and after a failed write it is re-read from the kernel; so a
//! half-applied reload can never leave entries the daemon does not know of.
pub mod apply;
pub mod changes;
pub mod events;
pub mod facts;
pub mod lookup;
pub mod nat64dev;
pub mod plan;
pub mod resolve;
pub mod route_gen;
pub mod sweeper;
pub mod targets;
pub mod watch;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::Result;
use rtnetlink::Handle;
use tracing::{info, warn};

use crate::{
    dataplane::Dataplane,
    observe::status::{self, DaemonState, IfaceReport, LoadResult, RuleStatus},
};
use apply::Faults;
use facts::Facts;
use plan::Record;

pub struct Daemon {
    pub dp: Dataplane,
    pub rules_path: PathBuf,
    pub run_dir: PathBuf,
    /// The rules in force (the last file that applied).
    pub loaded: rules::Loaded,
    /// What the kernel maps hold.
    record: Record,
    /// Forwards in force, for the load summary.
    forwards: usize,
    iface_status: Vec<IfaceReport>,
    rule_status: Vec<RuleStatus>,
    rules_error: Option<String>,
    started_unix: u64,
    generation: u64,
    last_load: Option<LoadResult>,
    adopted: Option<String>,
    pub metrics: Option<String>,
    /// How the rules file is watched (`watch::RulesWatch::description`).
    pub rules_watch: Option<String>,
    netlink: Handle,
    /// Faults injected into map writes (tests only; empty otherwise).
    pub faults: Faults,
    /// The DNS names of targets, followed (`resolve.rs`).
    pub names: resolve::Names,
    /// Where the conntrack sweeper's walk of the flow table stands.
    sweeper: sweeper::Sweeper,
    /// The last reconcile failed: the event loop tries again.
    failed: bool,
    /// ... and its writes could not be rolled back.
    maps_mixed: bool,
    /// What the last reconcile that applied changed (`forwarder reload`
    /// prints it).
    last_changes: Option<changes::Changes>,
    /// Neighbours: the targets' next hops (whose neighbour events matter),
    /// what `FWD_NEIGH` holds, and the targets ever found dead
    /// (`plan_neigh.rs`).
    neigh_watched: std::collections::BTreeSet<std::net::Ipv4Addr>,
    neigh_dead: BTreeMap<std::net::Ipv4Addr, forwarder_common::NeighFlags>,
    dead_once: std::collections::BTreeSet<std::net::Ipv4Addr>,
}

/// How long a start or reload waits for the DNS names of its targets
/// before applying: names that answer in time are applied with the rest of
/// the file, a slow one follows when it answers (paused until then).
const NAMES_SETTLE: Duration = Duration::from_secs(3);

/// Reads and validates the rules file; the error text is the rendered
/// diagnostics (file, line, column, rule, what and how to fix).
pub fn load_rules(path: &std::path::Path) -> Result<rules::Loaded, String> {
    let loaded = rules::load_file(path).map_err(|e| match e.diagnostics() {
        Some(d) => d.to_string(),
        None => e.to_string(),
    })?;
    // The rules format takes forwards of IPv4 clients to an IPv6 target
    // (NAT46); this release's dataplane does not (issue 13). Refusing
    // the file keeps the running configuration, instead of listeners that
    // never match. The text is `check`'s warning as an error: same place,
    // same words.
    let refused = loaded.not_forwarded();
    if !refused.is_empty() {
        let file = path.display().to_string();
        let mut text: Vec<String> = refused.iter().map(|d| d.render(&file)).collect();
        text.push(format!(
            "{file}: not loaded: {} forward{} need{} NAT46, which is not in this release",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" },
            if refused.len() == 1 { "s" } else { "" },
        ));
        return Err(text.join("\n"));
    }
    // Forwards scoped to other nodes (`nodes = [...]`) are dropped here, the
    // narrowest place: nothing downstream ever sees them.
    let loaded = loaded.for_node(crate::node::name());
    if !loaded.other_nodes.is_empty() {
        info!(node = crate::node::name(), forwards = ?loaded.other_nodes, "forwards for other nodes: not applied here");
    }
    Ok(loaded)
}

impl Daemon {
    pub fn new(
        dp: Dataplane,
        rules_path: PathBuf,
        run_dir: PathBuf,
        loaded: rules::Loaded,
    ) -> Result<Self> {
        // Map contents already in the kernel (adopted from a previous
        // daemon), so the first plan diffs against what is really there.
        let record = facts::read_record(&dp.maps)?;
        let adopted = (dp.adopted.maps > 0).then(|| {
            format!(
                "adopted pinned state: {} maps, {} rules, {} listener entries",
                dp.adopted.maps,
                record.ids.len(),
                record.entries.listeners.len()
            )
        });
        Ok(Daemon {
            dp,
            rules_path,
            run_dir,
            loaded,
            record,
            forwards: 0,
            iface_status: Vec::new(),
            rule_status: Vec::new(),
            rules_error: None,
            started_unix: status::now_unix(),
            generation: 0,
            last_load: None,
            adopted,
            metrics: None,
            rules_watch: None,
            netlink: facts::connect()?,
            faults: Faults::default(),
            names: resolve::Names::default(),
            sweeper: sweeper::Sweeper::default(),
            failed: false,
            maps_mixed: false,
            last_changes: None,
            neigh_watched: Default::default(),
            neigh_dead: Default::default(),
            dead_once: Default::default(),
        })
    }

    /// Follows the DNS names of the rules in force, through their
    /// `dns_server` (or the system's resolver).
    fn follow_names(&mut self) {
        let rules = &self.loaded.rules;
        let names = rules
            .forwards
            .iter()
            .filter_map(|f| f.target.name().map(str::to_owned));
        self.names.configure(names, &rules.global.dns_servers);
    }

    /// A lookup finished. True when a reconcile is due: an address in
    /// force changed, or a name is without one (its forward's pause
    /// reason may have changed). Otherwise only `status` is refreshed.
    pub fn name_looked_up(&mut self, done: (String, u64, resolve::Outcome)) -> bool {
        let name = done.0.clone();
        let changed = self.names.record(done);
        let facts = self.names.facts();
        if changed || facts.get(&name).is_some_and(|f| f.addr.is_none()) {
            return true;
        }
        for s in &mut self.rule_status {
            if let Some(f) = self.loaded.rules.forward(&s.name) {
                let target = targets::target_addr(f, &facts);
                s.resolution = targets::name_status(f, &facts, &target);
            }
        }
        self.publish();
        false
    }

    pub fn timeouts(&self) -> rules::Timeouts {
        self.loaded.rules.global.timeouts
    }

    /// Rule names by id, for metrics and logs.
    pub fn rule_names(&self) -> BTreeMap<u32, String> {
        self.record
            .ids
            .iter()
            .map(|(n, i)| (*i, n.clone()))
            .collect()
    }

    /// The first load (the file was validated before the dataplane loaded).
    pub async fn start(&mut self) -> Result<()> {
        for w in crate::snat_ports::warnings(&self.loaded.rules.global.snat_ports) {
            warn!("{w}");
        }
        self.generation += 1;
        self.follow_names();
        for (name, addr) in targets::adopted_addrs(&self.loaded.rules, &self.record) {
            self.names.adopt(&name, addr);
        }
        self.names.settle(NAMES_SETTLE).await;
        let r = self.reconcile().await;
        self.record_load("start", r.as_ref().err().map(|e| format!("{e:#}")));
        self.publish();
        r
    }

    /// Re-reads the rules file. An invalid file changes nothing: the running
    /// configuration stays and the error is kept for `status`.
    pub async fn reload(&mut self, trigger: &str) -> Result<()> {
        crate::notify::reloading();
        self.generation += 1;
        let result = match load_rules(&self.rules_path) {
            Ok(loaded) => {
                let old = std::mem::replace(&mut self.loaded, loaded);
                self.follow_names();
                self.names.settle(NAMES_SETTLE).await;
                match self.reconcile().await {
                    Ok(()) => {
                        self.rules_error = None;
                        info!(file = %self.rules_path.display(), trigger, "rules applied");
                        Ok(())
                    }
                    Err(e) => {
                        // Keep describing what is in force; the record says
                        // what the maps hold, and the event loop retries.
                        warn!(trigger, "rules not applied: {e:#}");
                        self.rules_error = Some(format!("{e:#}"));
                        self.loaded = old;
                        self.follow_names();
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
        self.publish();
        crate::notify::ready(self.last_load.as_ref());
        result
    }

    /// The result of the last load attempt (start or reload).
    pub fn last_load(&self) -> Option<&LoadResult> {
        self.last_load.as_ref()
    }

    fn record_load(&mut self, trigger: &str, error: Option<String>) {
        let summary = match &error {
            None => format!(
                "{} forwards, {} listener entries, {} allow-list entries",
                self.forwards,
                self.record.entries.listeners.len(),
                self.record.entries.allow.len()
            ),
            Some(e) => e.lines().next().unwrap_or_default().to_string(),
        };
        self.last_load = Some(LoadResult {
            at_unix: status::now_unix(),
            trigger: trigger.to_string(),
            applied: error.is_none(),
            summary,
            maps_mixed: error.is_some() && self.maps_mixed,
            changes: if error.is_none() {
                self.last_changes.clone()
            } else {
                None
            },
        });
    }

    /// Whether a netlink event calls for a reconcile (`facts::event_matters`:
    /// neighbour messages only about targets, and changes that matter).
    pub fn netlink_event_matters(
        &self,
        msg: &rtnetlink::packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
    ) -> bool {
        match &msg.payload {
            rtnetlink::packet_core::NetlinkPayload::InnerMessage(m) => {
                facts::event_matters(m, &self.neigh_watched, &self.neigh_dead)
            }
            _ => true,
        }
    }

    /// Whether the last reconcile failed (and should be tried again).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Brings attachments and maps in line with the rules and the kernel:
    /// facts, plan, apply.
    pub async fn reconcile(&mut self) -> Result<()> {
        self.maps_mixed = false;
        let r = self.facts_plan_apply().await;
        self.failed = r.is_err();
        r
    }

    async fn facts_plan_apply(&mut self) -> Result<()> {
        let names = self.names.facts();
        let targets: Vec<_> = self
            .loaded
            .rules
            .forwards
            .iter()
            .filter_map(|f| match &f.target.host {
                rules::Host::Addr(a) => Some(*a),
                // A paused name's last address: its flows' route.
                rules::Host::Name(n) => names
                    .get(n)
                    .and_then(|n| n.addr.or(n.last_addr))
                    .map(std::net::IpAddr::V4),
            })
            .collect();
        // Before the facts: the plan attaches to the device it makes.
        nat64dev::ensure(&self.netlink, &nat64dev::pools(&self.loaded.rules)).await?;
        let mut facts = Facts::gather(&self.netlink, targets, names, &self.dp).await?;
        facts.dead_once = self.dead_once.clone();
        let plan = plan::plan(&self.loaded.rules, &facts, &self.record)?;
        self.neigh_watched = plan::neigh::watched(&facts);
        let changes = self.changes(&plan);
        if self.loaded.rules.forwards.iter().any(rules::needs_ipv6) {
            // Loaded at start only when the file had an IPv6 forward.
            self.dp.ensure_ipv6()?;
        }
        let applied = apply::apply(&mut self.dp, &plan, &mut self.record, &mut self.faults);
        // What apply writes (dead neighbours, interface flags, route facts)
        // is read into each flow's cached FIB answer (`FibCache`): stale
        // now, even when apply failed half-way.
        self.routes_changed();
        let applied = applied?;
        self.dead_once.extend(plan.neigh.keys());
        self.neigh_dead = plan.neigh.clone();
        self.iface_status = applied.ifaces;
        if let Err(e) = &applied.maps {
            self.maps_mixed = !e.rolled_back;
        }
        applied.maps?;
        if !applied.attach_failed.is_empty() {
            anyhow::bail!("{}", applied.attach_failed.join("; "));
        }
        for name in &plan.entries.missing_ifaces {
            warn!(iface = %name, "interface does not exist (yet): its forwards wait for it");
        }
        info!(
            forwards = plan.compiled.rules.len(),
            listeners = plan.entries.listeners.len(),
            allow = plan.entries.allow.len(),
            removes_first = plan.update.removes_first,
            "maps in sync"
        );
        // Say how each forward's flows will be treated, whenever that
        // changes (a new rule, a route or interface change).
        for s in &plan.rules {
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
        self.rule_status = plan.rules;
        self.forwards = plan.compiled.rules.len();
        self.last_changes = Some(changes);
        Ok(())
    }

    /// Deletes the NAT64 pool's device (`forwarder down`: nothing of the
    /// forwarder's stays behind).
    pub async fn remove_nat64_dev(&self) -> Result<()> {
        nat64dev::ensure(&self.netlink, &Default::default())
            .await
            .map(|_| ())
    }

    /// What `plan` changes against what runs, with the live flows of the
    /// forwards it changes or removes (the flow table is walked only then).
    fn changes(&self, plan: &plan::Plan) -> changes::Changes {
        let none = BTreeMap::new();
        let c = changes::between(&self.record, &self.rule_status, plan, &none);
        if c.old_forwards().next().is_none() {
            return c;
        }
        match crate::dataplane::batch::dump::<forwarder_common::FlowKey, forwarder_common::FlowEntry>(
            self.dp.maps.flow_table(),
        ) {
            Ok(flows) => {
                let per_rule = changes::flows_per_rule(flows.iter().map(|(_, e)| e));
                changes::between(&self.record, &self.rule_status, plan, &per_rule)
            }
            Err(e) => {
                warn!("counting the flows a reload leaves on their old translation: {e:#}");
                c
            }
        }
    }

    /// Writes the status file; a failure (a full or read-only run
    /// directory) is logged and changes nothing else: the dataplane and the
    /// daemon go on, and the next write tries again.
    pub fn publish(&self) {
        if let Err(e) = self.write_state() {
            warn!("writing the status file failed, status shows older news: {e:#}");
        }
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
            rules_watch: self.rules_watch.clone(),
            node: Some(crate::node::name().to_string()),
            other_nodes: self.loaded.other_nodes.clone(),
            interfaces: self.iface_status.clone(),
            rules: self.rule_status.clone(),
            warnings: self.warnings(),
        };
        status::write(&self.run_dir, &st)
    }

    /// What `status` lists under warnings: problems that do not stop the
    /// daemon (snat_ports overlapping the host's ephemeral ports, the IPv6
    /// path off).
    fn warnings(&self) -> Vec<String> {
        let mut w = crate::snat_ports::warnings(&self.loaded.rules.global.snat_ports);
        if let Some(why) = &self.dp.ipv6_off {
            w.push(crate::dataplane::ipv6_off_warning(why));
        }
        w
    }

    /// Routing may have changed: every flow's cached FIB answer is stale.
    pub fn routes_changed(&mut self) {
        if let Err(e) = route_gen::bump(&mut self.dp.maps.route_gen) {
            warn!("{e:#}");
        }
    }

    /// One step of the sweeper's walk; the pass's totals when it ended one.
    pub fn sweep(&mut self) -> Result<Option<sweeper::SweepStats>> {
        let t = self.timeouts();
        let now = sweeper::monotonic_ns();
        let pass = self.sweeper.step(self.dp.maps.flow_table(), &t, now)?;
        if pass.is_some() {
            sweeper::sweep_auto_snat(&mut self.dp.maps.auto_snat, now);
        }
        Ok(pass)
    }
}
