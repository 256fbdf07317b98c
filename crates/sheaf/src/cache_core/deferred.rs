//! Deferred frees (`kfree_rcu`): the slot's `rcu_free` sheaf, grace periods, recycling.
//!
//! `free_deferred` pushes on the slot's `rcu_free` sheaf; full ones wait on the slot until
//! there are `RCU_GROUP` of them, which are handed to one grace period together, and
//! afterwards each is recycled into the barn as a full sheaf (or flushed). Starting a new
//! `rcu_free` sheaf arms the cache for the rcu module's hand-over thread, which takes every
//! slot's `rcu_free` sheaves once a tick until it finds none (`DeferTarget::hand_over`).
//!
//! Per-CPU, a slot's deferred-free sheaves have a lock of their own (`rcu_lock`), held only
//! for a few instructions that call out to nothing: a thread that holds the slot's main lock
//! (in any slow path, descheduled or blocked there) keeps no completed deferred free from a
//! barrier, which takes `rcu_lock` alone. Starting a sheaf needs an empty one, which may call
//! out (barn, allocation): it is got under the main lock first, and `rcu_lock` is taken only
//! to install it.

use std::mem;
use std::ptr::NonNull;
use std::time::Duration;

use object_alloc::rcu::{DeferTarget, Deferrer};

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{FastSlot, RCU_GROUP, RcuSheaves, SlotStrategy};
use crate::stats::{Counters, Stat, Tally};

/// A `free_deferred` that went through a lock: `None`, or a group of full sheaves (with the
/// reservation taken before they left the slot) for the caller to hand to a grace period;
/// `Err` gives the object back to be deferred on its own.
type Pushed<R> = Result<Option<(R, Vec<OwnedSheaf>)>, NonNull<u8>>;

impl<S: SlotStrategy> CacheCore<S> {
    /// Puts `object` in the slot's `rcu_free` sheaf; a full one joins the slot's waiting
    /// sheaves, and when [`RCU_GROUP`] are waiting they are returned (to be handed to one grace
    /// period by the caller). Gives the object back when no sheaf can be used (to be deferred
    /// on its own).
    ///
    /// `arm` runs when a new `rcu_free` sheaf gets its first object, after the sheaf is in the
    /// slot: from then until the sheaf leaves the slot, the cache must be armed for the
    /// hand-over thread (see [`CacheCore::take_rcu_sheaves`]), so that no sheaf waits there
    /// longer than a tick.
    ///
    /// The common case, a slot whose `rcu_free` sheaf has room for this object and more, is
    /// inlined and calls out to nothing.
    #[inline]
    pub(crate) fn push_deferred<R>(
        &self,
        object: NonNull<u8>,
        reserve: impl FnOnce() -> R,
        arm: impl FnOnce(),
    ) -> Pushed<R> {
        // SAFETY: the caller's live object, handed over for a deferred free.
        let object = match unsafe { self.slots.push_rcu_fast(object) } {
            Ok(()) => return Ok(None),
            Err(object) => object,
        };
        if S::PER_CPU {
            return self.push_deferred_cpu(object, reserve, arm);
        }
        let Some(mut slot) = self.slots.acquire_fast() else {
            return self.push_deferred_busy(object);
        };
        let counters = slot.counters();
        if let Some(rcu) = &mut slot.rcu().rcu_free
            && rcu.room() > 1
        {
            rcu.push(object).expect("the sheaf has room");
            counters.add_owned(Stat::DeferredObjects, 1);
            counters.add_owned(Stat::FreeRcuSheaf, 1);
            return Ok(None);
        }
        self.push_deferred_slow(slot, object, reserve, arm)
    }

    /// Per-CPU: under the slot's `rcu_lock` alone, onto an `rcu_free` sheaf if there is one
    /// (a full one joins the waiting ones); otherwise a new sheaf is started.
    #[inline]
    fn push_deferred_cpu<R>(
        &self,
        object: NonNull<u8>,
        reserve: impl FnOnce() -> R,
        arm: impl FnOnce(),
    ) -> Pushed<R> {
        let Some(mut rcu) = self.slots.acquire_rcu() else {
            return self.push_deferred_busy(object);
        };
        let counters = rcu.counters();
        if let Some(sheaf) = &mut rcu.sheaves().rcu_free
            && sheaf.room() > 1
        {
            sheaf.push(object).expect("the sheaf has room");
            counters.add_owned(Stat::DeferredObjects, 1);
            counters.add_owned(Stat::FreeRcuSheaf, 1);
            return Ok(None);
        }
        if rcu.sheaves().rcu_free.is_some() {
            return Ok(Self::push_rcu_locked(
                rcu.sheaves(),
                counters,
                object,
                reserve,
            ));
        }
        drop(rcu);
        self.start_rcu_sheaf_cpu(object, reserve, arm)
    }

    /// Pushes `object` on the `rcu_free` sheaf, which exists (and, by the invariant, has room);
    /// a sheaf it fills joins the waiting ones, and a full group is returned. Calls out to
    /// nothing but `reserve` (which takes no lock). Once per sheaf: out of line, so that the
    /// callers' common path keeps its registers.
    #[cold]
    #[inline(never)]
    fn push_rcu_locked<R>(
        sheaves: &mut RcuSheaves,
        counters: &Counters,
        object: NonNull<u8>,
        reserve: impl FnOnce() -> R,
    ) -> Option<(R, Vec<OwnedSheaf>)> {
        let tally = Tally::owned(counters);
        let rcu = sheaves.rcu_free.as_mut().expect("the caller checked");
        rcu.push(object)
            .expect("a full rcu_free sheaf is never kept");
        tally.add(Stat::DeferredObjects, 1);
        tally.add(Stat::FreeRcuSheaf, 1);
        if !rcu.is_full() {
            return None;
        }
        let full = sheaves.rcu_free.take().expect("just pushed on it");
        sheaves.rcu_waiting.push(full);
        if sheaves.rcu_waiting.len() < RCU_GROUP {
            return None;
        }
        tally.add(Stat::RcuSheafSubmitted, RCU_GROUP as u64);
        // Reserved before the group leaves the slot, where a barrier looks for it.
        let reservation = reserve();
        Some((
            reservation,
            mem::replace(&mut sheaves.rcu_waiting, Vec::with_capacity(RCU_GROUP)),
        ))
    }

    /// Per-CPU, the slot has no `rcu_free` sheaf: an empty one is got under the slot's main
    /// lock (the spare if empty, else from the barn or new, which may call out), then
    /// installed with `object` under `rcu_lock`.
    #[cold]
    #[inline(never)]
    fn start_rcu_sheaf_cpu<R>(
        &self,
        object: NonNull<u8>,
        reserve: impl FnOnce() -> R,
        arm: impl FnOnce(),
    ) -> Pushed<R> {
        let Some(mut slot) = self.slots.acquire() else {
            return self.push_deferred_busy(object);
        };
        let tally = Tally::owned(slot.counters());
        let node = slot.node();
        // An empty spare first, as the kernel's kfree_rcu does: no barn trip.
        let mut empty = match slot.sheaves().spare.take_if(|spare| spare.is_empty()) {
            Some(spare) => spare,
            None => self.empty_sheaf(node, tally),
        };
        let Some(mut rcu) = self.slots.lock_rcu_of(&slot) else {
            // A barrier or the hand-over thread is taking the sheaves this moment.
            self.stash_empty(empty, node, tally);
            return self.push_deferred_busy(object);
        };
        let counters = rcu.counters();
        let sheaves = rcu.sheaves();
        if sheaves.rcu_free.is_some() {
            // Another thread on this CPU put one in place between our two looks.
            let group = Self::push_rcu_locked(sheaves, counters, object, reserve);
            drop(rcu);
            self.stash_empty(empty, node, tally);
            return Ok(group);
        }
        empty.push(object).expect("an empty sheaf has room");
        sheaves.rcu_free = Some(empty);
        rcu.note_rcu_started();
        counters.add_owned(Stat::DeferredObjects, 1);
        counters.add_owned(Stat::FreeRcuSheaf, 1);
        drop(rcu);
        drop(slot);
        // The sheaf is in the slot (the release of `rcu_lock`); the fence orders that before
        // the arming's load of the armed flag, against the hand-over thread's disarm and its
        // look (`SlotTable::for_each_cpu_rcu` fences too): either it finds the sheaf, or the
        // arming finds the cache disarmed and arms it again.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        arm();
        Ok(None)
    }

    #[cold]
    #[inline(never)]
    fn push_deferred_busy<R>(&self, object: NonNull<u8>) -> Pushed<R> {
        let tally = Tally::shared(&self.counters);
        tally.add(Stat::CpuSlotBusy, 1);
        tally.add(Stat::DeferredObjects, 1);
        tally.add(Stat::FreeRcuSheafFail, 1);
        Err(object)
    }

    /// Per-thread: the slot has no `rcu_free` sheaf yet, or `object` fills it.
    #[cold]
    #[inline(never)]
    fn push_deferred_slow<R>(
        &self,
        slot: FastSlot<'_, S>,
        object: NonNull<u8>,
        reserve: impl FnOnce() -> R,
        arm: impl FnOnce(),
    ) -> Pushed<R> {
        // Held from here on: getting an empty sheaf may call out (barn, allocation).
        let mut slot = slot.hold();
        let tally = Tally::owned(slot.counters());
        let node = slot.node();
        let started = slot.rcu().rcu_free.is_none();
        if started {
            slot.note_rcu_started();
            // An empty spare first, as the kernel's kfree_rcu does: no barn trip.
            let empty = match slot.sheaves().spare.take_if(|spare| spare.is_empty()) {
                Some(spare) => spare,
                None => self.empty_sheaf(node, tally),
            };
            slot.rcu().rcu_free = Some(empty);
        }
        let counters = slot.counters();
        let group = Self::push_rcu_locked(slot.rcu(), counters, object, reserve);
        if started {
            // With the slot held: a hand-over that disarmed the cache before this either
            // takes the sheaf after us, or we see it disarmed and arm it again.
            arm();
        }
        Ok(group)
    }

    /// After its grace period: a full `rcu_free` sheaf goes to the barn as a full sheaf when
    /// there is room (recycled); else, with `rcu_hold_ticks`, onto the barn's held lists for
    /// at most that many hand-over ticks ([`CacheCore::age_held`]); else its objects go back
    /// to the slabs.
    pub(crate) fn recycle_rcu_sheaf(&self, mut sheaf: OwnedSheaf) {
        let tally = Tally::shared(&self.counters);
        tally.add(Stat::RcuObjectsCompleted, sheaf.size() as u64);
        let node = self.slots.current_node();
        if sheaf.is_full() {
            match self.barns[node].put_full(sheaf) {
                Ok(()) => {
                    tally.add(Stat::RcuSheafRecycled, 1);
                    return;
                }
                Err(full) if !self.is_stale(&full) => match self.barns[node].hold(full) {
                    Ok(()) => return,
                    Err(full) => sheaf = full,
                },
                Err(full) => sheaf = full,
            }
        }
        self.flush_rcu_sheaf(sheaf, node, tally);
    }

    /// A recycled `rcu_free` sheaf the barn did not keep: its objects to the slabs, the
    /// sheaf to the empty list (or freed).
    fn flush_rcu_sheaf(&self, mut sheaf: OwnedSheaf, node: usize, tally: Tally<'_>) {
        tally.add(Stat::RcuSheafFlushed, 1);
        self.flush(&mut sheaf, tally);
        self.stash_empty(sheaf, node, tally);
    }

    /// One hand-over tick for the barns' held sheaves: those held since the tick before and
    /// still unused go back to the slabs (counted as flushed `rcu_free` sheaves); whether
    /// some are still held.
    pub(crate) fn age_held(&self) -> bool {
        let tally = Tally::shared(&self.counters);
        let mut left = false;
        // In transit from before the sheaves leave the barn until they are in the slabs: the
        // accounting check, which may run at any quiescent point while this thread ticks,
        // finds them in the barn, or sees them in transit and reads again.
        let _transit = self.transit.begin();
        for (node, barn) in self.barns.iter().enumerate() {
            for sheaf in barn.age_held() {
                self.flush_rcu_sheaf(sheaf, node, tally);
            }
            left |= barn.has_held();
        }
        left
    }

    /// Takes every partly filled `rcu_free` sheaf the caller can reach (and those of adopted
    /// orphans), for the cache to submit. The hand-over thread calls it once a tick while the
    /// cache is armed, which bounds how long a sheaf waits in a slot that stops deferring.
    ///
    /// `reserve` runs after orphans are adopted (adoption flushes sheaves, which may call the
    /// page source) and before any sheaf is taken: from then on, until the caller submits,
    /// nothing here calls out, so a barrier called from a page source never waits for a
    /// reservation of its own thread.
    pub(crate) fn take_rcu_sheaves<R>(
        &self,
        patience: Duration,
        reserve: impl FnOnce() -> R,
    ) -> (R, Vec<OwnedSheaf>, usize) {
        self.adopt_orphans(false);
        let reservation = reserve();
        let mut taken = mem::take(&mut *self.orphan_rcu.lock().unwrap_or_else(|p| p.into_inner()));
        let unreached = self
            .slots
            .for_each_rcu(patience, |rcu| taken.extend(rcu.take_rcu()));
        (reservation, self.prepare_submission(taken), unreached)
    }

    /// Empty sheaves are stashed; the rest are counted as submitted and returned.
    fn prepare_submission(&self, sheaves: Vec<OwnedSheaf>) -> Vec<OwnedSheaf> {
        let tally = Tally::shared(&self.counters);
        let node = self.slots.current_node();
        let mut submit = Vec::with_capacity(sheaves.len());
        for sheaf in sheaves {
            if sheaf.is_empty() {
                self.stash_empty(sheaf, node, tally);
            } else {
                tally.add(Stat::RcuSheafSubmitted, 1);
                submit.push(sheaf);
            }
        }
        submit
    }

    /// Every `rcu_free` sheaf of every slot (the cache is being dropped).
    ///
    /// # Safety
    ///
    /// - No thread is inside an operation on this cache, nor will start one.
    pub(crate) unsafe fn take_rcu_sheaves_exclusive(&self) -> Vec<OwnedSheaf> {
        let mut taken = mem::take(&mut *self.orphan_rcu.lock().unwrap_or_else(|p| p.into_inner()));
        if S::PER_CPU {
            // Under each slot's `rcu_lock`: the cache's deferred callbacks may still be running
            // on other threads, and per-CPU ones free into the slots (`free_now`), which may
            // start an `rcu_free` sheaf no longer.
            self.slots
                .for_each_rcu(Duration::ZERO, |rcu| taken.extend(rcu.take_rcu()));
        } else {
            // SAFETY: forwarded; per-thread slots are touched by no deferred callback.
            unsafe {
                self.slots.for_each_exclusive(|_, rcu| {
                    taken.extend(rcu.take_rcu());
                });
            }
        }
        self.prepare_submission(taken)
    }
}

impl<S: SlotStrategy> DeferTarget for CacheCore<S> {
    fn hand_over(&self, deferrer: &Deferrer<Self>) -> bool {
        // One try per live thread's slot: the hand-over thread comes back every tick while
        // `rcu_free` sheaves may be left in a slot it could not take, or in one of an exited
        // thread.
        // Aged first: a flush may call the page source, which must not happen between the
        // reservation and the submission (see `take_rcu_sheaves`).
        let held = self.age_held();
        let (reservation, rcu, unreached) =
            self.take_rcu_sheaves(Duration::ZERO, || deferrer.reserve());
        let again = !rcu.is_empty() || unreached > 0 || self.slots.has_orphans() || held;
        crate::cache::submit_rcu_sheaves(deferrer, reservation, rcu);
        again
    }

    unsafe fn free_now(&self, object: NonNull<u8>) {
        if S::PER_CPU {
            // SAFETY: a deferred object of this cache whose grace period has passed.
            unsafe { self.free(object) };
        } else {
            // The epoch collector runs callbacks on whichever thread pins next, often one
            // that never uses this cache: a per-thread slot there would keep the object
            // until that thread exits, out of reach of `shrink`. Straight to the slabs.
            self.counters.add_shared(Stat::FreeSlowpath, 1);
            // SAFETY: as above.
            unsafe { self.pool.free(object) };
        }
    }
}
