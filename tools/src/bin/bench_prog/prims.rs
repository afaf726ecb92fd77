//! The pieces `primitives` times: each kernel primitive the TC program
//! calls on its established and its flow-creating path, alone, as a
//! hand-assembled program (see `raw`) with the same arguments the
//! production program passes (same maps, keys, FIB parameters, checksum
//! offsets), and the helper sequences of both paths without any program
//! logic between the calls.
//!
//! Every call whose result is known (a lookup that must hit or miss, a
//! FIB lookup that must succeed, an insert that must take) checks it and
//! counts an unexpected one in slot `UNEXPECTED` of the private stats
//! array, so `primitives` can prove each timed run did what its name says.
use super::raw::{helper, Asm, R0, R1, R10, R2, R3, R4, R5, R6, R8, R9};

/// Stack layout of the programs (offsets from r10).
pub const TMP: i16 = -4;
pub const KEY: i16 = -48;
pub const FIB: i16 = -112;
pub const AUX: i16 = -136;
pub const KEY2: i16 = -176;

/// Slots of the private stats array (u64 each).
pub const INSERT_COUNTER: u32 = 0;
pub const UNEXPECTED: u32 = 1;
pub const CREATE_COUNTER: u32 = 2;
pub const STATS_SLOTS: u32 = 3;

/// The fds the pieces use: production maps and the private stats array.
pub struct Maps {
    pub flows: i32,
    pub ifaces: i32,
    pub listeners: i32,
    pub neigh: i32,
    pub route_gen: i32,
    pub iface_counters: i32,
    pub rule_counters: i32,
    pub scratch: i32,
    pub evict: i32,
    pub stats: i32,
}

/// What a call's r0 must be.
#[derive(Clone, Copy)]
pub enum Expect {
    Zero,
    NonZero,
    Eq(i32),
}

/// The FIB parameter block (`struct bpf_fib_lookup`, 64 bytes) of an IPv4
/// lookup, as `helpers::fib::FibParams` fills it.
pub fn fib_params(ifindex: u32, proto: u8, src: [u8; 4], dst: [u8; 4], tot_len: u16) -> [u8; 64] {
    let mut p = [0u8; 64];
    p[0] = forwarder_common::AF_INET;
    p[1] = proto;
    p[6..8].copy_from_slice(&tot_len.to_ne_bytes());
    p[8..12].copy_from_slice(&ifindex.to_ne_bytes());
    p[16..20].copy_from_slice(&src);
    p[32..36].copy_from_slice(&dst);
    p
}

/// A program builder over `Maps`.
pub struct Prog<'a> {
    pub m: &'a Maps,
    pub a: Asm,
}

impl<'a> Prog<'a> {
    /// Starts a program: the context saved in r6.
    pub fn new(m: &'a Maps) -> Prog<'a> {
        let mut a = Asm::default();
        a.mov(R6, R1);
        Prog { m, a }
    }

    /// Ends it returning TCX_NEXT, as the production program's `floor`.
    pub fn finish(mut self) -> Asm {
        self.a.mov_imm(R0, -1).exit();
        self.a
    }

    /// Counts one unexpected result (10 instructions).
    fn unexpected(&mut self) {
        let (stats, a) = (self.m.stats, &mut self.a);
        a.st32(R10, TMP, UNEXPECTED as i32).ld_map(R1, stats);
        a.mov(R2, R10)
            .add_imm(R2, TMP as i32)
            .call(helper::MAP_LOOKUP);
        a.jeq_imm(R0, 0, 3)
            .ldx64(R1, R0, 0)
            .add_imm(R1, 1)
            .stx64(R0, 0, R1);
    }

    /// Checks r0 after a call.
    fn expect(&mut self, e: Expect) {
        const SKIP: i16 = 10;
        match e {
            Expect::Zero => self.a.jeq_imm(R0, 0, SKIP),
            Expect::NonZero => self.a.jne_imm(R0, 0, SKIP),
            Expect::Eq(v) => self.a.jeq_imm(R0, v, SKIP),
        };
        let before = self.a.len();
        self.unexpected();
        debug_assert_eq!(self.a.len() - before, SKIP as usize);
    }

    /// `bpf_map_lookup_elem(map, r10 + key)`.
    pub fn lookup(&mut self, map: i32, key: i16, e: Expect) -> &mut Self {
        self.a.ld_map(R1, map).mov(R2, R10).add_imm(R2, key as i32);
        self.a.call(helper::MAP_LOOKUP);
        self.expect(e);
        self
    }

    /// Writes `bytes` to the stack at `off`.
    pub fn stack(&mut self, off: i16, bytes: &[u8]) -> &mut Self {
        self.a.st_bytes(off, bytes);
        self
    }

    /// One per-CPU (or plain) array slot incremented, as `counters` does.
    pub fn count(&mut self, map: i32, index: u32) -> &mut Self {
        self.a.st32(R10, TMP, index as i32);
        self.a.ld_map(R1, map).mov(R2, R10).add_imm(R2, TMP as i32);
        self.a.call(helper::MAP_LOOKUP);
        self.a.jeq_imm(R0, 0, 3).ldx64(R1, R0, 0).add_imm(R1, 1);
        self.a.stx64(R0, 0, R1);
        self
    }

    /// A value slot of a map in r9 (the program ends if it is missing).
    pub fn value_in_r9(&mut self, map: i32, index: u32) -> &mut Self {
        self.a.st32(R10, TMP, index as i32);
        self.a.ld_map(R1, map).mov(R2, R10).add_imm(R2, TMP as i32);
        self.a.call(helper::MAP_LOOKUP);
        self.a.jne_imm(R0, 0, 2).mov_imm(R0, -1).exit();
        self.a.mov(R9, R0);
        self
    }

    /// A fresh flow key at `off`: `template` with its destination word
    /// replaced by the next value of stats slot `counter` (also left in
    /// r8 for `key_again`).
    pub fn fresh_key(&mut self, counter: u32, off: i16, template: &[u8]) -> &mut Self {
        let stats = self.m.stats;
        self.a.st32(R10, TMP, counter as i32);
        self.a
            .ld_map(R1, stats)
            .mov(R2, R10)
            .add_imm(R2, TMP as i32);
        self.a.call(helper::MAP_LOOKUP);
        self.a.jne_imm(R0, 0, 2).mov_imm(R0, -1).exit();
        self.a.ldx64(R8, R0, 0).add_imm(R8, 1).stx64(R0, 0, R8);
        self.key_again(off, template)
    }

    /// `template` at `off` with the counter value of the last `fresh_key`.
    pub fn key_again(&mut self, off: i16, template: &[u8]) -> &mut Self {
        self.a.st_bytes(off, template);
        self.a.stx32(R10, off + 16, R8);
        self
    }

    /// `bpf_map_update_elem(map, r10 + key, r9, flags)`.
    pub fn update(&mut self, map: i32, key: i16, flags: i32, e: Expect) -> &mut Self {
        self.a.ld_map(R1, map).mov(R2, R10).add_imm(R2, key as i32);
        self.a
            .mov(R3, R9)
            .mov_imm(R4, flags)
            .call(helper::MAP_UPDATE);
        self.expect(e);
        self
    }

    pub fn delete(&mut self, map: i32, key: i16, e: Expect) -> &mut Self {
        self.a.ld_map(R1, map).mov(R2, R10).add_imm(R2, key as i32);
        self.a.call(helper::MAP_DELETE);
        self.expect(e);
        self
    }

    /// `bpf_map_push_elem(queue, r10 + value, BPF_EXIST)`.
    pub fn push(&mut self, map: i32, value: i16) -> &mut Self {
        self.a
            .ld_map(R1, map)
            .mov(R2, R10)
            .add_imm(R2, value as i32);
        self.a.mov_imm(R3, 2).call(helper::MAP_PUSH);
        self.expect(Expect::Zero);
        self
    }

    /// `bpf_fib_lookup(ctx, params, 64, flags)`, expected to succeed.
    pub fn fib(&mut self, params: &[u8; 64], flags: i32) -> &mut Self {
        self.a.st_bytes(FIB, params);
        self.a.mov(R1, R6).mov(R2, R10).add_imm(R2, FIB as i32);
        self.a
            .mov_imm(R3, 64)
            .mov_imm(R4, flags)
            .call(helper::FIB_LOOKUP);
        self.expect(Expect::Zero);
        self
    }

    /// `bpf_l4_csum_replace(ctx, off, 0, diff, flags)`: `skb::l4_csum_diff`.
    pub fn l4_csum(&mut self, off: i32, diff: i32, flags: i32) -> &mut Self {
        self.a.mov(R1, R6).mov_imm(R2, off).mov_imm(R3, 0);
        self.a.mov_imm(R4, diff).mov_imm(R5, flags);
        self.a.call(helper::L4_CSUM_REPLACE);
        self.expect(Expect::Zero);
        self
    }

    /// `bpf_redirect_neigh(oif, {AF_INET, nexthop}, 20, 0)`.
    pub fn redirect_neigh(&mut self, oif: u32, nexthop: [u8; 4]) -> &mut Self {
        let mut nh = [0u8; 20];
        nh[0..4].copy_from_slice(&(forwarder_common::AF_INET as u32).to_ne_bytes());
        nh[4..8].copy_from_slice(&nexthop);
        self.a.st_bytes(AUX, &nh);
        self.a
            .mov_imm(R1, oif as i32)
            .mov(R2, R10)
            .add_imm(R2, AUX as i32);
        self.a
            .mov_imm(R3, 20)
            .mov_imm(R4, 0)
            .call(helper::REDIRECT_NEIGH);
        self.expect(Expect::Eq(7));
        self
    }

    /// A helper without arguments (the clocks, prandom).
    pub fn call0(&mut self, id: i32) -> &mut Self {
        self.a.call(id);
        self
    }

    /// `bpf_sk_lookup_tcp(ctx, tuple, 12, CURRENT_NETNS, 0)`, expected to
    /// find no socket (a socket found is released and counted).
    pub fn sk_lookup_tcp(&mut self, tuple: &[u8; 12]) -> &mut Self {
        self.a.st_bytes(AUX, tuple);
        self.a.mov(R1, R6).mov(R2, R10).add_imm(R2, AUX as i32);
        self.a.mov_imm(R3, 12).mov_imm(R4, -1).mov_imm(R5, 0);
        self.a.call(helper::SK_LOOKUP_TCP);
        self.a
            .jeq_imm(R0, 0, 12)
            .mov(R1, R0)
            .call(helper::SK_RELEASE);
        self.unexpected();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The FIB block's fields sit where `struct bpf_fib_lookup` has them
    /// (family 0, l4_protocol 1, tot_len 6, ifindex 8, ipv4_src 16,
    /// ipv4_dst 32).
    #[test]
    fn fib_params_match_the_uapi_layout() {
        let p = fib_params(7, 6, [10, 0, 0, 1], [10, 0, 0, 2], 84);
        assert_eq!(p[0], 2);
        assert_eq!(p[1], 6);
        assert_eq!(u16::from_ne_bytes([p[6], p[7]]), 84);
        assert_eq!(u32::from_ne_bytes([p[8], p[9], p[10], p[11]]), 7);
        assert_eq!(&p[16..20], &[10, 0, 0, 1]);
        assert_eq!(&p[32..36], &[10, 0, 0, 2]);
    }

    /// The unexpected-result block is as long as the jumps over it say.
    #[test]
    fn checks_skip_exactly_their_block() {
        let m = Maps {
            flows: 3,
            ifaces: 3,
            listeners: 3,
            neigh: 3,
            route_gen: 3,
            iface_counters: 3,
            rule_counters: 3,
            scratch: 3,
            evict: 3,
            stats: 3,
        };
        let mut p = Prog::new(&m);
        let start = p.a.len();
        p.lookup(3, KEY, Expect::NonZero);
        // map load (2) + 2 + call + jump + block (10)
        assert_eq!(p.a.len() - start, 6 + 10);
        let start = p.a.len();
        p.sk_lookup_tcp(&[0; 12]);
        // tuple (3 words) + 6 + call + jump + release (2) + block (10)
        assert_eq!(p.a.len() - start, 3 + 6 + 1 + 1 + 2 + 10);
    }
}
