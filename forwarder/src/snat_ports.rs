//! The host's own ephemeral ports versus the SNAT range: the kernel picks
//! ports for the host's outgoing connections from `ip_local_port_range`, and
//! a SNAT port in that range could later be picked for a connection of the
//! host's own to the same backend, whose replies the dataplane would then
//! take for the forwarded flow's. The SNAT allocator checks local sockets
//! when it picks a port, but cannot see sockets created afterwards; a
//! disjoint range is what rules that out, and this says when it is not.
use std::path::Path;

use rules::PortRange;

pub const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The ephemeral port range of the network namespace this process runs in.
pub fn local_port_range() -> Option<(u16, u16)> {
    read_range(Path::new(LOCAL_PORT_RANGE))
}

fn read_range(path: &Path) -> Option<(u16, u16)> {
    parse_range(&std::fs::read_to_string(path).ok()?)
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(|s| s.parse::<u16>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    (lo <= hi).then_some((lo, hi))
}

/// A warning when `snat` overlaps the host's ephemeral range `local`.
pub fn overlap_warning(snat: &PortRange, local: Option<(u16, u16)>) -> Option<String> {
    let (lo, hi) = local?;
    if snat.end() < lo || snat.start() > hi {
        return None;
    }
    Some(format!(
        "snat_ports {snat} overlaps this host's ephemeral ports {lo}-{hi} \
         (net.ipv4.ip_local_port_range): a connection of the host's own to a \
         forward's target could get a SNATed flow's port and lose its replies; \
         use a range outside it, e.g. the default \"1024-32767\""
    ))
}

/// The warnings about `snat` on this host, for logs, `check` and `status`.
pub fn warnings(snat: &PortRange) -> Vec<String> {
    overlap_warning(snat, local_port_range())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sysctl_format() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("bogus"), None);
        assert_eq!(parse_range("5 4"), None);
    }

    #[test]
    fn overlap_is_reported() {
        let local = Some((32768, 60999));
        let r = |a, b| PortRange::new(a, b).unwrap();
        assert!(overlap_warning(&r(1024, 32767), local).is_none());
        assert!(overlap_warning(&r(61000, 65535), local).is_none());
        assert!(overlap_warning(&r(32768, 60999), local)
            .unwrap()
            .contains("overlaps this host's ephemeral ports 32768-60999"));
        assert!(overlap_warning(&r(30000, 33000), local).is_some());
        assert!(overlap_warning(&r(30000, 33000), None).is_none());
    }
}
