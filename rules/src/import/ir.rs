//! The importers' own model of what netfilter (or socat) does, before any of
//! it becomes a forward.
//!
//! The fact a reader would get wrong: a rule here is not a forward.
//! Netfilter evaluates a chain in order and the first terminal match decides,
//! so one rule may be shadowed, split by an earlier one, or merged with its
//! neighbours; forwards come out of `resolve.rs`, never out of a single rule.
//!
//! Addresses are `IpAddr`/`IpNet` on purpose: IPv6 input (ip6tables, `ip6`
//! and `inet` nft tables, `TCP6-LISTEN`) is parsed and resolved like IPv4,
//! and only emission (`emit.rs`) refuses it while the rules format is
//! IPv4-only.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{PortRange, L4};

/// Where a piece of input came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// A file name as given, or empty for standard input.
    pub source: String,
    /// 1-based; the first line of a continued line.
    pub line: usize,
    pub text: String,
}

impl Origin {
    pub fn new(source: &str, line: usize, text: &str) -> Origin {
        Origin {
            source: source.to_owned(),
            line,
            text: text.trim().to_owned(),
        }
    }

    /// `file:line`, or `line N` for standard input.
    pub fn at(&self) -> String {
        if self.line == 0 {
            self.source.clone()
        } else if self.source.is_empty() {
            format!("line {}", self.line)
        } else {
            format!("{}:{}", self.source, self.line)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// An address match (`-s NET,NET`, `ip saddr { ... }`), possibly negated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nets {
    pub nets: Vec<IpNet>,
    pub negated: bool,
}

/// Three-valued answer to "does this match apply to that traffic?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    Yes,
    No,
    /// Some of it, or it cannot be known offline.
    Maybe,
}

impl Tri {
    pub fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Yes, Tri::Yes) => Tri::Yes,
            _ => Tri::Maybe,
        }
    }
    fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Maybe => Tri::Maybe,
        }
    }
}

impl Nets {
    pub fn one(net: IpNet) -> Nets {
        Nets {
            nets: vec![net],
            negated: false,
        }
    }

    /// Whether every address of `set` is matched (Yes), none is (No), or
    /// some are (Maybe). `set` empty means "any address".
    pub fn covers(&self, set: &[IpNet]) -> Tri {
        let raw = if set.is_empty() {
            if self.nets.iter().any(|n| n.prefix_len() == 0) {
                Tri::Yes
            } else {
                Tri::Maybe
            }
        } else if set.iter().all(|s| self.nets.iter().any(|n| n.contains(s))) {
            Tri::Yes
        } else if set
            .iter()
            .all(|s| self.nets.iter().all(|n| !n.contains(s) && !s.contains(n)))
        {
            Tri::No
        } else {
            Tri::Maybe
        };
        if self.negated {
            raw.not()
        } else {
            raw
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&addr)) != self.negated
    }

    /// The single address this matches (`-d 1.2.3.4`), if it is one.
    pub fn single(&self) -> Option<IpAddr> {
        match self.nets[..] {
            [n] if !self.negated && n.prefix_len() == n.max_prefix_len() => Some(n.addr()),
            _ => None,
        }
    }
}

/// An interface match: `eth0`, `vmbr+` (a prefix), possibly negated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub negated: bool,
}

impl Iface {
    pub fn matches(&self, name: &str) -> bool {
        let m = match self.name.strip_suffix('+') {
            Some(prefix) => name.starts_with(prefix),
            None => self.name == name,
        };
        m != self.negated
    }

    /// The one interface this names, unless it is a wildcard or negated.
    pub fn concrete(&self) -> Option<&str> {
        (!self.negated && !self.name.ends_with('+')).then_some(self.name.as_str())
    }
}

/// Netfilter hooks the importers care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn from_name(s: &str) -> Option<Hook> {
        Some(match s.to_ascii_lowercase().as_str() {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            _ => return None,
        })
    }
}

/// How DNAT picks the target port for a packet that arrived on port `p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortMap {
    /// `p + shift`: 0 keeps the port (also what netfilter does for a target
    /// range that contains `p`), others map a range 1:1.
    Shift(i32),
    /// Every port goes to this one.
    Single(u16),
    /// A target port range as iptables writes it (`IP:27015-27030`):
    /// netfilter keeps a listen port that lies inside the range and takes
    /// the range's first free port otherwise. `resolve` turns it into
    /// `Shift(0)` where it can.
    Range(PortRange),
}

impl PortMap {
    /// The target ports of listen ports `r`, when they are valid ports.
    pub fn apply(self, r: PortRange) -> Option<PortRange> {
        match self {
            PortMap::Single(p) => PortRange::single(p),
            PortMap::Range(_) => None,
            PortMap::Shift(k) => {
                let s = i32::from(r.start()) + k;
                let e = i32::from(r.end()) + k;
                PortRange::new(u16::try_from(s).ok()?, u16::try_from(e).ok()?)
            }
        }
    }
}

/// What a rule does to the packets it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Dnat {
        addr: IpAddr,
        ports: PortMap,
    },
    Snat {
        addr: IpAddr,
    },
    Masquerade,
    /// REDIRECT: a port on this host itself.
    Redirect {
        to: String,
    },
    /// DNAT that keeps the address (`--to-destination :5001`): also a port
    /// on this host for traffic addressed to it.
    LocalPort {
        port: String,
    },
    /// ACCEPT, RETURN, DROP, REJECT: evaluation of the chain ends (in the
    /// nat table: without translation). The verb, for messages.
    Stop(String),
    Jump {
        chain: String,
        goto: bool,
    },
    /// LOG, counter, MARK...: evaluation goes on.
    Continue,
    /// A NAT the importer cannot express; the reason.
    Unsupported(String),
}

impl Action {
    pub fn is_nat(&self) -> bool {
        matches!(
            self,
            Action::Dnat { .. }
                | Action::Snat { .. }
                | Action::Masquerade
                | Action::Redirect { .. }
                | Action::LocalPort { .. }
                | Action::Unsupported(_)
        )
    }
}

/// One rule, as far as the importer understands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub origin: Origin,
    pub family: Family,
    pub in_iface: Option<Iface>,
    pub out_iface: Option<Iface>,
    pub src: Option<Nets>,
    pub dst: Option<Nets>,
    pub proto: Option<L4>,
    /// `None`: every port.
    pub dports: Option<Vec<PortRange>>,
    /// Matches understood not to change what a new connection matches
    /// (`--ctstate NEW`, `-m comment`...), for the notes.
    pub accepted: Vec<String>,
    /// Matches the importer does not evaluate: where this rule applies is
    /// not known.
    pub unknown: Vec<String>,
    /// A tool whose interfaces the rule names (Docker's docker0...): its
    /// rule, ignored like the tool's chains.
    pub owner: Option<&'static str>,
    pub action: Action,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(origin: Origin, family: Family, action: Action) -> Rule {
        Rule {
            origin,
            family,
            in_iface: None,
            out_iface: None,
            src: None,
            dst: None,
            proto: None,
            dports: None,
            accepted: Vec::new(),
            unknown: Vec::new(),
            owner: None,
            action,
            comment: None,
        }
    }
}

/// A chain with its rules in evaluation order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub family: Family,
    /// `nat`, `filter`... (for nft: the table's name).
    pub table: String,
    pub name: String,
    /// Base chains only.
    pub hook: Option<Hook>,
    /// A NAT chain: iptables' nat table, or an nft chain of type nat.
    pub nat: bool,
    /// The tool that owns and restores the chain (Docker, kube-proxy...).
    pub owner: Option<&'static str>,
    /// Base chains of one hook run in this order (nft priorities).
    pub prio: i32,
    pub rules: Vec<Rule>,
}

/// Everything parsed from netfilter input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
}

impl Ruleset {
    /// The chain, created (empty) on first use.
    pub fn chain(&mut self, family: Family, table: &str, name: &str) -> &mut Chain {
        let i = match self
            .chains
            .iter()
            .position(|c| c.family == family && c.table == table && c.name == name)
        {
            Some(i) => i,
            None => {
                let nat = table == "nat";
                self.chains.push(Chain {
                    family,
                    table: table.to_owned(),
                    name: name.to_owned(),
                    hook: Hook::from_name(name)
                        .filter(|_| name.chars().all(|c| c.is_ascii_uppercase())),
                    nat,
                    owner: owner_of(name),
                    prio: 0,
                    rules: Vec::new(),
                });
                self.chains.len() - 1
            }
        };
        &mut self.chains[i]
    }

    pub fn find(&self, family: Family, table: &str, name: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|c| c.family == family && c.table == table && c.name == name)
    }
}

/// Chains that other tools create and restore themselves: their rules are
/// not the user's forwards and are ignored with a note.
pub fn owner_of(chain: &str) -> Option<&'static str> {
    const OWNERS: [(&str, &str); 14] = [
        ("DOCKER", "Docker"),
        ("KUBE-", "kube-proxy"),
        ("CNI-", "the CNI plugins"),
        ("FLANNEL", "flannel"),
        ("cali-", "Calico"),
        ("CILIUM", "Cilium"),
        ("LIBVIRT_", "libvirt"),
        ("ts-", "Tailscale"),
        ("f2b-", "fail2ban"),
        ("PVEFW-", "the Proxmox firewall"),
        ("ufw-", "ufw"),
        ("ufw6-", "ufw"),
        ("ROUTER-", "kube-router"),
        ("KUBE_", "kube-proxy"),
    ];
    OWNERS
        .iter()
        .find(|(prefix, _)| chain.starts_with(prefix))
        .map(|(_, tool)| *tool)
}

/// Source NAT of a candidate forward, before it becomes `model::Snat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnatChoice {
    /// Netfilter did not rewrite the source (or the importer cannot say).
    Auto,
    Masquerade,
    Addr(IpAddr),
}

/// A forward as the importers found it, with IPv6 still allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub family: Family,
    /// Empty when the input does not say (socat without `--in`).
    pub iface: String,
    /// `None`: the interface's own addresses.
    pub listen: Option<IpAddr>,
    pub l4: L4,
    pub ports: PortRange,
    /// The target's address; unspecified when `target_name` is set.
    pub target: IpAddr,
    /// A DNS name socat connected to (it resolved the name for every
    /// connection): the forward's target is that name, which the daemon
    /// resolves and follows. Netfilter rules always hold addresses.
    pub target_name: Option<String>,
    /// `Shift` or `Single`, never `Range`.
    pub map: PortMap,
    /// Empty: every source.
    pub allow: Vec<IpNet>,
    pub snat: SnatChoice,
    /// Lines it replaces, first the one that names it.
    pub origins: Vec<Origin>,
    /// Explanations for the generated file.
    pub comments: Vec<String>,
    /// A base for the forward's name (a comment, a unit name).
    pub name_hint: Option<String>,
    pub description: Option<String>,
    /// A local socket listened (socat): the host firewall's INPUT rules
    /// (UFW `allow ... to any port N`) applied to it. DNATed traffic is
    /// filtered by FORWARD rules (UFW `route allow`) instead.
    pub local: bool,
}

/// Interfaces other tools create: a rule naming one is that tool's.
pub fn iface_owner(name: &str) -> Option<&'static str> {
    const OWNERS: [(&str, &str); 7] = [
        ("docker0", "Docker"),
        ("br-", "Docker"),
        ("cni0", "the CNI plugins"),
        ("flannel", "flannel"),
        ("cali", "Calico"),
        ("kube-", "kube-router"),
        ("cilium_", "Cilium"),
    ];
    OWNERS
        .iter()
        .find(|(p, _)| name.starts_with(p))
        .map(|(_, t)| *t)
}
