//! Map values used in place or copied out, behind safe functions: the one
//! place outside the helper wrappers where a map's pointer becomes a
//! reference, with the reasoning for it stated once. The program logic
//! (conntrack, flow creation, eviction, path decisions) and the accessors
//! of `maps` write no `unsafe` for map values.
//!
//! The one fact a reader would get wrong: a reference from `get`/`get_mut`
//! is not exclusive. Another CPU may read or write the same hash map value
//! while this run holds it: plain data, no invariant depends on one writer,
//! last store wins (conntrack's counters and state are written for that,
//! as in C). What the kernel does guarantee, and what the `'static` stands
//! for: the memory stays a valid value of its type until this program run
//! ends (a deleted element is freed only after an RCU grace period, and
//! every type stored is plain data valid for any bit pattern). Per-CPU
//! slots are exclusive: a program run is not interrupted by another on the
//! same CPU. So never hold a reference across an insert or delete of the
//! same key that you then expect it to see, and take per-CPU slots for one
//! use at a time.
use core::borrow::Borrow;

use aya_ebpf::{
    cty::c_void,
    helpers::bpf_map_pop_elem,
    maps::{HashMap, LruHashMap, PerCpuArray, Queue},
};

/// A hash map whose values are looked up in place.
pub trait InPlace<K, V> {
    fn value_ptr(&self, key: &K) -> Option<*mut V>;
}

impl<K, V> InPlace<K, V> for HashMap<K, V> {
    #[inline(always)]
    fn value_ptr(&self, key: &K) -> Option<*mut V> {
        self.get_ptr_mut(key)
    }
}

impl<K, V> InPlace<K, V> for LruHashMap<K, V> {
    #[inline(always)]
    fn value_ptr(&self, key: &K) -> Option<*mut V> {
        self.get_ptr_mut(key)
    }
}

/// The value of `key`, to read in place (a copy would cost stack).
#[inline(always)]
pub fn get<K, V, M: InPlace<K, V>>(map: &'static M, key: &K) -> Option<&'static V> {
    // SAFETY: see the module comment: valid until the end of this run,
    // plain data; shared reads race only with plain stores.
    map.value_ptr(key).map(|v| unsafe { &*v })
}

/// The value of `key`, to update in place with plain stores (see the
/// module comment on other CPUs). Never held across another call that
/// takes the same value.
#[allow(clippy::mut_from_ref)]
#[inline(always)]
pub fn get_mut<K, V, M: InPlace<K, V>>(map: &'static M, key: &K) -> Option<&'static mut V> {
    // SAFETY: as `get`; the kernel allows writes to a map value.
    map.value_ptr(key).map(|v| unsafe { &mut *v })
}

/// The value of `key`, to read in place, for a map the programs only read
/// (the listeners). `get` with `&key` would do, but compiles fwd_ingress
/// one instruction longer; this keeps the object as it was (6.1 has no
/// stack headroom to spend on a reshuffle).
#[inline(always)]
pub fn read<K, V>(map: &'static HashMap<K, V>, key: impl Borrow<K>) -> Option<&'static V> {
    // SAFETY: as `get`.
    map.get_ptr(key).map(|v| unsafe { &*v })
}

/// A copy of the value of `key`: for small values read once (an
/// interface's config, a neighbour's flags).
#[inline(always)]
pub fn copied<K, V: Copy>(map: &'static HashMap<K, V>, key: impl Borrow<K>) -> Option<V> {
    // SAFETY: see the module comment: the value is valid while it is
    // copied out, and plain data.
    unsafe { map.get(key).copied() }
}

/// A map value in place, as a handle (a pointer into the value, not a
/// copy: the flow table's 80 bytes would cost stack). References are
/// taken from it one use at a time: take one again after writing through
/// `entry_mut` rather than holding one across the write.
pub struct EntryRef<V>(*mut V);

// Not derived: the derive would ask `V: Copy`; the handle copies whatever
// it points to.
impl<V> Clone for EntryRef<V> {
    #[inline(always)]
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for EntryRef<V> {}

impl<V> EntryRef<V> {
    /// The value as it is now.
    #[inline(always)]
    pub fn entry(&self) -> &V {
        // SAFETY: a live map value (only `entry_ref` makes one; see the
        // module comment); plain data.
        unsafe { &*self.0 }
    }

    /// The value, to update in place with plain stores. Never held across
    /// another call that takes it.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub fn entry_mut(&self) -> &mut V {
        // SAFETY: as `entry`. Per packet, one CPU updates a flow direction
        // at a time; a race with another CPU costs accuracy, not safety
        // (see the module comment).
        unsafe { &mut *self.0 }
    }
}

/// The value of `key` as an [`EntryRef`] (the flow table's handle).
#[inline(always)]
pub fn entry_ref<K, V>(map: &'static HashMap<K, V>, key: impl Borrow<K>) -> Option<EntryRef<V>> {
    map.get_ptr_mut(key).map(EntryRef)
}

/// This CPU's slot `i` of a per-CPU array: exclusive for this run, for one
/// use at a time (never two references to the same slot).
#[allow(clippy::mut_from_ref)]
#[inline(always)]
pub fn per_cpu<T>(map: &'static PerCpuArray<T>, i: u32) -> Option<&'static mut T> {
    // SAFETY: a per-CPU slot is this CPU's alone and a program run is not
    // interrupted by another on the same CPU; valid until the run ends.
    map.get_ptr_mut(i).map(|v| unsafe { &mut *v })
}

/// Pops the oldest element of `queue` into `into` (a per-CPU slot, say:
/// aya's `Queue::pop` returns it on the stack). False when the queue is
/// empty or the pop failed; `into` is then unchanged.
#[inline(always)]
pub fn pop_into<T>(queue: &'static Queue<T>, into: &mut T) -> bool {
    // SAFETY: `Queue` is a transparent wrapper of the map definition the
    // helper takes; the helper writes exactly one value of the queue's
    // value size (size_of::<T>(), as the map was declared) into `into`.
    let rc = unsafe {
        bpf_map_pop_elem(
            queue as *const Queue<T> as *mut c_void,
            into as *mut T as *mut c_void,
        )
    };
    rc == 0
}

/// `*to = *from` without a `memmove` call: an assignment between two map
/// values compiles to one (LLVM cannot tell they do not overlap), a
/// subprogram whose frame 6.1's verifier counts as 32 bytes of the chain.
#[inline(always)]
pub fn copy<T: Copy>(from: &T, to: &mut T) {
    // SAFETY: a shared and an exclusive reference never overlap, and both
    // are valid for one T.
    unsafe { core::ptr::copy_nonoverlapping(from, to, 1) };
}
