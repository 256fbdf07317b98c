//! The single-object paths, alloc and free.
//!
//! Per CPU with restartable sequences, the common case of each (a pop from, or a push onto,
//! `main`) is one sequence without the slot lock (`slot::rseq_ops`); any miss comes here
//! with the slot held, as every operation does elsewhere (per thread, or per CPU with the
//! compare-exchange lock).
//!
//! - **alloc**: pop from the slot's `main`. When it is empty (cold path): swap with a
//!   non-empty `spare`; else trade the empty `main` at the barn for a full sheaf; else refill
//!   `main` from the slabs' free objects in bulk; else (a new slab is needed) release the
//!   slot, fill a new sheaf from a new slab, and take a slot again to keep it. A busy slot, or
//!   a cache without sheaves, takes one object straight from the slabs. A `NOWAIT`
//!   allocation refills the same way but never takes a new slab (it fails instead); with
//!   `nowait_no_refill` (a model of a kernel that let it refill nothing) it takes one object
//!   straight from the slabs. The `nowait_*` counters say where each one was served.
//! - **free** mirrors it: push on `main`; when full, swap with a non-full `spare` (or make
//!   `main` the spare); else trade the full `main` at the barn for an empty sheaf; else, the
//!   barn being at its full limit, flush `main` to the slabs.

use std::mem::{self, MaybeUninit};
use std::ptr::NonNull;

use object_alloc::{AllocError, AllocFlags};

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{CpuSequences, FastSlot, SlotSheaves, SlotStrategy};
use crate::stats::{NowaitPath, Stat, Tally};

/// Where [`CacheCore::fill_main`] found the objects it put in `main`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refilled {
    /// The slot's spare sheaf.
    Spare,
    /// A full sheaf of the barn.
    Barn,
    /// Free objects of the node's slabs (no new slab: that is the caller's `alloc_grown`).
    Slabs,
}

impl<S: SlotStrategy> CacheCore<S> {
    /// One object straight from the slabs.
    fn alloc_from_slabs(
        &self,
        node: usize,
        flags: AllocFlags,
        tally: Tally<'_>,
    ) -> Option<NonNull<u8>> {
        let mut one = [MaybeUninit::uninit()];
        self.pool
            .alloc_bulk(node, flags.may_grow(), &mut one)
            .ok()?;
        tally.add(Stat::AllocSlowpath, 1);
        // SAFETY: `alloc_bulk` succeeded, so it wrote the slot.
        Some(unsafe { one[0].assume_init() })
    }

    /// The per-CPU fast path of [`CacheCore::alloc_via`] alone: `None`, having done nothing,
    /// where it would take a lock.
    ///
    /// # Safety
    ///
    /// - `sequences` is `self.slots.cpu_sequences()`.
    #[inline]
    pub(crate) unsafe fn alloc_fast_via(
        &self,
        sequences: Option<CpuSequences>,
    ) -> Option<NonNull<u8>> {
        match sequences {
            // SAFETY: this cache's sequences (the caller's contract), its table kept alive by
            // `self`.
            Some(table) if S::PER_CPU => unsafe { table.pop() }.map(crate::slowdown::on_alloc),
            _ => None,
        }
    }

    /// The per-CPU fast path of [`CacheCore::free_via`] alone: gives `object` back, having
    /// done nothing, where it would take a lock.
    ///
    /// # Safety
    ///
    /// As [`CacheCore::free_via`] when it returns `Ok`.
    #[inline]
    pub(crate) unsafe fn free_fast_via(
        &self,
        sequences: Option<CpuSequences>,
        object: NonNull<u8>,
    ) -> Result<(), NonNull<u8>> {
        match sequences {
            // SAFETY: this cache's sequences, its table kept alive by `self`; the caller's
            // object, given up to the cache.
            Some(table) if S::PER_CPU => unsafe { table.push(crate::slowdown::on_free(object)) },
            _ => Err(object),
        }
    }

    /// Allocates one object, with this cache's per-CPU sequences passed in (the caller's
    /// copy, see [`Cache`](crate::Cache)'s field); `sequences` is ignored for per-thread
    /// slots.
    ///
    /// # Safety
    ///
    /// - `sequences` is `self.slots.cpu_sequences()` (taken at any time: it never changes).
    #[inline]
    pub(crate) unsafe fn alloc_via(
        &self,
        sequences: Option<CpuSequences>,
        flags: AllocFlags,
    ) -> Option<NonNull<u8>> {
        let object = if S::PER_CPU {
            // SAFETY: forwarded.
            match unsafe { self.alloc_fast_via(sequences) } {
                Some(object) => object,
                None => self.alloc_locked_cold(flags)?,
            }
        } else {
            self.alloc_locked(flags)?
        };
        if flags.zero() {
            self.zero(object);
        }
        Some(object)
    }

    /// [`CacheCore::alloc_locked`] out of line: per-CPU, after the restartable sequence
    /// missed (or where there is none).
    #[cold]
    #[inline(never)]
    fn alloc_locked_cold(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        self.alloc_locked(flags)
    }

    /// Allocates one object with the slot held: the per-thread fast path, and the per-CPU
    /// one where restartable sequences are unavailable.
    #[inline(always)]
    fn alloc_locked(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        match self.slots.acquire_fast() {
            Some(mut slot) => {
                let counters = slot.counters();
                match slot.sheaves().main.pop() {
                    Some(object) => {
                        counters.add_owned(Stat::AllocFastpath, 1);
                        Some(crate::slowdown::on_alloc(object))
                    }
                    None => self.alloc_refill(slot, flags),
                }
            }
            None => self.alloc_busy(flags),
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_busy(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        let tally = Tally::shared(&self.counters);
        tally.add(Stat::CpuSlotBusy, 1);
        self.nowait_from_slabs(self.slots.current_node(), flags, tally)
    }

    /// [`CacheCore::alloc_from_slabs`], counting where a `NOWAIT` allocation went.
    fn nowait_from_slabs(
        &self,
        node: usize,
        flags: AllocFlags,
        tally: Tally<'_>,
    ) -> Option<NonNull<u8>> {
        let object = self.alloc_from_slabs(node, flags, tally);
        if !flags.may_grow() {
            self.nowait.add(if object.is_some() {
                NowaitPath::FromSlabs
            } else {
                NowaitPath::Failed
            });
        }
        object
    }

    /// The slot's `main` is empty: make it hold objects, then pop.
    ///
    /// Everything that needs no new slab is done with the slot held; a refill that needs one
    /// releases the slot first (see [`CacheCore::alloc_grown`]), as the kernel drops its lock
    /// around the page allocator, so that other threads on this CPU keep using the slot
    /// while the page source runs (or blocks).
    #[cold]
    #[inline(never)]
    fn alloc_refill(&self, slot: FastSlot<'_, S>, flags: AllocFlags) -> Option<NonNull<u8>> {
        // Held from here on: the refill may call out (barn, slabs).
        let mut slot = slot.hold();
        let node = slot.node();
        // The `NOWAIT` no-refill model: `main` stays empty and each such allocation takes one
        // object from the slabs.
        if !self.has_sheaves || (self.nowait_no_refill && !flags.may_grow()) {
            drop(slot);
            return self.nowait_from_slabs(node, flags, Tally::shared(&self.counters));
        }
        let tally = Tally::owned(slot.counters());
        match self.fill_main(slot.sheaves(), node, false, true, tally) {
            Ok(source) => {
                let object = slot.sheaves().main.pop()?;
                tally.add(Stat::AllocFastpath, 1);
                drop(slot);
                if !S::PER_CPU {
                    // Slabs an adoption emptied (only per-thread slots have orphans).
                    self.pool.release_queued();
                }
                if !flags.may_grow() {
                    self.nowait.add(match source {
                        Refilled::Spare => NowaitPath::RefillSpare,
                        Refilled::Barn => NowaitPath::RefillBarn,
                        Refilled::Slabs => NowaitPath::RefillSlabs,
                    });
                }
                Some(object)
            }
            Err(AllocError::WouldGrow) if flags.may_grow() => {
                drop(slot);
                self.pool.release_queued();
                self.alloc_grown(node)
            }
            Err(_) => {
                drop(slot);
                self.pool.release_queued();
                if !flags.may_grow() {
                    self.nowait.add(NowaitPath::Failed);
                }
                None
            }
        }
    }

    /// An allocation whose slot had nothing left and whose node's slabs had no free object:
    /// fills a sheaf from a new slab *without* holding a slot, then takes a slot again (the
    /// caller may have moved to another CPU, and the slot may have been refilled meanwhile)
    /// to keep the rest: as `main` if that is still empty, else as the spare if there is
    /// none or it is empty, else in the barn when full; otherwise it goes back to the slabs.
    #[cold]
    #[inline(never)]
    fn alloc_grown(&self, node: usize) -> Option<NonNull<u8>> {
        let tally = Tally::shared(&self.counters);
        let mut sheaf = self.empty_sheaf(node, tally);
        if self
            .refill_from_slabs(&mut sheaf, node, true, 1, tally)
            .is_err()
        {
            self.stash_empty(sheaf, node, tally);
            return None;
        }
        let object = sheaf.pop().expect("a refill gives at least one object");
        tally.add(Stat::AllocFastpath, 1);
        let mut leftover = Some(sheaf);
        let mut emptied = None;
        if let Some(mut slot) = self.slots.acquire() {
            let sheaves = slot.sheaves();
            if sheaves.main.is_empty() {
                let old = mem::replace(&mut sheaves.main, leftover.take().expect("kept"));
                if sheaves.spare.is_none() && !old.is_none() {
                    sheaves.spare = Some(old);
                } else {
                    emptied = Some(old);
                }
            } else if sheaves.spare.as_ref().is_none_or(OwnedSheaf::is_empty) {
                emptied = sheaves.spare.replace(leftover.take().expect("kept"));
            }
        }
        // After the slot is released: a flush may give a slab back to the page source.
        if let Some(empty) = emptied {
            self.stash_empty(empty, node, tally);
        }
        if let Some(mut sheaf) = leftover {
            if sheaf.is_full() {
                match self.barns[node].put_full(sheaf) {
                    Ok(()) => return Some(object),
                    Err(full) => sheaf = full,
                }
            }
            self.discard(sheaf, tally);
        }
        Some(object)
    }

    /// Makes an empty `main` hold objects: spare, barn, then (if `from_slabs`) the slabs;
    /// says which. Per-thread, it may adopt exited threads' slots first: the caller releases
    /// queued slabs after it lets the slot go.
    pub(super) fn fill_main(
        &self,
        sheaves: &mut SlotSheaves,
        node: usize,
        may_grow: bool,
        from_slabs: bool,
        tally: Tally<'_>,
    ) -> Result<Refilled, AllocError> {
        debug_assert!(sheaves.main.is_empty());
        if let Some(spare) = sheaves.spare.as_mut()
            && !spare.is_empty()
        {
            mem::swap(&mut sheaves.main, spare);
            // The old `main`, now the spare, is kept unless it is the sentinel or, after a
            // run-time change, of an old capacity (one comparison covers both).
            if spare.capacity() != self.capacity() {
                self.drop_empty_spare(sheaves, tally);
            }
            return Ok(Refilled::Spare);
        }
        // An empty sheaf of an old capacity is not refilled (see `resize`).
        if self.is_stale(&sheaves.main) {
            let stale = mem::replace(&mut sheaves.main, OwnedSheaf::none());
            self.retire_empty(stale, tally);
        }
        if self.slots.has_orphans() {
            self.adopt_orphans(true);
        }
        let main = mem::replace(&mut sheaves.main, OwnedSheaf::none());
        let barn = &self.barns[node];
        // With no spare, the emptied main stays as the spare, ready for the frees (or the
        // next `rcu_free` sheaf) that will follow, and the barn gives only a full sheaf: one
        // barn trip per sheaf instead of two. Otherwise the empty main is traded for a full
        // one.
        let traded = if sheaves.spare.is_none() && !main.is_none() {
            match barn.get_full() {
                Some(full) => {
                    sheaves.main = full;
                    sheaves.spare = Some(main);
                    Ok(None)
                }
                None => Err(main),
            }
        } else {
            barn.exchange_empty(main).map(|(full, refused)| {
                sheaves.main = full;
                refused
            })
        };
        match traded {
            Ok(refused) => {
                // A spare is already there (or `main` was the sentinel): the barn had no room
                // for the empty sheaf.
                if let Some(empty) = refused {
                    self.free_sheaf(empty, tally);
                }
                Ok(Refilled::Barn)
            }
            Err(main) => {
                let mut main = if main.is_none() {
                    self.new_sheaf(tally)
                } else {
                    main
                };
                let result = if from_slabs {
                    self.refill_from_slabs(&mut main, node, may_grow, 1, tally)
                        .map(|_| Refilled::Slabs)
                } else {
                    Err(AllocError::WouldGrow)
                };
                sheaves.main = main;
                result
            }
        }
    }

    /// Drops an empty spare that is the sentinel or stale; keeps any other.
    #[cold]
    #[inline(never)]
    fn drop_empty_spare(&self, sheaves: &mut SlotSheaves, tally: Tally<'_>) {
        match sheaves.spare.take() {
            Some(spare) if spare.is_none() => {}
            Some(spare) if self.is_stale(&spare) => self.retire_empty(spare, tally),
            other => sheaves.spare = other,
        }
    }

    // ----- free ----------------------------------------------------------------------------

    /// Frees one object.
    ///
    /// # Safety
    ///
    /// - `object` is a live object of this cache, not used after this call.
    #[inline]
    pub(crate) unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: forwarded, with this table's own sequences.
        unsafe { self.free_via(self.slots.cpu_sequences(), object) }
    }

    /// [`CacheCore::free`] with this cache's per-CPU sequences passed in, as for
    /// [`CacheCore::alloc_via`].
    ///
    /// # Safety
    ///
    /// - As for [`CacheCore::free`]; `sequences` is `self.slots.cpu_sequences()`.
    #[inline]
    pub(crate) unsafe fn free_via(&self, sequences: Option<CpuSequences>, object: NonNull<u8>) {
        if S::PER_CPU {
            // SAFETY: forwarded.
            if let Err(object) = unsafe { self.free_fast_via(sequences, object) } {
                // SAFETY: forwarded.
                unsafe { self.free_locked_cold(object) };
            }
        } else {
            // SAFETY: forwarded.
            unsafe { self.free_locked(object) };
        }
    }

    /// [`CacheCore::free_locked`] out of line: per-CPU, after the restartable sequence
    /// missed (or where there is none).
    #[cold]
    #[inline(never)]
    unsafe fn free_locked_cold(&self, object: NonNull<u8>) {
        // SAFETY: forwarded.
        unsafe { self.free_locked(object) };
    }

    /// Frees one object with the slot held: the per-thread fast path, and the per-CPU one
    /// where restartable sequences are unavailable.
    ///
    /// # Safety
    ///
    /// - As for [`CacheCore::free`].
    #[inline(always)]
    unsafe fn free_locked(&self, object: NonNull<u8>) {
        match self.slots.acquire_fast() {
            Some(mut slot) => {
                let counters = slot.counters();
                let object = crate::slowdown::on_free(object);
                match slot.sheaves().main.push(object) {
                    Ok(()) => counters.add_owned(Stat::FreeFastpath, 1),
                    // SAFETY: forwarded.
                    Err(object) => unsafe { self.free_overflow(slot, object) },
                }
            }
            // SAFETY: forwarded.
            None => unsafe { self.free_busy(object) },
        }
    }

    #[cold]
    #[inline(never)]
    unsafe fn free_busy(&self, object: NonNull<u8>) {
        let tally = Tally::shared(&self.counters);
        tally.add(Stat::CpuSlotBusy, 1);
        tally.add(Stat::FreeSlowpath, 1);
        // SAFETY: the caller's object, live, of this cache.
        unsafe { self.pool.free(object) };
    }

    /// The slot's `main` is full: make room, then push.
    #[cold]
    #[inline(never)]
    unsafe fn free_overflow(&self, slot: FastSlot<'_, S>, object: NonNull<u8>) {
        // Held from here on: making room may call out (barn, slabs, page source).
        let mut slot = slot.hold();
        let tally = Tally::owned(slot.counters());
        let node = slot.node();
        if !self.has_sheaves {
            tally.add(Stat::FreeSlowpath, 1);
            // SAFETY: the caller's object, live, of this cache.
            unsafe { self.pool.free_bulk_queued(std::slice::from_ref(&object)) };
        } else {
            let sheaves = slot.sheaves();
            self.make_room(sheaves, node, tally);
            sheaves.main.push(object).expect("make_room leaves room");
            tally.add(Stat::FreeFastpath, 1);
        }
        drop(slot);
        self.pool.release_queued();
    }

    /// Makes a full `main` (or the sentinel) have room: spare, barn, else flush. The caller
    /// holds the slot, and releases queued slabs after it lets the slot go.
    pub(super) fn make_room(&self, sheaves: &mut SlotSheaves, node: usize, tally: Tally<'_>) {
        debug_assert!(sheaves.main.is_full());
        if sheaves.main.is_none() {
            sheaves.main = self.empty_sheaf(node, tally);
            return;
        }
        match sheaves.spare.as_mut() {
            Some(spare) if !spare.is_full() => {
                mem::swap(&mut sheaves.main, spare);
                return;
            }
            None => {
                let empty = self.empty_sheaf(node, tally);
                sheaves.spare = Some(mem::replace(&mut sheaves.main, empty));
                return;
            }
            Some(_) => {}
        }
        let full = mem::replace(&mut sheaves.main, OwnedSheaf::none());
        sheaves.main = match self.barns[node].exchange_full(full) {
            Ok(Some(empty)) => self.current_empty(empty, tally),
            Ok(None) => self.new_sheaf(tally),
            Err(mut full) => {
                self.flush_held(&mut full, tally);
                full
            }
        };
    }
}
