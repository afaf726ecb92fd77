//! `check` on the host: is the flow table small for what this host's
//! netfilter tracks today? Someone moving port forwards off iptables has
//! the best evidence of the table they need in netfilter's own count.
//!
//! The one fact a reader gets wrong: netfilter's count includes the host's
//! own connections and everything else it tracks, not only forwarded
//! flows, so a count above `conntrack_max` is a note to look, not an
//! error. The count is per network namespace (the one `check` runs in);
//! `nf_conntrack_max` is the host's (netfilter sizes it from RAM: 262,144
//! above 4 GiB), shown for comparison.
use std::path::Path;

pub const CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";
pub const CONNTRACK_LIMIT: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// What netfilter tracks in this network namespace, and its limit; `None`
/// when conntrack is not loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetfilterTable {
    pub count: u64,
    pub max: Option<u64>,
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// netfilter's table in the namespace this process runs in.
pub fn netfilter_table() -> Option<NetfilterTable> {
    Some(NetfilterTable {
        count: read_number(Path::new(CONNTRACK_COUNT))?,
        max: read_number(Path::new(CONNTRACK_LIMIT)),
    })
}

/// A note (message, help) when netfilter tracks more connections here than
/// a flow table of `conntrack_max` holds.
pub fn small_table_note(
    conntrack_max: u32,
    nf: Option<NetfilterTable>,
    bytes_per_flow: u64,
) -> Option<(String, String)> {
    let nf = nf?;
    if nf.count <= u64::from(conntrack_max) {
        return None;
    }
    let limit = nf
        .max
        .map(|m| format!(" (its limit here: {m})"))
        .unwrap_or_default();
    Some((
        format!(
            "netfilter tracks {} connections on this host now{limit}, more than the flow table's \
             conntrack_max = {conntrack_max}: if the forwards carry many of them, a full table \
             evicts flows that have not completed their handshake and refuses new ones \
             (drop_table_full)",
            nf.count
        ),
        format!(
            "raise [global] conntrack_max; each flow reserves {bytes_per_flow} B of kernel \
             memory up front (`conntrack -C` counts netfilter's connections)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_above_the_table_is_a_note() {
        let nf = |count| {
            Some(NetfilterTable {
                count,
                max: Some(262_144),
            })
        };
        assert_eq!(small_table_note(65_536, nf(65_536), 478), None);
        assert_eq!(small_table_note(65_536, None, 478), None);
        let (msg, help) = small_table_note(65_536, nf(70_000), 478).unwrap();
        assert!(
            msg.starts_with(
                "netfilter tracks 70000 connections on this host now (its limit here: 262144), \
                 more than the flow table's conntrack_max = 65536"
            ),
            "{msg}"
        );
        assert!(help.contains("478 B"), "{help}");
    }
}
