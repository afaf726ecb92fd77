//! Why a packet the program was rewriting had to be dropped: which step
//! failed. Logged at error level, with the rule, before the packet becomes
//! `Reason::DropError`, the one counter label all of them share.
//!
//! A step fails when a helper does: the skb cannot be made writable (a
//! clone it cannot copy under memory pressure), an offset is beyond the
//! packet, or room for a header cannot be allocated. None should happen
//! to a packet the parser accepted; when one does, the log says where.
use aya_ebpf::programs::TcContext;
use aya_log_ebpf::error;

/// One step of a rewrite. The log prints the number, so the numbers are
/// fixed: add new steps at the end.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum RewriteError {
    /// Reading a field the rewrite depends on (bpf_skb_load_bytes): a
    /// checksum, a TCP option.
    Load = 0,
    /// Updating the IPv4 header checksum (bpf_l3_csum_replace).
    L3Csum = 1,
    /// Updating the TCP/UDP/ICMP checksum (bpf_l4_csum_replace).
    L4Csum = 2,
    /// Writing an address.
    StoreAddr = 3,
    /// Writing a port or an ICMP echo identifier.
    StorePort = 4,
    /// A port change asked of a protocol without ports.
    NoPorts = 5,
    /// Writing the decremented TTL.
    StoreTtl = 6,
    /// Clamping the MSS option: reading the options, the checksum update
    /// or the write. One step, not three: distinct error values inside the
    /// option walk cost the verifier its pruning across loop iterations
    /// (over 1M instructions where one value needs ~115k).
    Mss = 7,
    /// Pushing room for an Ethernet header (bpf_skb_change_head).
    ChangeHead = 8,
    /// Writing the EtherType of that header.
    StoreEthType = 9,
    /// Updating a checksum inside an ICMP error's quoted packet.
    QuotedCsum = 10,
    /// Writing an address or port inside an ICMP error's quoted packet.
    StoreQuoted = 11,
    /// Changing the packet's family (NAT64: bpf_skb_change_proto, or the
    /// room an ICMP error's quote needs).
    ChangeProto = 12,
    /// Writing the new IP header of a packet that changed family.
    StoreHeader = 13,
}

/// Logs a failed rewrite of a packet of rule `rule_id`; the caller drops
/// it. The step goes in as a plain number, data to the verifier: a name
/// chosen by `match` would make each step a verifier state of its own, and
/// the log statement would be walked once per step and path (fwd_ingress
/// at log level info: 215k instructions verified instead of 142k).
// Out of line: one copy of the log statement for its three callers.
#[inline(never)]
pub fn log_rewrite_failed(ctx: &TcContext, rule_id: u32, step: RewriteError) {
    error!(
        ctx,
        "rule {}: rewriting a packet failed at step {} (RewriteError), dropped",
        rule_id,
        step as u8
    );
}
