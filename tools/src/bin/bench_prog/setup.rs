//! The namespace bench_prog works in, loaded and filled: the dataplane
//! with private maps, both interfaces registered, the cases' flows and
//! listener (see the crate comment for what each case is).
use anyhow::Result;
use forwarder::dataplane::{Dataplane, LoadOptions};
use forwarder_common::{
    addr_v4, iface_counter_index, FlowFlags, Hook, IfaceConfig, IfaceFlags, ListenerKey,
    ListenerValue, Reason, SnatMode, AF_INET, MAX_IFACES, PROTO_TCP,
};

use super::{
    ifindex,
    packets::{entry_to, key, tcp_frame, ACK_PSH},
    Bench, CLIENT, CLIENT_SIDE_PEER, LISTEN, RULE_CREATE, SERVER, SKB_CTX_LEN, SKB_IFINDEX_OFF,
    SNAT,
};

/// Registers `ifindex` with counter block `slot` and `IFACE_*` `flags`.
pub fn set_iface_flags(
    dp: &mut Dataplane,
    ifindex: u32,
    slot: u32,
    flags: IfaceFlags,
) -> Result<()> {
    dp.maps
        .ifaces
        .insert(ifindex, IfaceConfig { slot, flags }, 0)?;
    Ok(())
}

/// The namespace's interfaces and the listener, as the cases and the
/// primitives need them.
pub struct Setup {
    pub r0: u32,
    pub r1: u32,
    pub listener_key: ListenerKey,
    /// An interface counter slot no case counts in (for pieces that
    /// increment a counter without disturbing the cases' proofs).
    pub spare_counter: u32,
}

/// The frames of the cases (see `packets`).
pub struct Frames {
    pub r0_mac: [u8; 6],
    pub nat: Vec<u8>,
    pub map: Vec<u8>,
    pub ident: Vec<u8>,
}

impl Frames {
    /// 64-byte payload: a small data segment of an established connection.
    pub fn new(r0_mac: [u8; 6]) -> Frames {
        Frames {
            r0_mac,
            nat: tcp_frame(r0_mac, CLIENT, CLIENT_SIDE_PEER, 40000, 80, ACK_PSH, 64),
            map: tcp_frame(r0_mac, CLIENT, CLIENT_SIDE_PEER, 40002, 80, ACK_PSH, 64),
            ident: tcp_frame(r0_mac, CLIENT, SERVER, 40001, 80, ACK_PSH, 64),
        }
    }
}

/// Loads the dataplane with private maps in this namespace, registers the
/// interfaces and inserts the cases' flows and listener.
pub fn setup() -> Result<(Bench, Setup)> {
    let (r0, r1) = (ifindex("r0")?, ifindex("r1")?);
    let mut dp = Dataplane::load(&LoadOptions::default())?;
    // Neither interface gets IfaceFlags::EGRESS_NAT: no stack-path flow can reply
    // through them (every flow here is redirected), as the daemon decides
    // for the benchmark's router.
    set_iface_flags(&mut dp, r0, 0, IfaceFlags::empty())?;
    set_iface_flags(&mut dp, r1, 1, IfaceFlags::empty())?;
    // (a) NAT: K1 -> K2 and K2 -> K1, both forwarded (routed out r1 / r0).
    // The destination port stays 80 (DNAT+SNAT keeping the port).
    let k1 = key(CLIENT, CLIENT_SIDE_PEER, 40000, 80);
    let k2 = key(SNAT, SERVER, 33000, 80);
    // (a') the same with the port mapped too: 80 <-> 8080.
    let k4 = key(CLIENT, CLIENT_SIDE_PEER, 40002, 80);
    let k5 = key(SNAT, SERVER, 33002, 8080);
    // (b) identity: K3 -> K3, forwarded out r1.
    let k3 = key(CLIENT, SERVER, 40001, 80);
    {
        let flows = &mut dp.maps.flows;
        flows.insert(k1, entry_to(&k2, FlowFlags::SNAT), 0)?;
        flows.insert(k2, entry_to(&k1, FlowFlags::SNAT), 0)?;
        flows.insert(k4, entry_to(&k5, FlowFlags::SNAT), 0)?;
        flows.insert(k5, entry_to(&k4, FlowFlags::SNAT), 0)?;
        flows.insert(k3, entry_to(&k3, FlowFlags::empty()), 0)?;
    }
    // (c) creation: a listener on LISTEN:80 at r0 -> SERVER:80, SNAT fixed.
    let listener_key = ListenerKey {
        addr: addr_v4(LISTEN),
        ifindex: r0,
        port: 80u16.to_be(),
        proto: PROTO_TCP,
        family: AF_INET,
    };
    dp.maps.listeners.insert(
        listener_key,
        ListenerValue {
            target_addr: addr_v4(SERVER),
            snat_addr: addr_v4(SNAT),
            rule_id: RULE_CREATE,
            target_port: 80u16.to_be(),
            snat_mode: SnatMode::FIXED,
            ..Default::default()
        },
        0,
    )?;
    let mut ctx = vec![0u8; SKB_CTX_LEN];
    ctx[SKB_IFINDEX_OFF..SKB_IFINDEX_OFF + 4].copy_from_slice(&r0.to_ne_bytes());
    let s = Setup {
        r0,
        r1,
        listener_key,
        spare_counter: iface_counter_index(MAX_IFACES - 1, Hook::TcEgress, Reason::FwdEgress),
    };
    Ok((Bench { dp, ctx }, s))
}
