//! The configurations under comparison, as data: what runs on the router,
//! where the client connects, and which client address the server must see
//! (the path check that stops a misconfigured run from counting).
//!
//! `rulesets` generates each configuration's rules from one list of
//! forwards, `router` sets the router up, `forwarder_status` reads what a
//! running forwarder counted, `ipv6` holds the IPv6 configurations.
use std::path::Path;

use anyhow::{ensure, Result};
use forwarder_tests::topology::TempDir;

use super::{
    measure,
    topology::{Topo, CLIENT, PORT_HTTP, ROUTER_IN, ROUTER_OUT, SERVER},
};

mod forwarder_status;
pub mod ipv6;
mod router;
mod rulesets;

pub use forwarder_status::forwarder_counts;
pub use rulesets::FORWARDS;
use rulesets::{iptables_rules, nft_ruleset, rules_file, socat_relays};

pub enum Kind {
    /// Plain kernel forwarding, no NAT: the client connects to the server.
    Kernel,
    Iptables,
    Nftables,
    Socat,
    /// The forwarder daemon with the equivalent rules file.
    Forwarder(Fwd),
    /// An IPv6 configuration (`ipv6`).
    V6(ipv6::V6),
}

/// How a forwarder configuration differs from plain forwarder-tc.
pub struct Fwd {
    /// Rules-file tables after `[global]` (per-interface settings).
    pub tables: &'static str,
    /// Skip the configuration (with `forwarder check`'s error as the
    /// reason) when the binary does not accept its rules file.
    pub optional: bool,
    /// XDP on the router's veths. The veth peers (c0, s0) get GRO on, so
    /// frames XDP redirects into them are taken in natively, and TX
    /// checksum offload off, so frames carry full checksums as frames from
    /// a NIC do (XDP cannot finish a partial checksum and would leave every
    /// packet to TC). The daemon must report XDP attached on both.
    pub xdp: bool,
}

const TC: Fwd = Fwd {
    tables: "",
    optional: false,
    xdp: false,
};

pub struct Config {
    pub name: &'static str,
    pub about: &'static str,
    pub kind: Kind,
}

pub const FORWARDER_TC: &str = "forwarder-tc";

/// The XDP accelerator on both router interfaces. Optional: a binary that
/// does not know the setting skips the configuration with the reason.
const XDP_TABLES: &str = "[interface.r0]\nattach = \"xdp\"\n\n[interface.r1]\nattach = \"xdp\"\n";

/// The sender-side changes the XDP configuration makes (see `Fwd::xdp`).
const XDP_PEERS: &[(&str, &str)] = &[("client", "c0"), ("server", "s0")];

/// In run order within each round (interleaved: A B C ... A B C ...).
pub const CONFIGS: &[Config] = &[
    Config {
        name: "kernel",
        about: "plain kernel forwarding, no NAT (the client connects to the server's address): the limit",
        kind: Kind::Kernel,
    },
    Config {
        name: "iptables",
        about: "iptables DNAT (PREROUTING) + SNAT (POSTROUTING) in the router namespace",
        kind: Kind::Iptables,
    },
    Config {
        name: "nftables",
        about: "the same DNAT + SNAT as an nft ruleset",
        kind: Kind::Nftables,
    },
    Config {
        name: "socat",
        about: "socat relays on the router (TCP-LISTEN/UDP-LISTEN fork -> server)",
        kind: Kind::Socat,
    },
    Config {
        name: FORWARDER_TC,
        about: "the forwarder daemon (TC/TCX) with the equivalent rules file",
        kind: Kind::Forwarder(TC),
    },
    Config {
        name: "forwarder-xdp",
        about: "the forwarder with its XDP accelerator on both router interfaces (`attach = \"xdp\"`); the client's and server's veths get GRO on and TX checksum offload off (full checksums, as from a NIC), so unlike every other configuration their senders do no TSO: compare its TCP bulk numbers with care",
        kind: Kind::Forwarder(Fwd {
            tables: XDP_TABLES,
            optional: true,
            xdp: true,
        }),
    },
    Config {
        name: "kernel6",
        about: "IPv6: plain kernel forwarding, no NAT (the client connects to the server's IPv6 address)",
        kind: Kind::V6(ipv6::V6::Kernel),
    },
    Config {
        name: "ip6tables",
        about: "IPv6: ip6tables DNAT (PREROUTING) + SNAT (POSTROUTING) in the router namespace",
        kind: Kind::V6(ipv6::V6::Ip6tables),
    },
    Config {
        name: FORWARDER_TC6,
        about: "IPv6: the forwarder daemon (TC/TCX, NAT66) with the equivalent rules file",
        kind: Kind::V6(ipv6::V6::Forwarder),
    },
];

/// The forwarder's IPv6 configuration, the IPv6 table's reference.
pub const FORWARDER_TC6: &str = "forwarder-tc6";
/// The IPv6 table's baselines, in column order.
pub const BASELINES6: &[&str] = &["kernel6", "ip6tables"];

pub fn by_name(name: &str) -> Option<&'static Config> {
    CONFIGS.iter().find(|c| c.name == name)
}

impl Config {
    /// The address the client connects to.
    pub fn target(&self) -> &'static str {
        match &self.kind {
            Kind::Kernel => SERVER,
            Kind::V6(v) => v.target(),
            _ => ROUTER_IN,
        }
    }

    /// The client address the server must see.
    pub fn expected_peer(&self) -> &'static str {
        match &self.kind {
            Kind::Kernel => CLIENT,
            Kind::V6(v) => v.expected_peer(),
            _ => ROUTER_OUT,
        }
    }

    pub fn is_forwarder(&self) -> bool {
        matches!(
            self.kind,
            Kind::Forwarder { .. } | Kind::V6(ipv6::V6::Forwarder)
        )
    }

    /// An IPv6 configuration: its topology gets IPv6 (`ipv6::add_ipv6`),
    /// and the report shows it in a table of its own.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.kind, Kind::V6(_))
    }

    /// The router-side setup for the report: commands, ruleset or rules file.
    pub fn setup_text(&self) -> Vec<String> {
        match &self.kind {
            Kind::Kernel => vec![format!(
                "(none: ip_forward=1; the client routes 10.77.2.0/24 via {ROUTER_IN} and connects to {SERVER})"
            )],
            Kind::Iptables => iptables_rules().iter().map(|v| v.join(" ")).collect(),
            Kind::Nftables => vec![format!("nft -f FILE with:\n{}", nft_ruleset())],
            Kind::Socat => socat_relays().iter().map(|v| v.join(" ")).collect(),
            Kind::V6(v) => v.setup_text(),
            Kind::Forwarder(f) => {
                let mut v = Vec::new();
                if f.xdp {
                    for (ns, dev) in XDP_PEERS {
                        v.push(format!("({ns}) ethtool -K {dev} gro on tx off"));
                    }
                }
                v.push(
                    "forwarder --pin-dir DIR --run-dir DIR run --rules FILE (release build) with:"
                        .into(),
                );
                v.push(rules_file("", f.tables));
                v
            }
        }
    }

    /// Why this configuration cannot run with `forwarder_bin`, if it cannot.
    pub fn unsupported(&self, forwarder_bin: &Path) -> Option<String> {
        let Kind::Forwarder(Fwd {
            tables,
            optional: true,
            ..
        }) = self.kind
        else {
            return None;
        };
        let dir = match TempDir::new("bench-check") {
            Ok(d) => d,
            Err(e) => return Some(format!("cannot create a temp dir: {e}")),
        };
        let file = dir.file("rules.toml");
        if let Err(e) = std::fs::write(&file, rules_file("", tables)) {
            return Some(format!("cannot write {}: {e}", file.display()));
        }
        let out = std::process::Command::new(forwarder_bin)
            .arg("check")
            .arg(&file)
            .output();
        match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "`forwarder check` rejects its rules file ({}): {}",
                tables.replace('\n', " ").trim(),
                measure::tail(
                    String::from_utf8_lossy(&o.stderr)
                        .replace(&file.display().to_string(), "rules.toml")
                        .trim()
                )
            )),
            Err(e) => Some(format!("cannot run {}: {e}", forwarder_bin.display())),
        }
    }

    /// The path check: the client address the server saw (nginx `/whoami`)
    /// must be the one this configuration produces.
    pub fn check_path(&self, topo: &Topo) -> Result<()> {
        let url = format!(
            "http://{}:{PORT_HTTP}/whoami",
            ipv6::url_host(self.target())
        );
        let out = topo
            .client
            .output(&["curl", "-sS", "-g", "--max-time", "5", &url])?;
        let seen = out.trim();
        ensure!(
            seen == self.expected_peer(),
            "the server saw the client as {seen:?}, expected {} for {}: traffic did not take the configured path",
            self.expected_peer(),
            self.name
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_tc_exists() {
        let mut names: Vec<&str> = CONFIGS.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CONFIGS.len());
        assert!(by_name(FORWARDER_TC).is_some());
        assert!(by_name(FORWARDER_TC6).is_some_and(|c| c.is_ipv6() && c.is_forwarder()));
        for b in BASELINES6 {
            assert!(by_name(b).is_some_and(Config::is_ipv6), "{b}");
        }
    }
}
