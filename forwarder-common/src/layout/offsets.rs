//! Field offsets of the shared structs, checked at compile time on both
//! sides: the kernel object and userspace agree on every field's place, and
//! a field moved by accident (or a field added without an ABI bump) stops
//! the build here rather than misreading live maps. The sizes are pinned in
//! the tests of lib.rs.

use core::mem::offset_of;

use crate::{
    AllowKey, AutoSnatKey, Counter, FlowEntry, FlowKey, GlobalConfig, IfaceConfig, ListenerKey,
    ListenerValue, RuleCounters,
};

const _: () = {
    use crate::FlowTrack;
    assert!(offset_of!(IfaceConfig, slot) == 0);
    assert!(offset_of!(IfaceConfig, flags) == 4);

    assert!(offset_of!(ListenerKey, addr) == 0);
    assert!(offset_of!(ListenerKey, ifindex) == 16);
    assert!(offset_of!(ListenerKey, port) == 20);
    assert!(offset_of!(ListenerKey, proto) == 22);
    assert!(offset_of!(ListenerKey, family) == 23);

    assert!(offset_of!(ListenerValue, target_addr) == 0);
    assert!(offset_of!(ListenerValue, snat_addr) == 16);
    assert!(offset_of!(ListenerValue, rule_id) == 32);
    assert!(offset_of!(ListenerValue, target_port) == 36);
    assert!(offset_of!(ListenerValue, snat_mode) == 38);
    assert!(offset_of!(ListenerValue, flags) == 39);
    assert!(offset_of!(ListenerValue, mss) == 40);

    assert!(offset_of!(AllowKey, rule_id_be) == 0);
    assert!(offset_of!(AllowKey, addr) == 4);

    assert!(offset_of!(FlowKey, src) == 0);
    assert!(offset_of!(FlowKey, dst) == 16);
    assert!(offset_of!(FlowKey, sport) == 32);
    assert!(offset_of!(FlowKey, dport) == 34);
    assert!(offset_of!(FlowKey, proto) == 36);
    assert!(offset_of!(FlowKey, family) == 37);

    assert!(offset_of!(FlowEntry, new_src) == 0);
    assert!(offset_of!(FlowEntry, new_dst) == 16);
    assert!(offset_of!(FlowEntry, new_sport) == 32);
    assert!(offset_of!(FlowEntry, new_dport) == 34);
    assert!(offset_of!(FlowEntry, rule_id) == 36);
    assert!(offset_of!(FlowEntry, created_ns) == 40);
    assert!(offset_of!(FlowEntry, last_seen_ns) == 48);
    assert!(offset_of!(FlowEntry, packets) == 56);
    assert!(offset_of!(FlowEntry, bytes) == 64);
    assert!(offset_of!(FlowEntry, flags) == 72);
    assert!(offset_of!(FlowEntry, tcp_seen) == 73);
    assert!(offset_of!(FlowEntry, mss) == 74);
    assert!(offset_of!(FlowEntry, ct) == 80);

    assert!(offset_of!(FlowTrack, iface) == 0);
    assert!(offset_of!(FlowTrack, state) == 4);
    assert!(offset_of!(FlowTrack, ct_flags) == 5);
    assert!(offset_of!(FlowTrack, wscale) == 6);
    assert!(offset_of!(FlowTrack, seq_end) == 8);
    assert!(offset_of!(FlowTrack, max_ack) == 12);
    assert!(offset_of!(FlowTrack, max_win) == 16);

    assert!(offset_of!(AutoSnatKey, rule_id) == 0);
    assert!(offset_of!(AutoSnatKey, addr) == 4);

    assert!(offset_of!(GlobalConfig, abi_version) == 0);
    assert!(offset_of!(GlobalConfig, snat_port_min) == 4);
    assert!(offset_of!(GlobalConfig, snat_port_max) == 6);
    assert!(offset_of!(GlobalConfig, flags) == 8);

    assert!(offset_of!(Counter, packets) == 0);
    assert!(offset_of!(Counter, bytes) == 8);

    assert!(offset_of!(RuleCounters, packets) == 0);
    assert!(offset_of!(RuleCounters, bytes) == 8);
    assert!(offset_of!(RuleCounters, new_flows) == 16);
    assert!(offset_of!(RuleCounters, snat_flows) == 24);
    assert!(offset_of!(RuleCounters, stack_flows) == 32);
    assert!(offset_of!(RuleCounters, mss_clamped) == 40);
    assert!(offset_of!(RuleCounters, drops) == 48);
};
