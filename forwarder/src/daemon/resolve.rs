//! Facts about DNS-name targets (`to = "immich-server.immich.svc.cluster.local:80"`):
//! what each name resolves to now, kept current by re-resolving it when its
//! answer's TTL runs out and, after a failure, with a backoff.
//!
//! The resolver (`lookup.rs`) is hickory's stub resolver, not getaddrinfo: the daemon
//! needs each answer's TTL to know when to ask again, which getaddrinfo
//! does not report. With no `dns_server` in `[global]` it reads
//! /etc/resolv.conf (servers, search domains, ndots, timeouts) and
//! /etc/hosts, afresh for every batch of lookups, like the system resolver
//! after an edit of those files; `ip netns exec NS` gives a namespace its own
//! resolv.conf that way too. With `dns_server` only those servers are asked
//! (a Kubernetes node's host resolver does not know `*.svc.cluster.local`:
//! point it at CoreDNS, 10.43.0.10 on k3s).
//!
//! Only A records are asked for (the rules format translates IPv4). Of
//! several addresses the lowest is used: DNS servers rotate the order of
//! their answers, so "the first" would move the forward on every
//! re-resolution; there is no load balancing over them.
//!
//! The one fact a reader gets wrong: a failure does not always pause a
//! forward. An answer that says the name is gone (NXDOMAIN, or no A
//! record) pauses it at once; a failure to get an answer (SERVFAIL,
//! timeout, no server reachable) keeps the last good address, shown as
//! stale, and retries with a backoff, like a rules file that cannot be read
//! keeps the running configuration: a DNS server restarting must not take
//! every forward down. A name that has never resolved has no last address,
//! so its forward stays paused until it does; except after a restart,
//! where the address the adopted maps forward to stands in for the first
//! answer (`adopt`): an upgrade during a DNS outage keeps forwarding.
use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::lookup::{build_resolver, lookup};

/// A TTL below this is read as this: a TTL of 0 (dnsmasq's default for
/// its own records) would otherwise mean a query per name all the time.
pub const TTL_FLOOR: Duration = Duration::from_secs(1);
/// A TTL above this is read as this: a misconfigured day-long TTL must not
/// keep a moved backend stale for a day. /etc/hosts entries (which have no
/// TTL) are re-read this often too.
pub const TTL_CEILING: Duration = Duration::from_secs(300);
/// After a failure, the first retry; each further failure doubles the
/// wait up to `RETRY_MAX`, so a paused forward resumes within about that
/// long of its name resolving again.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// One lookup, all servers and retries included, gives up after this.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(10);

/// Why a lookup gave no address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no A record (`v6_only`: it has AAAA ones).
    NoData {
        v6_only: bool,
    },
    ServFail,
    Refused,
    /// No answer in time.
    Timeout,
    /// The resolver could not be set up or no server could be reached.
    Other(String),
}

impl Failure {
    /// The DNS said the name has no IPv4 address: the forward pauses even
    /// when it had one. Anything else is a failure to get an answer.
    pub fn definitive(&self) -> bool {
        matches!(self, Failure::NxDomain | Failure::NoData { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NxDomain => f.write_str("NXDOMAIN: the name does not exist"),
            Failure::NoData { v6_only: true } => f.write_str(
                "no A record: the name has IPv6 addresses only, and targets are IPv4 for now",
            ),
            Failure::NoData { v6_only: false } => f.write_str("no A record"),
            Failure::ServFail => f.write_str("SERVFAIL from the DNS server"),
            Failure::Refused => f.write_str("REFUSED by the DNS server"),
            Failure::Timeout => f.write_str("timeout: no answer from the DNS server"),
            Failure::Other(s) => f.write_str(s),
        }
    }
}

/// What one lookup gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A records (any order, at least one) and the smallest TTL on the way
    /// to them (CNAMEs included).
    Answer {
        addrs: Vec<Ipv4Addr>,
        ttl: u32,
    },
    Failed(Failure),
}

/// What is known about one name: the fact `plan` turns into listeners
/// (`addr`) and `status` shows (the rest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameFact {
    /// The address in force: the lowest A record of the last answer.
    /// `None`: forwards to this name are paused.
    pub addr: Option<Ipv4Addr>,
    /// Every A record of that answer, sorted.
    pub answers: Vec<Ipv4Addr>,
    /// The last address in force, kept through a pause: the flows
    /// established to it go on, and their path depends on its route.
    pub last_addr: Option<Ipv4Addr>,
    /// When `addr` was last confirmed (Unix seconds), and with what TTL.
    pub resolved_unix: Option<u64>,
    pub ttl: Option<u32>,
    /// Why there is no address, or why the last re-resolution failed (the
    /// address is then stale). `None`: the last lookup answered.
    pub error: Option<Failure>,
    /// When the next lookup is due (Unix seconds).
    pub next_unix: u64,
    /// Lookups that failed, and times the address in force changed, since
    /// the daemon started following this name.
    pub failures: u64,
    pub changes: u64,
    /// No lookup has finished yet.
    pub pending: bool,
}

impl NameFact {
    /// "resolved", "stale", "paused", "resolving" or "adopted".
    pub fn state(&self) -> &'static str {
        match (self.addr, &self.error, self.pending) {
            (Some(_), None, true) => "adopted",
            (Some(_), None, _) => "resolved",
            (Some(_), Some(_), _) => "stale",
            (None, _, true) => "resolving",
            (None, _, false) => "paused",
        }
    }
}

/// One name's state and schedule.
#[derive(Clone, Debug)]
pub struct NameState {
    pub fact: NameFact,
    /// When the next lookup is due.
    pub next: Instant,
    /// The wait after the next failure.
    retry: Duration,
}

impl NameState {
    pub fn new(now: Instant, unix: u64) -> NameState {
        NameState {
            fact: NameFact {
                pending: true,
                next_unix: unix,
                ..Default::default()
            },
            next: now,
            retry: RETRY_FIRST,
        }
    }

    /// Before the first lookup finishes: `addr`, the target the maps a
    /// previous daemon left forward to, stands in for an answer. The first
    /// outcome then decides as it would for an answered name: an answer
    /// replaces it, NXDOMAIN pauses, a failure keeps it (stale).
    pub fn adopt(&mut self, addr: Ipv4Addr) {
        let f = &mut self.fact;
        if f.pending && f.addr.is_none() {
            (f.addr, f.last_addr, f.answers) = (Some(addr), Some(addr), vec![addr]);
        }
    }

    /// Takes in a lookup's outcome at `now` (`unix` the same moment in
    /// Unix seconds); true when the address in force changed (the
    /// listeners must follow).
    pub fn record(&mut self, outcome: Outcome, now: Instant, unix: u64) -> bool {
        let f = &mut self.fact;
        let before = f.addr;
        f.pending = false;
        let wait = match outcome {
            Outcome::Answer { mut addrs, ttl } if !addrs.is_empty() => {
                addrs.sort_unstable();
                addrs.dedup();
                f.addr = Some(addrs[0]);
                f.last_addr = f.addr;
                f.answers = addrs;
                f.resolved_unix = Some(unix);
                f.ttl = Some(ttl);
                f.error = None;
                self.retry = RETRY_FIRST;
                Duration::from_secs(ttl.into()).clamp(TTL_FLOOR, TTL_CEILING)
            }
            outcome => {
                let failure = match outcome {
                    Outcome::Failed(e) => e,
                    Outcome::Answer { .. } => Failure::NoData { v6_only: false },
                };
                f.failures += 1;
                if failure.definitive() {
                    f.addr = None;
                    f.answers.clear();
                }
                f.error = Some(failure);
                let wait = self.retry;
                self.retry = (self.retry * 2).min(RETRY_MAX);
                wait
            }
        };
        self.next = now + wait;
        f.next_unix = unix + wait.as_secs();
        let changed = f.addr != before;
        if changed && before.is_some() {
            f.changes += 1;
        }
        changed
    }
}

/// A finished lookup: the name, the configuration epoch it was started
/// in, and the outcome.
type Done = (String, u64, Outcome);

/// Every name the rules use, their states, and the lookups in flight.
pub struct Names {
    servers: Vec<SocketAddr>,
    names: BTreeMap<String, NameState>,
    in_flight: BTreeMap<String, u64>,
    /// Bumped when the servers change: lookups started before report into
    /// an epoch that is over, and their outcome is dropped.
    epoch: u64,
    tx: UnboundedSender<Done>,
    rx: UnboundedReceiver<Done>,
}

impl Default for Names {
    fn default() -> Self {
        let (tx, rx) = unbounded_channel();
        Names {
            servers: Vec::new(),
            names: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            epoch: 0,
            tx,
            rx,
        }
    }
}

impl Names {
    /// Follows exactly `names` through `servers` (empty: the system's
    /// resolver). Names already followed keep their state; new ones are
    /// due at once; a change of servers makes every name due at once.
    pub fn configure(&mut self, names: impl IntoIterator<Item = String>, servers: &[SocketAddr]) {
        let now = Instant::now();
        let unix = crate::observe::status::now_unix();
        if self.servers != servers {
            self.servers = servers.to_vec();
            self.epoch += 1;
            self.in_flight.clear();
            for s in self.names.values_mut() {
                s.next = now;
            }
        }
        let wanted: std::collections::BTreeSet<String> = names.into_iter().collect();
        self.names.retain(|n, _| wanted.contains(n));
        self.in_flight.retain(|n, _| wanted.contains(n));
        for n in wanted {
            self.names
                .entry(n)
                .or_insert_with(|| NameState::new(now, unix));
        }
    }

    /// See `NameState::adopt`.
    pub fn adopt(&mut self, name: &str, addr: Ipv4Addr) {
        if let Some(s) = self.names.get_mut(name) {
            s.adopt(addr);
            info!(name, addr = %addr, "target name: forwarding to the adopted address until it resolves");
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// When the next lookup is due (none in flight for that name).
    pub fn next_due(&self) -> Option<Instant> {
        self.names
            .iter()
            .filter(|(n, _)| !self.in_flight.contains_key(*n))
            .map(|(_, s)| s.next)
            .min()
    }

    /// Starts a lookup for every name that is due, all through one
    /// resolver built now (so an edit of /etc/resolv.conf counts from the
    /// next batch on).
    pub fn start_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .names
            .iter()
            .filter(|(n, s)| s.next <= now && !self.in_flight.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let resolver = build_resolver(&self.servers);
        for name in due {
            self.in_flight.insert(name.clone(), self.epoch);
            let (tx, epoch, resolver) = (self.tx.clone(), self.epoch, resolver.clone());
            tokio::spawn(async move {
                let outcome = match resolver {
                    Ok(r) => lookup(&r, &name).await,
                    Err(e) => Outcome::Failed(Failure::Other(e)),
                };
                let _ = tx.send((name, epoch, outcome));
            });
        }
    }

    /// The next finished lookup.
    pub async fn next_done(&mut self) -> Done {
        self.rx
            .recv()
            .await
            .expect("the sender lives in the same struct")
    }

    /// Takes in a finished lookup; true when a name's address in force
    /// changed (a reconcile is due).
    pub fn record(&mut self, (name, epoch, outcome): Done) -> bool {
        if self.in_flight.get(&name) != Some(&epoch) {
            return false;
        }
        self.in_flight.remove(&name);
        let Some(state) = self.names.get_mut(&name) else {
            return false;
        };
        let before = state.fact.clone();
        let changed = state.record(outcome, Instant::now(), crate::observe::status::now_unix());
        log_change(&name, &before, &state.fact);
        changed
    }

    /// Waits (at most `limit`) for the lookups in flight, taking in their
    /// outcomes: a start or reload applies names that answer promptly
    /// together with the rest of the file, and one whose server is slow
    /// follows when it answers. True when an address changed.
    pub async fn settle(&mut self, limit: Duration) -> bool {
        self.start_due();
        let deadline = Instant::now() + limit;
        let mut changed = false;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.next_done()).await {
                Ok(done) => changed |= self.record(done),
                Err(_) => break,
            }
        }
        changed
    }

    /// What `plan` and `status` need, by name.
    pub fn facts(&self) -> BTreeMap<String, NameFact> {
        self.names
            .iter()
            .map(|(n, s)| (n.clone(), s.fact.clone()))
            .collect()
    }
}

fn log_change(name: &str, before: &NameFact, now: &NameFact) {
    match (before.addr, now.addr, &now.error) {
        (b, Some(a), None) if b != Some(a) => {
            info!(name, addr = %a, answers = ?now.answers, ttl = ?now.ttl, "target name resolved")
        }
        (_, Some(a), Some(e)) if before.error.as_ref() != Some(e) => warn!(
            name, addr = %a, "re-resolving the target name failed ({e}): keeping its last address, retrying"
        ),
        (Some(_), None, Some(e)) => {
            warn!(
                name,
                "target name no longer resolves ({e}): its forwards are paused"
            )
        }
        (None, None, Some(e)) if before.pending || before.error.as_ref() != Some(e) => {
            warn!(
                name,
                "target name does not resolve ({e}): its forwards stay paused, retrying"
            )
        }
        _ => debug!(name, addr = ?now.addr, "target name re-resolved"),
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
