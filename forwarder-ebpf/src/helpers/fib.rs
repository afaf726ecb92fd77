//! The FIB lookup helper and its 64-byte parameter block, which lives in
//! per-CPU scratch space (on the stack it would count toward the 512 bytes
//! the whole call chain may use) and is shared by TC and XDP: a program
//! run is never interrupted by another program run on the same CPU.
use aya_ebpf::{
    bindings::{bpf_fib_lookup, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup as fib_lookup_helper,
    macros::map,
    maps::PerCpuArray,
    EbpfContext,
};
use forwarder_common::{AF_INET, AF_INET6};

#[map(name = "FWD_FIB_SCRATCH")]
static FIB_PARAMS: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

/// The parameter block of one lookup, then its answer.
pub struct FibParams(&'static mut bpf_fib_lookup);

impl FibParams {
    /// The scratch block, reset for a lookup of `src` -> `dst` (network
    /// order) of a packet of L4 protocol `proto` arriving on `ifindex`
    /// (for an output lookup, BPF_FIB_LOOKUP_OUTPUT: leaving by `ifindex`,
    /// `proto` 0). `ifindex` must name a device: 0 fails every lookup
    /// with ENODEV, output lookups included.
    #[inline(always)]
    pub fn v4(ifindex: u32, proto: u8, src: u32, dst: u32) -> Option<FibParams> {
        let p = FIB_PARAMS.get_ptr_mut(0)?;
        // SAFETY: this CPU's slot, ours alone for the rest of this run (see
        // the module comment), reset to all-zero: plain data, where zero is
        // every field's "unset". Word by word rather than write_bytes: that
        // becomes a call to memset, one more frame (32 bytes of the 512)
        // under every caller, which the ICMP answers cannot afford.
        let p = unsafe {
            let words = p as *mut u64;
            let mut i = 0;
            while i < core::mem::size_of::<bpf_fib_lookup>() / 8 {
                core::ptr::write_volatile(words.add(i), 0);
                i += 1;
            }
            &mut *p
        };
        p.family = AF_INET;
        p.l4_protocol = proto;
        p.ifindex = ifindex;
        p.__bindgen_anon_3.ipv4_src = src;
        p.__bindgen_anon_4.ipv4_dst = dst;
        Some(FibParams(p))
    }

    /// As [`FibParams::v4`], for an IPv6 lookup (addresses as the flow
    /// key's words, network order).
    #[inline(always)]
    pub fn v6(ifindex: u32, proto: u8, src: &[u32; 4], dst: &[u32; 4]) -> Option<FibParams> {
        let p = FIB_PARAMS.get_ptr_mut(0)?;
        // SAFETY: as in `v4`.
        let p = unsafe {
            core::ptr::write_bytes(p, 0, 1);
            &mut *p
        };
        p.family = AF_INET6;
        p.l4_protocol = proto;
        p.ifindex = ifindex;
        p.__bindgen_anon_3.ipv6_src = *src;
        p.__bindgen_anon_4.ipv6_dst = *dst;
        Some(FibParams(p))
    }

    /// Also check the MTU against a packet of this IP length (0: do not).
    #[inline(always)]
    pub fn set_tot_len(&mut self, tot_len: u16) {
        self.0.__bindgen_anon_1.tot_len = tot_len;
    }

    /// Asks the kernel's FIB, from a TC or an XDP program; true when it
    /// answered BPF_FIB_LKUP_RET_SUCCESS, the fields below then hold the
    /// answer.
    #[inline(always)]
    pub fn lookup<C: EbpfContext>(&mut self, ctx: &C, flags: u32) -> bool {
        self.lookup_rc(ctx, flags) == BPF_FIB_LKUP_RET_SUCCESS as i64
    }

    /// As `lookup`, with the helper's answer as it is (a
    /// `BPF_FIB_LKUP_RET_*` code): FRAG_NEEDED then has `mtu_result`,
    /// NO_NEIGH the egress interface and the next hop.
    #[inline(always)]
    pub fn lookup_rc<C: EbpfContext>(&mut self, ctx: &C, flags: u32) -> i64 {
        // SAFETY: ctx is the program's own context; the block is valid,
        // initialised, and of the size passed.
        unsafe {
            fib_lookup_helper(
                ctx.as_ptr() as *mut _,
                self.0,
                core::mem::size_of::<bpf_fib_lookup>() as i32,
                flags,
            )
        }
    }

    /// The egress MTU, after a lookup answered FRAG_NEEDED.
    #[inline(always)]
    pub fn mtu_result(&self) -> u16 {
        // SAFETY: a u16 union member of plain data; any bits are valid.
        unsafe { self.0.__bindgen_anon_1.mtu_result }
    }

    /// The egress interface.
    #[inline(always)]
    pub fn oif(&self) -> u32 {
        self.0.ifindex
    }

    /// The next hop: the destination itself when it is on-link, else the
    /// gateway (the helper writes it over the destination).
    #[inline(always)]
    pub fn nexthop_v4(&self) -> u32 {
        // SAFETY: a u32 union member of plain data; any bits are valid.
        unsafe { self.0.__bindgen_anon_4.ipv4_dst }
    }

    /// The source address the kernel would pick (BPF_FIB_LOOKUP_SRC).
    #[inline(always)]
    pub fn src_v4(&self) -> u32 {
        // SAFETY: as above.
        unsafe { self.0.__bindgen_anon_3.ipv4_src }
    }

    /// [`FibParams::nexthop_v4`] of an IPv6 lookup.
    #[inline(always)]
    pub fn nexthop_v6(&self) -> [u32; 4] {
        // SAFETY: a [u32; 4] union member of plain data; any bits are valid.
        unsafe { self.0.__bindgen_anon_4.ipv6_dst }
    }

    /// [`FibParams::src_v4`] of an IPv6 lookup.
    #[inline(always)]
    pub fn src_v6(&self) -> [u32; 4] {
        // SAFETY: as above.
        unsafe { self.0.__bindgen_anon_3.ipv6_src }
    }

    /// The next hop's MAC address (without BPF_FIB_LOOKUP_SKIP_NEIGH).
    #[inline(always)]
    pub fn dmac(&self) -> [u8; 6] {
        self.0.dmac
    }

    /// The egress interface's MAC address.
    #[inline(always)]
    pub fn smac(&self) -> [u8; 6] {
        self.0.smac
    }
}
