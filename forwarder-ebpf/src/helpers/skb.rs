//! The `__sk_buff` helpers of the TC programs. Sizes and flags are types
//! and names here, never literals at the call site: the checksum helpers
//! take the replaced value's size from its type (`u16` or `u32`), and
//! their flags are `L4Csum` / `Store` constants that say what they are for.
//!
//! Never recompute an L4 checksum by hand in TC: for CHECKSUM_PARTIAL skbs
//! (local senders, veth, virtio) the field only holds the pseudo-header
//! sum, and `bpf_l4_csum_replace` knows which case it is in.
use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::{BPF_ADJ_ROOM_MAC, BPF_ADJ_ROOM_NET},
        bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1, bpf_sock_tuple, BPF_F_CURRENT_NETNS,
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM,
    },
    helpers::{
        bpf_csum_diff, bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_redirect, bpf_redirect_neigh,
        bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release, bpf_skb_adjust_room,
        bpf_skb_change_head, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_pull_data,
        bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use forwarder_common::{AF_INET, AF_INET6, PROTO_TCP};

/// A helper's negative errno.
pub type Errno = i64;

#[inline(always)]
fn ok(rc: i64) -> Result<(), Errno> {
    if rc < 0 {
        Err(rc)
    } else {
        Ok(())
    }
}

/// A value a checksum helper replaces: its size goes into the helper's
/// flags (the `2` / `| 4` of C code).
pub trait CsumWord: Copy {
    const SIZE: u64;
    fn widen(self) -> u64;
}

impl CsumWord for u16 {
    const SIZE: u64 = 2;
    #[inline(always)]
    fn widen(self) -> u64 {
        self as u64
    }
}

impl CsumWord for u32 {
    const SIZE: u64 = 4;
    #[inline(always)]
    fn widen(self) -> u64 {
        self as u64
    }
}

/// What a `bpf_l4_csum_replace` is for, as its flags (the size is added
/// from the value's type).
#[derive(Clone, Copy)]
pub struct L4Csum(u64);

impl L4Csum {
    /// A value the checksum covers directly (a port, an ICMP field, an
    /// embedded checksum).
    pub const PLAIN: L4Csum = L4Csum(0);

    /// UDP's checksum: zero means "none" and must stay zero, and a
    /// computed zero is sent as 0xffff (BPF_F_MARK_MANGLED_0).
    pub const UDP: L4Csum = L4Csum(BPF_F_MARK_MANGLED_0 as u64);

    /// The same, for a value that is also part of the TCP/UDP
    /// pseudo-header (an address): BPF_F_PSEUDO_HDR, which also fixes the
    /// pseudo-header sum a CHECKSUM_PARTIAL skb carries in the field.
    #[inline(always)]
    pub const fn pseudo_header(self) -> L4Csum {
        L4Csum(self.0 | BPF_F_PSEUDO_HDR as u64)
    }
}

/// How `store` treats the skb's own packet checksum.
#[derive(Clone, Copy)]
pub struct Store(u64);

impl Store {
    /// The change is balanced by a checksum field updated alongside (or
    /// is not covered by one): skb->csum stays right.
    pub const PLAIN: Store = Store(0);
    /// Nothing balances the change: update skb->csum for
    /// CHECKSUM_COMPLETE skbs (BPF_F_RECOMPUTE_CSUM).
    pub const RECOMPUTE_CSUM: Store = Store(BPF_F_RECOMPUTE_CSUM as u64);
}

/// Writes `v` at packet offset `off`.
#[inline(always)]
pub fn store<T>(ctx: &TcContext, off: usize, v: &T, how: Store) -> Result<(), Errno> {
    // SAFETY: v is valid for size_of::<T>() bytes; the helper bounds-checks
    // offset and length against the skb.
    ok(unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb,
            off as u32,
            v as *const T as *const _,
            core::mem::size_of::<T>() as u32,
            how.0,
        )
    })
}

/// Reads a `T` at packet offset `off` wherever it sits (linear part or
/// frags), where direct access would need the bytes pulled first.
#[inline(always)]
pub fn load<T>(ctx: &TcContext, off: usize) -> Result<T, Errno> {
    ctx.load(off)
}

/// `struct bpf_sock_tuple`'s IPv4 member: only these 12 bytes are passed.
#[repr(C)]
struct SockTupleV4 {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

/// Whether a socket of this host (in the skb's network namespace) would
/// receive a `proto` (TCP, else UDP) packet from `saddr:sport` to
/// `daddr:dport` (words and ports in network byte order): a listener on
/// the port, or a connection of the host's own.
#[inline(always)]
pub fn local_socket_v4(
    ctx: &TcContext,
    proto: u8,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
) -> bool {
    let mut t = SockTupleV4 {
        saddr,
        daddr,
        sport,
        dport,
    };
    let tuple = &mut t as *mut SockTupleV4 as *mut bpf_sock_tuple;
    let size = core::mem::size_of::<SockTupleV4>() as u32;
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: helper calls on our own skb with a tuple on our stack; a
    // socket found is released before returning (the verifier enforces it).
    unsafe {
        let sk = if proto == PROTO_TCP {
            bpf_sk_lookup_tcp(ctx.skb.skb as *mut _, tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx.skb.skb as *mut _, tuple, size, netns, 0)
        };
        if sk.is_null() {
            false
        } else {
            bpf_sk_release(sk as *mut _);
            true
        }
    }
}

/// Updates the IPv4 header checksum at `off` for a value changed from
/// `old` to `new`.
#[inline(always)]
pub fn l3_csum_replace<T: CsumWord>(
    ctx: &TcContext,
    off: usize,
    old: T,
    new: T,
) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; it validates the offset.
    ok(unsafe { bpf_l3_csum_replace(ctx.skb.skb, off as u32, old.widen(), new.widen(), T::SIZE) })
}

/// Updates the L4 (or ICMP) checksum at `off` for a value changed from
/// `old` to `new`.
#[inline(always)]
pub fn l4_csum_replace<T: CsumWord>(
    ctx: &TcContext,
    off: usize,
    old: T,
    new: T,
    what: L4Csum,
) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; it validates the offset.
    ok(unsafe {
        bpf_l4_csum_replace(
            ctx.skb.skb,
            off as u32,
            old.widen(),
            new.widen(),
            what.0 | T::SIZE,
        )
    })
}

/// Updates the L4 checksum at `off` by `diff`, the summed
/// ones'-complement difference of the changed values
/// (`forwarder_common::csum::diff32`/`diff16`): one call for several fields
/// (bpf_l4_csum_replace with from 0 and size 0, Linux 4.1). Several
/// fields may share one call only when they need the same `what` (the
/// pseudo-header flag: addresses together, ports together).
#[inline(always)]
pub fn l4_csum_diff(ctx: &TcContext, off: usize, diff: u32, what: L4Csum) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; it validates the offset.
    ok(unsafe { bpf_l4_csum_replace(ctx.skb.skb, off as u32, 0, diff as u64, what.0) })
}

/// Makes the first `len` bytes linear, so direct access sees them.
#[inline(always)]
pub fn pull_data(ctx: &TcContext, len: usize) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; it validates the length.
    ok(unsafe { bpf_skb_pull_data(ctx.skb.skb, len as u32) })
}

/// Pushes `len` zeroed bytes in front of the packet (room for a link
/// header on a packet from an L3 device).
#[inline(always)]
pub fn change_head(ctx: &TcContext, len: usize) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; flags must be 0.
    ok(unsafe { bpf_skb_change_head(ctx.skb.skb, len as u32, 0) })
}

/// The device the skb is on at this hook (ingress: where it arrived).
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel passed in.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// skb->protocol (the EtherType, host order): what L3 is on a device
/// without a link header.
#[inline(always)]
pub fn protocol(ctx: &TcContext) -> u16 {
    u16::from_be(ctx.skb.protocol() as u16)
}

/// Whether the skb is a GSO packet (segmented on egress, so its IP length
/// says nothing about the MTU).
#[inline(always)]
pub fn is_gso(ctx: &TcContext) -> bool {
    // SAFETY: reading a field of the context the kernel passed in.
    unsafe { (*ctx.skb.skb).gso_size != 0 }
}

/// The payload size of each segment of a GSO packet (0: not GSO).
#[inline(always)]
pub fn gso_size(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel passed in.
    unsafe { (*ctx.skb.skb).gso_size }
}

/// Redirects to `ifindex`'s egress as is (for devices without neighbours).
/// Returns the TC verdict.
#[inline(always)]
pub fn redirect(ifindex: u32) -> i32 {
    // SAFETY: no pointers; the helper returns the verdict.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// Redirects to `ifindex`'s egress through the neighbour of IPv4 next hop
/// `nexthop`, which the kernel resolves (and queues behind) itself.
/// Returns the TC verdict.
#[inline(always)]
pub fn redirect_neigh_v4(ifindex: u32, nexthop: u32) -> i32 {
    let mut nh = bpf_redir_neigh {
        nh_family: AF_INET as u32,
        __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 { ipv4_nh: nexthop },
    };
    // SAFETY: nh is a valid parameter block of the size passed.
    unsafe {
        bpf_redirect_neigh(
            ifindex,
            &mut nh,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        ) as i32
    }
}

/// [`redirect_neigh_v4`] through IPv6 next hop `nexthop` (the FIB's words).
#[inline(always)]
pub fn redirect_neigh_v6(ifindex: u32, nexthop: &[u32; 4]) -> i32 {
    let mut nh = bpf_redir_neigh {
        nh_family: AF_INET6 as u32,
        __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 { ipv6_nh: *nexthop },
    };
    // SAFETY: nh is a valid parameter block of the size passed.
    unsafe {
        bpf_redirect_neigh(
            ifindex,
            &mut nh,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        ) as i32
    }
}

/// Copies `buf.len()` packet bytes from offset `off` (linear part or
/// frags) into `buf`.
#[inline(always)]
pub fn load_bytes(ctx: &TcContext, off: usize, buf: &mut [u8]) -> Result<(), Errno> {
    // SAFETY: buf is valid for buf.len() bytes; the helper bounds-checks
    // offset and length against the skb.
    ok(unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            off as u32,
            buf.as_mut_ptr() as *mut _,
            buf.len() as u32,
        )
    })
}

/// Writes `bytes` at packet offset `off`.
#[inline(always)]
pub fn store_bytes(ctx: &TcContext, off: usize, bytes: &[u8], how: Store) -> Result<(), Errno> {
    // SAFETY: bytes is valid for its length; the helper bounds-checks.
    ok(unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb,
            off as u32,
            bytes.as_ptr() as *const _,
            bytes.len() as u32,
            how.0,
        )
    })
}

/// Trims (or grows) the packet to `len` bytes from its start.
#[inline(always)]
pub fn change_tail(ctx: &TcContext, len: usize) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; flags must be 0.
    ok(unsafe { bpf_skb_change_tail(ctx.skb.skb, len as u32, 0) })
}

/// Inserts `len` bytes between the link header and the IP header (all of
/// the front on a device without one).
#[inline(always)]
pub fn grow_after_link_header(ctx: &TcContext, len: usize) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; it validates mode and length.
    ok(unsafe { bpf_skb_adjust_room(ctx.skb.skb, len as i32, BPF_ADJ_ROOM_MAC, 0) })
}

/// Removes `len` bytes right after the first 20 bytes of the IPv4 header
/// (its options).
#[inline(always)]
pub fn shrink_after_ip_header(ctx: &TcContext, len: usize) -> Result<(), Errno> {
    // SAFETY: helper on our own skb; it validates mode and length.
    ok(unsafe { bpf_skb_adjust_room(ctx.skb.skb, -(len as i32), BPF_ADJ_ROOM_NET, 0) })
}

/// The 32-bit one's-complement sum of `words` added to `seed` (fold it for
/// a checksum). `words` must be a multiple of 4 bytes long.
#[inline(always)]
pub fn csum_sum(words: &[u8], seed: u32) -> Result<u32, Errno> {
    // SAFETY: words is valid for its length; no "from" buffer.
    let rc = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            words.as_ptr() as *mut _,
            words.len() as u32,
            seed,
        )
    };
    if rc < 0 {
        Err(rc)
    } else {
        Ok(rc as u32)
    }
}
