//! What `explain --lookup` reads of this host about the matched forward's
//! target: its route and its next hop's neighbour entry (rtnetlink, read
//! only, as the daemon reads them), judged by the daemon's own pure
//! neighbour decision (`plan_neigh`), so `explain` says what `status`
//! would about a target whose next hop does not answer ARP.
//!
//! The one fact a reader gets wrong: `explain` does not read the running
//! daemon's `FWD_NEIGH`, only the neighbour table. A FAILED next hop reads
//! the same either way; an INCOMPLETE one that failed before (the daemon
//! keeps it dead while the kernel probes it again) reads here as being
//! resolved, and one the kernel already forgot reads as unknown:
//! `forwarder status` has the daemon's memory of both.
use std::{collections::BTreeSet, net::IpAddr};

use anyhow::Result;
use rules::Forward;

use crate::daemon::{
    facts::{self, Facts},
    plan::neigh,
};

/// The sentence about `target`'s dead next hop for forward `f`, or `None`
/// while it answers (or is IPv6, or has no route).
pub fn dead_next_hop(f: &Forward, target: IpAddr) -> Result<Option<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let handle = facts::connect()?;
        let mut facts = Facts::default();
        facts
            .routes
            .insert(target, facts::route_get(&handle, target).await);
        let hops: BTreeSet<_> = neigh::watched(&facts);
        facts.neighbours = facts::neighbours(&handle, &hops).await?;
        facts.links = facts::links(&handle).await?;
        let dead = neigh::plan(&facts);
        Ok(neigh::explain(f, &facts, &dead, target))
    })
}
