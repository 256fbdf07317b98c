//! Deferred frees (`kfree_rcu`): the slot's `rcu_free` sheaf, grace periods, recycling.
//!
//! `free_deferred` pushes on the slot's `rcu_free` sheaf; full ones wait on the slot (chained
//! behind it) until there are `RCU_GROUP` of them, which are handed to one grace period
//! together, and afterwards each is recycled into the barn as a full sheaf (or flushed).
//! Starting a new `rcu_free` sheaf arms the cache for the rcu module's hand-over thread, which takes every
//! slot's `rcu_free` sheaves once a tick until it finds none (`DeferTarget::hand_over`).
//!
//! Per-CPU, a slot's deferred-free sheaves have a lock of their own (`rcu_lock`), held only
//! for a few instructions that call out to nothing: a thread that holds the slot's main lock
//! (in any slow path, descheduled or blocked there) keeps no completed deferred free from a
//! barrier, which takes `rcu_lock` alone. With restartable sequences the deferring thread
//! never takes `rcu_lock`: it changes the chain by sequences that commit only while the lock
//! is free (`slot::rseq_ops`), so a thread preempted in a deferred free keeps nothing from a
//! barrier either (short of a group it took and has not handed over yet, under a
//! reservation). Starting a sheaf needs an empty one, which may call out (barn, allocation):
//! it is got under the main lock first, released before the sequence. Where no sequence
//! serves the thread (the compare-exchange lock, or no rseq area of its own), the object is
//! deferred on its own instead: pushing it on a sheaf would take `rcu_lock`, and a barrier
//! would wait for a thread preempted under it.

use std::mem;
use std::ptr::NonNull;
use std::time::Duration;

use object_alloc::rcu::{DeferTarget, Deferrer};

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{FastSlot, RCU_GROUP, RcuSheaves, RcuStep, SlotGuard, SlotStrategy};
use crate::stats::{Counters, Stat, Tally};

/// What a `free_deferred` that missed the push sequence leaves to its caller.
#[must_use]
pub(crate) struct Pushed<R> {
    /// A group of full sheaves, with the reservation taken before they left the slot, to
    /// hand to one grace period.
    pub(crate) group: Option<(R, Vec<OwnedSheaf>)>,
    /// The object, when no sheaf could take it: to be deferred on its own.
    pub(crate) left: Option<NonNull<u8>>,
}

/// How many rounds the per-CPU sequence path of a deferred free makes before it defers the
/// object on its own. Each round either commits or finds the chain changed by another thread
/// on the CPU or a taker, or is aborted (a preemption, a migration, a signal): more than a
/// few in a row is a storm, which is not waited out.
const RCU_ROUNDS: usize = 64;

impl<S: SlotStrategy> CacheCore<S> {
    /// Puts `object` in the slot's `rcu_free` sheaf; the chain behind it holds the full ones,
    /// and when [`RCU_GROUP`] full ones are chained they are taken (to be handed to one grace
    /// period by the caller, with a reservation from `reserve` taken first). Gives the object
    /// back when no sheaf can be used (to be deferred on its own).
    ///
    /// `arm` runs when a new `rcu_free` sheaf gets its first object, after the sheaf is in the
    /// slot: from then until the sheaf leaves the slot, the cache must be armed for the
    /// hand-over thread (see [`CacheCore::take_rcu_sheaves`]), so that no sheaf waits there
    /// longer than a tick.
    ///
    /// The common case, a slot whose `rcu_free` sheaf has room for this object, is inlined,
    /// calls out to nothing and returns `None`; otherwise what the slow path leaves to the
    /// caller.
    #[inline]
    pub(crate) fn push_deferred<R>(
        &self,
        object: NonNull<u8>,
        reserve: impl Fn() -> R,
        arm: impl FnOnce(),
    ) -> Option<Pushed<R>> {
        // SAFETY: the caller's live object, handed over for a deferred free.
        let object = match unsafe { self.slots.push_rcu_fast(object) } {
            Ok(()) => return None,
            Err(object) => object,
        };
        if S::PER_CPU {
            return Some(self.push_deferred_cpu(object, reserve, arm));
        }
        let Some(mut slot) = self.slots.acquire_fast() else {
            return Some(self.push_deferred_busy(object, None));
        };
        let counters = slot.counters();
        if let Some(rcu) = &mut slot.rcu().rcu_free
            && rcu.room() > 1
        {
            rcu.push(object).expect("the sheaf has room");
            counters.add_owned(Stat::DeferredObjects, 1);
            counters.add_owned(Stat::FreeRcuSheaf, 1);
            return None;
        }
        Some(self.push_deferred_slow(slot, object, reserve, arm))
    }

    /// Per-CPU, where the push sequence missed (or sequences are not in use).
    #[inline]
    fn push_deferred_cpu<R>(
        &self,
        object: NonNull<u8>,
        reserve: impl Fn() -> R,
        arm: impl FnOnce(),
    ) -> Pushed<R> {
        if self.slots.uses_sequences() {
            return self.push_deferred_rseq(object, reserve, arm);
        }
        self.push_deferred_alone(object, None)
    }

    /// Per-CPU with restartable sequences: every change of the chain is a sequence that
    /// commits with one store and only while the slot's `rcu_lock` is free, so this thread
    /// never holds that lock, and a barrier or the hand-over thread that takes it (aborting
    /// the sequence in flight) never waits for this thread. Each round: the push sequence
    /// again; else take a whole group of full sheaves (reserved first), or start a new
    /// sheaf with the object in it (an empty one got beforehand under the slot's main lock,
    /// released again before the sequence).
    #[cold]
    #[inline(never)]
    fn push_deferred_rseq<R>(
        &self,
        mut object: NonNull<u8>,
        reserve: impl Fn() -> R,
        arm: impl FnOnce(),
    ) -> Pushed<R> {
        /// Where the rounds ended.
        enum End {
            /// The object is in the chain.
            Placed,
            /// The object is in a new sheaf, now first in the chain.
            Started,
            /// No sequence serves this thread: the object on its own.
            NoSequence,
            /// The sequences gave up: the object on its own.
            Busy,
        }
        let shared = Tally::shared(&self.counters);
        let mut group = None;
        let mut empty: Option<OwnedSheaf> = None;
        let end = 'rounds: {
            for round in 0..RCU_ROUNDS {
                // The push sequence missed just before the first round.
                if round > 0 {
                    // SAFETY: the caller's live object, handed over for a deferred free.
                    object = match unsafe { self.slots.push_rcu_fast(object) } {
                        Ok(()) => break 'rounds End::Placed,
                        Err(object) => object,
                    };
                }
                let step = match empty.as_mut() {
                    Some(sheaf) => {
                        // Counted as the sequences' pushes are, by the next holder of `rcu_lock`.
                        sheaf.push_counted(object).expect("an empty sheaf has room");
                        let step = self.slots.start_rcu_fast(Some(sheaf));
                        if step != RcuStep::Done {
                            object = sheaf.pop().expect("pushed above");
                            sheaf.rebase();
                        }
                        step
                    }
                    None => self.slots.start_rcu_fast(None),
                };
                match step {
                    RcuStep::Done => {
                        // The slot owns the sheaf now.
                        let _ = empty.take().expect("started with a sheaf").into_raw();
                        break 'rounds End::Started;
                    }
                    RcuStep::HasRoom | RcuStep::Aborted => {}
                    RcuStep::NeedSheaf => match self.rcu_sheaf() {
                        Some(sheaf) => empty = Some(sheaf),
                        None => break,
                    },
                    // One group per call: a second one (other threads on this CPU filled four
                    // sheaves meanwhile) is left to the next deferred free or a taker.
                    RcuStep::GroupDue if group.is_some() => break,
                    RcuStep::GroupDue => {
                        // Reserved before the group leaves the slot, where a barrier looks for it.
                        let reservation = reserve();
                        match self.slots.take_rcu_group_fast() {
                            (RcuStep::Done, Some(mut taken)) => {
                                let mut deferred = 0;
                                let sheaves: Vec<OwnedSheaf> = taken
                                    .take_rcu()
                                    .map(|mut sheaf| {
                                        // The sequences' pushes since the last re-base.
                                        deferred += sheaf.take_fast_counts().1;
                                        sheaf.rebase();
                                        sheaf
                                    })
                                    .collect();
                                shared.add(Stat::DeferredObjects, deferred);
                                shared.add(Stat::FreeRcuSheaf, deferred);
                                shared.add(Stat::RcuSheafSubmitted, sheaves.len() as u64);
                                group = Some((reservation, sheaves));
                            }
                            (RcuStep::Busy, _) => break,
                            _ => drop(reservation),
                        }
                    }
                    RcuStep::Busy => break,
                    RcuStep::NotHere => break 'rounds End::NoSequence,
                }
            }
            End::Busy
        };
        // An empty sheaf got for a start that did not happen.
        if let Some(empty) = empty {
            self.stash_empty(empty, self.slots.current_node(), shared);
        }
        match end {
            End::Placed => Pushed { group, left: None },
            End::Started => {
                // The sheaf is in the slot (the commit); the fence orders that before the
                // arming's load of the armed flag, against the hand-over thread's disarm and
                // its look (`SlotTable::for_each_cpu_rcu` fences too): either it finds the
                // sheaf, or the arming finds the cache disarmed and arms it again.
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                arm();
                Pushed { group, left: None }
            }
            End::NoSequence => self.push_deferred_alone(object, group),
            End::Busy => self.push_deferred_busy(object, group),
        }
    }

    /// Per-CPU: an empty sheaf to start a chain with, got under the slot's main lock (see
    /// [`Self::empty_rcu_sheaf`]); `None` when the slot is held.
    fn rcu_sheaf(&self) -> Option<OwnedSheaf> {
        let mut slot = self.slots.acquire()?;
        Some(self.empty_rcu_sheaf(&mut slot))
    }

    /// An empty, unlinked sheaf to start an `rcu_free` chain with, `slot` held: its spare if
    /// empty, as the kernel's kfree_rcu does (no barn trip), else one from the barn or new
    /// (which may call out).
    fn empty_rcu_sheaf(&self, slot: &mut SlotGuard<'_, S>) -> OwnedSheaf {
        let tally = Tally::owned(slot.counters());
        let node = slot.node();
        let mut empty = match slot.sheaves().spare.take_if(|spare| spare.is_empty()) {
            Some(spare) => spare,
            None => self.empty_sheaf(node, tally),
        };
        empty.set_next(None);
        empty
    }

    /// Per-CPU where no restartable sequence serves the calling thread (the compare-exchange
    /// lock: valgrind, kernels without rseq, `SHEAF_RSEQ=0`; or a thread without an rseq area
    /// of its own, or on a CPU beyond the table): the object is deferred on its own, through
    /// the stamped queues, which take no lock. Batching it would take the slot's `rcu_lock`
    /// for the push, and a barrier would wait for a thread preempted there.
    #[cold]
    #[inline(never)]
    fn push_deferred_alone<R>(
        &self,
        object: NonNull<u8>,
        group: Option<(R, Vec<OwnedSheaf>)>,
    ) -> Pushed<R> {
        let tally = Tally::shared(&self.counters);
        tally.add(Stat::DeferredObjects, 1);
        tally.add(Stat::FreeRcuSheafFail, 1);
        Pushed {
            group,
            left: Some(object),
        }
    }

    /// By the holder of the slot's deferred-free sheaves: pushes `object` on the `rcu_free`
    /// sheaf if it has room, and takes a whole group of full sheaves if one is chained (with
    /// a reservation from `reserve` taken first; none without `reserve`). Returns the group,
    /// and the object if a new sheaf must be started for it (`left`). Calls out to nothing but
    /// `reserve` (which takes no lock). Once per sheaf: out of line, so that the callers'
    /// common path keeps its registers.
    #[cold]
    #[inline(never)]
    fn push_rcu_locked<R>(
        sheaves: &mut RcuSheaves,
        counters: &Counters,
        object: NonNull<u8>,
        reserve: Option<&dyn Fn() -> R>,
    ) -> Pushed<R> {
        let tally = Tally::owned(counters);
        let left = match sheaves.push(object) {
            Ok(()) => {
                tally.add(Stat::DeferredObjects, 1);
                tally.add(Stat::FreeRcuSheaf, 1);
                None
            }
            Err(object) => Some(object),
        };
        let group = match reserve {
            Some(reserve) if sheaves.group_due() => {
                tally.add(Stat::RcuSheafSubmitted, RCU_GROUP as u64);
                // Reserved before the group leaves the slot, where a barrier looks for it.
                let reservation = reserve();
                Some((reservation, sheaves.take_rcu().collect()))
            }
            _ => None,
        };
        Pushed { group, left }
    }

    /// No sheaf could take `object`: counted, and given back to be deferred on its own
    /// (with `group`, if this deferred free took one).
    #[cold]
    #[inline(never)]
    fn push_deferred_busy<R>(
        &self,
        object: NonNull<u8>,
        group: Option<(R, Vec<OwnedSheaf>)>,
    ) -> Pushed<R> {
        self.counters.add_shared(Stat::CpuSlotBusy, 1);
        self.push_deferred_alone(object, group)
    }

    /// Per-thread: the slot has no `rcu_free` sheaf with room for two, or `object` fills it.
    #[cold]
    #[inline(never)]
    fn push_deferred_slow<R>(
        &self,
        slot: FastSlot<'_, S>,
        object: NonNull<u8>,
        reserve: impl Fn() -> R,
        arm: impl FnOnce(),
    ) -> Pushed<R> {
        // Held from here on: getting an empty sheaf may call out (barn, allocation).
        let mut slot = slot.hold();
        let counters = slot.counters();
        let Pushed { group, left } =
            Self::push_rcu_locked(slot.rcu(), counters, object, Some(&reserve));
        let Some(object) = left else {
            return Pushed { group, left: None };
        };
        let tally = Tally::owned(counters);
        let node = slot.node();
        slot.note_rcu_started();
        // An empty spare first, as the kernel's kfree_rcu does: no barn trip.
        let mut empty = match slot.sheaves().spare.take_if(|spare| spare.is_empty()) {
            Some(spare) => spare,
            None => self.empty_sheaf(node, tally),
        };
        empty.set_next(None);
        empty.push(object).expect("an empty sheaf has room");
        slot.rcu().start(empty);
        counters.add_owned(Stat::DeferredObjects, 1);
        counters.add_owned(Stat::FreeRcuSheaf, 1);
        // With the slot held: a hand-over that disarmed the cache before this either takes
        // the sheaf after us, or we see it disarmed and arm it again.
        arm();
        Pushed { group, left: None }
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
