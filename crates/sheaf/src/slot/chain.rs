//! Per-CPU stamped chains: where a CPU slot's deferred-free sheaves wait for their grace
//! period, without ever leaving the slot before it has passed.
//!
//! A CPU slot's deferred-free sheaves form two lists:
//!
//! - the *chain* in the slot: the first sheaf (`rcu_free`), which deferred frees push onto,
//!   and the full sheaves linked behind it. The CPU's threads change it only by restartable
//!   sequences (`rseq_ops`): the push, and putting a new first sheaf in front of a full one,
//!   which *seals* the full one. The sequences commit only while the slot's `rcu_lock` is
//!   free, and read nothing behind the first sheaf;
//! - the *sealed list* ([`Chain::sealed`]), newest first, which only the holder of the
//!   slot's `detach` lock reads or changes. Every sheaf in it carries a *stamp*
//!   (`object_alloc::rcu::stamp`), read after the sheaf was sealed.
//!
//! A holder of `detach` (a [`Detached`] guard):
//!
//! - *absorbs*: takes the sheaves linked behind the first one (sealed, so final) onto the
//!   front of the sealed list, each stamped with the clock read after the slot's first sheaf
//!   was read;
//! - *seals* the first sheaf itself (remote parties: a barrier, the hand-over thread,
//!   `shrink`): takes `rcu_lock` from afar (its membarrier aborts a sequence in flight) and
//!   moves the whole chain onto the sealed list, leaving the slot without a first sheaf;
//! - *cuts* the sealed list in front of the first sheaf whose stamp has expired
//!   (`object_alloc::rcu::expired`). Every sheaf behind it was sealed before it, so its
//!   objects were unpublished before that stamp was read, and are covered too. The caller
//!   completes the cut sheaves (recycles them) before it lets `detach` go, so that a barrier
//!   that takes the lock next finds them done.
//!
//! So a deferred-free sheaf is always in the slot, on its sealed list, or in the hands of a
//! `detach` holder that is completing it. A barrier seals and stamps every slot, waits for a
//! grace period, and cuts every slot: it waits for `detach` holders (which hold it for a few
//! list operations, or while they complete expired sheaves, never across a call to the page
//! source: the slabs the recycling empties are queued and released after the lock) and for
//! nothing else. The design and its loom model: `docs/decisions.md`, "The stamped chain".

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::{Slot, SlotStrategy, SlotTable};
use crate::sheaf::OwnedSheaf;

/// A CPU slot's sealed list and the lock that guards it; one per CPU slot, beside the table.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    /// The `detach` lock: a flag taken by compare-exchange, released with a release store.
    detach: AtomicBool,
    /// Sealed sheaves, newest first, linked through their headers' `next`, each stamped.
    /// Guarded by `detach`.
    sealed: UnsafeCell<Option<OwnedSheaf>>,
    /// Whether `sealed` holds a sheaf: written by `detach` holders, read by visitors that
    /// skip a slot with nothing to do.
    waiting: AtomicBool,
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
        unsafe { self.sealed.get().write(None) };
        self.waiting.store(false, Ordering::Relaxed);
        self.detach.store(false, Ordering::Release);
    }
}

/// What an absorb or a seal moved onto the sealed list: for the cache's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Moved {
    /// Sheaves stamped (handed to a grace period).
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

/// The `detach` lock of one CPU slot, held; released on drop.
pub(crate) struct Detached<'a> {
    slot: &'a Slot,
    chain: &'a Chain,
    cpu: usize,
}

impl Detached<'_> {
    /// The memory node of the slot whose lock this is.
    pub(crate) fn node(&self) -> usize {
        self.slot.node()
    }
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        self.chain.detach.store(false, Ordering::Release);
    }
}

impl<S: SlotStrategy> SlotTable<S> {
    /// Per-CPU: the number of CPU slots with chains (0 per-thread).
    pub(crate) fn chain_count(&self) -> usize {
        self.chains.len()
    }

    /// Per-CPU: whether CPU `cpu`'s slot may hold deferred-free sheaves (a first sheaf was
    /// put in place and not yet sealed from afar, or sealed ones wait).
    pub(crate) fn chain_pending(&self, cpu: usize) -> bool {
        self.cpus[cpu].rcu_pending.load(Ordering::Acquire)
            || self.chains[cpu].waiting.load(Ordering::Acquire)
    }

    /// Per-CPU: the index of `slot` in the table.
    pub(crate) fn cpu_of(&self, slot: &Slot) -> usize {
        (std::ptr::from_ref(slot).addr() - self.cpus.as_ptr().addr())
            / size_of::<crossbeam_utils::CachePadded<Slot>>()
    }

    /// Per-CPU: takes CPU `cpu`'s `detach` lock if it is free.
    pub(crate) fn try_detach(&self, cpu: usize) -> Option<Detached<'_>> {
        let chain = &self.chains[cpu];
        chain
            .detach
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(Detached {
            slot: &self.cpus[cpu],
            chain,
            cpu,
        })
    }

    /// Per-CPU: takes CPU `cpu`'s `detach` lock, waiting for its holder (yielding, then
    /// sleeping 50 µs at a time after 64 tries, so that a waiter on a real-time thread lets a
    /// preempted holder run). Holders keep it for a few list operations, or while they
    /// complete expired sheaves.
    pub(crate) fn detach_waiting(&self, cpu: usize) -> Detached<'_> {
        let mut tries = 0u32;
        loop {
            if let Some(held) = self.try_detach(cpu) {
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

    /// Per-CPU, with `detach` held: moves every sheaf of the slot's chain, the first one
    /// included, onto the sealed list (see the module docs), leaving the slot without a first
    /// sheaf. Takes the slot's `rcu_lock` from afar for the move of the first sheaf (waiting
    /// for it: besides `detach` holders, only a `fork`'s prepare takes it), which aborts a
    /// sequence in flight on the slot's CPU.
    pub(crate) fn seal(&self, held: &mut Detached<'_>) -> Moved {
        let mut moved = self.absorb(held);
        if self.chain_head(held.slot).is_null() {
            return moved;
        }
        let slot = self.lock_rcu_waiting(held.cpu);
        // SAFETY: `rcu_lock` is held, which excludes the sequences, and `detach`, which
        // excludes every other reader of the chain.
        let rcu = unsafe { slot.rcu_mut() };
        let first = rcu.rcu_free.take();
        // Under `rcu_lock`: a sequence that starts a sheaf after the release sets the mark
        // again after its commit.
        slot.rcu_pending.store(false, Ordering::Relaxed);
        slot.unlock_rcu();
        if let Some(first) = first {
            moved += self.add_sealed(held, first);
        }
        moved
    }

    /// Per-CPU, with `detach` held: moves the sheaves linked behind the slot's first sheaf
    /// onto the sealed list, stamped (see the module docs).
    pub(crate) fn absorb(&self, held: &mut Detached<'_>) -> Moved {
        let head = self.chain_head(held.slot);
        let Some(head) = NonNull::new(head) else {
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
        self.add_sealed(held, behind)
    }

    /// Puts `sheaves` (sealed, linked through `next`) in front of the sealed list, each
    /// stamped with the clock read now, after they were sealed; counts them.
    fn add_sealed(&self, held: &mut Detached<'_>, sheaves: OwnedSheaf) -> Moved {
        let stamp = object_alloc::rcu::stamp();
        let mut moved = Moved::default();
        let first = sheaves.into_raw();
        let mut raw = first;
        loop {
            // SAFETY: a sheaf of the list being moved, which owns it; the handle is given up
            // again at the end of the round (the list keeps the ownership).
            let mut sheaf = unsafe { OwnedSheaf::from_raw(raw) };
            sheaf.set_stamp(stamp);
            moved.sheaves += u64::from(!sheaf.is_empty());
            moved.deferred += sheaf.take_fast_counts().1;
            sheaf.rebase();
            let next = sheaf.next();
            if next.is_none() {
                // The old sealed list goes behind the last of the new sheaves.
                // SAFETY: the holder of `detach` owns the sealed list.
                let sealed = unsafe { &mut *held.chain.sealed.get() };
                sheaf.set_next(sealed.take().map(OwnedSheaf::into_raw));
                let _ = sheaf.into_raw();
                break;
            }
            let _ = sheaf.into_raw();
            raw = next.expect("checked above");
        }
        // SAFETY: as above.
        let sealed = unsafe { &mut *held.chain.sealed.get() };
        // SAFETY: the first sheaf of the list moved, whose handle was given up above.
        *sealed = Some(unsafe { OwnedSheaf::from_raw(first) });
        held.chain.waiting.store(true, Ordering::Release);
        moved
    }

    /// Per-CPU, with `detach` held: cuts the sealed list in front of the first sheaf whose
    /// stamp has expired and returns the cut sheaves, unlinked, for the caller to complete
    /// before it releases `detach`.
    pub(crate) fn cut_expired(&self, held: &mut Detached<'_>) -> Vec<OwnedSheaf> {
        // SAFETY: the holder of `detach` owns the sealed list.
        let sealed = unsafe { &mut *held.chain.sealed.get() };
        let mut cut = None;
        if sealed
            .as_ref()
            .is_some_and(|first| object_alloc::rcu::expired(first.stamp()))
        {
            cut = sealed.take();
        } else if let Some(first) = sealed.as_ref() {
            let mut pred = first.as_raw();
            loop {
                // SAFETY: a sheaf of the sealed list, which owns it; the handle is given up
                // again below (the list keeps the ownership).
                let mut sheaf = unsafe { OwnedSheaf::from_raw(pred) };
                let Some(next) = sheaf.next() else {
                    let _ = sheaf.into_raw();
                    break;
                };
                // SAFETY: as above, the next sheaf of the list.
                let candidate = unsafe { OwnedSheaf::from_raw(next) };
                let expired = object_alloc::rcu::expired(candidate.stamp());
                let _ = candidate.into_raw();
                if expired {
                    sheaf.set_next(None);
                    let _ = sheaf.into_raw();
                    // SAFETY: unlinked just above: the list no longer owns it.
                    cut = Some(unsafe { OwnedSheaf::from_raw(next) });
                    break;
                }
                let _ = sheaf.into_raw();
                pred = next;
            }
        }
        if sealed.is_none() {
            held.chain.waiting.store(false, Ordering::Release);
        }
        let mut out = Vec::new();
        let mut next = cut;
        while let Some(mut sheaf) = next {
            // SAFETY: the cut sheaves are this holder's; each link names the next one.
            next = sheaf.next().map(|raw| unsafe { OwnedSheaf::from_raw(raw) });
            sheaf.set_next(None);
            out.push(sheaf);
        }
        out
    }

    /// Per-CPU, with `detach` held: whether the slot's chain and sealed list are both empty
    /// (the chain as last seen: a sequence may start a sheaf at any time).
    pub(crate) fn chain_is_empty(&self, held: &Detached<'_>) -> bool {
        // SAFETY: the holder of `detach` owns the sealed list.
        let sealed = unsafe { &*held.chain.sealed.get() };
        sealed.is_none() && self.chain_head(held.slot).is_null()
    }

    /// Every deferred-free sheaf of every CPU slot, chains and sealed lists (the cache is
    /// being dropped).
    ///
    /// # Safety
    ///
    /// - No thread is inside an operation on this cache, nor will start one, and no
    ///   `detach` lock is held.
    pub(crate) unsafe fn take_all_chains(&self) -> Vec<OwnedSheaf> {
        let mut out = Vec::new();
        for cpu in 0..self.chains.len() {
            let mut held = self.detach_waiting(cpu);
            let _ = self.seal(&mut held);
            // SAFETY: the holder of `detach` owns the sealed list.
            let sealed = unsafe { &mut *held.chain.sealed.get() };
            let mut next = sealed.take();
            held.chain.waiting.store(false, Ordering::Release);
            while let Some(mut sheaf) = next {
                // SAFETY: as in `cut_expired`.
                next = sheaf.next().map(|raw| unsafe { OwnedSheaf::from_raw(raw) });
                sheaf.set_next(None);
                out.push(sheaf);
            }
        }
        out
    }

    /// Tests: the deferred objects in CPU `cpu`'s chain and sealed list.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn chain_objects(&self, cpu: usize) -> usize {
        let mut held = self.detach_waiting(cpu);
        let slot = self.lock_rcu_waiting(cpu);
        // SAFETY: both locks are held.
        let mut objects = unsafe { slot.rcu_mut() }.objects();
        slot.unlock_rcu();
        // SAFETY: the holder of `detach` owns the sealed list.
        let sealed = unsafe { &mut *held.chain.sealed.get() };
        let mut list = super::RcuSheaves {
            rcu_free: sealed.take(),
        };
        objects += list.objects();
        *sealed = list.rcu_free.take();
        let _ = &mut held;
        objects
    }

    /// The slot's first deferred-free sheaf as last committed (null for none), read with
    /// acquire: the sequences store it with a plain store, which x86's ordering makes a
    /// release.
    fn chain_head(&self, slot: &Slot) -> *mut () {
        let rcu = slot.rcu.get();
        // SAFETY: `rcu_free` is an `Option<OwnedSheaf>`, one pointer with null for none (the
        // layout the sequences rely on, `rseq_ops::RCU_FREE_AT`), in the slot, which lives as
        // long as the table; every change of it is one aligned store.
        unsafe {
            AtomicPtr::from_ptr((&raw mut (*rcu).rcu_free).cast::<*mut ()>())
                .load(Ordering::Acquire)
        }
    }
}
