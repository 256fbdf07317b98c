//! A cache's part in a `fork` (see `slab::fork`): the locks prepare takes, and the repair and
//! re-counting the child does.
//!
//! Prepare takes, besides the slot locks and the per-CPU `detach` flags, the per-thread
//! registry, then every barn; the slab pool's node locks are registered by
//! the pool itself. In the child the slot table repairs or abandons what other threads held,
//! and the accounting equation (module `accounting`) gets its `lost_at_fork` term for the
//! objects lost with them: measured right there, when only the forking thread exists, as the objects the
//! slabs count in use that are neither live nor cached in a reachable sheaf. Every later
//! operation must keep the equation with that term, so a child still checks its accounting.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

#[cfg(not(loom))]
use super::{CacheCore, SlotStrategy};

/// What the last `fork` left a cache in this process.
#[derive(Debug, Default)]
pub(crate) struct ForkState {
    /// Objects the slabs count in use that were lost with other threads at a fork.
    lost: AtomicI64,
    /// Set when the loss could not be measured (a fork from inside a page source, whose
    /// operation was still in flight).
    unknown: AtomicBool,
}

impl ForkState {
    /// The objects lost at forks, or `None` if unknown.
    pub(crate) fn lost(&self) -> Option<i64> {
        (!self.unknown.load(Ordering::Relaxed)).then(|| self.lost.load(Ordering::Relaxed))
    }
}

#[cfg(not(loom))]
impl<S: SlotStrategy> slab::fork::AtFork for CacheCore<S> {
    fn slot_locks(&self, out: &mut Vec<slab::fork::SlotLock>) {
        self.slots.fork_slot_locks(out);
    }

    fn flag_locks(&self, out: &mut Vec<slab::fork::FlagLock>) {
        self.slots.fork_flag_locks(out);
    }

    fn lock_all(&self, held: &mut slab::fork::Held) {
        // SAFETY: the cache is registered from its creation to its drop.
        unsafe { self.slots.fork_hold_registry(held) };
        for barn in self.barns.iter() {
            // SAFETY: as above.
            unsafe { barn.hold_for_fork(held) };
        }
    }

    fn child(&self, fork: slab::fork::ChildFork) {
        self.slots.fork_child(fork, |counters| {
            for &stat in crate::stats::Stat::ALL {
                self.counters.add_shared(stat, counters.get(stat));
            }
        });
        self.transit.fork_child();
        if fork.in_page_source {
            self.fork.unknown.store(true, Ordering::Relaxed);
            return;
        }
        // SAFETY: the child handler runs before any other code of the child, on its only
        // thread, which is inside no operation (not inside a page source); the table was
        // repaired just above.
        let in_slots = unsafe { self.slots.fork_objects_in_slots() };
        let in_barn: u64 = self
            .barns
            .iter()
            .map(|barn| barn.snapshot().objects as u64)
            .sum();
        let live = self.live_objects();
        let in_use = self.pool.stats().objects_in_use;
        let lost = in_use as i64 - (live + in_slots + in_barn) as i64;
        self.fork.lost.store(lost, Ordering::Relaxed);
        self.fork.unknown.store(false, Ordering::Relaxed);
    }
}
