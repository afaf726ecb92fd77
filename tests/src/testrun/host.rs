//! The fixture: the host namespace (topology in the module above), the
//! calling thread moved into it, the dataplane loaded there with private
//! maps and the three interfaces registered.
//!
//! veth ends are named like the bridges they stand in for: the programs
//! only care about ifindexes, routes and the per-interface config. Only the
//! calling thread moves (setns(CLONE_NEWNET) is per thread), so tests of
//! one process may run in parallel threads, each in its own namespace.
use std::{collections::BTreeMap, fs::File, os::fd::AsRawFd};

use anyhow::{bail, Context, Result};
use forwarder::{
    daemon::plan::Record,
    dataplane::{Dataplane, LoadOptions},
};

use crate::netns::{veth, Netns};

pub const LAN_IF: &str = "vmbr0";
pub const VM_IF: &str = "vmbr1";
pub const TS_IF: &str = "tailscale0";
/// The NAT64 pool's device (a dummy, as the daemon makes it), with a
/// route to the default pool address through it.
pub const NAT64_IF: &str = forwarder_common::NAT64_DEV;
/// The default NAT64 pool source (`forwarder_common::NAT64_POOL_DEFAULT`).
pub const POOL: [u8; 4] = forwarder_common::NAT64_POOL_DEFAULT;
pub const HOST_LAN: [u8; 4] = [192, 168, 1, 55];
pub const HOST_VM: [u8; 4] = [192, 168, 100, 1];
pub const HOST_TS: [u8; 4] = [100, 100, 1, 1];
pub const TS_MTU: u32 = 1280;
/// The MSS the daemon gives `mss_clamp = "auto"` (the default) between the
/// fixture's veths: their MTU (1500, the default) minus IPv4 and TCP
/// headers. A forward through tailscale0 gets `TS_MTU - 40`.
pub const AUTO_MSS: u16 = 1460;

/// Counter slots the fixture gives its interfaces.
pub(crate) const SLOTS: [(&str, u32); 4] = [(LAN_IF, 0), (VM_IF, 1), (TS_IF, 2), (NAT64_IF, 3)];

/// Moves the calling thread into a network namespace and back on drop.
/// BPF test runs, FIB lookups and if_nametoindex use the calling thread's
/// namespace.
struct Entered {
    home: File,
}

impl Entered {
    fn enter(ns: &str) -> Result<Entered> {
        let home = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        let target = File::open(format!("/run/netns/{ns}"))
            .with_context(|| format!("opening netns {ns}"))?;
        // SAFETY: plain syscall on valid namespace fds.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns into {ns}: {}", std::io::Error::last_os_error());
        }
        Ok(Entered { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: as above; failure leaves the thread where it is, and the
        // test process ends soon anyway.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// The host namespace with the dataplane loaded (not attached: test_run
/// feeds packets directly) and its interfaces registered.
pub struct Host {
    pub dp: Dataplane,
    pub lan: u32,
    pub vm: u32,
    pub ts: u32,
    pub nat64: u32,
    /// Rule ids by forward name, from the last `rules()` call.
    pub ids: BTreeMap<String, u32>,
    /// What the daemon's apply step wrote into the maps (`rules()`).
    pub record: Record,
    // Drop order: leave the namespace, then delete it (and its links).
    _entered: Entered,
    pub peer: Netns,
    pub ns: Netns,
}

impl Host {
    /// Builds the namespaces, enters the host one and loads the dataplane
    /// with a flow table of `conntrack_max` flows.
    pub fn new(conntrack_max: u32) -> Result<Host> {
        // FORWARDER_FORCE_FALLBACK runs the whole suite with the fallbacks
        // of older kernels, as it makes the daemon load them.
        let forced = forwarder::probe::fallback::forced_by_env().map_err(anyhow::Error::msg)?;
        Host::new_with(conntrack_max, forwarder_common::FEATURES_ALL & !forced)
    }

    /// [`Host::new`] with the programs loaded for a kernel that has only
    /// `kernel_features` (`forwarder_common::kernel`): the fallbacks of
    /// older kernels, run on this one.
    pub fn new_with(conntrack_max: u32, kernel_features: u32) -> Result<Host> {
        crate::netns::sweep();
        let ns = Netns::new("trhost")?;
        let peer = Netns::new("trpeer")?;
        veth(&ns, LAN_IF, &peer, "lan")?;
        veth(&ns, VM_IF, &peer, "vm")?;
        ns.addr(LAN_IF, "192.168.1.55/24")?;
        ns.addr(VM_IF, "192.168.100.1/24")?;
        ns.ip(&["tuntap", "add", "dev", TS_IF, "mode", "tun"])?;
        ns.ip(&["link", "set", TS_IF, "mtu", &TS_MTU.to_string()])?;
        ns.addr(TS_IF, "100.100.1.1/24")?;
        // A tun without a reader has no carrier; its routes stay usable.
        ns.ip(&["route", "add", "8.0.0.0/24", "dev", TS_IF])?;
        // As the daemon makes it: a dummy, else an ifb (kernels without
        // `dummy`, as this CI's).
        if ns.ip(&["link", "add", NAT64_IF, "type", "dummy"]).is_err() {
            ns.ip(&["link", "add", NAT64_IF, "type", "ifb"])?;
        }
        ns.ip(&["link", "set", NAT64_IF, "up"])?;
        ns.ip(&["route", "add", "192.0.0.2/32", "dev", NAT64_IF])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        let entered = Entered::enter(&ns.name)?;
        let idx = |n: &str| forwarder::ifaces::ifindex(n).with_context(|| format!("no {n}"));
        let (lan, vm, ts, nat64) = (idx(LAN_IF)?, idx(VM_IF)?, idx(TS_IF)?, idx(NAT64_IF)?);
        let dp = Dataplane::load(&LoadOptions {
            conntrack_max,
            kernel_features,
            ..Default::default()
        })?;
        let mut host = Host {
            dp,
            lan,
            vm,
            ts,
            nat64,
            ids: BTreeMap::new(),
            record: Record::default(),
            _entered: entered,
            peer,
            ns,
        };
        host.register_ifaces()?;
        if kernel_features & forwarder_common::FEATURE_FIB_SKIP_NEIGH == 0 {
            // Without SKIP_NEIGH a reply to an unresolved client has no
            // egress interface (the daemon's route facts cover targets
            // only): the fixture's client is resolved, as a client that
            // ARPed for the host's address is.
            host.neigh(super::frames::CLIENT, [0x02, 0, 0, 0, 0, 0x10], LAN_IF)?;
        }
        Ok(host)
    }

    /// [`Host::new`] with these rules loaded ([`Host::rules`]); panics
    /// when either fails.
    pub fn with_rules(conntrack_max: u32, rules: &str) -> Host {
        let mut h = Host::new(conntrack_max).expect("test namespace and dataplane");
        h.rules(rules).expect("rules");
        h
    }

    /// A test's fixture: [`Host::with_rules`], or `None` after a loud skip
    /// message when not root (a failure under CI, see
    /// [`crate::require_root`]). Use as
    /// `let Some(mut h) = Host::for_test(64, RULES) else { return };`.
    pub fn for_test(conntrack_max: u32, rules: &str) -> Option<Host> {
        let thread = std::thread::current();
        // libtest names each test's thread after the test.
        let test = thread.name().unwrap_or("a test_run test");
        crate::require_root(test).then(|| Host::with_rules(conntrack_max, rules))
    }

    /// [`Host::for_test`] for a kernel with only `kernel_features`.
    pub fn for_test_with(conntrack_max: u32, rules: &str, kernel_features: u32) -> Option<Host> {
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("a test_run test");
        crate::require_root(test).then(|| {
            let mut h = Host::new_with(conntrack_max, kernel_features)
                .expect("test namespace and dataplane");
            h.rules(rules).expect("rules");
            h
        })
    }

    pub fn ifindex(&self, name: &str) -> u32 {
        match name {
            LAN_IF => self.lan,
            VM_IF => self.vm,
            TS_IF => self.ts,
            NAT64_IF => self.nat64,
            // Not one of ours: test_run's default device.
            "lo" => 1,
            _ => panic!("unknown interface {name}"),
        }
    }

    /// The id the last `rules()` call gave forward `rule`.
    pub fn id(&self, rule: &str) -> u32 {
        *self
            .ids
            .get(rule)
            .unwrap_or_else(|| panic!("no rule {rule}"))
    }

    pub fn iface_name(&self, ifindex: u32) -> &'static str {
        SLOTS
            .iter()
            .map(|(n, _)| *n)
            .find(|n| self.ifindex(n) == ifindex)
            .unwrap_or("?")
    }

    /// A permanent neighbour entry in the host namespace: bpf_fib_lookup
    /// without BPF_FIB_LOOKUP_SKIP_NEIGH (the XDP accelerator) answers
    /// NO_NEIGH for a next hop without a valid one.
    pub fn neigh(&self, ip: [u8; 4], mac: [u8; 6], dev: &str) -> Result<()> {
        let ip = std::net::Ipv4Addr::from(ip).to_string();
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        self.ns.ip(&[
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
    }

    /// The MAC address of a host interface.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let out = self.ns.output(&["ip", "-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let s = v[0]["address"].as_str().context("no address")?;
        let b: Vec<u8> = s
            .split(':')
            .map(|x| u8::from_str_radix(x, 16))
            .collect::<Result<_, _>>()?;
        b.try_into()
            .map_err(|b| anyhow::anyhow!("{dev}: odd MAC {b:?}"))
    }

    /// Current CLOCK_MONOTONIC_COARSE in ns: the clock the dataplane stamps
    /// flows with (bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC at tick
    /// resolution), so a stamp taken between two reads lies between them.
    /// (Not with the coarse-time fallback, which stamps at full resolution:
    /// [`Host::later_ns`] bounds both from above.)
    pub fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Current CLOCK_MONOTONIC in ns: never earlier than a stamp taken
    /// before it, by either clock the dataplane may use (the coarse clock
    /// lags the full one by up to a tick).
    pub fn later_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

/// The fixture's "web" forward as a literal for `concat!`: TCP 80 of
/// HOST_LAN to the VM's port 80, SNAT to HOST_VM, no MSS clamping. Keys
/// written right after it belong to it (`allow = [...]`, say).
#[macro_export]
macro_rules! web_forward {
    () => {
        r#"
[[forward]]
name = "web"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "192.168.100.1"
mss_clamp = "off"
"#
    };
}

/// The fixture's "dns" forward as a literal for `concat!`: UDP 5353 of
/// HOST_LAN to the VM's port 53, SNAT to HOST_VM. Keys written right after
/// it belong to it.
#[macro_export]
macro_rules! dns_forward {
    () => {
        r#"
[[forward]]
name = "dns"
in = "vmbr0"
listen = "192.168.1.55"
proto = "udp"
port = 5353
to = "192.168.100.80:53"
snat = "192.168.100.1"
"#
    };
}

/// Rules for the fixture: "web" (TCP 80 of HOST_LAN to the VM's port 80)
/// and "dns" (UDP 5353 to its port 53), both with SNAT to HOST_VM from the
/// ports `SNAT_PORTS`; load alone or followed by more forwards.
pub const WEB_AND_DNS: &str = concat!(
    r#"
[global]
snat_ports = "41000-41015"
"#,
    crate::web_forward!(),
    crate::dns_forward!()
);

/// The SNAT source ports of `WEB_AND_DNS`.
pub const SNAT_PORTS: std::ops::RangeInclusive<u16> = 41000..=41015;

/// The SNAT source ports of rules without `snat_ports` (the default range,
/// below Linux's ephemeral ports; the name is older than that choice).
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> =
    forwarder_common::DEFAULT_SNAT_PORT_MIN..=forwarder_common::DEFAULT_SNAT_PORT_MAX;
