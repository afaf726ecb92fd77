//! Kernel facts over rtnetlink: routes (which interface reaches a target,
//! so the daemon hooks the side replies arrive on) and interface addresses
//! (for listeners that follow "the interface's own addresses").
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::{address::AddressAttribute, route::RouteAttribute};
use rtnetlink::{Handle, RouteMessageBuilder};

pub fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The output interface of the kernel's route to `dst` (`ip route get`).
pub async fn route_oif(handle: &Handle, dst: Ipv4Addr) -> Result<Option<u32>> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .build();
    let mut routes = handle.route().get(msg).execute();
    while let Some(r) = routes.try_next().await.ok().flatten() {
        for a in &r.attributes {
            if let RouteAttribute::Oif(i) = a {
                return Ok(Some(*i));
            }
        }
    }
    Ok(None)
}

/// IPv4 addresses currently on interface `ifindex`.
pub async fn v4_addrs(handle: &Handle, ifindex: u32) -> Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    let mut s = handle
        .address()
        .get()
        .set_link_index_filter(ifindex)
        .execute();
    while let Some(m) = s.try_next().await.context("listing addresses")? {
        for a in &m.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip))
            | AddressAttribute::Address(IpAddr::V4(ip)) = a
            {
                if !out.contains(ip) {
                    out.push(*ip);
                }
            }
        }
    }
    Ok(out)
}
