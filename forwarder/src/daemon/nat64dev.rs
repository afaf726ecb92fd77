//! The NAT64 pool's device (`forwarder_common::NAT64_DEV`, a dummy link,
//! or an ifb one where the kernel has no `dummy`)
//! and the routes to the pool addresses through it, kept in line with the
//! rules before each plan: created when a NAT64 forward exists, deleted
//! (its routes with it) when none is left.
//!
//! Why a device: a NAT64 flow to an IPv4 ClusterIP must go through the
//! stack (kube-proxy's DNAT in PREROUTING picks the pod), with an IPv4
//! source that is not one of the host's (the stack drops a packet from its
//! own address as a martian, and would deliver the replies locally). The
//! pool address routes through this device, so the pod's replies, un-DNATed
//! by conntrack, leave by it, and the egress program there turns them back
//! into IPv6 (`fwd_ingress64`). Nothing is ever received on it; what the
//! programs do not take, the dummy drops.
//!
//! The fact a reader gets wrong: the link outlives the daemon, as the pins
//! do. A restarted daemon finds it and keeps it, so the flows through it
//! go on; only a rules file without NAT64 forwards removes it.
use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::{Context, Result};
use forwarder_common::NAT64_DEV;
use rtnetlink::{
    packet_route::{link::InfoKind, route::RouteScope},
    Handle, LinkDummy, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder,
};
use tracing::info;

use super::facts;

/// The pool addresses the forwards of `rules` use (`rules::nat64_pool`).
pub fn pools(rules: &rules::RuleSet) -> BTreeSet<Ipv4Addr> {
    rules
        .forwards
        .iter()
        .filter_map(|f| rules::nat64_pool(f, rules::Af::V6))
        .collect()
}

/// Makes the device and a /32 route through it to each of `pools` exist
/// (none: the device goes). Returns its ifindex, `None` without pools.
pub async fn ensure(handle: &Handle, pools: &BTreeSet<Ipv4Addr>) -> Result<Option<u32>> {
    let links = facts::links(handle).await?;
    let found = links.get(NAT64_DEV);
    if pools.is_empty() {
        if let Some(l) = found {
            handle
                .link()
                .del(l.ifindex)
                .execute()
                .await
                .with_context(|| format!("deleting {NAT64_DEV} (no NAT64 forward left)"))?;
            info!(
                iface = NAT64_DEV,
                "NAT64 pool device removed: no NAT64 forward left"
            );
        }
        return Ok(None);
    }
    let ifindex = match found {
        Some(l) if matches!(l.kind.as_deref(), Some("dummy" | "ifb")) => {
            if !l.up {
                set_up(handle).await?;
            }
            l.ifindex
        }
        Some(l) => anyhow::bail!(
            "{NAT64_DEV} exists but is a {} link, not the NAT64 pool's dummy (or ifb): rename or delete it",
            l.kind.as_deref().unwrap_or("hardware")
        ),
        None => {
            create(handle).await?;
            set_up(handle).await?;
            let links = facts::links(handle).await?;
            let l = links
                .get(NAT64_DEV)
                .with_context(|| format!("{NAT64_DEV} vanished after its creation"))?;
            info!(iface = NAT64_DEV, ifindex = l.ifindex, "NAT64 pool device created");
            l.ifindex
        }
    };
    for pool in pools {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(*pool, 32)
            .output_interface(ifindex)
            .scope(RouteScope::Link)
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .with_context(|| {
                format!("adding the route to the NAT64 pool {pool} via {NAT64_DEV}")
            })?;
    }
    Ok(Some(ifindex))
}

/// A dummy link, else (a kernel without `dummy`) an ifb one: both drop
/// whatever they are made to send and answer no ARP, which is all the
/// device has to do (the egress program takes the replies first).
async fn create(handle: &Handle) -> Result<()> {
    let dummy = handle
        .link()
        .add(LinkDummy::new(NAT64_DEV).build())
        .execute()
        .await;
    let Err(dummy) = dummy else {
        return Ok(());
    };
    handle
        .link()
        .add(
            LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Ifb)
                .name(NAT64_DEV.to_string())
                .build(),
        )
        .execute()
        .await
        .with_context(|| {
            format!(
                "creating the NAT64 pool device {NAT64_DEV} (module dummy: {dummy}; module ifb)"
            )
        })
}

async fn set_up(handle: &Handle) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_name(NAT64_DEV).up().build())
        .execute()
        .await
        .with_context(|| format!("setting {NAT64_DEV} up"))
}
