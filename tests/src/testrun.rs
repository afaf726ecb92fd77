//! BPF_PROG_TEST_RUN support for the NAT dataplane tests: a network
//! namespace standing in for the Proxmox host (so the programs' FIB lookups
//! see real routes), the loaded dataplane with rules compiled by the real
//! rules compiler, one call to run a frame through a hook (TC ingress, TC
//! egress or the XDP accelerator), and snapshots of every counter and map
//! the programs write, to check exact deltas.
//!
//! ```text
//!  peer ns                   host ns (the test thread moves in here)
//!  lan ─────── veth ─────── vmbr0       192.168.1.55/24
//!  vm  ─────── veth ─────── vmbr1       192.168.100.1/24   (VMs on-link)
//!                           tailscale0  100.100.1.1/24, tun, MTU 1280,
//!                                       route 8.0.0.0/24 (a subnet router)
//!  no route to 10.43.0.0/16 (ClusterIPs), no default route
//! ```
//!
//! veth ends named like the bridges they stand in for: the programs only
//! care about ifindexes, routes and the per-interface config.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    ops::RangeInclusive,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{bail, ensure, Context, Result};
use forwarder::{
    dataplane::{Dataplane, LoadOptions},
    observe::pinned::sum_cpus,
};
use forwarder_common::{
    iface_counter_index, AutoSnatKey, Counter, FlowEntry, FlowKey, GlobalConfig, Hook, IfaceConfig,
    IfaceFlags, Reason, RuleCounters, MAX_RULES, PROG_XDP, RULE_DROP_REASONS,
};

use crate::netns::{veth, Netns};

/// The TC verdicts as test_run reports them (the return value as i32).
pub use forwarder_common::{TCX_NEXT, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};

/// XDP actions as test_run reports them (as i32, like the TC verdicts).
pub const XDP_ABORTED: i32 = forwarder_common::XDP_ABORTED as i32;
pub const XDP_DROP: i32 = forwarder_common::XDP_DROP as i32;
pub const XDP_PASS: i32 = forwarder_common::XDP_PASS as i32;
pub const XDP_TX: i32 = forwarder_common::XDP_TX as i32;
pub const XDP_REDIRECT: i32 = forwarder_common::XDP_REDIRECT as i32;

pub const LAN_IF: &str = "vmbr0";
pub const VM_IF: &str = "vmbr1";
pub const TS_IF: &str = "tailscale0";
pub const HOST_LAN: [u8; 4] = [192, 168, 1, 55];
pub const HOST_VM: [u8; 4] = [192, 168, 100, 1];
pub const HOST_TS: [u8; 4] = [100, 100, 1, 1];
pub const TS_MTU: u32 = 1280;

/// Rules for the fixture: "web" (TCP 80 of HOST_LAN to the VM's port 80)
/// and "dns" (UDP 5353 to its port 53), both with SNAT to HOST_VM from the
/// ports `SNAT_PORTS`; load alone or followed by more forwards.
pub const WEB_AND_DNS: &str = r#"
[global]
snat_ports = "41000-41015"

[[forward]]
name = "web"
in = "vmbr0"
listen = "192.168.1.55"
port = 80
to = "192.168.100.80:80"
snat = "192.168.100.1"
mss_clamp = "off"

[[forward]]
name = "dns"
in = "vmbr0"
listen = "192.168.1.55"
proto = "udp"
port = 5353
to = "192.168.100.80:53"
snat = "192.168.100.1"
"#;

/// The SNAT source ports of `WEB_AND_DNS`.
pub const SNAT_PORTS: RangeInclusive<u16> = 41000..=41015;

/// `struct __sk_buff` as BPF_PROG_TEST_RUN takes it in `ctx_in`: 192 bytes
/// on this ABI. `ifindex` (offset 40) makes the kernel build the skb on
/// that device; `ingress_ifindex` (36) goes to skb_iif; `gso_segs` (164)
/// and `gso_size` (176) to the skb's shared info.
const SKB_CTX_LEN: usize = 192;
const SKB_INGRESS_IFINDEX: usize = 36;
const SKB_IFINDEX: usize = 40;
const SKB_GSO_SEGS: usize = 164;
const SKB_GSO_SIZE: usize = 176;

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it in `ctx_in` (6 x u32:
/// data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex). What the kernel requires (net/bpf/test_run.c,
/// `bpf_prog_test_run_xdp` and `xdp_convert_md_to_buff`; ctx_in for XDP
/// since Linux 5.14, ingress_ifindex and rx_queue_index since 5.15):
/// data_meta 0 (no user data before the metadata); data = the metadata
/// length in front of the packet (0 here), at most data_end; data_end equal
/// to data_size_in; egress_ifindex 0; ingress_ifindex a device of the
/// *calling thread's* network namespace (ENODEV otherwise), whose queue
/// rx_queue_index exists and has its xdp_rxq registered (every device
/// registers its queues when allocated, so any veth or tun qualifies);
/// rx_queue_index 0 when ingress_ifindex is 0. Without ctx_in (or with
/// ingress_ifindex 0) the frame arrives on the namespace's loopback, which
/// the programs do not know, and bpf_fib_lookup resolves in the namespace
/// of that device.
const XDP_MD_LEN: usize = 24;
const XDP_MD_DATA_END: usize = 4;
const XDP_MD_INGRESS_IFINDEX: usize = 12;

/// Counter slots the fixture gives the interfaces.
const SLOTS: [(&str, u32); 3] = [(LAN_IF, 0), (VM_IF, 1), (TS_IF, 2)];

/// Moves the calling thread into a network namespace and back on drop.
/// Only this thread moves: setns(CLONE_NEWNET) is per thread, and BPF test
/// runs, FIB lookups and if_nametoindex use the calling thread's namespace.
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

/// How the test skb's checksum state is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// CHECKSUM_NONE: the kernel's default for test_run.
    None,
    /// CHECKSUM_COMPLETE (BPF_F_TEST_SKB_CHECKSUM_COMPLETE): skb->csum holds
    /// the sum of the packet from the IP header on, as on receive from most
    /// NICs, and after the run the kernel checks the program kept it right
    /// (EBADMSG otherwise). The packet bytes come out exactly as with
    /// CHECKSUM_NONE (the helpers rewrite the checksum fields the same way);
    /// only this extra check differs, and it is the one that catches an
    /// address rewrite without BPF_F_PSEUDO_HDR. (CHECKSUM_PARTIAL, which
    /// veth and local senders produce, cannot be set up through test_run.)
    Complete,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_SKB_CHECKSUM_COMPLETE: u32 = 1 << 2;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one program run returned.
#[derive(Clone, Debug)]
pub struct Run {
    pub verdict: i32,
    /// The packet as the program left it.
    pub out: Vec<u8>,
}

/// The host namespace with the dataplane loaded (not attached: test_run
/// feeds packets directly) and its interfaces registered.
pub struct Host {
    pub dp: Dataplane,
    pub lan: u32,
    pub vm: u32,
    pub ts: u32,
    /// Rule ids by forward name, from the last `rules()` call.
    pub ids: BTreeMap<String, u32>,
    // Drop order: leave the namespace, then delete it (and its links).
    _entered: Entered,
    pub peer: Netns,
    pub ns: Netns,
}

impl Host {
    /// Builds the namespaces, enters the host one and loads the dataplane
    /// with a flow table of `conntrack_max` flows.
    pub fn new(conntrack_max: u32) -> Result<Host> {
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
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        let entered = Entered::enter(&ns.name)?;
        let idx = |n: &str| forwarder::ifaces::ifindex(n).with_context(|| format!("no {n}"));
        let (lan, vm, ts) = (idx(LAN_IF)?, idx(VM_IF)?, idx(TS_IF)?);
        let dp = Dataplane::load(&LoadOptions {
            conntrack_max,
            ..Default::default()
        })?;
        let mut host = Host {
            dp,
            lan,
            vm,
            ts,
            ids: BTreeMap::new(),
            _entered: entered,
            peer,
            ns,
        };
        for (name, slot) in SLOTS {
            let ifindex = host.ifindex(name);
            let flags = if name == TS_IF {
                IfaceFlags::L3
            } else {
                IfaceFlags::empty()
            };
            host.dp
                .maps
                .ifaces
                .insert(ifindex, IfaceConfig { slot, flags }, 0)?;
        }
        Ok(host)
    }

    /// [`Host::new`] with these rules loaded ([`Host::rules`]); panics
    /// when either fails: a test's fixture.
    pub fn with_rules(conntrack_max: u32, rules: &str) -> Host {
        let mut h = Host::new(conntrack_max).expect("test namespace and dataplane");
        h.rules(rules).expect("rules");
        h
    }

    /// Turns egress translation on or off for an interface
    /// (`IfaceFlags::EGRESS_NAT`): the daemon sets it on the listening interfaces
    /// of forwards whose flows may go through the stack; without it the
    /// egress program leaves every packet alone, uncounted.
    pub fn egress_nat(&mut self, name: &str, on: bool) -> Result<()> {
        let ifindex = self.ifindex(name);
        self.dp.set_egress_nat(ifindex, on)
    }

    pub fn ifindex(&self, name: &str) -> u32 {
        match name {
            LAN_IF => self.lan,
            VM_IF => self.vm,
            TS_IF => self.ts,
            _ => panic!("unknown interface {name}"),
        }
    }

    pub fn iface_name(&self, ifindex: u32) -> &'static str {
        SLOTS
            .iter()
            .map(|(n, _)| *n)
            .find(|n| self.ifindex(n) == ifindex)
            .unwrap_or("?")
    }

    /// Loads a rules file text through the real rules compiler and writes
    /// its listeners, allow-list and SNAT port range into the maps (what
    /// the daemon's reconcile does, minus `mss_clamp = "auto"`, which needs
    /// the path MTU: use a fixed clamp).
    pub fn rules(&mut self, text: &str) -> Result<()> {
        let loaded = match rules::load_str("test.toml", text) {
            Ok(l) => l,
            Err(d) => bail!("rules do not load:\n{d}"),
        };
        let ids = rules::assign_ids(
            &BTreeMap::new(),
            loaded.rules.forwards.iter().map(|f| f.name.as_str()),
        );
        let compiled = rules::compile(&loaded.rules, &ids)?;
        let mut states = BTreeMap::new();
        for (name, _) in SLOTS {
            states.insert(
                name.to_string(),
                rules::IfaceState {
                    ifindex: self.ifindex(name),
                    addrs: self.addrs(name)?.into_iter().map(Into::into).collect(),
                },
            );
        }
        let entries = rules::materialize(&compiled, |n| states.get(n).cloned());
        ensure!(
            entries.missing_ifaces.is_empty(),
            "rules name interfaces the fixture lacks: {:?}",
            entries.missing_ifaces
        );
        let g = &loaded.rules.global;
        self.dp
            .maps
            .set_config(GlobalConfig::new(g.snat_ports.start(), g.snat_ports.end()))?;
        for k in entries.allow.keys() {
            self.dp.maps.insert_allow(k)?;
        }
        for (k, v) in &entries.listeners {
            self.dp.maps.listeners.insert(k, v, 0)?;
        }
        self.ids = ids;
        Ok(())
    }

    pub fn id(&self, rule: &str) -> u32 {
        *self
            .ids
            .get(rule)
            .unwrap_or_else(|| panic!("no rule {rule}"))
    }

    fn addrs(&self, dev: &str) -> Result<Vec<std::net::Ipv4Addr>> {
        let out = self
            .ns
            .output(&["ip", "-j", "-4", "addr", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["local"].as_str()?.parse().ok())
            .collect())
    }

    /// Runs `frame` through the program of `hook` as if it arrived on
    /// (ingress, XDP) or left by (egress) `ifindex`; TC hooks get a
    /// CHECKSUM_COMPLETE skb (see [`Csum`]).
    pub fn run(&mut self, hook: Hook, ifindex: u32, frame: &[u8]) -> Result<Run> {
        self.run_with(hook, ifindex, frame, Csum::Complete, None)
    }

    /// `gso`: (segment size, segments) to present the frame as a GSO skb
    /// (what GRO or a TSO sender hands over). `Hook::Xdp` runs
    /// [`Host::run_xdp`]: an xdp_buff has no checksum state and no GSO.
    pub fn run_with(
        &mut self,
        hook: Hook,
        ifindex: u32,
        frame: &[u8],
        csum: Csum,
        gso: Option<(u32, u32)>,
    ) -> Result<Run> {
        if hook == Hook::Xdp {
            ensure!(gso.is_none(), "an XDP frame cannot be a GSO skb");
            return self.run_xdp(ifindex, frame);
        }
        let mut ctx = [0u8; SKB_CTX_LEN];
        ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        if hook == Hook::TcIngress {
            ctx[SKB_INGRESS_IFINDEX..SKB_INGRESS_IFINDEX + 4]
                .copy_from_slice(&ifindex.to_ne_bytes());
        }
        if let Some((size, segs)) = gso {
            ctx[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
            ctx[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&segs.to_ne_bytes());
        }
        let prog = match hook {
            Hook::TcEgress => self.dp.egress_program()?,
            _ => self.dp.ingress_program()?,
        };
        let fd = prog.fd()?.as_fd().as_raw_fd();
        let flags = match csum {
            Csum::None => 0,
            Csum::Complete => BPF_F_TEST_SKB_CHECKSUM_COMPLETE,
        };
        test_run(fd, frame, &ctx, flags).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBADMSG) {
                anyhow::anyhow!(
                    "BPF_PROG_TEST_RUN: EBADMSG: the program left skb->csum inconsistent with \
                     the packet (a checksum update without BPF_F_PSEUDO_HDR where the \
                     pseudo-header changed, or a store without its checksum update)"
                )
            } else {
                anyhow::anyhow!("BPF_PROG_TEST_RUN of a {}-byte frame: {e}", frame.len())
            }
        })
    }

    /// Runs `frame` through the XDP accelerator (`fwd_xdp`) as if it
    /// arrived on `ifindex` (queue 0); see `XDP_MD_LEN` for what the kernel
    /// requires of the context. `ifindex` 0 passes no interface: the frame
    /// arrives on loopback.
    pub fn run_xdp(&mut self, ifindex: u32, frame: &[u8]) -> Result<Run> {
        let mut ctx = [0u8; XDP_MD_LEN];
        let end = u32::try_from(frame.len())?;
        ctx[XDP_MD_DATA_END..XDP_MD_DATA_END + 4].copy_from_slice(&end.to_ne_bytes());
        ctx[XDP_MD_INGRESS_IFINDEX..XDP_MD_INGRESS_IFINDEX + 4]
            .copy_from_slice(&ifindex.to_ne_bytes());
        let prog = self
            .dp
            .ebpf
            .program(PROG_XDP)
            .context("program fwd_xdp missing")?;
        let fd = prog.fd()?.as_fd().as_raw_fd();
        test_run(fd, frame, &ctx, 0).map_err(|e| {
            anyhow::anyhow!(
                "BPF_PROG_TEST_RUN (XDP) of a {}-byte frame on ifindex {ifindex}: {e}",
                frame.len()
            )
        })
    }

    /// Makes `name` a redirect target of the XDP accelerator or not, as
    /// `Dataplane::attach_xdp` / `detach_xdp` do (FWD_XDP_DEVS, ifindex ->
    /// ifindex). The program itself is not attached: test_run feeds it.
    pub fn xdp_dev(&mut self, name: &str, on: bool) -> Result<()> {
        let ifindex = self.ifindex(name);
        let devs = &mut self.dp.maps.xdp_devs;
        if on {
            devs.insert(ifindex, ifindex, None, 0)?;
        } else {
            devs.remove(ifindex)?;
        }
        Ok(())
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

    /// Every counter and map entry the programs write.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let mut iface = BTreeMap::new();
        {
            let m = &self.dp.maps.iface_counters;
            for (name, slot) in SLOTS {
                for hook in Hook::ALL {
                    for reason in Reason::ALL {
                        let v = m.get(&iface_counter_index(slot, hook, reason), 0)?;
                        let c = sum_cpus(v.iter().copied());
                        if c != Counter::default() {
                            iface.insert((name, hook as u32, reason as u32), c);
                        }
                    }
                }
            }
        }
        let mut rules = BTreeMap::new();
        {
            let m = &self.dp.maps.rule_counters;
            // Ids are handed out from 0; a few beyond the rules in use
            // catch a stray id.
            let top = (self.ids.len() as u32 + 4).min(MAX_RULES);
            for id in 0..top {
                let v = m.get(&id, 0)?;
                let c = v.iter().fold(RuleCounters::default(), |a, c| add(&a, c));
                if c != RuleCounters::default() {
                    rules.insert(id, c);
                }
            }
        }
        let flows = self
            .dp
            .maps
            .flows
            .iter()
            .collect::<Result<BTreeMap<FlowKey, FlowEntry>, _>>()?;
        let auto_snat = self
            .dp
            .maps
            .auto_snat
            .iter()
            .collect::<Result<BTreeMap<AutoSnatKey, u64>, _>>()?;
        Ok(Snapshot {
            iface,
            rules,
            flows,
            auto_snat,
        })
    }

    /// Inserts a flow entry as userspace (an adopted table) would.
    pub fn insert_flow(&mut self, key: FlowKey, entry: FlowEntry) -> Result<()> {
        self.dp.maps.flows.insert(key, entry, 0)?;
        Ok(())
    }

    /// Number of entries in the listener map, to check a test's rules
    /// landed as expected.
    pub fn listener_count(&mut self) -> Result<usize> {
        Ok(self.dp.maps.listeners.keys().count())
    }

    /// Current CLOCK_MONOTONIC_COARSE in ns: the clock the dataplane stamps
    /// flows with (bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC at tick
    /// resolution), so a stamp taken between two reads lies between them.
    pub fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

/// One BPF_PROG_TEST_RUN of program `fd` on `frame` with context `ctx`.
/// aya's TestRunOptions cannot pass BPF_F_TEST_SKB_CHECKSUM_COMPLETE (its
/// flags are crate-private), so the syscall is made here.
fn test_run(fd: i32, frame: &[u8], ctx: &[u8], flags: u32) -> std::io::Result<Run> {
    // Room for what a program may add (an Ethernet header for L3).
    let mut out = vec![0u8; frame.len() + 128];
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: ctx.len() as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags,
        ..Default::default()
    };
    // SAFETY: attr points at valid buffers that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(Run {
        verdict: attr.retval as i32,
        out,
    })
}

fn add(a: &RuleCounters, b: &RuleCounters) -> RuleCounters {
    let mut drops = [0; RULE_DROP_REASONS as usize];
    for (i, d) in drops.iter_mut().enumerate() {
        *d = a.drops[i] + b.drops[i];
    }
    RuleCounters {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
        new_flows: a.new_flows + b.new_flows,
        snat_flows: a.snat_flows + b.snat_flows,
        stack_flows: a.stack_flows + b.stack_flows,
        mss_clamped: a.mss_clamped + b.mss_clamped,
        drops,
    }
}

fn sub(a: &RuleCounters, b: &RuleCounters) -> RuleCounters {
    let mut drops = [0; RULE_DROP_REASONS as usize];
    for (i, d) in drops.iter_mut().enumerate() {
        *d = a.drops[i].wrapping_sub(b.drops[i]);
    }
    RuleCounters {
        packets: a.packets.wrapping_sub(b.packets),
        bytes: a.bytes.wrapping_sub(b.bytes),
        new_flows: a.new_flows.wrapping_sub(b.new_flows),
        snat_flows: a.snat_flows.wrapping_sub(b.snat_flows),
        stack_flows: a.stack_flows.wrapping_sub(b.stack_flows),
        mss_clamped: a.mss_clamped.wrapping_sub(b.mss_clamped),
        drops,
    }
}

/// Counter identity: (interface name, hook, reason) as numbers.
pub type IfaceCounterKey = (&'static str, u32, u32);

/// Everything the programs write, at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Non-zero interface counters.
    pub iface: BTreeMap<IfaceCounterKey, Counter>,
    /// Non-zero per-rule counters (summed over CPUs).
    pub rules: BTreeMap<u32, RuleCounters>,
    pub flows: BTreeMap<FlowKey, FlowEntry>,
    pub auto_snat: BTreeMap<AutoSnatKey, u64>,
}

/// What changed between two snapshots.
#[derive(Clone, Debug, Default)]
pub struct Delta {
    pub iface: BTreeMap<IfaceCounterKey, Counter>,
    pub rules: BTreeMap<u32, RuleCounters>,
    pub flows_added: BTreeSet<FlowKey>,
    pub flows_removed: BTreeSet<FlowKey>,
    pub flows_changed: BTreeSet<FlowKey>,
    pub auto_snat_changed: BTreeSet<AutoSnatKey>,
}

impl Snapshot {
    pub fn delta(&self, after: &Snapshot) -> Delta {
        let mut d = Delta::default();
        let keys: BTreeSet<_> = self.iface.keys().chain(after.iface.keys()).collect();
        for k in keys {
            let (b, a) = (
                self.iface.get(k).copied().unwrap_or_default(),
                after.iface.get(k).copied().unwrap_or_default(),
            );
            if a != b {
                d.iface.insert(
                    *k,
                    Counter {
                        packets: a.packets.wrapping_sub(b.packets),
                        bytes: a.bytes.wrapping_sub(b.bytes),
                    },
                );
            }
        }
        let ids: BTreeSet<_> = self.rules.keys().chain(after.rules.keys()).collect();
        for id in ids {
            let (b, a) = (
                self.rules.get(id).copied().unwrap_or_default(),
                after.rules.get(id).copied().unwrap_or_default(),
            );
            if a != b {
                d.rules.insert(*id, sub(&a, &b));
            }
        }
        for (k, v) in &after.flows {
            match self.flows.get(k) {
                None => {
                    d.flows_added.insert(*k);
                }
                Some(old) if old != v => {
                    d.flows_changed.insert(*k);
                }
                Some(_) => {}
            }
        }
        for k in self.flows.keys() {
            if !after.flows.contains_key(k) {
                d.flows_removed.insert(*k);
            }
        }
        let keys: BTreeSet<_> = self
            .auto_snat
            .keys()
            .chain(after.auto_snat.keys())
            .collect();
        for k in keys {
            if self.auto_snat.get(k) != after.auto_snat.get(k) {
                d.auto_snat_changed.insert(*k);
            }
        }
        d
    }
}

impl Delta {
    /// The interface counters that moved, for messages.
    pub fn moved(&self) -> Vec<String> {
        shown(&self.iface)
    }
}

/// Interface counters as `vmbr0/tc_ingress/fwd_redirect +1p/+74B`, for
/// messages.
pub fn shown(m: &BTreeMap<IfaceCounterKey, Counter>) -> Vec<String> {
    m.iter()
        .map(|(k, c)| format!("{} +{}p/+{}B", counter_name(k), c.packets, c.bytes))
        .collect()
}

/// The interface counters one frame of `len` bytes moves when counted under
/// `reason` on `iface` at `hook`: that one, by one packet of that size.
/// `reason` `None`: none at all (not one of our interfaces).
pub fn one_counter(
    iface: &'static str,
    hook: Hook,
    reason: Option<Reason>,
    len: usize,
) -> BTreeMap<IfaceCounterKey, Counter> {
    reason
        .map(|r| {
            (
                (iface, hook as u32, r as u32),
                Counter {
                    packets: 1,
                    bytes: len as u64,
                },
            )
        })
        .into_iter()
        .collect()
}

/// Exactly the interface counters `want` moved in `d`, by exactly as much.
pub fn assert_counters(case: &str, d: &Delta, want: &BTreeMap<IfaceCounterKey, Counter>) {
    if d.iface != *want {
        panic!(
            "{case}: interface counters moved {:?}, expected {:?}",
            d.moved(),
            shown(want)
        );
    }
}

/// Hook and reason names for messages.
pub fn counter_name(k: &IfaceCounterKey) -> String {
    format!(
        "{}/{}/{}",
        k.0,
        Hook::ALL[k.1 as usize].name(),
        Reason::ALL[k.2 as usize].name()
    )
}
