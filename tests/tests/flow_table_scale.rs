//! The flow table at scale, through the daemon's own code: batched reads
//! see every entry exactly once across batch boundaries, and the sweeper
//! reclaims a large table quickly (it walks it every few seconds).
use std::{collections::HashSet, time::Instant};

use forwarder::{
    daemon::sweeper,
    dataplane::{batch, Dataplane, LoadOptions},
};
use forwarder_common::{FlowEntry, FlowFlags, FlowKey, AF_INET, PROTO_UDP};
use forwarder_tests::require_root;

fn flow(i: u32, reply: bool) -> (FlowKey, FlowEntry) {
    let k = FlowKey {
        src: [
            u32::from_be_bytes([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
            0,
            0,
            0,
        ],
        dst: [u32::from_be_bytes([192, 168, 1, 55]), 0, 0, 0],
        sport: ((i % 60000) as u16 + 1024).to_be(),
        dport: if reply { 1u16.to_be() } else { 80u16.to_be() },
        proto: PROTO_UDP,
        family: AF_INET,
        _pad: [0; 2],
    };
    let e = FlowEntry {
        flags: if reply {
            FlowFlags::REPLY
        } else {
            FlowFlags::empty()
        },
        rule_id: 1,
        ..Default::default()
    };
    (k, e)
}

#[test]
fn batched_reads_and_the_sweeper_handle_a_large_table() {
    if !require_root("batched_reads_and_the_sweeper_handle_a_large_table") {
        return;
    }
    const N: u32 = 200_000;
    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_max: N,
        ..Default::default()
    })
    .expect("load");
    {
        let m = &mut dp.maps.flows;
        for i in 0..N {
            let (k, e) = flow(i, i % 2 == 1);
            m.insert(k, e, 0).unwrap();
        }
    }
    let t0 = Instant::now();
    let all = batch::dump::<FlowKey, FlowEntry>(dp.maps.flow_table()).unwrap();
    let read = t0.elapsed();
    let unique: HashSet<FlowKey> = all.iter().map(|(k, _)| *k).collect();
    assert_eq!(all.len(), N as usize, "every entry read once");
    assert_eq!(unique.len(), N as usize, "no entry read twice");

    // Everything idle since boot: the sweeper removes it all. Original
    // entries (even i) have no partner here, reply entries (odd i) are
    // orphans: both kinds go.
    let t0 = Instant::now();
    let stats = sweeper::sweep(
        dp.maps.flow_table(),
        &sweeper::Timeouts::default(),
        u64::MAX / 2,
    )
    .unwrap();
    let swept = t0.elapsed();
    assert_eq!(stats.flows, N as usize / 2);
    assert_eq!(stats.expired, N as usize / 2);
    assert_eq!(stats.orphans, N as usize / 2);
    let left = batch::dump::<FlowKey, FlowEntry>(dp.maps.flow_table()).unwrap();
    assert!(left.is_empty(), "{} entries left", left.len());
    eprintln!("{N} entries: batched read {read:?}, sweep {swept:?}");
}
