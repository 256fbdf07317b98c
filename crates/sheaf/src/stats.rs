//! Per-path event counters, named after the Linux SLUB stat items.
//!
//! Each CPU slot owns a [`Counters`] block that only the slot's holder writes, with a relaxed
//! load and a relaxed store (a plain `mov` pair on x86-64, no locked instruction): the fast
//! path adds no shared atomic read-modify-write. Paths that run without a slot (the slot was
//! busy, or there are no sheaves) count in the cache's shared block with `fetch_add`; they are
//! slow paths already. `stats()` sums every block with relaxed loads, so a snapshot taken
//! while other threads run is approximate, and exact at a quiescent point.
//!
//! # Live objects without a live counter
//!
//! Every path that hands out objects counts them (`alloc_fastpath`, `alloc_slowpath`, and
//! `prefill_reserved` for the objects placed in a prefilled sheaf) and every path that takes
//! them back counts them (`free_fastpath`, `free_slowpath`, `prefill_unused` for what a
//! returned sheaf still held, `rcu_objects_completed` for a deferred sheaf's objects once its
//! grace period has passed), always per object. The live-object gauge is the difference, so
//! the fast path counts one event per operation and nothing else.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// One counted event. The discriminant indexes a [`Counters`] block.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub(crate) enum Stat {
            $($(#[$doc])* $variant,)*
        }

        impl Stat {
            /// Every event, in discriminant order.
            pub(crate) const ALL: &'static [Stat] = &[$(Stat::$variant,)*];

            /// The name reported in `AllocStats::counters`.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    $(Stat::$variant => $name,)*
                }
            }
        }
    };
}

stats! {
    // Declaration order is storage order in a `Counters` block: the fast paths' counters come
    // first, so that they share the CPU slot's first cache line with its lock and sheaves.
    /// Objects served from the CPU slot's sheaves (per object; bulk allocations included).
    AllocFastpath => "alloc_fastpath",
    /// Objects freed into the CPU slot's sheaves (per object).
    FreeFastpath => "free_fastpath",
    /// Prefills served without touching the slabs (the sheaf already held enough).
    SheafPrefillFast => "sheaf_prefill_fast",
    /// Objects placed in prefilled sheaves (they count as live while the sheaf is out).
    PrefillReserved => "prefill_reserved",
    /// Returned sheaves that became the slot's spare.
    SheafReturnFast => "sheaf_return_fast",
    /// Objects still in prefilled sheaves when they were returned or replaced.
    PrefillUnused => "prefill_unused",
    /// Objects served straight from the slabs: the slot was busy, or the cache has no sheaves.
    AllocSlowpath => "alloc_slowpath",
    /// Objects freed straight to their slabs.
    FreeSlowpath => "free_slowpath",
    /// Objects put in an `rcu_free` sheaf by `free_deferred`.
    FreeRcuSheaf => "free_rcu_sheaf",
    /// `free_deferred` calls that could not use an `rcu_free` sheaf and deferred the object on
    /// its own (the per-object fallback).
    FreeRcuSheafFail => "free_rcu_sheaf_fail",
    /// Sheaves whose objects were flushed back to the slabs.
    SheafFlush => "sheaf_flush",
    /// Sheaves refilled from the slabs.
    SheafRefill => "sheaf_refill",
    /// Sheaves allocated.
    SheafAlloc => "sheaf_alloc",
    /// Sheaves freed.
    SheafFree => "sheaf_free",
    /// Prefills that had to top the sheaf up.
    SheafPrefillSlow => "sheaf_prefill_slow",
    /// Prefills larger than the sheaf capacity (a dedicated sheaf).
    SheafPrefillOversize => "sheaf_prefill_oversize",
    /// Returned sheaves that were topped up into the barn, or flushed and freed.
    SheafReturnSlow => "sheaf_return_slow",
    /// Every object passed to `free_deferred`, batched or not.
    DeferredObjects => "deferred_objects",
    /// Full (or, at a barrier, partly filled) `rcu_free` sheaves handed to a grace period.
    RcuSheafSubmitted => "rcu_sheaf_submitted",
    /// `rcu_free` sheaves put in the barn as full sheaves after their grace period.
    RcuSheafRecycled => "rcu_sheaf_recycled",
    /// `rcu_free` sheaves flushed to the slabs after their grace period (barn full, or the
    /// sheaf was not full).
    RcuSheafFlushed => "rcu_sheaf_flushed",
    /// Objects of `rcu_free` sheaves whose grace period has passed.
    RcuObjectsCompleted => "rcu_objects_completed",
    /// Operations that found their CPU slot held by another thread and took a slow path.
    CpuSlotBusy => "cpu_slot_busy",
}

/// A block of event counters, one per [`Stat`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    values: [AtomicU64; Stat::ALL.len()],
}

impl Counters {
    /// Counts `n` events in a block that only the caller writes (the held slot's block).
    #[inline(always)]
    pub(crate) fn add_owned(&self, stat: Stat, n: u64) {
        let cell = &self.values[stat as usize];
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Counts `n` events in a block any thread may write (the cache's shared block).
    #[inline]
    pub(crate) fn add_shared(&self, stat: Stat, n: u64) {
        self.values[stat as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The current value of `stat`.
    pub(crate) fn get(&self, stat: Stat) -> u64 {
        self.values[stat as usize].load(Ordering::Relaxed)
    }

    /// Adds every counter of `self` to `totals`.
    pub(crate) fn sum_into(&self, totals: &mut [u64; Stat::ALL.len()]) {
        for (total, value) in totals.iter_mut().zip(&self.values) {
            *total = total.wrapping_add(value.load(Ordering::Relaxed));
        }
    }
}

/// Where a slow path counts: in the held slot's block, or in the shared block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tally<'a> {
    counters: &'a Counters,
    owned: bool,
}

impl<'a> Tally<'a> {
    /// Counting in a slot block that the caller holds.
    pub(crate) fn owned(counters: &'a Counters) -> Self {
        Self {
            counters,
            owned: true,
        }
    }

    /// Counting in a block shared by every thread.
    pub(crate) fn shared(counters: &'a Counters) -> Self {
        Self {
            counters,
            owned: false,
        }
    }

    /// Counts `n` events.
    #[inline]
    pub(crate) fn add(self, stat: Stat, n: u64) {
        if self.owned {
            self.counters.add_owned(stat, n);
        } else {
            self.counters.add_shared(stat, n);
        }
    }
}

/// Where a `NOWAIT` allocation that did not find its object in `main` was served: counted on
/// the slow paths only, in the cache's block of [`NowaitCounters`] with `fetch_add` (a CPU
/// slot's block has no room for them: a padded slot stays 256 bytes, see `slot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum NowaitPath {
    /// `NOWAIT` allocations whose empty `main` was refilled by swapping in the spare.
    RefillSpare,
    /// `NOWAIT` allocations whose empty `main` was refilled with a full barn sheaf.
    RefillBarn,
    /// `NOWAIT` allocations whose empty `main` was refilled from free objects of the slabs.
    RefillSlabs,
    /// `NOWAIT` allocations served with one object straight from the slabs: the slot was
    /// busy, or `nowait_no_refill` forbade refilling `main`.
    FromSlabs,
    /// `NOWAIT` allocations that failed: only a new slab could have served them.
    Failed,
}

impl NowaitPath {
    /// Every path, in discriminant order.
    pub(crate) const ALL: &'static [NowaitPath] = &[
        NowaitPath::RefillSpare,
        NowaitPath::RefillBarn,
        NowaitPath::RefillSlabs,
        NowaitPath::FromSlabs,
        NowaitPath::Failed,
    ];

    /// The name reported in `AllocStats::counters`.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            NowaitPath::RefillSpare => "nowait_refill_spare",
            NowaitPath::RefillBarn => "nowait_refill_barn",
            NowaitPath::RefillSlabs => "nowait_refill_slabs",
            NowaitPath::FromSlabs => "nowait_from_slabs",
            NowaitPath::Failed => "nowait_failed",
        }
    }
}

/// The cache's block of [`NowaitPath`] counters.
#[derive(Debug, Default)]
pub(crate) struct NowaitCounters {
    values: [AtomicU64; NowaitPath::ALL.len()],
}

impl NowaitCounters {
    /// Counts one event.
    #[inline]
    pub(crate) fn add(&self, stat: NowaitPath) {
        self.values[stat as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The current value of `stat`.
    pub(crate) fn get(&self, stat: NowaitPath) -> u64 {
        self.values[stat as usize].load(Ordering::Relaxed)
    }
}

/// Counters of run-time changes of the capacity and the barn limits, kept in the cache's own
/// block like [`NowaitCounters`] (a CPU slot's block has no room for them), counted on slow
/// paths only.
#[derive(Debug, Default)]
pub(crate) struct ResizeCounters {
    /// Sheaves of a capacity the cache had before a run-time change, freed (empty) or
    /// resized (a prefill's) at a slow path: `sheaf_retired`.
    retired: AtomicU64,
    /// Objects given back to the slabs because of a run-time change (every cached object with
    /// `resize_by_flush`; otherwise those of the sheaves beyond a lowered barn limit and
    /// those of a resized sheaf beyond the new capacity): `resize_flushed`.
    flushed: AtomicU64,
}

impl ResizeCounters {
    /// Counts one stale sheaf retired or resized.
    pub(crate) fn retired(&self) {
        self.retired.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` objects flushed because of a change.
    pub(crate) fn flushed(&self, n: u64) {
        if n > 0 {
            self.flushed.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// `(name, value)` of each counter, as reported in `AllocStats::counters`.
    pub(crate) fn values(&self) -> [(&'static str, u64); 2] {
        [
            ("sheaf_retired", self.retired.load(Ordering::Relaxed)),
            ("resize_flushed", self.flushed.load(Ordering::Relaxed)),
        ]
    }
}
