//! Deferred frees (`kfree_rcu`): the slot's `rcu_free` sheaf, grace periods, recycling.
//!
//! `free_deferred` pushes on the slot's `rcu_free` sheaf. Starting a new `rcu_free` sheaf
//! arms the cache for the rcu module's hand-over thread, which visits the slots once a tick
//! until it finds nothing left (`DeferTarget::hand_over`), so a sheaf that its slot stops
//! filling waits at most a tick before its grace period begins.
//!
//! Per-CPU with restartable sequences, a slot's full sheaves never leave it before their
//! grace period has passed (the stamped chain, `slot::chain`): the deferring thread changes
//! the chain only by sequences (`slot::rseq_ops`), which commit only while the slot's
//! `rcu_lock` is free, and the sheaves it seals are stamped and, once their stamp has
//! expired, cut off and recycled by whoever holds the slot's `detach` lock: the deferring
//! thread itself right after it started a sheaf (a try, never a wait), the hand-over thread,
//! `shrink`, or a barrier. So a barrier finds every deferred free in a slot, on its sealed
//! list, or in the hands of a `detach` holder that is completing it, and waits for no thread
//! preempted anywhere else. Starting a sheaf needs an empty one, which may call out (barn,
//! allocation): it is got under the main lock first, released before the sequence. Where no
//! sequence serves the thread (the compare-exchange lock, or no rseq area of its own), the
//! object is deferred on its own instead, through the stamped queues.
//!
//! Per-thread, full sheaves wait on the slot (chained behind `rcu_free`) until there are
//! `RCU_GROUP` of them, which are handed to one grace period together under a reservation
//! (`object_alloc::rcu::Reservation`), and afterwards each is recycled into the barn as a full
//! sheaf (or flushed).

use std::mem;
use std::ptr::NonNull;
use std::time::Duration;

use object_alloc::rcu::{DeferTarget, Deferrer};

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{
    Detached, FastSlot, Moved, RCU_GROUP, RcuSheaves, RcuStep, SlotGuard, SlotStrategy,
};
use crate::stats::{Counters, Stat, Tally};

/// What a `free_deferred` that missed the push sequence leaves to its caller.
#[must_use]
pub(crate) struct Pushed<R> {
    /// Per-thread: a group of full sheaves, with the reservation taken before they left the
    /// slot, to hand to one grace period.
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
        let _ = reserve;
        if self.slots.uses_sequences() {
            return self.push_deferred_rseq(object, arm);
        }
        self.push_deferred_alone(object, None)
    }

    /// Per-CPU with restartable sequences: every change of the chain is a sequence that
    /// commits with one store and only while the slot's `rcu_lock` is free, so this thread
    /// never holds that lock, and a remote party that takes it (aborting the sequence in
    /// flight) never waits for this thread. Each round: the push sequence again; else start
    /// a new sheaf with the object in it (an empty one got beforehand under the slot's main
    /// lock, released again before the sequence), which seals the full one, and then try the
    /// slot's `detach` lock to stamp what is sealed and complete what has expired.
    #[cold]
    #[inline(never)]
    fn push_deferred_rseq<R>(&self, mut object: NonNull<u8>, arm: impl FnOnce()) -> Pushed<R> {
        /// Where the rounds ended.
        enum End {
            /// The object is in the chain.
            Placed,
            /// The object is in a new sheaf, now first in CPU `.0`'s chain.
            Started(usize),
            /// No sequence serves this thread: the object on its own.
            NoSequence,
            /// The sequences gave up: the object on its own.
            Busy,
        }
        let shared = Tally::shared(&self.counters);
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
                let (step, cpu) = match empty.as_mut() {
                    Some(sheaf) => {
                        // Counted as the sequences' pushes are, when the sheaf is sealed.
                        sheaf.push_counted(object).expect("an empty sheaf has room");
                        let (step, cpu) = self.slots.start_rcu_fast(Some(sheaf));
                        if step != RcuStep::Done {
                            object = sheaf.pop().expect("pushed above");
                            sheaf.rebase();
                        }
                        (step, cpu)
                    }
                    None => self.slots.start_rcu_fast(None),
                };
                match step {
                    RcuStep::Done => {
                        // The slot owns the sheaf now.
                        let _ = empty.take().expect("started with a sheaf").into_raw();
                        break 'rounds End::Started(cpu);
                    }
                    RcuStep::HasRoom | RcuStep::Aborted => {}
                    RcuStep::NeedSheaf => match self.rcu_sheaf() {
                        Some(sheaf) => empty = Some(sheaf),
                        None => break,
                    },
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
            End::Placed => Pushed {
                group: None,
                left: None,
            },
            End::Started(cpu) => {
                // The sheaf is in the slot (the commit, and the slot's pending mark after
                // it); the fence orders that before the arming's load of the armed flag,
                // against the hand-over thread's disarm and its look at the marks
                // (`CacheCore::visit_chains` fences too): either it finds the sheaf, or the
                // arming finds the cache disarmed and arms it again.
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                arm();
                #[cfg(test)]
                crate::slot::run_hook(&crate::slot::AFTER_RCU_START);
                self.collect_own(cpu);
                Pushed {
                    group: None,
                    left: None,
                }
            }
            End::NoSequence => self.push_deferred_alone(object, None),
            End::Busy => self.push_deferred_busy(object, None),
        }
    }

    /// Per-CPU, right after this thread's sequence started a sheaf on CPU `cpu`'s slot (which
    /// sealed the full one before it): one try of the slot's `detach` lock, and if it is
    /// free, the sealed sheaves are stamped, a grace period is asked for, and those whose
    /// stamp has expired are recycled, on the CPU that freed them.
    fn collect_own(&self, cpu: usize) {
        let Some(mut held) = self.slots.try_detach(cpu) else {
            return;
        };
        let moved = self.slots.absorb(&mut held);
        self.count_moved(moved);
        let cut = self.slots.cut_expired(&mut held);
        self.complete_cut(&held, cut);
        drop(held);
        if moved.sheaves > 0 {
            object_alloc::rcu::request();
        }
        self.pool.release_queued();
    }

    /// Counts what an absorb or a seal moved onto a sealed list.
    fn count_moved(&self, moved: Moved) {
        if moved == Moved::default() {
            return;
        }
        let shared = Tally::shared(&self.counters);
        shared.add(Stat::DeferredObjects, moved.deferred);
        shared.add(Stat::FreeRcuSheaf, moved.deferred);
        shared.add(Stat::RcuSheafSubmitted, moved.sheaves);
    }

    /// With the slot's `detach` held (`_held`): recycles sheaves cut off its sealed list,
    /// whose grace period has passed. Their objects are complete once this returns, before
    /// the lock is released, so a barrier that takes it next finds them done. The slabs their
    /// flush empties are queued, never given to the page source here (a page source may call
    /// a barrier, which would wait for this lock): the caller releases them afterwards.
    fn complete_cut(&self, held: &Detached<'_>, cut: Vec<OwnedSheaf>) {
        if cut.is_empty() {
            return;
        }
        let node = held.node();
        // In transit from the cut until the objects are in the barn or the slabs: an
        // accounting check made meanwhile reads again.
        let _transit = self.transit.begin();
        for sheaf in cut {
            self.recycle_rcu_sheaf_on(sheaf, node, true);
        }
    }

    /// Per-CPU: visits every CPU slot whose chain may hold deferred-free sheaves, under its
    /// `detach` lock (waited for with `wait`, else tried once): completes what has expired,
    /// then seals the whole chain (with `seal`, see `slot::chain`) or only moves what is
    /// already sealed, stamping it. Returns whether a chain still holds sheaves (or a slot
    /// was skipped) and whether anything was stamped.
    pub(crate) fn visit_chains(&self, wait: bool, seal: bool) -> (bool, bool) {
        // Orders the looks at the marks after the caller's earlier stores (the hand-over
        // thread's disarm), against a deferred free that publishes a new sheaf and then
        // checks that the cache is armed (`push_deferred_rseq`): one of the two sees the other.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let (mut left, mut stamped) = (false, false);
        for cpu in 0..self.slots.chain_count() {
            if !self.slots.chain_pending(cpu) {
                continue;
            }
            let held = if wait {
                Some(self.slots.detach_waiting(cpu))
            } else {
                self.slots.try_detach(cpu)
            };
            let Some(mut held) = held else {
                left = true;
                continue;
            };
            let cut = self.slots.cut_expired(&mut held);
            self.complete_cut(&held, cut);
            let moved = if seal {
                self.slots.seal(&mut held)
            } else {
                self.slots.absorb(&mut held)
            };
            self.count_moved(moved);
            stamped |= moved.sheaves > 0;
            left |= !self.slots.chain_is_empty(&held);
            drop(held);
            self.pool.release_queued();
        }
        (left, stamped)
    }

    /// Per-CPU: a barrier's part for the chains. Seals and stamps every chain, waits for a
    /// grace period that covers the stamps (`deferrer_barrier`, which also waits for the
    /// objects deferred on their own), then cuts and completes every expired sheaf: every
    /// deferred free that finished before the call is complete when it returns. It waits
    /// for `detach` holders, and for nothing else.
    pub(crate) fn barrier_chains(&self, deferrer_barrier: impl FnOnce()) {
        let (left, _) = self.visit_chains(true, true);
        deferrer_barrier();
        if left {
            // The deferrer's barrier returns at once when none of its callbacks is pending;
            // the process-wide one always moves the clock past the stamps just written.
            object_alloc::rcu::barrier();
            let _ = self.visit_chains(true, false);
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
    pub(crate) fn recycle_rcu_sheaf(&self, sheaf: OwnedSheaf) {
        self.recycle_rcu_sheaf_on(sheaf, self.slots.current_node(), false);
    }

    /// [`CacheCore::recycle_rcu_sheaf`] into `node`'s barn; with `queued`, the slabs a flush
    /// empties are queued for the caller to release (see [`CacheCore::flush_held`]).
    fn recycle_rcu_sheaf_on(&self, mut sheaf: OwnedSheaf, node: usize, queued: bool) {
        let tally = Tally::shared(&self.counters);
        tally.add(Stat::RcuObjectsCompleted, sheaf.size() as u64);
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
        if sheaf.is_empty() {
            // A chain's first sheaf, sealed from afar before anything was pushed on it.
            return self.stash_empty(sheaf, node, tally);
        }
        self.flush_rcu_sheaf(sheaf, node, queued, tally);
    }

    /// A recycled `rcu_free` sheaf the barn did not keep: its objects to the slabs (the slabs
    /// emptied queued with `queued`), the sheaf to the empty list (or freed).
    fn flush_rcu_sheaf(&self, mut sheaf: OwnedSheaf, node: usize, queued: bool, tally: Tally<'_>) {
        tally.add(Stat::RcuSheafFlushed, 1);
        if queued {
            self.flush_held(&mut sheaf, tally);
        } else {
            self.flush(&mut sheaf, tally);
        }
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
                self.flush_rcu_sheaf(sheaf, node, false, tally);
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
            // SAFETY: forwarded; the hand-over thread no longer visits the chains (the
            // caller's obligation), and deferred callbacks never take `detach`.
            taken.extend(unsafe { self.slots.take_all_chains() });
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
        if S::PER_CPU {
            // Aged first, as below.
            let held = self.age_held();
            let (left, stamped) = self.visit_chains(false, true);
            if stamped {
                object_alloc::rcu::request();
            }
            return left || held;
        }
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
