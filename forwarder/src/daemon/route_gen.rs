//! The route generation: a counter in `FWD_ROUTE_GEN` that the kernel
//! compares with the generation of each flow's cached FIB answer
//! (`forwarder_common::FibCache`). Bumping it makes every flow look its
//! route up again on its next packet.
//!
//! The one fact a reader gets wrong: this is its own rtnetlink
//! subscription, not the one reconcile debounces. A bump must follow the
//! change at once (a packet forwarded by a stale answer after a route
//! change is the thing the cache must never do for long), and it listens to
//! more than reconcile needs: policy rules, netconf (forwarding switched
//! off) and neighbours, any of which can change what the FIB answers.
use anyhow::{Context, Result};
use aya::maps::{Array, MapData};
use futures::{Stream, StreamExt};
use rtnetlink::MulticastGroup;

/// The rtnetlink groups whose messages may change a FIB answer.
const GROUPS: &[MulticastGroup] = &[
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv4Rule,
    MulticastGroup::Ipv4Netconf,
    MulticastGroup::Neigh,
    MulticastGroup::Nexthop,
];

/// A stream with one item per rtnetlink message that may change routing.
pub fn watch() -> Result<impl Stream<Item = ()> + Unpin> {
    let (conn, _handle, events) = rtnetlink::new_multicast_connection(GROUPS)
        .context("subscribing to rtnetlink events for the route generation")?;
    tokio::spawn(conn);
    Ok(events.map(|_| ()))
}

/// Bumps the generation (wrapping; 0 is skipped so that a fresh map's 0
/// is never a generation the daemon handed out). Returns the new value.
pub fn bump(map: &mut Array<MapData, u32>) -> Result<u32> {
    let now = map.get(&0, 0).context("reading FWD_ROUTE_GEN")?;
    let next = match now.wrapping_add(1) {
        0 => 1,
        n => n,
    };
    map.set(0, next, 0).context("writing FWD_ROUTE_GEN")?;
    Ok(next)
}
