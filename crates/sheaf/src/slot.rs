//! CPU slots: where each CPU (or, in the per-thread strategy, each thread) keeps its `main`,
//! `spare` and `rcu_free` sheaves, and how an operation finds and holds its slot.
//!
//! Two strategies share every type here ([`SlotStrategy`]); each has its own module:
//!
//! - `per_cpu`: one slot per CPU ([`PerCpu`], the kernel's design), held with a try-lock
//!   taken by a restartable sequence or a compare-exchange;
//! - `per_thread`: one slot per (thread, cache) ([`PerThread`]), found through a thread-local
//!   (`last_slot`: the last slot claimed, which is also the hold marker, and a small
//!   direct-mapped table of `(cache id, slot)` entries) and registered with its cache
//!   (`registry`, which also keeps exited threads' slots for adoption); other threads reach
//!   a live thread's slot without waiting for it;
//! - `fork`: which slot locks a `fork` takes, and how the child repairs or abandons the slots
//!   other threads held;
//! - `chain`: per-CPU, the stamped chain of a slot's deferred-free sheaves (its sealed list
//!   and `detach` lock), where they wait for their grace period without leaving the slot.
//!
//! An operation finds its slot with [`SlotTable::acquire_fast`] (a [`FastSlot`], for code
//! that calls out to nothing) or [`SlotTable::acquire`] (a held [`SlotGuard`]); the paths that
//! visit every slot use [`SlotTable::for_each_reachable`] (`main` and `spare`) and the
//! `detach` lock of each slot's deferred-free chain (`chain`).
//!
//! # Invariants
//!
//! - Per-CPU, the first of a slot's deferred-free sheaves (`rcu`'s `rcu_free`) is changed
//!   only by restartable sequences on the slot's CPU that check `rcu_lock` is free and commit
//!   with one store (`rseq_ops`), and by a holder of both `detach` and `rcu_lock` (or with
//!   exclusive access to the whole cache); the sheaves linked behind it, and the slot's
//!   sealed list, only by the holder of `detach` (`chain`). `rcu_lock` is taken only inside
//!   `detach` (and by a `fork`'s prepare), and neither is held across a call out. The rest of
//!   the slot is the main lock's. So a thread that holds the main lock, descheduled or
//!   blocked in a slow path, keeps no deferred free from a barrier, and neither does a thread
//!   descheduled inside a deferred free. Per-thread, `rcu` follows the rules below with the
//!   rest of the slot.
//! - Per-CPU with restartable sequences, `main`'s size and budget word and its entries past
//!   the size, the `spare` word and the slot's prefill records are also changed by the CPU's
//!   sequences while the lock is free, each committing with one store (`rseq_ops`); every
//!   lock holder first adds what they counted to the slot's counters, and finds `spare` a
//!   plain pointer after that.
//! - A slot's sheaves are read or written only by the holder of its lock (per-CPU), or by its
//!   own thread (per-thread) while the thread-local marks it held or, on a fast path that
//!   calls out to nothing, while no slot of the thread is held and the thread-local (`last`
//!   or the cache's table entry) names the slot with its cache's id; or by a taker that holds
//!   the per-thread slot's lock (`REMOTE`) after the steps in `per_thread` ("Reaching other
//!   live threads' slots"); or by whoever
//!   adopts an orphaned slot (its thread has exited; adoption happens under the registry's
//!   mutex), or with exclusive access to the whole cache (drop).
//! - The owner publishes "in use" for a per-thread slot of cache `c` only in `last` and in
//!   the table entry of `c` (`entry_index(c)`): by `id == c` there (fast path) or `last`'s
//!   `id == 0` with `slot` naming it (held). It names a slot with `c` only through `claim`,
//!   which backs off when a taker holds the lock, or by storing the id back after a hold; it
//!   holds only a slot that a lookup found. A taker revokes only `id == c`.
//! - A per-thread slot's owner marks it orphaned only while holding its lock (`LOCAL`), so a
//!   taker that holds the lock and finds it not orphaned may read the owner's thread-local.
//! - A slot's counters are written by the same parties only, and read by anyone (relaxed);
//!   a taker never writes a live slot's counters. Per-CPU, the main lock holder's; the
//!   deferred frees the sequences push are counted in the cache's shared block by the
//!   `detach` holder that seals or reads their sheaves.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::sheaf::OwnedSheaf;
use crate::stats::Counters;
use crate::sync::AtomicU8;
use slab::cpu::{self, CpuSource};
use slab::rseq::{ABANDONED, FREE, LOCAL};

mod chain;
#[cfg(not(loom))]
mod fork;
mod last_slot;
mod per_cpu;
mod per_thread;
mod registry;
#[cfg(all(
    not(loom),
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu"
))]
mod rseq_ops;
#[cfg(all(test, not(loom)))]
mod tests;
#[cfg(all(test, not(loom)))]
mod tests_descheduled;

pub(crate) use chain::{Detached, Moved};
use last_slot::{LAST_SLOTS, LastSlots};
use per_cpu::LockKind;
#[cfg(not(loom))]
use per_cpu::OwnCpuOutcome;
#[cfg(test)]
pub(crate) use per_cpu::{AFTER_RCU_START, run_hook};
pub(crate) use per_cpu::{CpuSequences, RcuStep};
pub(crate) use per_thread::REACH_PATIENCE;
use registry::ThreadRegistry;
#[cfg(not(loom))]
use registry::{THREAD_SLOTS, ThreadSlots};

mod sealed {
    pub trait Sealed {}
}

/// How an operation finds its CPU-local sheaves: a type parameter of
/// [`Cache`](crate::Cache), so both strategies share every line of the allocator and each
/// is compiled with its own fast path.
pub trait SlotStrategy: sealed::Sealed + Send + Sync + Sized + 'static + fmt::Debug {
    /// The allocator name of caches using this strategy (`"sheaf"`, `"sheaf-thread"`).
    const NAME: &'static str;
    /// One line that says what the strategy is.
    const DESCRIPTION: &'static str;
    #[doc(hidden)]
    const PER_CPU: bool;
}

/// One slot per CPU, found through rseq's `cpu_id` and held with a non-spinning try-lock
/// (taken by a restartable sequence where available): the kernel's design (allocator name
/// `sheaf`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerCpu;

/// One slot per thread, flushed when the thread exits (allocator name `sheaf-thread`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PerThread;

impl sealed::Sealed for PerCpu {}
impl sealed::Sealed for PerThread {}

impl SlotStrategy for PerCpu {
    const NAME: &'static str = "sheaf";
    const DESCRIPTION: &'static str = "SLUB percpu sheaves: per-CPU main/spare/rcu_free sheaves (rseq cpu_id, rseq try-lock), per-node barn, slabs";
    const PER_CPU: bool = true;
}

impl SlotStrategy for PerThread {
    const NAME: &'static str = "sheaf-thread";
    const DESCRIPTION: &'static str =
        "sheaves with per-thread slots instead of per-CPU ones (flushed when a thread exits)";
    const PER_CPU: bool = false;
}

/// Per-CPU with restartable sequences: the bit of a slot's `spare` word that names which of
/// the slot's two prefill records is in use (`Slot::take_spare_counts`). Set and cleared only
/// by the spare's sequences (`rseq_ops`) while the lock is free; every lock holder clears it
/// before it reads the spare, so held code only ever sees a plain pointer. Sheaf headers are
/// 8-byte aligned, so the bit is never part of an address.
pub(crate) const SPARE_TAG: usize = 1;

/// The allocation sheaves of one slot. Who may touch them: the module's "Invariants".
///
/// Invariants: `main` is always a sheaf of the cache's capacity (or, after a run-time change,
/// of a capacity it had: see `cache_core::resize`) or the capacity-0 sentinel; `spare`, when
/// present, is such a sheaf holding any number of objects. No oversize sheaf is ever here.
#[derive(Debug)]
pub(crate) struct SlotSheaves {
    /// Allocations pop from and frees push to this sheaf; the sentinel until first needed.
    pub(crate) main: OwnedSheaf,
    /// A second sheaf swapped with `main` when it runs empty or full.
    pub(crate) spare: Option<OwnedSheaf>,
}

/// The deferred-free sheaves of one slot: a chain of sheaves linked through their headers'
/// `next`, the one being filled (`rcu_free`) first and full ones behind it. Per-CPU the
/// full ones are *sealed*: the `detach` holder moves them to the slot's sealed list, where
/// they wait for their grace period (`chain`); the CPU's own threads change the chain only by
/// sequences that commit with one store (`rseq_ops`), and never hold `rcu_lock`; so does a
/// thread with its own slot's chain.
///
/// Invariants: every sheaf after the first is full; the first may be full too (a sequence
/// fills it, and the next deferred free starts a sheaf); the last one's `next` is null.
#[derive(Debug, Default)]
pub(crate) struct RcuSheaves {
    /// The sheaf that collects `free_deferred` objects, first of the chain.
    pub(crate) rcu_free: Option<OwnedSheaf>,
}

impl SlotSheaves {
    fn new() -> Self {
        Self {
            main: OwnedSheaf::none(),
            spare: None,
        }
    }
}

impl RcuSheaves {
    /// Runs `f` on every sheaf of the chain, first to last.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut OwnedSheaf)) {
        let mut next = self.rcu_free.as_ref().map(OwnedSheaf::as_raw);
        while let Some(raw) = next {
            // SAFETY: a chained sheaf, owned by the chain; the temporary handle is given up
            // again with `into_raw` (the chain keeps the ownership), and `&mut self` makes it
            // the only access.
            let mut sheaf = unsafe { OwnedSheaf::from_raw(raw) };
            f(&mut sheaf);
            next = sheaf.next();
            let _ = sheaf.into_raw();
        }
    }

    /// Deferred objects in the sheaves.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn objects(&mut self) -> usize {
        let mut objects = 0;
        self.for_each_mut(|sheaf| objects += sheaf.size());
        objects
    }
}

/// One slot: a CPU's ([`PerCpu`]) or a thread's ([`PerThread`]) `main`, `spare` and
/// `rcu_free` sheaves with their counters; the per-strategy fields are marked below.
///
/// `repr(C)` keeps the declared order: the lock, the sheaf pointers and the first counters
/// (the fast paths' ones, see `Stat`) share the slot's first cache line, so an allocation or
/// a free touches one line of the slot. The per-thread fields fill the padding after the
/// lock and the last 8 bytes of 256: a padded per-CPU slot stays 256 bytes, so indexing the
/// table stays one shift (a larger slot costs the fast path an instruction per lookup).
#[repr(C)]
pub(crate) struct Slot {
    /// Per-CPU: the try-lock (`slab::rseq`'s `FREE`, `LOCAL` or `REMOTE`). Unused by
    /// per-thread slots (held through the thread-local).
    lock: AtomicU8,
    /// Per-CPU: keeps the CPU's sequences off `rcu` (same states as `lock`). Taken from afar
    /// only, by a holder of the slot's `detach` lock (`chain`) that moves the chain's first
    /// sheaf, and by a `fork`'s prepare; held for a few instructions that call out to
    /// nothing. The CPU's own threads change `rcu` by sequences that commit only while it is
    /// free (`per_cpu`, `rseq_ops`), so a holder never waits for them. With the
    /// compare-exchange lock deferred frees take no sheaf (each is deferred on its own), and
    /// the chains stay empty. Unused by per-thread slots.
    rcu_lock: AtomicU8,
    /// Per-thread: set by the owner when its thread exits.
    orphaned: std::sync::atomic::AtomicBool,
    /// Per-thread: set by a taker that could not reach the slot (a [`Reach`] as `u8`, 0 for
    /// none); the owner hands the sheaves asked for over to the cache at its next operation
    /// on the cache.
    drain: std::sync::atomic::AtomicU8,
    /// The slot may hold `rcu_free` sheaves. Per-thread: set by the owner when it starts one
    /// (before it arms the cache for the hand-over thread), cleared by whoever takes them
    /// all while holding the slot; the takers that want only those skip a slot without it.
    /// Per-CPU: set right after the sequence that put a sheaf in place, cleared under
    /// `rcu_lock` by a `detach` holder that sealed the whole chain (`chain`); statistics
    /// readers and the visits of `barrier`, `shrink` and the hand-over thread skip a slot
    /// without it (and without sealed sheaves).
    rcu_pending: AtomicBool,
    /// The memory node whose barn and partial slabs this slot uses (in the first word's
    /// padding).
    node: u16,
    sheaves: UnsafeCell<SlotSheaves>,
    /// Per-CPU: see the module's invariants (the sequences, `rcu_lock` and `detach`);
    /// per-thread: as `sheaves`.
    rcu: UnsafeCell<RcuSheaves>,
    /// Events counted by the slot's holder. Per-CPU, those of the deferred frees the
    /// sequences push (`deferred_objects`, `free_rcu_sheaf`, `rcu_sheaf_submitted`) are
    /// counted in the cache's shared block by `detach` holders, the others by the holder of
    /// `lock`.
    pub(crate) counters: Counters,
    /// Two words whose use depends on the strategy (a slot is one or the other for life):
    ///
    /// - per-CPU: the prefill counts that the spare's restartable sequences left pending
    ///   (`rseq_ops`), two copies of one record, the one in use named by the tag bit of the
    ///   `spare` word ([`SPARE_TAG`]); see [`Slot::take_spare_counts`];
    /// - per-thread: the owner's kernel thread id (word 0), to read its scheduling state,
    ///   and the address of its slot cache, its thread-local (word 1), read and revoked by
    ///   takers while they hold the slot's lock and the slot is not orphaned (the owner's
    ///   exit waits for the lock before it marks the slot orphaned, and the thread-local
    ///   lives until then). Written once, before the slot is shared.
    aux: [std::sync::atomic::AtomicU64; 2],
    /// The sealed deferred-free sheaves and their `detach` lock (`chain`); in the last bytes
    /// of the slot's 256, away from the fast paths' first line.
    chain: chain::Chain,
}

// SAFETY: `sheaves` is only accessed under the protocol of the module docs (lock holder,
// owner thread, adopter of an orphan, or exclusive owner of the cache); everything else is
// atomic.
unsafe impl Sync for Slot {}
// SAFETY: the sheaves are `Send` (owned heap sheaves of free objects).
unsafe impl Send for Slot {}

impl Slot {
    pub(crate) fn new(node: usize) -> Self {
        Self {
            lock: AtomicU8::new(FREE),
            rcu_lock: AtomicU8::new(FREE),
            orphaned: std::sync::atomic::AtomicBool::new(false),
            drain: std::sync::atomic::AtomicU8::new(0),
            rcu_pending: AtomicBool::new(false),
            node: u16::try_from(node).expect("memory node numbers fit in 16 bits"),
            sheaves: UnsafeCell::new(SlotSheaves::new()),
            rcu: UnsafeCell::new(RcuSheaves::default()),
            counters: Counters::default(),
            aux: Default::default(),
            chain: chain::Chain::default(),
        }
    }

    /// Per-CPU, where restartable sequences are not in use: takes the lock if free; never
    /// waits. A compare-exchange rather than a swap: as cheap when it succeeds (one locked
    /// instruction), and a failed attempt writes nothing, so a thread bouncing off a held
    /// slot does not dirty its line.
    #[inline(always)]
    pub(crate) fn try_lock(&self) -> bool {
        self.lock
            .compare_exchange(FREE, LOCAL, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Per-CPU, where restartable sequences are not in use: takes `rcu_lock` if free; never
    /// waits (as [`Slot::try_lock`]).
    #[inline(always)]
    pub(crate) fn try_lock_rcu(&self) -> bool {
        self.rcu_lock
            .compare_exchange(FREE, LOCAL, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Per-thread (a taker's `REMOTE` hold): releases the lock. The owner may be using its
    /// sheaves meanwhile (its fast path does not look at the lock), so they are not touched.
    #[inline(always)]
    pub(crate) fn unlock(&self) {
        self.lock.store(FREE, Ordering::Release);
    }

    /// Per-CPU: releases the lock, however it was taken. `main` is re-based first, so that
    /// the restartable sequences that may run on it next count from here (`rseq_ops`).
    #[inline(always)]
    pub(crate) fn unlock_cpu(&self) {
        // SAFETY: the caller holds the lock of a per-CPU slot, whose sheaves only the holder
        // touches.
        let sheaves = unsafe { self.sheaves_mut() };
        sheaves.main.rebase();
        self.lock.store(FREE, Ordering::Release);
    }

    /// Per-CPU: releases `rcu_lock`, however it was taken, re-basing the chain's first sheaf
    /// first (as [`Slot::unlock_cpu`] does `main`; the sequences push on no other).
    #[inline(always)]
    pub(crate) fn unlock_rcu(&self) {
        // SAFETY: the caller holds `rcu_lock` of a per-CPU slot, which guards the first sheaf
        // (the sheaves behind it are the `detach` holder's, and not touched here).
        if let Some(first) = unsafe { self.rcu_mut() }.rcu_free.as_mut() {
            first.rebase();
        }
        self.rcu_lock.store(FREE, Ordering::Release);
    }

    /// The slot's memory node.
    #[inline(always)]
    pub(crate) fn node(&self) -> usize {
        usize::from(self.node)
    }

    /// The sheaves, for code that has exclusive access by the module's protocol.
    ///
    /// # Safety
    ///
    /// - The caller holds the slot (lock or thread-local hold), or has adopted it as an orphan, or has
    ///   exclusive access to the whole cache; and no other reference from this call is alive.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // exclusivity comes from the slot protocol, not from `&mut`
    pub(crate) unsafe fn sheaves_mut(&self) -> &mut SlotSheaves {
        // SAFETY: exclusive by the caller's obligation.
        unsafe { &mut *self.sheaves.get() }
    }

    /// The deferred-free sheaves, for code that has exclusive access by the module's
    /// protocol.
    ///
    /// # Safety
    ///
    /// - Per-CPU: the caller holds `rcu_lock`, or has exclusive access to the whole cache.
    ///   Per-thread: as for [`Slot::sheaves_mut`]. No other reference from this call is alive.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // exclusivity comes from the slot protocol, not from `&mut`
    pub(crate) unsafe fn rcu_mut(&self) -> &mut RcuSheaves {
        // SAFETY: exclusive by the caller's obligation.
        unsafe { &mut *self.rcu.get() }
    }
}

impl Slot {
    /// Per-CPU with restartable sequences, by a new lock holder: adds what the sequences
    /// committed since the previous holder re-based `main` (`rseq_ops`) to the slot's
    /// counters: its pops and pushes. [`Slot::unlock_cpu`] re-bases it again.
    #[inline(always)]
    fn take_fast_counts(&self) {
        use crate::stats::Stat;
        self.take_spare_counts();
        // SAFETY: the caller holds the slot's lock, which excludes the sequences.
        let sheaves = unsafe { self.sheaves_mut() };
        let (pops, pushes) = sheaves.main.take_fast_counts();
        if pops | pushes != 0 {
            self.counters.add_owned(Stat::AllocFastpath, pops);
            self.counters.add_owned(Stat::FreeFastpath, pushes);
        }
    }

    /// Per-CPU with restartable sequences, by a new lock holder (or one with exclusive access
    /// to the cache): adds the prefill counts that the spare's sequences left pending
    /// (`rseq_ops`) to the slot's counters, and leaves the `spare` word an untagged pointer
    /// (or null) with record 0 cleared, so that the holder may read it as an
    /// `Option<OwnedSheaf>` and the next sequence starts from an empty record.
    ///
    /// Each record is one word: the lends in the low half and the give-backs in the high
    /// half, each half a count in its top 8 bits and a sum of objects in its low 24.
    #[inline(always)]
    fn take_spare_counts(&self) {
        let spare = self.spare_word();
        // SAFETY: the caller holds the slot's lock, which excludes the sequences, or has
        // exclusive access to the cache: nothing else reads or writes the word.
        let word = unsafe { spare.read() };
        // Nothing is pending when the tag names record 0 and it is empty (the two loads are
        // independent; the record the tag names is read only when something is).
        if (word & SPARE_TAG) as u64 | self.aux[0].load(Ordering::Relaxed) != 0 {
            self.fold_spare_counts(spare, word);
        }
    }

    /// The rest of [`Slot::take_spare_counts`]: something is pending.
    #[cold]
    #[inline(never)]
    fn fold_spare_counts(&self, spare: *mut usize, word: usize) {
        use crate::stats::Stat;
        let record = self.aux[word & SPARE_TAG].load(Ordering::Relaxed);
        let (lends, gives) = (record as u32, (record >> 32) as u32);
        self.counters
            .add_owned(Stat::SheafPrefillFast, u64::from(lends >> 24));
        self.counters
            .add_owned(Stat::PrefillReserved, u64::from(lends & 0xFF_FFFF));
        self.counters
            .add_owned(Stat::SheafReturnFast, u64::from(gives >> 24));
        self.counters
            .add_owned(Stat::PrefillUnused, u64::from(gives & 0xFF_FFFF));
        for copy in &self.aux {
            copy.store(0, Ordering::Relaxed);
        }
        // SAFETY: as in `take_spare_counts`.
        unsafe { spare.write(word & !SPARE_TAG) };
    }

    /// The `spare` field as the word the sequences read and write: a sheaf's address or
    /// null, with [`SPARE_TAG`] naming the record in use while the lock is free.
    #[inline(always)]
    fn spare_word(&self) -> *mut usize {
        // SAFETY: a field projection through the cell's raw pointer, creating no reference;
        // `Option<OwnedSheaf>` is one pointer, null for `None` (`rseq_ops` asserts its size).
        unsafe { (&raw mut (*self.sheaves.get()).spare).cast::<usize>() }
    }

    /// Per-thread: the owner's kernel thread id.
    #[inline]
    fn tid(&self) -> i32 {
        self.aux[0].load(Ordering::Relaxed) as i32
    }

    /// Per-thread: the owner's slot cache (see `aux`).
    #[inline]
    fn owner(&self) -> *const LastSlots {
        std::ptr::with_exposed_provenance(self.aux[1].load(Ordering::Relaxed) as usize)
    }

    /// As [`Slot::take_fast_counts`], by a holder of `rcu_lock` and `detach`, for the
    /// deferred frees the sequences pushed on the chain's first sheaf ([`Slot::unlock_rcu`]
    /// re-bases it); those on the sheaves behind it are counted as they are sealed
    /// (`chain`).
    fn take_rcu_fast_counts(&self) -> u64 {
        // SAFETY: the caller holds `rcu_lock`, which excludes the sequences on the chain.
        unsafe { self.rcu_mut() }
            .rcu_free
            .as_ref()
            .map_or(0, |first| first.take_fast_counts().1)
    }

    /// Replaces the sheaves with empty ones without reading or dropping the old ones: they
    /// may have been half-updated by a thread that does not exist in this process, and the
    /// objects in them are lost.
    ///
    /// # Safety
    ///
    /// - As for [`Slot::sheaves_mut`].
    pub(crate) unsafe fn forget_sheaves(&self) {
        // SAFETY: exclusive by the caller's obligation; `write` neither reads nor drops the
        // old value.
        unsafe { self.sheaves.get().write(SlotSheaves::new()) };
    }

    /// [`Slot::forget_sheaves`] for the deferred-free sheaves.
    ///
    /// # Safety
    ///
    /// - As for [`Slot::rcu_mut`].
    #[cfg(not(loom))]
    pub(crate) unsafe fn forget_rcu(&self) {
        // SAFETY: exclusive by the caller's obligation; `write` neither reads nor drops the
        // old value.
        unsafe { self.rcu.get().write(RcuSheaves::default()) };
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("node", &self.node)
            .field("locked", &(self.lock.load(Ordering::Relaxed) != FREE))
            .field(
                "rcu_locked",
                &(self.rcu_lock.load(Ordering::Relaxed) != FREE),
            )
            .finish_non_exhaustive()
    }
}

/// A slot found and reserved for a fast path: the operation's own slot, locked (per-CPU),
/// or found through the thread-local but *not* marked held (per-thread).
///
/// While one is alive the code may only touch the slot's sheaves and counters, run no code
/// that could call back into any cache on this thread (no page source, barn, slab, callback
/// or allocation), and then either drop it or turn it into a [`SlotGuard`] with
/// [`FastSlot::hold`] before anything else. For a per-thread slot this makes the hold marker
/// of the thread-local unnecessary on the fast path: nothing can re-enter between the
/// lookup and the release. Every per-thread hold that may call out goes through `hold`.
pub(crate) struct FastSlot<'a, S: SlotStrategy> {
    slot: &'a Slot,
    /// Per-thread: the cache id, stored back into the thread-local when a hold ends.
    cache_id: u64,
    _strategy: PhantomData<S>,
}

impl<'a, S: SlotStrategy> FastSlot<'a, S> {
    /// The slot itself.
    #[inline(always)]
    pub(crate) fn slot(&self) -> &'a Slot {
        self.slot
    }

    /// The slot's sheaves.
    #[inline(always)]
    pub(crate) fn sheaves(&mut self) -> &mut SlotSheaves {
        // SAFETY: per-CPU, we hold the lock. Per-thread, the slot is this thread's, no hold
        // is active on this thread (the lookup checked), and none can start while this value
        // lives (its user calls out to nothing); `&mut self` makes this the only reference.
        unsafe { self.slot.sheaves_mut() }
    }

    /// The slot's counters.
    #[inline(always)]
    pub(crate) fn counters(&self) -> &'a Counters {
        &self.slot.counters
    }

    /// Marks the slot held (per-thread: the thread-local's `last` names it with id 0, so that
    /// re-entry on this thread finds every slot busy), for code that may call out.
    #[inline(always)]
    pub(crate) fn hold(self) -> SlotGuard<'a, S> {
        let this = ManuallyDrop::new(self);
        if !S::PER_CPU {
            // The lookup found this slot in `last` or in the table. A taker that revoked the
            // id meanwhile finds the slot held in `last` when it looks again (see
            // `SlotTable::take_remote`).
            LAST_SLOTS.with(|slots| slots.hold(this.slot));
        }
        SlotGuard {
            slot: this.slot,
            cache_id: this.cache_id,
            _strategy: PhantomData,
        }
    }
}

impl<S: SlotStrategy> Drop for FastSlot<'_, S> {
    #[inline(always)]
    fn drop(&mut self) {
        if S::PER_CPU {
            self.slot.unlock_cpu();
        }
    }
}

impl<S: SlotStrategy> fmt::Debug for FastSlot<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FastSlot").field(self.slot).finish()
    }
}

/// A held slot; releases it on drop.
pub(crate) struct SlotGuard<'a, S: SlotStrategy> {
    slot: &'a Slot,
    /// Per-thread: the cache id to store back into the thread-local on release.
    cache_id: u64,
    _strategy: PhantomData<S>,
}

impl<'a, S: SlotStrategy> SlotGuard<'a, S> {
    /// The slot's sheaves.
    #[inline(always)]
    pub(crate) fn sheaves(&mut self) -> &mut SlotSheaves {
        // SAFETY: the guard holds the slot, and `&mut self` makes this the only reference
        // handed out through it.
        unsafe { self.slot.sheaves_mut() }
    }

    /// The slot's counters.
    #[inline(always)]
    pub(crate) fn counters(&self) -> &'a Counters {
        &self.slot.counters
    }

    /// The slot's node.
    #[inline(always)]
    pub(crate) fn node(&self) -> usize {
        self.slot.node()
    }
}

impl<S: SlotStrategy> Drop for SlotGuard<'_, S> {
    #[inline(always)]
    fn drop(&mut self) {
        if S::PER_CPU {
            self.slot.unlock_cpu();
        } else {
            // `last` still names this slot: while it is held no other hold (which would
            // overwrite it) can succeed on this thread. Storing the id back releases it and
            // leaves it cached for the next operation, unless a taker asked for the slot
            // while it was held: then the next operation takes the lookup's slow path, which
            // hands the sheaves over. The swap orders the release before the load of the
            // request, against the taker's store of the request and its read of the id.
            LAST_SLOTS.with(|slots| {
                slots.last.id.swap(self.cache_id, Ordering::SeqCst);
                if self.slot.drain.load(Ordering::SeqCst) != 0 {
                    slots.revoke(self.cache_id);
                }
            });
        }
    }
}

impl<S: SlotStrategy> fmt::Debug for SlotGuard<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SlotGuard").field(self.slot).finish()
    }
}

/// Every slot of one cache.
pub(crate) struct SlotTable<S: SlotStrategy> {
    /// Per-CPU slots, each padded to its own cache lines: the slot's lock and counters are
    /// written on every operation by the CPU that owns it, and other CPUs read them (stats)
    /// or take the lock (a thread that migrated, `shrink`); without padding, neighbouring
    /// CPUs' fast paths would bounce one line between them. 128 bytes on x86-64, because the
    /// adjacent-line prefetcher pulls lines in pairs.
    cpus: Box<[CachePadded<Slot>]>,
    /// Per-thread: the sealed deferred-free sheaves of adopted orphans (`chain`).
    orphan_chain: chain::Chain,
    /// Per-thread: glibc's rseq offset when the owners' deferred frees are restartable
    /// sequences on their slots (`rseq_ops::push_rcu_at`); `None` where sequences are
    /// unavailable (then each deferred free goes on its own).
    thread_sequences: Option<isize>,
    threads: Arc<ThreadRegistry>,
    cpu_source: CpuSource,
    lock_kind: LockKind,
    cpu_nodes: Box<[usize]>,
    id: u64,
    _strategy: PhantomData<S>,
}

impl<S: SlotStrategy> SlotTable<S> {
    /// Slots for a cache whose CPU `c` belongs to node `cpu_nodes[c]`.
    pub(crate) fn new(id: u64, cpu_nodes: Box<[usize]>) -> Self {
        let cpus: Box<[CachePadded<Slot>]> = if S::PER_CPU {
            cpu_nodes
                .iter()
                .map(|&node| CachePadded::new(Slot::new(node)))
                .collect()
        } else {
            Box::default()
        };
        let thread_sequences = match LockKind::detect(true) {
            #[cfg(not(loom))]
            LockKind::Rseq { offset } if !S::PER_CPU => Some(offset),
            _ => None,
        };
        Self {
            orphan_chain: chain::Chain::default(),
            thread_sequences,
            cpus,
            threads: Arc::default(),
            cpu_source: cpu::cpu_source(),
            lock_kind: LockKind::detect(S::PER_CPU),
            cpu_nodes,
            id,
            _strategy: PhantomData,
        }
    }

    /// The node of the CPU the caller runs on.
    pub(crate) fn current_node(&self) -> usize {
        let cpu = cpu::current_cpu(self.cpu_source);
        self.cpu_nodes[cpu % self.cpu_nodes.len()]
    }

    /// Finds and holds the caller's slot; `None` when it is busy.
    #[inline(always)]
    pub(crate) fn acquire(&self) -> Option<SlotGuard<'_, S>> {
        self.acquire_fast().map(FastSlot::hold)
    }

    /// Finds the caller's slot for a fast path (see [`FastSlot`]); `None` when it is busy.
    #[inline(always)]
    pub(crate) fn acquire_fast(&self) -> Option<FastSlot<'_, S>> {
        let slot = if S::PER_CPU {
            match self.lock_kind {
                #[cfg(not(loom))]
                LockKind::Rseq { offset } => match self.try_lock_rseq_once(offset) {
                    Some(OwnCpuOutcome::Locked(slot)) => slot,
                    Some(OwnCpuOutcome::Busy) => return None,
                    _ => self.try_lock_rseq(offset)?,
                },
                LockKind::Atomic => {
                    let cpu = cpu::current_cpu(self.cpu_source);
                    let slot = match self.cpus.get(cpu) {
                        Some(slot) => slot,
                        None => &self.cpus[cpu % self.cpus.len()],
                    };
                    if !slot.try_lock() {
                        return None;
                    }
                    &**slot
                }
            }
        } else {
            match LAST_SLOTS.with(|slots| slots.find(self.id)) {
                // SAFETY: `last` or this cache's table entry named this slot together with
                // this cache's id, so it is a slot of this cache registered by this thread,
                // and this thread holds no slot (a hold sets `last`'s id to 0); the registry
                // keeps the slot alive until the thread has exited (then the thread-local is
                // reset) or the cache is dropped (which `&self` rules out).
                Some(slot) => unsafe { &*slot },
                None => self.thread_slot_slow(true)?,
            }
        };
        Some(FastSlot {
            slot,
            cache_id: self.id,
            _strategy: PhantomData,
        })
    }

    /// Runs `f` on every slot of a CPU or of a live thread that the caller can take now, and
    /// returns how many it could not.
    ///
    /// Per-CPU: every CPU slot whose main lock is free, or is released while the visit
    /// waits. A slot found held is tried again, yielding between tries, until `patience` has
    /// passed in all (for every held slot together), and then counted as not reached: its
    /// holder is inside an operation (preempted, stopped, blocked, or the caller itself
    /// further up its stack, from a page source), and its sheaves stay in the slot, where the
    /// next visit finds them. Per-CPU sheaves belong to no thread, so nothing is asked of the
    /// holder. Inside a page source call a held slot is tried once. A slot abandoned at a fork
    /// is skipped and not counted (see `per_cpu`).
    ///
    /// Per-thread: the calling thread's own slot (held, unless this thread is inside an
    /// operation already), and every other live thread's slot that
    /// [`SlotTable::take_remote`] can take: its owner is asleep in the kernel, so not inside
    /// an operation. A slot whose owner is running (or runnable, or stopped) is not waited
    /// for: it gets a drain request, and its owner hands its sheaves over at its next
    /// operation on the cache. Each such slot is tried again, yielding between tries, until
    /// `patience` has passed (at least once), and then counted as not reached: a thread that
    /// is about to block is caught asleep, and one that computes for long is not waited for.
    ///
    /// Orphaned per-thread slots are not visited: they are adopted whole, by
    /// [`SlotTable::adopt_orphans`] with a callback that empties every sheaf and folds the
    /// counters. Adopting them here, with a callback meant for live slots, would unregister a
    /// slot whose thread exited during the call with part of its contents still in it.
    ///
    /// The deferred-free sheaves are not visited: `chain` reaches them.
    pub(crate) fn for_each_reachable(
        &self,
        patience: Duration,
        mut f: impl FnMut(&mut SlotSheaves, &Counters, usize),
    ) -> usize {
        if S::PER_CPU {
            return self.for_each_cpu_slot(patience, &mut f);
        }
        self.for_each_thread_slot(patience, Reach::All, &mut |slot: &Slot| {
            // SAFETY: the visit holds the slot.
            f(unsafe { slot.sheaves_mut() }, &slot.counters, slot.node());
        })
    }

    /// Runs `f` on every slot of every CPU or thread.
    ///
    /// # Safety
    ///
    /// - No thread is inside an operation on this cache, and none will start one during the
    ///   call (the cache is being dropped).
    pub(crate) unsafe fn for_each_exclusive(&self, mut f: impl FnMut(&mut SlotSheaves)) {
        for slot in self.cpus.iter() {
            if slot.lock.load(Ordering::Relaxed) == ABANDONED {
                // Abandoned at a fork by a thread that is gone (no operation is in flight, so
                // the forking thread would have released it): its sheaves may be half-updated.
                // SAFETY: exclusive access by the caller's obligation.
                unsafe { slot.forget_sheaves() };
                continue;
            }
            // The spare's pending counts, and its word untagged before it is read.
            slot.take_spare_counts();
            // SAFETY: exclusive access by the caller's obligation.
            f(unsafe { slot.sheaves_mut() });
        }
        let slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.iter() {
            // SAFETY: as above; a live thread that once used the cache keeps only an `Arc`
            // to the slot and never touches its sheaves again.
            f(unsafe { slot.sheaves_mut() });
        }
    }

    /// Adds every slot's counters and the cache's `shared` block to `totals`.
    pub(crate) fn sum_counters(
        &self,
        shared: &Counters,
        totals: &mut [u64; crate::stats::Stat::ALL.len()],
    ) {
        for slot in self.cpus.iter() {
            slot.counters.sum_into(totals);
        }
        let slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        // The shared block under the registry lock: an adoption folds a slot's counters into
        // it and unregisters the slot under this lock, so each slot's counts are seen once,
        // in the slot or in the shared block.
        shared.sum_into(totals);
        for slot in slots.iter() {
            slot.counters.sum_into(totals);
        }
    }

    /// Per-thread: how many times an owner handed over every sheaf of its slot on a request.
    pub(crate) fn drained(&self) -> u64 {
        self.threads.drained.load(Ordering::Relaxed)
    }

    /// Number of slots (CPUs, or threads registered and not yet adopted).
    pub(crate) fn len(&self) -> usize {
        if S::PER_CPU {
            self.cpus.len()
        } else {
            self.threads.slots.lock().map_or(0, |slots| slots.len())
        }
    }
}

impl<S: SlotStrategy> fmt::Debug for SlotTable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotTable")
            .field("strategy", &S::NAME)
            .field("slots", &self.len())
            .field("cpu_source", &self.cpu_source)
            .field("lock_kind", &self.lock_kind)
            .finish()
    }
}

/// What a visit of every slot ([`SlotTable::for_each_reachable`]) wants of each: a drain
/// request left on a slot it cannot reach asks for the same. (The deferred-free sheaves are
/// reached without the owner, `chain`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Reach {
    /// Every `main` and `spare` sheaf (`shrink`, the accounting check).
    All = 2,
}
