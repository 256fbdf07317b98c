//! The slot table's part in a `fork` (see `slab::fork`): which locks prepare takes, and what
//! the child repairs.
//!
//! - Per-CPU slots: prepare takes every slot lock it can (`slab::fork` marks them all and
//!   confirms the marks with one rseq membarrier). In the child a slot that is still held was
//!   held by another thread, caught in the middle of an operation: its sheaves are replaced
//!   by empty ones without being read (their objects are lost), and the slot is free again.
//!   When the fork was made from inside a page source the holder may be the forking thread
//!   itself, so the slot is marked `ABANDONED` instead: busy to every operation and skipped
//!   by the paths that visit every slot, until its holder (if it is still there) releases it.
//! - Per-thread slots: their fast path takes no lock, so another thread's slot may be half
//!   updated at the fork. The child abandons them (see [`SlotTable::fork_child`]), and the
//!   forking thread's own slot too if another thread was emptying it from outside (`REMOTE`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use slab::fork::{ChildFork, FlagLock, Held, SlotLock};
use slab::rseq::{ABANDONED, FREE};

use super::{LockKind, SlotStrategy, SlotTable, THREAD_SLOTS, ThreadSlots};
use crate::stats::Counters;

impl<S: SlotStrategy> SlotTable<S> {
    /// Per-CPU: every chain's `detach` lock, for prepare to take before the slot locks (as
    /// its holders take `rcu_lock` inside it).
    pub(crate) fn fork_flag_locks(&self, out: &mut Vec<FlagLock>) {
        for slot in self.cpus.iter() {
            out.push(FlagLock(slot.chain.detach_flag()));
        }
    }

    /// Per-CPU: every slot lock, for prepare to take before any mutex.
    pub(crate) fn fork_slot_locks(&self, out: &mut Vec<SlotLock>) {
        let rseq = matches!(self.lock_kind, LockKind::Rseq { .. });
        for (cpu, slot) in self.cpus.iter().enumerate() {
            for lock in [&slot.lock, &slot.rcu_lock] {
                out.push(SlotLock {
                    lock,
                    cpu: cpu as u32,
                    rseq,
                });
            }
        }
    }

    /// Locks the per-thread registry and its list of handed-over sheaves (in the order
    /// adoption nests them).
    ///
    /// # Safety
    ///
    /// - The cache that owns this table is registered with `slab::fork`.
    pub(crate) unsafe fn fork_hold_registry(&self, held: &mut Held) {
        let guard = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the caller's obligation: the table lives while its cache is registered.
        unsafe { held.hold(guard) };
        // After the registry, as adoption nests them: a thread honouring a drain request may
        // hold it at the fork.
        let handed = self
            .threads
            .handed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // SAFETY: as above.
        unsafe { held.hold(handed) };
    }

    /// In the child: makes every slot usable or unreachable (see the module docs), folding
    /// abandoned per-thread slots' counters through `fold`. Returns the number of slots whose
    /// contents were lost.
    pub(crate) fn fork_child(&self, fork: ChildFork, mut fold: impl FnMut(&Counters)) -> usize {
        let mut lost = 0;
        for slot in self.cpus.iter() {
            // The sheaves a gone `detach` holder was completing are lost with it.
            lost += usize::from(repair_chain(slot));
            if slot.lock.load(Ordering::Relaxed) == FREE {
                continue;
            }
            lost += 1;
            if fork.in_page_source {
                slot.lock.store(ABANDONED, Ordering::Relaxed);
            } else {
                // SAFETY: the forking thread holds no slot (it is not inside a page source,
                // the only foreign code run under a slot), so the holder is gone, and only
                // this thread exists.
                unsafe { slot.forget_sheaves() };
                slot.lock.store(FREE, Ordering::Release);
            }
        }
        if !S::PER_CPU {
            lost += self.fork_abandon_thread_slots(&mut fold);
        }
        lost
    }

    /// Per-thread, in the child: unregisters every slot that is neither the forking thread's
    /// nor orphaned (its thread is gone but did not exit: its fast path may have been halfway
    /// through an update). The slots are leaked, never read, so nobody adopts or drops a
    /// half-updated sheaf; their counters are folded into the cache's shared block.
    ///
    /// They are not adopted as orphans: a shrink or barrier can take a live thread's slot
    /// only while that thread sleeps in the kernel, and nothing can stop an owner that is in
    /// the middle of a fast path (which carries no marker), so prepare cannot bring every
    /// per-thread slot to rest as it does per-CPU ones.
    fn fork_abandon_thread_slots(&self, fold: &mut impl FnMut(&Counters)) -> usize {
        let own = THREAD_SLOTS
            .try_with(|slots| {
                let entries = slots.entries.try_borrow().ok()?;
                let found = ThreadSlots::find(&entries, self.id).ok()?;
                Some(Arc::as_ptr(&entries[found].slot))
            })
            .ok()
            .flatten();
        let mut slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut abandoned = 0;
        slots.retain(|slot| {
            if Some(Arc::as_ptr(slot)) == own {
                // Another thread may have been emptying this slot from outside (`REMOTE`, a
                // shrink or barrier that found this thread asleep) when the fork came: that
                // thread is gone, so its half-done work is forgotten and the slot freed.
                if slot.lock.load(Ordering::Relaxed) != FREE {
                    // SAFETY: only this thread exists, it is inside no operation of the cache,
                    // and the slot's holder no longer exists.
                    unsafe { slot.forget_sheaves() };
                    slot.lock.store(FREE, Ordering::Release);
                    abandoned += 1;
                }
                abandoned += usize::from(repair_chain(slot));
                return true;
            }
            if slot.orphaned.load(Ordering::Acquire) {
                abandoned += usize::from(repair_chain(slot));
                return true;
            }
            fold(&slot.counters);
            // Never dropped: dropping would free sheaves that may be half-updated.
            std::mem::forget(Arc::clone(slot));
            abandoned += 1;
            false
        });
        if self.orphan_chain.detach_flag().load(Ordering::Relaxed) {
            // SAFETY: only this thread exists, and it holds no `detach` lock.
            unsafe { self.orphan_chain.forget() };
            abandoned += 1;
        }
        abandoned
    }

    /// Objects in every slot's `main` and `spare`, as `check_accounting` counts them, and in
    /// the sheaves that live threads handed over and that are not adopted yet (adoption
    /// later gives them back, so they are not lost).
    ///
    /// # Safety
    ///
    /// - Only the calling thread exists and it is inside no operation of the cache (a child
    ///   right after the fork, forked from outside any page source), and
    ///   [`SlotTable::fork_child`] has run.
    pub(crate) unsafe fn fork_objects_in_slots(&self) -> u64 {
        let mut objects = 0u64;
        // SAFETY: forwarded: nobody else can be inside an operation.
        unsafe {
            self.for_each_exclusive(|sheaves| {
                objects += sheaves.main.size() as u64;
                objects += sheaves
                    .spare
                    .as_ref()
                    .map_or(0, |spare| spare.size() as u64);
            });
        }
        let handed = self
            .threads
            .handed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (sheaves, _) in handed.iter() {
            objects += sheaves.main.size() as u64;
            objects += sheaves
                .spare
                .as_ref()
                .map_or(0, |spare| spare.size() as u64);
        }
        objects
    }
}

/// In a child: a kept slot whose deferred-free chain a thread that is gone was changing
/// (`detach` or `rcu_lock` held; neither is held across a call out, so not by the forking
/// thread) gets its chain and sealed list forgotten, never read (their objects stay counted
/// live), and both locks freed. Whether it had to.
fn repair_chain(slot: &super::Slot) -> bool {
    let chain = &slot.chain;
    if !chain.detach_flag().load(Ordering::Relaxed) && slot.rcu_lock.load(Ordering::Relaxed) == FREE
    {
        return false;
    }
    // SAFETY: only this thread exists, and it holds neither lock.
    unsafe {
        slot.forget_rcu();
        chain.forget();
    }
    slot.rcu_pending.store(false, Ordering::Relaxed);
    slot.rcu_lock.store(FREE, Ordering::Release);
    true
}
