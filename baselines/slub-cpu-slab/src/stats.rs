//! Per-CPU event counters, named after the kernel's SLUB stat items.
//!
//! Each CPU slot has its own row. A counter is bumped with a relaxed load and store, not a
//! read-modify-write: that costs one cache-local store on the fast path, like the kernel's
//! `this_cpu_inc`. Two threads bumping the same CPU's counter at the same instant (one was
//! preempted or migrated mid-increment) can lose one increment, so counters may undercount
//! by such rare races; they never overcount. Gauges (`live_objects`, `slab_bytes`) are not
//! derived from them.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// One counted event.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub(crate) enum Stat {
            $($(#[$doc])* $variant,)*
        }

        impl Stat {
            /// Every counter, in row order.
            pub(crate) const ALL: &[Stat] = &[$(Stat::$variant,)*];

            /// The counter's name in `AllocStats::counters`.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Stat::$variant => $name,)*
                }
            }
        }
    };
}

stats! {
    /// Allocation from the CPU free list by compare-and-swap.
    AllocFastpath => "alloc_fastpath",
    /// Allocation that needed the slow path.
    AllocSlowpath => "alloc_slowpath",
    /// Free to the CPU slab's free list by compare-and-swap.
    FreeFastpath => "free_fastpath",
    /// Free to a slab that is not the CPU slab.
    FreeSlowpath => "free_slowpath",
    /// Slow-path free to a slab that another CPU has frozen.
    FreeFrozen => "free_frozen",
    /// Slow-path free that put a full slab on this CPU's partial list.
    CpuPartialFree => "cpu_partial_free",
    /// Slow-path free that removed an empty slab from its node's partial list.
    FreeRemovePartial => "free_remove_partial",
    /// CPU free list refilled from the CPU slab's own free list (remote frees).
    AllocRefill => "alloc_refill",
    /// CPU slab taken from the per-CPU partial list.
    CpuPartialAlloc => "cpu_partial_alloc",
    /// CPU slab taken from the node's partial list.
    AllocFromPartial => "alloc_from_partial",
    /// Slab moved from the node's partial list to the per-CPU partial list.
    CpuPartialNode => "cpu_partial_node",
    /// Per-CPU partial list drained to the node's partial list.
    CpuPartialDrain => "cpu_partial_drain",
    /// New slab taken from the page source.
    AllocSlab => "alloc_slab",
    /// Slab released to the page source.
    FreeSlab => "free_slab",
    /// CPU slab given up because it had no free object left.
    DeactivateBypass => "deactivate_bypass",
    /// Flushed CPU slab that was full.
    DeactivateFull => "deactivate_full",
    /// Flushed CPU slab that was empty and released.
    DeactivateEmpty => "deactivate_empty",
    /// Flushed CPU slab put on its node's partial list.
    DeactivateToTail => "deactivate_to_tail",
    /// CPU slab flushed (`shrink`).
    CpuslabFlush => "cpuslab_flush",
    /// Fast-path compare-and-swap that failed and was retried.
    CmpxchgDoubleCpuFail => "cmpxchg_double_cpu_fail",
    /// Slab-word compare-and-swap that failed and was retried.
    CmpxchgDoubleFail => "cmpxchg_double_fail",
    /// Objects handed out by `alloc_bulk`.
    AllocBulk => "alloc_bulk",
    /// Objects taken back by `free_bulk`.
    FreeBulk => "free_bulk",
}

/// One CPU's row of counters.
#[derive(Debug)]
pub(crate) struct StatRow([AtomicU64; Stat::ALL.len()]);

impl Default for StatRow {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl StatRow {
    /// Adds `n` to `stat` (see the module documentation for the race it tolerates).
    #[inline]
    pub(crate) fn add(&self, stat: Stat, n: u64) {
        let counter = &self.0[stat as usize];
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The current value of `stat`.
    pub(crate) fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize].load(Ordering::Relaxed)
    }
}
