//! Setting the router up for a configuration (rules loaded, relays or the
//! daemon started and checked), and what runs there while it is measured:
//! dropping the `Router` stops it.
use anyhow::{ensure, Context, Result};
use forwarder_tests::{process::Bg, topology::TempDir, Daemon};

use super::{
    rulesets::{iptables_rules, nft_ruleset, rules_file, socat_relays},
    Config, Kind, XDP_PEERS,
};
use crate::bench::topology::{Topo, PORT_HTTP, PORT_IPERF, PORT_SOCKPERF};

/// What runs on the router while a configuration is measured; dropping it
/// stops that (namespace-local state like iptables rules goes with the
/// namespace).
pub enum Router {
    Plain,
    /// Kept only to be stopped on drop.
    Relays {
        _procs: Vec<Bg>,
    },
    Forwarder {
        daemon: Box<Daemon>,
        _dir: TempDir,
    },
}

impl Router {
    pub fn daemon(&self) -> Option<&Daemon> {
        match self {
            Router::Forwarder { daemon, .. } => Some(daemon),
            _ => None,
        }
    }
}

impl Config {
    /// Sets the router up for this configuration. `global` overrides the
    /// forwarder rules file's `[global]` body (the scale runs use it).
    pub fn setup(&self, topo: &Topo, global: Option<&str>) -> Result<Router> {
        let r = &topo.router;
        match &self.kind {
            Kind::Kernel => Ok(Router::Plain),
            Kind::V6(v) => v.setup(topo),
            Kind::Iptables => {
                for rule in iptables_rules() {
                    let args: Vec<&str> = rule.iter().map(String::as_str).collect();
                    r.run(&args)?;
                }
                Ok(Router::Plain)
            }
            Kind::Nftables => {
                let dir = TempDir::new("bench-nft")?;
                std::fs::write(dir.file("bench.nft"), nft_ruleset())?;
                r.run(&["nft", "-f", &dir.file_str("bench.nft")])?;
                Ok(Router::Plain)
            }
            Kind::Socat => {
                let mut relays = Vec::new();
                for argv in socat_relays() {
                    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
                    relays.push(r.spawn(&args)?);
                }
                for (proto, port) in [
                    ('t', PORT_IPERF),
                    ('t', PORT_HTTP),
                    ('t', PORT_SOCKPERF),
                    ('u', PORT_IPERF),
                ] {
                    let flag = format!("-l{proto}nH");
                    let needle = format!(":{port} ");
                    forwarder_tests::process::wait_for(std::time::Duration::from_secs(10), || {
                        let ss = r.output(&["ss", &flag]).unwrap_or_default();
                        ss.contains(&needle).then_some(())
                    })
                    .with_context(|| format!("socat did not listen on {proto}/{port}"))?;
                }
                Ok(Router::Relays { _procs: relays })
            }
            Kind::Forwarder(f) => {
                if f.xdp {
                    for (ns, dev) in XDP_PEERS {
                        let ns = if *ns == "client" {
                            &topo.client
                        } else {
                            &topo.server
                        };
                        ns.run(&["ethtool", "-K", dev, "gro", "on", "tx", "off"])?;
                    }
                }
                let dir = TempDir::new("bench-rules")?;
                let file = dir.file_str("rules.toml");
                std::fs::write(&file, rules_file(global.unwrap_or(""), f.tables))?;
                let daemon = Daemon::start(r, &["--rules", &file])?;
                if f.xdp {
                    // Never report TC numbers as XDP: a failed XDP attach
                    // falls back to TC, so insist on it.
                    let st = daemon.state()?;
                    for i in st["interfaces"].as_array().into_iter().flatten() {
                        ensure!(
                            i["attach"] == "tcx+xdp",
                            "XDP is not attached on {}: {}",
                            i["name"],
                            i
                        );
                    }
                }
                Ok(Router::Forwarder {
                    daemon: Box::new(daemon),
                    _dir: dir,
                })
            }
        }
    }
}
