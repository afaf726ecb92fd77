//! The host's own listening sockets, from the kernel's socket tables
//! (`/proc/net/tcp`, `tcp6`, `udp`, `udp6`), for `check` on the host: a
//! source a forward's allow-list refuses with `reject = "rst"` is handed to
//! the host's stack untouched, so a local service on the forwarded address
//! and port gets it (see `explain`).
//!
//! The one fact a reader gets wrong: `/proc/net/tcp` prints an IPv4
//! address as the raw 32-bit word in host byte order (`0100007F` is
//! 127.0.0.1 on x86), the port in network order (`0016` is 22). An IPv6
//! socket bound to `::` also takes IPv4 unless it is v6-only, which the
//! table does not show: it is counted as listening on every IPv4 address.
use std::net::Ipv4Addr;

use crate::model::L4;

/// A socket of this host that takes new connections (TCP LISTEN) or
/// datagrams (an unconnected UDP socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalSocket {
    pub proto: L4,
    /// `0.0.0.0` for a wildcard bind.
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl LocalSocket {
    /// Whether a packet to `addr:port` over `proto` reaches this socket.
    pub fn takes(&self, proto: L4, addr: Ipv4Addr, port: u16) -> bool {
        self.proto == proto
            && self.port == port
            && (self.addr.is_unspecified() || self.addr == addr)
    }
}

/// TCP_LISTEN and TCP_CLOSE (an unconnected UDP socket) in the `st` column.
const TCP_LISTEN: &str = "0A";
const UDP_UNCONNECTED: &str = "07";

/// The sockets of one table's text; `v6` for the `tcp6`/`udp6` tables.
pub fn parse(text: &str, proto: L4, v6: bool) -> Vec<LocalSocket> {
    let wanted = match proto {
        L4::Tcp => TCP_LISTEN,
        L4::Udp => UDP_UNCONNECTED,
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [_, local, _, st, ..] = cols.as_slice() else {
            continue;
        };
        if *st != wanted {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let addr = if v6 {
            match addr {
                // `::`: dual-stack unless v6-only.
                a if a.len() == 32 && a.bytes().all(|b| b == b'0') => Ipv4Addr::UNSPECIFIED,
                // `::ffff:a.b.c.d`: the last word, as in the IPv4 table.
                a if a.len() == 32 && a.starts_with("0000000000000000FFFF0000") => {
                    match u32::from_str_radix(&a[24..], 16) {
                        Ok(w) => Ipv4Addr::from(w.to_ne_bytes()),
                        Err(_) => continue,
                    }
                }
                _ => continue,
            }
        } else {
            match u32::from_str_radix(addr, 16) {
                Ok(w) => Ipv4Addr::from(w.to_ne_bytes()),
                Err(_) => continue,
            }
        };
        out.push(LocalSocket { proto, addr, port });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 3701A8C0:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 3701A8C0:0016 0A01A8C0:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F46 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:0019 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6 2 0 0
  2: 3701A8C0:A000 0101A8C0:0035 01 00000000:00000000 00:00000000 00000000     0        0 7 2 0 0
";

    #[test]
    fn listeners_and_unconnected_udp_sockets_with_their_addresses() {
        let (w, x86) = (Ipv4Addr::UNSPECIFIED, cfg!(target_endian = "little"));
        let tcp = parse(TCP, L4::Tcp, false);
        assert_eq!(tcp.len(), 2, "{tcp:?}");
        assert_eq!((tcp[0].addr, tcp[0].port), (w, 22));
        if x86 {
            assert_eq!(tcp[1].addr, Ipv4Addr::new(192, 168, 1, 55));
        }
        assert_eq!(tcp[1].port, 8080);
        // `::` counts as every IPv4 address; `::1` not at all.
        let tcp6 = parse(TCP6, L4::Tcp, true);
        assert_eq!(
            tcp6,
            [LocalSocket {
                proto: L4::Tcp,
                addr: w,
                port: 8006
            }]
        );
        let udp = parse(UDP, L4::Udp, false);
        assert_eq!(
            udp,
            [LocalSocket {
                proto: L4::Udp,
                addr: w,
                port: 53
            }]
        );
        assert!(udp[0].takes(L4::Udp, Ipv4Addr::new(10, 0, 0, 1), 53));
        assert!(!udp[0].takes(L4::Tcp, Ipv4Addr::new(10, 0, 0, 1), 53));
        if x86 {
            assert!(!tcp[1].takes(L4::Tcp, Ipv4Addr::new(192, 168, 1, 56), 8080));
            assert!(tcp[1].takes(L4::Tcp, Ipv4Addr::new(192, 168, 1, 55), 8080));
        }
    }
}
