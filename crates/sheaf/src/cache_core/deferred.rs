//! Deferred frees (`kfree_rcu`): the slot's `rcu_free` sheaf, grace periods, recycling.
//!
//! `free_deferred` pushes on the slot's `rcu_free` sheaf: a CPU's, or the calling thread's.
//! A slot's deferred-free sheaves never leave it before their grace period has passed (the
//! stamped chain, `slot::chain`): the slot's own threads change its chain only by restartable
//! sequences (`slot::rseq_ops`), which commit only while the slot's `rcu_lock` is free, and
//! the sheaves they seal are stamped and, once their stamp has expired, cut off and recycled
//! by whoever holds the slot's `detach` lock: the deferring thread itself right after it
//! started a sheaf (a try, never a wait), the hand-over thread, `shrink`, a barrier. So a
//! barrier finds every deferred free in a slot, on a sealed list, or in the hands of a
//! `detach` holder that is completing it, and waits for no thread preempted anywhere else.
//!
//! Starting a sheaf needs an empty one, which may call out (barn, allocation): it is got
//! under the slot first (per-CPU, its main lock, released before the sequence). Starting one
//! arms the cache for the rcu module's hand-over thread, which visits the chains once a tick
//! until it finds nothing left (`DeferTarget::hand_over`), so a sheaf that its slot stops
//! filling is sealed within a tick. Where no sequence serves the thread (the
//! compare-exchange lock: valgrind, kernels without rseq, `SHEAF_RSEQ=0`; or no rseq area of
//! its own), the object is deferred on its own instead, through the stamped queues.

use std::ptr::NonNull;

use object_alloc::rcu::{DeferTarget, Deferrer};

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{Detached, FastSlot, Moved, RcuStep, Slot, SlotGuard, SlotStrategy};
use crate::stats::{Stat, Tally};

/// How many rounds the sequence path of a deferred free makes before it defers the object on
/// its own. Each round either commits or finds the chain changed by another thread on the
/// CPU or a remote party, or is aborted (a preemption, a migration, a signal): more than a
/// few in a row is a storm, which is not waited out.
const RCU_ROUNDS: usize = 64;

/// Where the rounds of a deferred free's slow path ended.
enum End<'a> {
    /// The object is in the chain.
    Placed,
    /// The object is in a new sheaf, now first in this slot's chain.
    Started(&'a Slot),
    /// No sequence serves this thread: the object on its own.
    NoSequence,
    /// The sequences gave up: the object on its own.
    Busy,
}

impl<S: SlotStrategy> CacheCore<S> {
    /// Puts `object` in the slot's `rcu_free` sheaf. Gives the object back when no sheaf can
    /// be used (to be deferred on its own).
    ///
    /// `arm` runs when a new `rcu_free` sheaf gets its first object, after the sheaf is in the
    /// slot: from then until the chain is sealed and completed, the cache must be armed for
    /// the hand-over thread (see [`CacheCore::visit_chains`]), so that no sheaf waits in a
    /// slot longer than a tick before its grace period begins.
    ///
    /// The common case, a slot whose `rcu_free` sheaf has room for this object, is inlined
    /// and calls out to nothing.
    #[inline]
    pub(crate) fn push_deferred(
        &self,
        object: NonNull<u8>,
        arm: impl FnOnce(),
    ) -> Option<NonNull<u8>> {
        if S::PER_CPU {
            // SAFETY: the caller's live object, handed over for a deferred free.
            let object = match unsafe { self.slots.push_rcu_fast(object) } {
                Ok(()) => return None,
                Err(object) => object,
            };
            if !self.slots.uses_sequences() {
                return self.push_deferred_alone(object);
            }
            return self.push_deferred_seq(None, object, arm);
        }
        if !self.slots.uses_thread_sequences() {
            return self.push_deferred_alone(object);
        }
        let Some(slot) = self.slots.acquire_fast() else {
            return self.push_deferred_busy(object);
        };
        // SAFETY: the calling thread's own slot; the object is handed over.
        let object = match unsafe { self.slots.push_rcu_thread(slot.slot(), object) } {
            Ok(()) => return None,
            Err(object) => object,
        };
        self.push_deferred_seq(Some(slot), object, arm)
    }

    /// Where restartable sequences serve: every change of the chain is a sequence that
    /// commits with one store and only while the slot's `rcu_lock` is free, so this thread
    /// never holds that lock, and a remote party that takes it (aborting the sequence in
    /// flight) never waits for this thread. Each round: the push sequence again; else start a
    /// new sheaf with the object in it (an empty one got beforehand, under the slot), which
    /// seals the full one, and then try the slot's `detach` lock to stamp what is sealed and
    /// complete what has expired. `own` is the calling thread's slot (per-thread), `None`
    /// per-CPU.
    #[cold]
    #[inline(never)]
    fn push_deferred_seq(
        &self,
        own: Option<FastSlot<'_, S>>,
        mut object: NonNull<u8>,
        arm: impl FnOnce(),
    ) -> Option<NonNull<u8>> {
        let shared = Tally::shared(&self.counters);
        // Per-thread, the slot is held throughout: its spare may start the chain.
        let mut thread = own.map(|own| (own.slot(), own.hold()));
        let mut empty: Option<OwnedSheaf> = None;
        let end = 'rounds: {
            for round in 0..RCU_ROUNDS {
                // The push sequence missed just before the first round.
                if round > 0 {
                    // SAFETY: the caller's live object, handed over for a deferred free; a
                    // thread's own slot.
                    let pushed = unsafe {
                        match &thread {
                            Some((slot, _)) => self.slots.push_rcu_thread(slot, object),
                            None => self.slots.push_rcu_fast(object),
                        }
                    };
                    object = match pushed {
                        Ok(()) => break 'rounds End::Placed,
                        Err(object) => object,
                    };
                }
                let start = |sheaf: Option<&mut OwnedSheaf>| match &thread {
                    Some((slot, _)) => (self.slots.start_rcu_thread(slot, sheaf), Some(*slot)),
                    None => self.slots.start_rcu_fast(sheaf),
                };
                let (step, slot) = match empty.as_mut() {
                    Some(sheaf) => {
                        // Counted as the sequences' pushes are, when the sheaf is sealed.
                        sheaf.push_counted(object).expect("an empty sheaf has room");
                        let (step, slot) = start(Some(sheaf));
                        if step != RcuStep::Done {
                            object = sheaf.pop().expect("pushed above");
                            sheaf.rebase();
                        }
                        (step, slot)
                    }
                    None => start(None),
                };
                match step {
                    RcuStep::Done => {
                        // The slot owns the sheaf now.
                        let _ = empty.take().expect("started with a sheaf").into_raw();
                        break 'rounds End::Started(slot.expect("a start names its slot"));
                    }
                    RcuStep::HasRoom | RcuStep::Aborted => {}
                    RcuStep::NeedSheaf => {
                        let sheaf = match &mut thread {
                            Some((_, guard)) => Some(self.empty_rcu_sheaf(guard)),
                            None => self.rcu_sheaf(),
                        };
                        match sheaf {
                            Some(sheaf) => empty = Some(sheaf),
                            None => break,
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
            let node = match &thread {
                Some((_, guard)) => guard.node(),
                None => self.slots.current_node(),
            };
            self.stash_empty(empty, node, shared);
        }
        drop(thread);
        match end {
            End::Placed => None,
            End::Started(slot) => {
                // The sheaf is in the slot (the commit, and the slot's pending mark after
                // it); the fence orders that before the arming's load of the armed flag,
                // against the hand-over thread's disarm and its look at the marks
                // (`SlotTable::visit_chains` fences too): either it finds the sheaf, or the
                // arming finds the cache disarmed and arms it again.
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                arm();
                #[cfg(test)]
                crate::slot::run_hook(&crate::slot::AFTER_RCU_START);
                self.collect_own(slot);
                None
            }
            End::NoSequence => self.push_deferred_alone(object),
            End::Busy => self.push_deferred_busy(object),
        }
    }

    /// Right after this thread's sequence started a sheaf on `slot` (which sealed the full
    /// one before it): one try of the slot's `detach` lock, and if it is free, the sealed
    /// sheaves are stamped, a grace period is asked for, and those whose stamp has expired
    /// are recycled, on the thread (and CPU) that freed them.
    fn collect_own(&self, slot: &Slot) {
        let Some(mut held) = self.slots.try_detach(slot) else {
            return;
        };
        let moved = self.slots.absorb(&mut held);
        self.count_moved(moved);
        let cut = self.slots.cut_expired(&mut held);
        // No transit mark: this thread is inside an operation, so no accounting check runs
        // at a quiescent point meanwhile.
        self.complete_cut_in(&held, cut, None);
        drop(held);
        if moved.sheaves > 0 {
            self.request_grace_period();
        }
        self.pool.release_queued();
    }

    /// Asks for a grace period for the sheaves just stamped, unless this cache's previous
    /// request is still pending: then they wait for the next one, asked for by the first
    /// deferring thread to seal a sheaf after it has passed (or by the hand-over thread's
    /// tick). A request costs a deferred closure in the epoch collector; one per sealed sheaf
    /// was most of the cost of the stamped chain on `deferred-churn`.
    fn request_grace_period(&self) {
        use std::sync::atomic::Ordering;
        if !object_alloc::rcu::expired(self.requested.load(Ordering::Relaxed)) {
            return;
        }
        self.requested
            .store(object_alloc::rcu::stamp(), Ordering::Relaxed);
        object_alloc::rcu::request();
    }

    /// Counts what an absorb or a seal moved onto a sealed list.
    pub(crate) fn count_moved(&self, moved: Moved) {
        if moved == Moved::default() {
            return;
        }
        let shared = Tally::shared(&self.counters);
        shared.add(Stat::DeferredObjects, moved.deferred);
        shared.add(Stat::FreeRcuSheaf, moved.deferred);
        shared.add(Stat::RcuSheafSubmitted, moved.sheaves);
    }

    /// With a chain's `detach` held (`held`): recycles sheaves cut off its sealed list, whose
    /// grace period has passed. Their objects are complete once this returns, before the lock
    /// is released, so a barrier that takes it next finds them done. The slabs their flush
    /// empties are queued, never given to the page source here (a page source may call a
    /// barrier, which would wait for this lock): the caller releases them afterwards.
    fn complete_cut(&self, held: &Detached<'_>, cut: Vec<OwnedSheaf>) {
        if cut.is_empty() {
            return;
        }
        // In transit from the cut until the objects are in the barn or the slabs: an
        // accounting check made meanwhile reads again.
        let transit = self.transit.begin();
        self.complete_cut_in(held, cut, Some(transit));
    }

    /// [`CacheCore::complete_cut`], with the transit mark (if any) held until the sheaves
    /// are recycled.
    fn complete_cut_in(
        &self,
        held: &Detached<'_>,
        cut: Vec<OwnedSheaf>,
        transit: Option<super::transit::Transit<'_>>,
    ) {
        if cut.is_empty() {
            return;
        }
        let node = held.node().unwrap_or_else(|| self.slots.current_node());
        for sheaf in cut {
            self.recycle_rcu_sheaf_on(sheaf, node, true);
        }
        drop(transit);
    }

    /// Visits every chain that may hold deferred-free sheaves, under its `detach` lock
    /// (waited for with `wait`, else tried once): completes what has expired, then seals the
    /// whole chain (with `seal`, see `slot::chain`) or only moves what is already sealed,
    /// stamping it. Returns whether a chain still holds sheaves (or one was skipped) and
    /// whether anything was stamped.
    pub(crate) fn visit_chains(&self, wait: bool, seal: bool) -> (bool, bool) {
        let (mut left, mut stamped) = (false, false);
        let skipped = self.slots.visit_chains(wait, |held| {
            let cut = self.slots.cut_expired(held);
            self.complete_cut(held, cut);
            let moved = if seal {
                self.slots.seal(held)
            } else {
                self.slots.absorb(held)
            };
            self.count_moved(moved);
            stamped |= moved.sheaves > 0;
            left |= !self.slots.chain_is_empty(held);
        });
        self.pool.release_queued();
        (left || skipped, stamped)
    }

    /// A barrier's part for the chains. Seals and stamps every chain, waits for a grace
    /// period that covers the stamps (`deferrer_barrier`, which also waits for the objects
    /// deferred on their own, then the process-wide barrier if sealed sheaves are left), then
    /// cuts and completes every expired sheaf: every deferred free that finished before the
    /// call is complete when it returns. It waits for `detach` holders, and for nothing else.
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

    /// Where no restartable sequence serves the calling thread (the compare-exchange lock:
    /// valgrind, kernels without rseq, `SHEAF_RSEQ=0`; or a thread without an rseq area of
    /// its own, or on a CPU beyond the table): the object is deferred on its own, through the
    /// stamped queues, which take no lock.
    #[cold]
    #[inline(never)]
    fn push_deferred_alone(&self, object: NonNull<u8>) -> Option<NonNull<u8>> {
        let tally = Tally::shared(&self.counters);
        tally.add(Stat::DeferredObjects, 1);
        tally.add(Stat::FreeRcuSheafFail, 1);
        Some(object)
    }

    /// No sheaf could take `object`: counted, and given back to be deferred on its own.
    #[cold]
    #[inline(never)]
    fn push_deferred_busy(&self, object: NonNull<u8>) -> Option<NonNull<u8>> {
        self.counters.add_shared(Stat::CpuSlotBusy, 1);
        self.push_deferred_alone(object)
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

    /// Every deferred-free sheaf of every slot, chain and sealed list, and the per-thread
    /// orphans' (the cache is being dropped): empty ones stashed, the rest counted as
    /// submitted and returned.
    ///
    /// # Safety
    ///
    /// - No thread is inside an operation on this cache, nor will start one, and the
    ///   hand-over thread no longer calls in.
    pub(crate) unsafe fn take_rcu_sheaves_exclusive(&self) -> Vec<OwnedSheaf> {
        // SAFETY: forwarded; deferred callbacks never take `detach`.
        let taken = unsafe { self.slots.take_all_chains() };
        let tally = Tally::shared(&self.counters);
        let node = self.slots.current_node();
        let mut submit = Vec::with_capacity(taken.len());
        for mut sheaf in taken {
            let deferred = sheaf.take_fast_counts().1;
            tally.add(Stat::DeferredObjects, deferred);
            tally.add(Stat::FreeRcuSheaf, deferred);
            sheaf.rebase();
            if sheaf.is_empty() {
                self.stash_empty(sheaf, node, tally);
            } else {
                tally.add(Stat::RcuSheafSubmitted, 1);
                submit.push(sheaf);
            }
        }
        submit
    }
}

impl<S: SlotStrategy> DeferTarget for CacheCore<S> {
    fn hand_over(&self, _deferrer: &Deferrer<Self>) -> bool {
        // Aged first, then exited threads' slots adopted (their `main` and `spare` flushed,
        // their chains moved to the orphan chain), then one try per chain: the hand-over
        // thread comes back every tick while anything is left.
        let held = self.age_held();
        if !S::PER_CPU {
            self.adopt_orphans(false);
        }
        let (left, stamped) = self.visit_chains(false, true);
        if stamped {
            object_alloc::rcu::request();
        }
        left || held || self.slots.has_orphans()
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
