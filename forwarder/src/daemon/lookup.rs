//! Asking DNS for a target name's A records, with hickory's stub resolver
//! (`resolve.rs` decides when, and what an outcome does to the forward).
//!
//! The one fact a reader gets wrong: every batch of lookups builds its own
//! resolver without a cache, from /etc/resolv.conf and /etc/hosts as they
//! are then (or only the `dns_server`s), so an edit of those files counts
//! from the next batch and a due lookup always reaches a server.
use std::net::SocketAddr;

use hickory_resolver::{
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
    net::{runtime::TokioRuntimeProvider, DnsError, NetError},
    proto::{op::ResponseCode, rr::RData, rr::RecordType},
    Resolver, TokioResolver,
};

use super::resolve::{Failure, Outcome, LOOKUP_DEADLINE};

/// The resolver for one batch of lookups.
pub fn build_resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut builder = if servers.is_empty() {
        let mut b = Resolver::builder_tokio()
            .map_err(|e| format!("reading the system's resolver configuration: {e}"))?;
        b.options_mut().use_hosts_file = ResolveHosts::Always;
        b
    } else {
        let config = ResolverConfig::from_name_servers(
            servers
                .iter()
                .map(|s| {
                    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                    udp.port = s.port();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect(),
        );
        let mut b = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        b.options_mut().use_hosts_file = ResolveHosts::Never;
        b
    };
    // Each batch builds its own resolver: a cache would only hide the
    // fresh answer a due lookup is for.
    builder.options_mut().cache_size = 0;
    builder
        .build()
        .map_err(|e| format!("setting up the resolver: {e}"))
}

/// One lookup of `name` now, as the daemon makes it (`explain --lookup`).
pub async fn lookup_once(servers: &[SocketAddr], name: &str) -> Outcome {
    match build_resolver(servers) {
        Ok(r) => lookup(&r, name).await,
        Err(e) => Outcome::Failed(Failure::Other(e)),
    }
}

/// Asks for `name`'s A records.
pub async fn lookup(resolver: &TokioResolver, name: &str) -> Outcome {
    let answer = tokio::time::timeout(LOOKUP_DEADLINE, resolver.lookup(name, RecordType::A)).await;
    let err = match answer {
        Err(_) => return Outcome::Failed(Failure::Timeout),
        Ok(Ok(lookup)) => {
            let mut addrs = Vec::new();
            let mut ttl = u32::MAX;
            for r in lookup.answers() {
                ttl = ttl.min(r.ttl);
                if let RData::A(a) = &r.data {
                    addrs.push(a.0);
                }
            }
            return if addrs.is_empty() {
                Outcome::Failed(Failure::NoData { v6_only: false })
            } else {
                Outcome::Answer { addrs, ttl }
            };
        }
        Ok(Err(e)) => e,
    };
    let failure = classify(&err);
    if failure == (Failure::NoData { v6_only: false }) {
        // Say why when the name is IPv6-only: the fix is not in DNS.
        let v6 = tokio::time::timeout(LOOKUP_DEADLINE, resolver.lookup(name, RecordType::AAAA))
            .await
            .is_ok_and(|r| {
                r.is_ok_and(|l| l.answers().iter().any(|r| matches!(r.data, RData::AAAA(_))))
            });
        return Outcome::Failed(Failure::NoData { v6_only: v6 });
    }
    Outcome::Failed(failure)
}

fn classify(e: &NetError) -> Failure {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Failure::NxDomain,
            ResponseCode::NoError => Failure::NoData { v6_only: false },
            ResponseCode::ServFail => Failure::ServFail,
            ResponseCode::Refused => Failure::Refused,
            code => Failure::Other(format!("DNS error {code}")),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => Failure::ServFail,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => Failure::Refused,
        NetError::Dns(DnsError::ResponseCode(code)) => Failure::Other(format!("DNS error {code}")),
        NetError::Timeout => Failure::Timeout,
        other => Failure::Other(format!("lookup failed: {other}")),
    }
}
