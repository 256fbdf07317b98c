//! Stamped chains: where a slot's deferred-free sheaves wait for their grace period, without
//! ever leaving the slot before it has passed.
//!
//! A slot's deferred-free sheaves form two lists:
//!
//! - the *chain* in the slot: the first sheaf (`rcu_free`), which deferred frees push onto,
//!   and the full sheaves linked behind it. The slot's own threads (a CPU's threads, or the
//!   slot's thread) change it only by restartable sequences (`rseq_ops`): the push, and
//!   putting a new first sheaf in front of a full one, which *seals* the full one. The
//!   sequences commit only while the slot's `rcu_lock` is free, and read nothing behind the
//!   first sheaf;
//! - the *sealed list* ([`Chain::sealed`]), oldest first, which only the holder of the
//!   slot's `detach` lock reads or changes. Every sheaf in it carries a *stamp*
//!   (`object_alloc::rcu::stamp`), read after the sheaf was sealed, and the stamps never
//!   decrease from the front to the back.
//!
//! A holder of `detach` (a [`Detached`] guard):
//!
//! - *absorbs*: takes the sheaves linked behind the first one (sealed, so final) onto the
//!   back of the sealed list, each stamped with the clock read after the slot's first sheaf
//!   was read;
//! - *seals* the first sheaf itself (remote parties: a barrier, the hand-over thread,
//!   `shrink`, a statistics reader): takes `rcu_lock` from afar (its membarrier aborts a
//!   sequence in flight: on the slot's CPU, or on every CPU for a thread's slot) and moves
//!   the whole chain onto the sealed list, leaving the slot without a first sheaf;
//! - *cuts* the sealed list behind the last sheaf whose stamp has expired
//!   (`object_alloc::rcu::expired`): every sheaf in front of it was sealed before it, so its
//!   objects were unpublished before that stamp was read, and are covered too. The caller
//!   completes the cut sheaves (recycles them) before it lets `detach` go, so that a barrier
//!   that takes the lock next finds them done.
//!
//! Each slot has a mark, `rcu_pending` (a first sheaf is in place) and `waiting` (sealed
//! sheaves wait), by which visitors skip empty chains; `waiting` is set before a sheaf
//! leaves the slot's chain and cleared only when a `detach` holder lets go, so no visitor
//! skips a chain whose sheaves are in a holder's hands.
//!
//! So a deferred-free sheaf is always in a slot, on a sealed list, or in the hands of a
//! `detach` holder that is completing it. A barrier seals and stamps every slot, waits for a
//! grace period, and cuts every slot: it waits for `detach` holders (which hold it for a few
//! list operations, or while they complete expired sheaves, never across a call to the page
//! source: the slabs the recycling empties are queued and released after the lock) and for
//! nothing else.
//!
//! Per-thread, an exited thread's slot is adopted (its `main` and `spare` flushed, the slot
//! unregistered); its chain is first moved, under both `detach` locks, onto the cache's
//! orphan chain (a sealed list with no slot), the sealed sheaves with their own stamps.
//! Re-stamping them would be wrong: a barrier that sealed and stamped them before the
//! adoption waits for a grace period that covers its stamps, not a later one. The orphan
//! chain's stamps may so interleave, and its cut takes each expired sheaf by its own stamp. The design and its loom
//! model: `docs/decisions.md`, "The stamped chain".

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::{Slot, SlotStrategy, SlotTable};
use crate::sheaf::OwnedSheaf;

/// A slot's sealed list and the lock that guards it (or the per-thread orphans').
#[derive(Debug, Default)]
pub(crate) struct Chain {
    /// The `detach` lock: a flag taken by compare-exchange, released with a release store.
    detach: AtomicBool,
    /// Whether `sealed` holds a sheaf: written by `detach` holders, read by visitors that
    /// skip a chain with nothing to do.
    waiting: AtomicBool,
    /// Sealed sheaves, oldest first, each stamped. Guarded by `detach`.
    sealed: UnsafeCell<Sealed>,
}

/// A sealed list: sheaves linked through their headers' `next`, oldest first, with its last
/// sheaf for appending.
#[derive(Debug, Default)]
struct Sealed {
    first: Option<OwnedSheaf>,
    /// The last sheaf of the list (null when empty), owned through the links.
    last: Option<NonNull<()>>,
}

impl Sealed {
    /// Appends a list linked oldest first, whose last sheaf is `last`.
    fn append(&mut self, first: OwnedSheaf, last: NonNull<()>) {
        match self.last {
            None => self.first = Some(first),
            Some(tail) => {
                // SAFETY: the list's last sheaf, which it owns; the handle is given up again.
                let mut tail = unsafe { OwnedSheaf::from_raw(tail) };
                tail.set_next(Some(first.into_raw()));
                let _ = tail.into_raw();
            }
        }
        self.last = Some(last);
    }

    /// Takes the whole list (oldest first).
    fn take(&mut self) -> Option<OwnedSheaf> {
        self.last = None;
        self.first.take()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Takes the sheaves from the front whose stamps have expired, up to the first that has
    /// not (the stamps never decrease from the front to the back of a slot's list), as a
    /// list linked oldest first.
    fn take_expired_front(&mut self) -> Option<OwnedSheaf> {
        let first = self.first.as_ref()?;
        if !object_alloc::rcu::expired(first.stamp()) {
            return None;
        }
        let mut last = first.as_raw();
        loop {
            // SAFETY: a sheaf of the list, which owns it; the handle is given up again.
            let sheaf = unsafe { OwnedSheaf::from_raw(last) };
            let next = sheaf.next();
            let _ = sheaf.into_raw();
            let Some(next) = next else {
                // Every sheaf has expired.
                return self.take();
            };
            // SAFETY: as above.
            let candidate = unsafe { OwnedSheaf::from_raw(next) };
            let expired = object_alloc::rcu::expired(candidate.stamp());
            let _ = candidate.into_raw();
            if !expired {
                // SAFETY: as above: the last expired sheaf, unlinked from the rest here.
                let mut end = unsafe { OwnedSheaf::from_raw(last) };
                end.set_next(None);
                let _ = end.into_raw();
                let cut = self.first.take();
                // SAFETY: the first unexpired sheaf, owned through the link just cleared.
                self.first = Some(unsafe { OwnedSheaf::from_raw(next) });
                return cut;
            }
            last = next;
        }
    }
}

// SAFETY: `sealed` is only touched by the holder of `detach` (or with exclusive access to the
// whole cache); the sheaves are owned heap sheaves of free objects.
unsafe impl Sync for Chain {}
// SAFETY: as above.
unsafe impl Send for Chain {}

impl Chain {
    /// The `detach` flag, for `fork`'s prepare to take.
    #[cfg(not(loom))]
    pub(super) fn detach_flag(&self) -> &AtomicBool {
        &self.detach
    }

    /// In a child process, where a thread that is gone held `detach`: forgets the sealed list
    /// without reading it (its objects are lost) and frees the lock.
    ///
    /// # Safety
    ///
    /// - Only the calling thread exists, and it holds no `detach` lock.
    #[cfg(not(loom))]
    pub(super) unsafe fn forget(&self) {
        // SAFETY: the caller's obligation; `write` neither reads nor drops the old value.
        unsafe { self.sealed.get().write(Sealed::default()) };
        self.waiting.store(false, Ordering::Relaxed);
        self.detach.store(false, Ordering::Release);
    }
}

/// What an absorb or a seal moved onto a sealed list: for the cache's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Moved {
    /// Sheaves with objects stamped (handed to a grace period).
    pub(crate) sheaves: u64,
    /// Deferred frees the sequences pushed onto them since they were last counted.
    pub(crate) deferred: u64,
}

impl std::ops::AddAssign for Moved {
    fn add_assign(&mut self, other: Self) {
        self.sheaves += other.sheaves;
        self.deferred += other.deferred;
    }
}

/// The `detach` lock of one chain, held; released on drop.
pub(crate) struct Detached<'a> {
    /// The slot whose chain this is (`None`: the per-thread orphan chain).
    slot: Option<&'a Slot>,
    chain: &'a Chain,
    /// Per-CPU: the slot's CPU, for the remote lock's fence.
    cpu: Option<usize>,
}

impl Detached<'_> {
    /// The memory node of the slot whose lock this is (`None` for the orphan chain).
    pub(crate) fn node(&self) -> Option<usize> {
        self.slot.map(Slot::node)
    }

    /// The sealed list.
    fn sealed(&mut self) -> &mut Sealed {
        // SAFETY: the holder of `detach` owns the sealed list, and `&mut self` makes this the
        // only reference.
        unsafe { &mut *self.chain.sealed.get() }
    }
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        // Cleared only here, once the holder's work is done (the sheaves it cut are complete
        // by now): a visitor that skips a chain without the mark must not skip sheaves that
        // are on their way.
        let waiting = !self.sealed().is_empty();
        self.chain.waiting.store(waiting, Ordering::Release);
        self.chain.detach.store(false, Ordering::Release);
    }
}

/// Takes `chain`'s `detach` lock if it is free.
fn try_lock<'a>(
    slot: Option<&'a Slot>,
    chain: &'a Chain,
    cpu: Option<usize>,
) -> Option<Detached<'a>> {
    chain
        .detach
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .ok()?;
    Some(Detached { slot, chain, cpu })
}

/// Takes `chain`'s `detach` lock, waiting for its holder (yielding, then sleeping 50 µs at a
/// time after 64 tries, so that a waiter on a real-time thread lets a preempted holder run).
/// Holders keep it for a few list operations, or while they complete expired sheaves.
fn lock_waiting<'a>(slot: Option<&'a Slot>, chain: &'a Chain, cpu: Option<usize>) -> Detached<'a> {
    let mut tries = 0u32;
    loop {
        if let Some(held) = try_lock(slot, chain, cpu) {
            return held;
        }
        tries += 1;
        if tries < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
}

/// Whether `slot`'s chain may hold deferred-free sheaves: a first sheaf was put in place and
/// not yet sealed from afar, or sealed ones wait.
fn pending(slot: &Slot) -> bool {
    slot.rcu_pending.load(Ordering::Acquire) || slot.chain.waiting.load(Ordering::Acquire)
}

/// The slot's first deferred-free sheaf as last committed (null for none), read with
/// acquire: the sequences store it with a plain store, which x86's ordering makes a release.
fn chain_head(slot: &Slot) -> *mut () {
    let rcu = slot.rcu.get();
    // SAFETY: `rcu_free` is an `Option<OwnedSheaf>`, one pointer with null for none (the
    // layout the sequences rely on, `rseq_ops::RCU_FREE_AT`), in the slot, which lives as
    // long as the table; every change of it is one aligned store.
    unsafe {
        AtomicPtr::from_ptr((&raw mut (*rcu).rcu_free).cast::<*mut ()>()).load(Ordering::Acquire)
    }
}

/// Unlinks every sheaf of a list, first to last.
fn unlink_all(mut next: Option<OwnedSheaf>, out: &mut Vec<OwnedSheaf>) {
    while let Some(mut sheaf) = next {
        // SAFETY: the list is the caller's; each link names the next sheaf, which it owns.
        next = sheaf.next().map(|raw| unsafe { OwnedSheaf::from_raw(raw) });
        sheaf.set_next(None);
        out.push(sheaf);
    }
}

impl<S: SlotStrategy> SlotTable<S> {
    /// Per-CPU: the index of `slot` in the table.
    pub(crate) fn cpu_of(&self, slot: &Slot) -> usize {
        (std::ptr::from_ref(slot).addr() - self.cpus.as_ptr().addr())
            / size_of::<crossbeam_utils::CachePadded<Slot>>()
    }

    /// Takes the `detach` lock of `slot` (a CPU's or the calling thread's), if it is free.
    pub(crate) fn try_detach<'a>(&'a self, slot: &'a Slot) -> Option<Detached<'a>> {
        let cpu = S::PER_CPU.then(|| self.cpu_of(slot));
        try_lock(Some(slot), &slot.chain, cpu)
    }

    /// For a reader of the statistics: the deferred frees the sequences pushed since they
    /// were last counted, on every chain (waiting for each `detach` holder). The sealed
    /// sheaves are absorbed (and counted as they move); the first sheaf is counted under
    /// `rcu_lock`, taken from afar, and re-based.
    ///
    /// `count` adds each chain's share to the counters while its `detach` is still held: once
    /// it is released, another holder may complete the sheaves, and their completion must
    /// not be counted before their deferral.
    pub(crate) fn fold_chain_counts(&self, mut count: impl FnMut(Moved)) {
        let uses = if S::PER_CPU {
            self.uses_sequences()
        } else {
            self.uses_thread_sequences()
        };
        if !uses {
            return;
        }
        self.visit_chains(true, |held| {
            let mut moved = self.absorb(held);
            if let Some(slot) = held.slot
                && !chain_head(slot).is_null()
            {
                self.lock_rcu_remote(slot, held.cpu);
                moved.deferred += slot.take_rcu_fast_counts();
                slot.unlock_rcu();
            }
            count(moved);
        });
    }

    /// Visits every chain that may hold deferred-free sheaves under its `detach` lock (waited
    /// for with `wait`, else tried once): every CPU slot, or every registered thread slot and
    /// the orphan chain. Returns whether a lock was found held and skipped.
    pub(crate) fn visit_chains(&self, wait: bool, mut f: impl FnMut(&mut Detached<'_>)) -> bool {
        // Orders the looks at the marks after the caller's earlier stores (the hand-over
        // thread's disarm), against a deferred free that publishes a new sheaf and then
        // checks that the cache is armed: one of the two sees the other.
        std::sync::atomic::fence(Ordering::SeqCst);
        let mut skipped = false;
        let mut visit = |slot: Option<&Slot>, chain: &Chain, cpu: Option<usize>| {
            let held = if wait {
                Some(lock_waiting(slot, chain, cpu))
            } else {
                try_lock(slot, chain, cpu)
            };
            match held {
                Some(mut held) => f(&mut held),
                None => skipped = true,
            }
        };
        if S::PER_CPU {
            for (cpu, slot) in self.cpus.iter().enumerate() {
                if pending(slot) {
                    visit(Some(slot), &slot.chain, Some(cpu));
                }
            }
            return skipped;
        }
        // A snapshot, so that `f` runs without the registry's lock; the `Arc`s keep the
        // slots alive meanwhile. An orphan adopted after the snapshot moved its chain to the
        // orphan chain, visited last.
        let slots: Vec<Arc<Slot>> = self
            .threads
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|slot| pending(slot))
            .cloned()
            .collect();
        for slot in &slots {
            visit(Some(slot), &slot.chain, None);
        }
        if self.orphan_chain.waiting.load(Ordering::Acquire) {
            visit(None, &self.orphan_chain, None);
        }
        skipped
    }

    /// With `detach` held: moves every sheaf of the slot's chain, the first one included,
    /// onto the sealed list (see the module docs), leaving the slot without a first sheaf.
    /// Takes the slot's `rcu_lock` from afar for the move of the first sheaf (waiting for it:
    /// besides `detach` holders, only a `fork`'s prepare takes it), which aborts a sequence
    /// in flight.
    pub(crate) fn seal(&self, held: &mut Detached<'_>) -> Moved {
        let mut moved = self.absorb(held);
        let Some(slot) = held.slot else {
            return moved;
        };
        if chain_head(slot).is_null() {
            return moved;
        }
        self.lock_rcu_remote(slot, held.cpu);
        // Marked before the first sheaf leaves the slot's mark: a visitor that reads neither
        // mark would skip the sheaves in this holder's hands.
        held.chain.waiting.store(true, Ordering::Release);
        // SAFETY: `rcu_lock` is held, which excludes the sequences, and `detach`, which
        // excludes every other reader of the chain.
        let first = unsafe { slot.rcu_mut() }.rcu_free.take();
        // Under `rcu_lock`: a sequence that starts a sheaf after the release sets the mark
        // again after its commit.
        slot.rcu_pending.store(false, Ordering::Release);
        slot.unlock_rcu();
        if let Some(first) = first {
            moved += add_sealed(held, first, &mut Moved::default());
        }
        moved
    }

    /// With `detach` held: moves the sheaves linked behind the slot's first sheaf onto the
    /// sealed list, stamped (see the module docs).
    pub(crate) fn absorb(&self, held: &mut Detached<'_>) -> Moved {
        let Some(slot) = held.slot else {
            return Moved::default();
        };
        let Some(head) = NonNull::new(chain_head(slot)) else {
            return Moved::default();
        };
        // SAFETY: a sheaf in the slot's chain, which only `detach` holders take out, so it is
        // live. Its `next` is written by the sequence that put it in place (before that
        // commit, which the load above read with acquire) and by `detach` holders, so reading
        // and clearing it here races with nothing; the sequences write only its count word
        // and entries meanwhile.
        let behind = unsafe {
            let next = AtomicPtr::from_ptr(
                head.as_ptr()
                    .byte_add(crate::sheaf::layout::NEXT)
                    .cast::<*mut ()>(),
            );
            let behind = next.load(Ordering::Acquire);
            if behind.is_null() {
                return Moved::default();
            }
            next.store(std::ptr::null_mut(), Ordering::Relaxed);
            behind
        };
        // SAFETY: the sheaves behind the first one are sealed: no sequence touches them, and
        // the chain, of which this holder of `detach` just took them, owned them.
        let behind = unsafe { OwnedSheaf::from_raw(NonNull::new_unchecked(behind)) };
        add_sealed(held, behind, &mut Moved::default())
    }

    /// With `detach` held: takes the sheaves of the sealed list whose stamps have expired
    /// and returns them, unlinked, for the caller to complete before it releases `detach`.
    /// On a slot's list, whose stamps never decrease from the front (oldest) to the back,
    /// those are the sheaves in front of the first unexpired one: the cut of the design,
    /// which costs the sheaves cut and one more. The orphan chain gathers the lists of
    /// several slots, whose stamps interleave, so there each sheaf is judged by its own.
    pub(crate) fn cut_expired(&self, held: &mut Detached<'_>) -> Vec<OwnedSheaf> {
        let mut out = Vec::new();
        if held.slot.is_some() {
            unlink_all(held.sealed().take_expired_front(), &mut out);
        } else {
            let mut list = Vec::new();
            unlink_all(held.sealed().take(), &mut list);
            for sheaf in list {
                if object_alloc::rcu::expired(sheaf.stamp()) {
                    out.push(sheaf);
                } else {
                    let raw = sheaf.as_raw();
                    held.sealed().append(sheaf, raw);
                }
            }
        }
        out
    }

    /// With `detach` held: whether the slot's chain and the sealed list are both empty (the
    /// chain as last seen: a sequence may start a sheaf at any time).
    pub(crate) fn chain_is_empty(&self, held: &mut Detached<'_>) -> bool {
        held.sealed().is_empty() && held.slot.is_none_or(|slot| chain_head(slot).is_null())
    }

    /// Per-thread: moves an orphaned slot's chain and sealed list onto the cache's orphan
    /// chain (the chain stamped now, the sealed sheaves with their stamps), under both
    /// `detach` locks, before the adopter unregisters the
    /// slot: a barrier finds the sheaves in the one or the other. The slot's thread has
    /// exited, so no sequence runs on it. The locks are only tried: `None` when either is
    /// held (the adopter leaves the slot for later).
    ///
    /// `count` adds what moved to the counters under the locks (see
    /// [`SlotTable::fold_chain_counts`]).
    pub(crate) fn adopt_chain(&self, slot: &Slot, count: &mut impl FnMut(Moved)) -> bool {
        if !pending(slot) {
            return true;
        }
        let Some(mut from) = try_lock(Some(slot), &slot.chain, None) else {
            return false;
        };
        let Some(mut into) = try_lock(None, &self.orphan_chain, None) else {
            return false;
        };
        // The slot's sealed sheaves keep their stamps; the chain still in the slot (its
        // thread has exited, so no sequence runs on it) is sealed now, and stamped. Both go
        // in front of the orphan chain, the newer first.
        let mut moved = Moved::default();
        let last = from.sealed().last;
        if let (Some(sealed), Some(last)) = (from.sealed().take(), last) {
            into.sealed().append(sealed, last);
            into.chain.waiting.store(true, Ordering::Release);
        }
        // SAFETY: the owner has exited (no sequence runs on its slot) and we hold `detach`,
        // which excludes every other party that changes the chain.
        let first = unsafe { slot.rcu_mut() }.rcu_free.take();
        slot.rcu_pending.store(false, Ordering::Relaxed);
        if let Some(first) = first {
            moved += add_sealed(&mut into, first, &mut Moved::default());
        }
        count(moved);
        true
    }

    /// Every deferred-free sheaf of every slot, chains and sealed lists, and the orphan
    /// chain's (the cache is being dropped).
    ///
    /// # Safety
    ///
    /// - No thread is inside an operation on this cache, nor will start one, and no
    ///   `detach` lock is held.
    pub(crate) unsafe fn take_all_chains(&self) -> Vec<OwnedSheaf> {
        let mut out = Vec::new();
        let mut take = |slot: Option<&Slot>, chain: &Chain| {
            let mut held = lock_waiting(slot, chain, None);
            if let Some(slot) = slot {
                // SAFETY: the caller's obligation: no sequence runs, and we hold `detach`.
                unlink_all(unsafe { slot.rcu_mut() }.rcu_free.take(), &mut out);
                slot.rcu_pending.store(false, Ordering::Relaxed);
            }
            unlink_all(held.sealed().take(), &mut out);
        };
        for slot in self.cpus.iter() {
            take(Some(slot), &slot.chain);
        }
        let slots = self.threads.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.iter() {
            take(Some(slot), &slot.chain);
        }
        take(None, &self.orphan_chain);
        out
    }

    /// Takes `slot`'s `rcu_lock` from afar, waiting while it is held (by a `fork`'s prepare:
    /// the other takers hold `detach`, as the caller does). Per-CPU its fence is the rseq
    /// membarrier on the slot's CPU; per-thread on every CPU, since the owner may run on any.
    fn lock_rcu_remote(&self, slot: &Slot, cpu: Option<usize>) {
        if let Some(cpu) = cpu {
            self.lock_rcu_waiting(cpu);
            return;
        }
        loop {
            #[cfg(not(loom))]
            let locked = if self.thread_sequences.is_some() {
                // SAFETY: the sequences only check a per-thread slot's `rcu_lock`
                // (`rseq_ops::push_rcu_at`, `start_rcu_at`); only compare-exchanges write it.
                unsafe { slab::rseq::try_lock_remote_read_only_any(&slot.rcu_lock) }
            } else {
                slot.try_lock_rcu()
            };
            #[cfg(loom)]
            let locked = slot.try_lock_rcu();
            if locked {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Tests: the deferred objects in `slot`'s chain and sealed list.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn chain_objects(&self, slot: &Slot) -> usize {
        let cpu = S::PER_CPU.then(|| self.cpu_of(slot));
        let mut held = lock_waiting(Some(slot), &slot.chain, cpu);
        self.lock_rcu_remote(slot, cpu);
        // SAFETY: both locks are held.
        let mut objects = unsafe { slot.rcu_mut() }.objects();
        slot.unlock_rcu();
        let sealed = held.sealed();
        let last = sealed.last;
        let mut list = super::RcuSheaves {
            rcu_free: sealed.take(),
        };
        objects += list.objects();
        if let (Some(first), Some(last)) = (list.rcu_free.take(), last) {
            sealed.append(first, last);
        }
        objects
    }
}

/// Appends `sheaves` (sealed, linked through `next` newest first, as a slot's chain links
/// them) to the held sealed list, oldest first, each stamped with the clock read now, after
/// they were sealed; counts them into `moved` and returns it.
fn add_sealed(held: &mut Detached<'_>, sheaves: OwnedSheaf, moved: &mut Moved) -> Moved {
    let stamp = object_alloc::rcu::stamp();
    // Reversed while walked: `reversed` ends up oldest first.
    let mut reversed: Option<OwnedSheaf> = None;
    let last = sheaves.as_raw();
    let mut next = Some(sheaves);
    while let Some(mut sheaf) = next {
        // SAFETY: the list being moved owns each sheaf through its link, which is rewritten
        // here as ownership moves to `reversed`.
        next = sheaf.next().map(|raw| unsafe { OwnedSheaf::from_raw(raw) });
        sheaf.set_stamp(stamp);
        moved.sheaves += u64::from(!sheaf.is_empty());
        moved.deferred += sheaf.take_fast_counts().1;
        sheaf.rebase();
        sheaf.set_next(reversed.take().map(OwnedSheaf::into_raw));
        reversed = Some(sheaf);
    }
    if let Some(first) = reversed {
        held.sealed().append(first, last);
        held.chain.waiting.store(true, Ordering::Release);
    }
    *moved
}
