//! Per-thread slots ([`PerThread`](crate::PerThread), for comparison): the lookup's slow path,
//! the hand-over on a drain request, and how other threads reach a live thread's slot.
//!
//! One slot per (thread, cache), created on the thread's first operation. Only its thread
//! ever touches it while the thread lives. It is found through the thread-local slot cache
//! of `last_slot` (the last slot used, then a table with one entry per cache id modulo its
//! size), whose states say whether the thread holds a slot; a miss in both looks the slot up
//! in the thread's list (`registry`, sorted by cache id), creating it on the cache's first
//! use. When the
//! thread exits, its slot is marked orphaned; the cache adopts orphaned slots (flushes their
//! sheaves) on its next slow path that looks for objects, at `shrink`, at `barrier` and at
//! drop (C-CONC-2).
//!
//! # Reaching other live threads' slots
//!
//! `shrink`, `barrier` and the accounting check reach every live thread's slot too
//! (C-CONC-4), without waiting for its owner ([`SlotTable::take_remote`]). Since the fast path
//! writes no flag, whether an owner is between operations is decided from outside, and a
//! fourth state of the thread-local's entries exists: `id` is [`REVOKED`], a value no cache
//! has, stored by a *taker* (another thread) so that the owner's next operation takes the
//! lookup's slow path. A taker looks at `last` and at the table entry of the slot's cache
//! (the slot records the thread-local's address): the owner marks a slot in use nowhere
//! else.
//! A taker:
//!
//! 1. takes the slot's `lock` byte (`REMOTE`; per-thread slots use it for takers only), which
//!    the owner's lookup slow path checks after publishing its id ([`LastSlots::claim`]: a
//!    swap and a load, sequentially consistent against the taker's compare-exchange and
//!    read, so one of the two sees the other) and which the owner's exit waits for;
//! 2. revokes the owner's `last` and the cache's table entry where they name this cache
//!    (compare-exchanges): from then on the owner's operations find the slot busy and go to
//!    the slabs, as with a busy CPU slot; if `last` marks this slot held, the owner is inside
//!    a slow path and is not taken;
//! 3. reads the owner's scheduling state from `/proc/self/task/<tid>/stat`: only a thread
//!    asleep in the kernel (`S`: blocked on a lock, a channel, a sleep, I/O) is taken. Fast
//!    paths make no system call, so such a thread is not inside one. A running, runnable,
//!    stopped (`T`) or uninterruptible (`D`) thread may be, and is not waited for;
//! 4. reads both again (an owner that was inside a fast path at step 2 may have gone on to
//!    hold the slot and sleep inside a slow path), and then empties the slot under its lock.
//!
//! An owner that cannot be taken gets a drain request (`drain`) and its `id` revoked; its
//! next operation on the cache (or the release of the slow path it is in, which looks at the
//! request after a swap of `id`) moves its `main` and `spare` out to the cache's registry,
//! where the next adoption (a slow path looking for objects, `shrink`, `barrier`, the
//! accounting check) flushes them. So `shrink` reaches at once every thread that is asleep,
//! exited or the caller; a thread that is running when it looks is reached at its next
//! operation, by the next `shrink`; and it waits for no thread to run. The accounting check
//! counts every slot it reaches and checks the equation only when it reached them all.
//!
//! The deferred-free sheaves need none of this: the owner changes its slot's chain only by
//! restartable sequences on the slot (`rseq_ops::push_rcu_at`, `start_rcu_at`), so `barrier`,
//! `shrink` and the hand-over thread seal and complete them from afar whatever the owner is
//! doing, running included (`chain`).
//!
//! Assumption behind step 3: a signal handler that interrupts an operation of a per-thread
//! cache neither calls into that cache (which the slot cache already rules out) nor
//! sleeps in the kernel before it returns. A per-thread slot's owner pays nothing on its fast
//! path for any of this; a marker store at the start and the end of each fast path, which
//! would let a taker use `membarrier` instead of `/proc`, would cost two instructions per
//! operation (`docs/decisions.md`).
//!
//! A deferred free that completes (the epoch collector runs it on whichever thread pins
//! next) goes straight to the slabs under this strategy instead of into a foreign thread's
//! slot.

use std::marker::PhantomData;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::last_slot::{LAST_SLOTS, LastSlots, REVOKED};
use super::{Reach, Slot, SlotGuard, SlotSheaves, SlotStrategy, SlotTable};
use slab::rseq::{FREE, LOCAL, REMOTE};

/// How long, in all, `shrink`, `barrier` and the accounting check keep trying the slots they
/// could not take before they count them as not reached: per-thread, live threads' slots
/// whose owners were running (then the drain request stays); per-CPU, slots whose main lock
/// was held (`shrink` and the accounting check; `barrier` takes another lock).
pub(crate) const REACH_PATIENCE: Duration = Duration::from_millis(20);

/// The outcome of [`SlotTable::take_remote`].
enum Take {
    /// The caller holds the slot (`REMOTE`) and may empty it; it releases the lock.
    Taken,
    /// Orphaned, or being orphaned by its exiting owner: adoption deals with it.
    Gone,
    /// The owner may be inside an operation (a drain request was left), or another taker
    /// holds the slot: not reached now.
    Requested,
}

/// Whether thread `tid` of this process is asleep in the kernel (state `S` in `/proc`), and
/// so not inside a fast path, which makes no system call. `false` when it cannot be told.
#[cfg(not(loom))]
fn thread_sleeps(tid: i32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`: the command may contain spaces and parentheses.
    let Some(close) = stat.iter().rposition(|&byte| byte == b')') else {
        return false;
    };
    stat.get(close + 2) == Some(&b'S')
}

#[cfg(loom)]
fn thread_sleeps(_tid: i32) -> bool {
    false
}

impl<S: SlotStrategy> SlotTable<S> {
    /// Per-thread: the calling thread's slot, found in the thread's list (created and
    /// registered when `create` is set and there is none) and left in the thread-local's
    /// `last` and this cache's table entry with its id. `None` when the thread holds a slot
    /// (re-entry), has no slot and may not create one, or is exiting.
    #[cold]
    #[inline(never)]
    pub(super) fn thread_slot_slow(&self, create: bool) -> Option<&Slot> {
        if LAST_SLOTS.with(LastSlots::holds_a_slot) {
            return None;
        }
        #[cfg(test)]
        super::last_slot::LIST_LOOKUPS.with(|n| n.set(n.get() + 1));
        // SAFETY: the registry holds the slot alive as long as the cache (`&self`).
        let slot = unsafe { &*self.thread_slot_lookup(create)? };
        if slot.drain.load(Ordering::Acquire) != 0 && !self.hand_over(slot) {
            return None;
        }
        LAST_SLOTS
            .with(|slots| slots.claim(self.id, self.id, slot))
            .then_some(slot)
    }

    /// Per-thread: a taker asked for the calling thread's `slot`; moves its sheaves out to the
    /// registry, where the cache's next adoption of orphans (any slow path that looks for
    /// objects, `shrink`, `barrier`, the accounting check) takes them. `false` when a taker
    /// holds the slot now (it empties the slot itself).
    #[cold]
    fn hand_over(&self, slot: &Slot) -> bool {
        if !LAST_SLOTS.with(|slots| slots.claim(self.id, 0, slot)) {
            return false;
        }
        slot.drain.store(0, Ordering::Relaxed);
        // SAFETY: this thread holds its slot (its entry marks it held and no taker
        // holds its lock, see `LastSlots::claim`).
        let mine = unsafe { slot.sheaves_mut() };
        self.threads.drained.fetch_add(1, Ordering::Relaxed);
        let sheaves = mem::replace(mine, SlotSheaves::new());
        let empty = sheaves.main.is_none() && sheaves.spare.is_none();
        if !empty {
            self.threads
                .handed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((sheaves, slot.node()));
            self.threads.orphans.fetch_add(1, Ordering::Release);
        }
        LAST_SLOTS.with(|slots| slots.revoke(self.id));
        true
    }

    /// Per-thread: holds the calling thread's slot if it has one (never creates it), and
    /// withdraws any drain request: the caller empties what it needs itself.
    fn hold_own_slot(&self) -> Option<SlotGuard<'_, S>> {
        if LAST_SLOTS.with(LastSlots::holds_a_slot) {
            return None;
        }
        // SAFETY: the registry holds the slot alive as long as the cache (`&self`).
        let slot = unsafe { &*self.thread_slot_lookup(false)? };
        if !LAST_SLOTS.with(|slots| slots.claim(self.id, 0, slot)) {
            return None;
        }
        slot.drain.store(0, Ordering::Relaxed);
        Some(SlotGuard {
            slot,
            cache_id: self.id,
            _strategy: PhantomData,
        })
    }

    /// Per-thread part of [`SlotTable::for_each_reachable`]; see there.
    pub(super) fn for_each_thread_slot(
        &self,
        patience: Duration,
        reach: Reach,
        f: &mut impl FnMut(&Slot),
    ) -> usize {
        let start = Instant::now();
        let mut own_unreached = 0;
        let own = loop {
            if let Some(own) = self.hold_own_slot() {
                f(own.slot);
                break own.slot as *const Slot;
            }
            let Some(own) = self.thread_slot_lookup(false) else {
                break std::ptr::null();
            };
            // The caller's own slot exists but cannot be held: this thread is inside an
            // operation (re-entry), or another thread (a shrink, a barrier, the hand-over
            // thread) is emptying it from outside, which takes a moment.
            if LAST_SLOTS.with(LastSlots::holds_a_slot) || start.elapsed() >= patience {
                own_unreached = 1;
                break own;
            }
            std::thread::yield_now();
        };
        // A snapshot, so that `f` (which may call the page source, and so this cache) runs
        // without the registry's lock; the `Arc`s keep the slots alive meanwhile.
        let mut others: Vec<Arc<Slot>> = self
            .threads
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|slot| !std::ptr::eq(Arc::as_ptr(slot), own))
            .cloned()
            .collect();
        for attempt in 0.. {
            if attempt > 0 {
                if start.elapsed() >= patience {
                    break;
                }
                std::thread::yield_now();
            }
            others.retain(|slot| match self.take_remote(slot, reach) {
                Take::Taken => {
                    // `take_remote` took the slot: its owner is outside every operation and
                    // cannot start one on it until we release the lock.
                    f(slot);
                    slot.unlock();
                    false
                }
                Take::Gone => false,
                Take::Requested => true,
            });
            if others.is_empty() {
                break;
            }
        }
        others.len() + own_unreached
    }

    /// Per-thread: tries to take another live thread's `slot` without waiting for its owner.
    ///
    /// The owner's fast paths write no flag (they only compare the thread-local's id with
    /// the cache's), so whether the owner is between operations is decided from outside:
    ///
    /// 1. the slot's lock is taken (`REMOTE`), which the owner's lookup slow path checks
    ///    (see [`LastSlots::claim`]) and the owner's exit waits for;
    /// 2. the owner's thread-local ids (`last` and the cache's table entry), where they name
    ///    this cache, are revoked: any operation the owner starts on the cache from now on
    ///    takes the lookup's slow path, finds the lock and goes to the slabs directly, as
    ///    with a busy CPU slot. If the thread-local marks this slot held, the owner is inside
    ///    a slow path: no take;
    /// 3. the owner's scheduling state is read from `/proc`: only a thread asleep in the
    ///    kernel (`S`) is taken. Fast paths make no system calls, so a sleeping owner is not
    ///    inside one; a running, runnable, stopped or uninterruptible one may be;
    /// 4. the thread-local is read again: an owner that was inside a fast path when the id
    ///    was revoked, then held the slot and slept inside a slow path, shows it held.
    ///
    /// Otherwise a drain request is left on the slot and the lock released: the owner's next
    /// operation (its id is revoked, or its current slow path revokes it on release) hands
    /// the sheaves over.
    fn take_remote(&self, slot: &Slot, reach: Reach) -> Take {
        match slot
            .lock
            .compare_exchange(FREE, REMOTE, Ordering::SeqCst, Ordering::Relaxed)
        {
            Ok(_) => {}
            // The exiting owner, which orphans it for adoption.
            Err(LOCAL) => return Take::Gone,
            // Another taker (a shrink, an accounting check): not reached, tried again.
            Err(_) => return Take::Requested,
        }
        if slot.orphaned.load(Ordering::Acquire) {
            slot.unlock();
            return Take::Gone;
        }
        // SAFETY: the slot is not orphaned and we hold its lock, so its owner has not passed
        // the point of its exit that waits for the lock: its thread-local is alive.
        let owner = unsafe { &*slot.owner() };
        let (last, entry) = (&owner.last, owner.entry(self.id));
        let in_use = || {
            let id = last.id.load(Ordering::SeqCst);
            id == self.id
                || (id == 0 && std::ptr::eq(last.slot.load(Ordering::SeqCst), slot))
                || entry.id.load(Ordering::SeqCst) == self.id
        };
        let revoke = || {
            for named in [entry, last] {
                let _ = named.id.compare_exchange(
                    self.id,
                    REVOKED,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
            }
        };
        revoke();
        if !in_use() && thread_sleeps(slot.tid()) && !in_use() {
            return Take::Taken;
        }
        // The request before the revocation: an owner that releases a hold after the
        // compare-exchange failed on it sees the request (see `SlotGuard`'s drop).
        slot.drain.fetch_max(reach as u8, Ordering::SeqCst);
        revoke();
        slot.unlock();
        Take::Requested
    }
}
