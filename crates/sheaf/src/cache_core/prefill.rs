//! [`PrefilledSheaf`]: objects reserved for allocations that must not fail, and the cache's
//! prefill, refill and return paths behind it.
//!
//! - **prefill** takes the slot's spare, else a barn sheaf (full, else empty), else a new one;
//!   tops it up only if it holds fewer than requested, from the slot's `main` first (one block
//!   copy), then the barn (its partial sheaf and full sheaves with `barn_partial`, else a
//!   full sheaf traded for an empty `main`), then the slabs (a top-up that needs a new slab
//!   releases the slot first).
//!   Larger requests get a dedicated oversize sheaf that is never cached. The common case, a
//!   spare that already holds enough, is inlined.
//! - **refill** tops a prefilled sheaf up in place the same way, or replaces it by an
//!   oversize one.
//! - **return**: becomes the slot's spare if it has none (inlined); else, when the barn
//!   looked to have room, is topped up to capacity and put there; else is flushed and freed.

use std::fmt;
use std::mem;
use std::ptr::NonNull;

use object_alloc::{AllocError, AllocFlags, Prefill};

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{FastSlot, PerCpu, SlotGuard, SlotSheaves, SlotStrategy};
use crate::stats::{Stat, Tally};

/// A sheaf borrowed from a [`Cache`](crate::Cache) with [`Cache::prefill`](crate::Cache::prefill):
/// the analog of the kernel's `kmem_cache_prefill_sheaf`.
///
/// - [`PrefilledSheaf::alloc`] takes an object and never fails while [`size`](Self::size) is
///   above zero, whatever other threads do and even with the page source exhausted
///   (C-PREFILL-2); at zero it returns `None` and never falls back to the cache (C-PREFILL-3).
/// - [`PrefilledSheaf::refill`] tops it up in place (C-REFILL-*).
/// - Dropping it, or [`PrefilledSheaf::return_with`], gives it back (C-RETURN-*).
///
/// Objects still in the sheaf count as live in [`Cache::stats`](crate::Cache::stats) while it
/// is out: they belong to its holder until it is returned.
pub struct PrefilledSheaf<'c, S: SlotStrategy = PerCpu> {
    core: &'c CacheCore<S>,
    sheaf: OwnedSheaf,
}

impl<'c, S: SlotStrategy> PrefilledSheaf<'c, S> {
    pub(crate) fn new(core: &'c CacheCore<S>, sheaf: OwnedSheaf) -> Self {
        Self { core, sheaf }
    }

    /// Takes one object (`kmem_cache_alloc_from_sheaf`), or `None` when the sheaf is empty.
    /// `ZERO` zeroes it; other flags are ignored.
    #[inline]
    pub fn alloc(&mut self, flags: AllocFlags) -> Option<NonNull<u8>> {
        let object = self.sheaf.pop()?;
        if flags.zero() {
            // SAFETY: the object spans `object_size` writable bytes and is now the caller's.
            unsafe { object.as_ptr().write_bytes(0, self.core.object_size()) };
        }
        Some(object)
    }

    /// Objects still held (`kmem_cache_sheaf_size`).
    #[inline]
    pub fn size(&self) -> usize {
        self.sheaf.size()
    }

    /// Objects the sheaf can hold without being replaced: the cache's sheaf capacity, or the
    /// request of an oversize prefill.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.sheaf.capacity()
    }

    /// Tops the sheaf up to at least `count` objects (`kmem_cache_refill_sheaf`), in place:
    /// the handle stays valid. Nothing happens when it holds enough (C-REFILL-1); up to its
    /// capacity it is topped up (C-REFILL-2); beyond, it is replaced by an oversize sheaf and
    /// the old one's objects return to the cache (C-REFILL-3). On failure the sheaf is exactly
    /// as it was (C-REFILL-4).
    ///
    /// The top-up takes the CPU's own objects, the barn's and the slabs' free objects with the
    /// CPU slot held; if that is not enough and a new slab is needed, it gives them back, lets
    /// the slot go, and takes what is missing from the slabs alone, so that a page source that
    /// sleeps holds up no other thread on that CPU (C-CONC-4).
    pub fn refill(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        self.core.refill(&mut self.sheaf, flags, count)
    }

    /// Gives the sheaf back (`kmem_cache_return_sheaf`). It becomes the CPU's spare when that
    /// slot has none; otherwise, if the barn has room, it is topped up to capacity and kept
    /// there; otherwise (or if topping up would need new pages under `NOWAIT`) it is flushed
    /// and freed (C-RETURN-1..4).
    pub fn return_with(mut self, flags: AllocFlags) {
        let sheaf = mem::replace(&mut self.sheaf, OwnedSheaf::none());
        self.core.return_sheaf(sheaf, flags);
    }
}

impl<S: SlotStrategy> Drop for PrefilledSheaf<'_, S> {
    fn drop(&mut self) {
        let sheaf = mem::replace(&mut self.sheaf, OwnedSheaf::none());
        if !sheaf.is_none() {
            self.core.return_sheaf(sheaf, AllocFlags::empty());
        }
    }
}

impl<S: SlotStrategy> Prefill for PrefilledSheaf<'_, S> {
    #[inline]
    fn alloc(&mut self, flags: AllocFlags) -> Option<NonNull<u8>> {
        PrefilledSheaf::alloc(self, flags)
    }

    #[inline]
    fn size(&self) -> usize {
        PrefilledSheaf::size(self)
    }

    fn capacity(&self) -> usize {
        PrefilledSheaf::capacity(self)
    }

    fn refill(&mut self, flags: AllocFlags, count: usize) -> Result<(), AllocError> {
        PrefilledSheaf::refill(self, flags, count)
    }

    fn return_with(self, flags: AllocFlags) {
        PrefilledSheaf::return_with(self, flags)
    }
}

impl<S: SlotStrategy> fmt::Debug for PrefilledSheaf<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefilledSheaf")
            .field("size", &self.size())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The largest prefill request served (an oversize sheaf is one allocation of pointers).
pub(crate) const MAX_PREFILL: usize = 1 << 24;

impl<S: SlotStrategy> CacheCore<S> {
    /// A sheaf holding at least `count` objects (C-PREFILL-1..7).
    ///
    /// Fast path (inlined): per-CPU with restartable sequences, the CPU slot's spare holds
    /// `count`, and one sequence lends it as it is ([`SlotTable::lend_spare_fast`]);
    /// everything else is [`CacheCore::prefill_locked`], out of line, so that the inlined
    /// part keeps no frame of its own. Per-thread slots inline the locked path instead (their
    /// lend is their own fast path).
    ///
    /// [`SlotTable::lend_spare_fast`]: crate::slot::SlotTable::lend_spare_fast
    #[inline(always)]
    pub(crate) fn prefill(
        &self,
        flags: AllocFlags,
        count: usize,
    ) -> Result<OwnedSheaf, AllocError> {
        if !S::PER_CPU {
            return self.prefill_held(flags, count);
        }
        if count <= self.capacity()
            && self.has_sheaves
            && let Some(spare) = self.slots.lend_spare_fast(count)
        {
            return Ok(spare);
        }
        self.prefill_locked(flags, count)
    }

    /// [`CacheCore::prefill`] past its sequence, out of line.
    #[inline(never)]
    fn prefill_locked(&self, flags: AllocFlags, count: usize) -> Result<OwnedSheaf, AllocError> {
        self.prefill_held(flags, count)
    }

    /// [`CacheCore::prefill`] with the slot held: the spare lent when it holds `count`, and
    /// everything else in [`CacheCore::prefill_slow`] with the slot still held.
    #[inline(always)]
    fn prefill_held(&self, flags: AllocFlags, count: usize) -> Result<OwnedSheaf, AllocError> {
        if count > self.capacity() || !self.has_sheaves {
            return self.prefill_oversize(flags, count);
        }
        let mut slot = self.slots.acquire_fast();
        if let Some(slot) = slot.as_mut() {
            let counters = slot.counters();
            let sheaves = slot.sheaves();
            if let Some(spare) = sheaves.spare.take_if(|spare| spare.size() >= count) {
                counters.add_owned(Stat::SheafPrefillFast, 1);
                counters.add_owned(Stat::PrefillReserved, spare.size() as u64);
                return Ok(spare);
            }
        }
        self.prefill_slow(slot.map(FastSlot::hold), flags, count)
    }

    /// The rest of [`CacheCore::prefill`]: a spare too small or absent, or no slot.
    #[cold]
    #[inline(never)]
    fn prefill_slow(
        &self,
        mut slot: Option<SlotGuard<'_, S>>,
        flags: AllocFlags,
        count: usize,
    ) -> Result<OwnedSheaf, AllocError> {
        let (mut tally, node) = match &slot {
            Some(slot) => (Tally::owned(slot.counters()), slot.node()),
            None => {
                let tally = Tally::shared(&self.counters);
                tally.add(Stat::CpuSlotBusy, 1);
                (tally, self.slots.current_node())
            }
        };
        let mut from_spare = false;
        let mut sheaf = None;
        if let Some(slot) = slot.as_mut()
            && let Some(spare) = slot.sheaves().spare.take()
        {
            from_spare = true;
            sheaf = Some(spare);
        }
        if sheaf.is_none() {
            sheaf = self.barns[node].get_full_or_empty();
        }
        let mut sheaf = match sheaf {
            Some(sheaf) => sheaf,
            None => self.new_sheaf(tally),
        };
        // After a run-time change: a stale sheaf is resized to the current capacity, and a
        // sheaf too small for `count` (the capacity fell since `prefill` compared) to `count`.
        let capacity = self.capacity().max(count);
        let mut resized = false;
        if sheaf.capacity() != capacity && (sheaf.capacity() < count || self.is_stale(&sheaf)) {
            sheaf = self.resize_sheaf(sheaf, capacity, slot.is_some(), tally).0;
            resized = true;
        }
        if sheaf.size() >= count {
            tally.add(Stat::SheafPrefillFast, 1);
        } else {
            tally.add(Stat::SheafPrefillSlow, 1);
            // With a slot held, first without a new slab; one that is needed is taken with
            // the slot released (the page source may sleep), from the slabs alone.
            let grow_later = flags.may_grow() && slot.is_some();
            let sheaves = slot.as_mut().map(|slot| slot.sheaves());
            let mut result = self.top_up(
                &mut sheaf,
                sheaves,
                node,
                flags.may_grow() && !grow_later,
                count,
            );
            if grow_later && matches!(result, Err(AllocError::WouldGrow)) {
                slot = None;
                tally = Tally::shared(&self.counters);
                result = self.top_up(&mut sheaf, None, node, true, count);
            }
            if let Err(error) = result {
                // Nothing gathered was kept (C-PREFILL-6): the sheaf is as it was taken.
                match slot.as_mut() {
                    Some(slot) if from_spare => slot.sheaves().spare = Some(sheaf),
                    _ if sheaf.is_empty() => self.stash_empty(sheaf, node, tally),
                    _ => self.discard_held(sheaf, tally),
                }
                drop(slot);
                self.pool.release_queued();
                return Err(error);
            }
        }
        tally.add(Stat::PrefillReserved, sheaf.size() as u64);
        if resized {
            drop(slot);
            self.pool.release_queued();
        }
        Ok(sheaf)
    }

    /// A dedicated sheaf of exactly `count` entries, all filled (C-PREFILL-5, C-CONF-2).
    #[cold]
    #[inline(never)]
    fn prefill_oversize(&self, flags: AllocFlags, count: usize) -> Result<OwnedSheaf, AllocError> {
        if count > MAX_PREFILL {
            return Err(AllocError::TooLarge {
                requested: count,
                limit: MAX_PREFILL,
            });
        }
        let tally = Tally::shared(&self.counters);
        tally.add(Stat::SheafPrefillOversize, 1);
        if count == 0 {
            return Ok(OwnedSheaf::none());
        }
        let mut sheaf = OwnedSheaf::new(count);
        tally.add(Stat::SheafAlloc, 1);
        let node = self.slots.current_node();
        if let Err(error) = self
            .pool
            .alloc_bulk(node, flags.may_grow(), sheaf.vacant_mut())
        {
            self.free_sheaf(sheaf, tally);
            return Err(error);
        }
        // SAFETY: `alloc_bulk` filled every vacant entry.
        unsafe { sheaf.grow(count) };
        tally.add(Stat::PrefillReserved, count as u64);
        Ok(sheaf)
    }

    /// Tops `sheaf` up to at least `count` (and towards its capacity): objects of the slot's
    /// `main` first; then barn objects: with `barn_partial`, from the barn's partial sheaf
    /// and full sheaves ([`Barn::take_objects`](crate::barn::Barn::take_objects)), else (when
    /// `main` was empty) by trading `main` for a full barn sheaf as an allocation would; then
    /// the slabs. On failure the sheaf is exactly as before, every object moved out of
    /// `main` is back in it, and barn objects gathered become the barn's partial sheaf (or,
    /// if it has one, go back to the slabs).
    ///
    /// The barn step matters when objects come back through deferred frees: a workload that
    /// allocates only from prefilled sheaves (the maple tree) never empties `main` by
    /// allocating, so without it the barn's full sheaves (recycled `rcu_free` sheaves among
    /// them) would sit unused, the barn would stay full, and every later recycled sheaf would
    /// be flushed to the slabs while the prefills refill from the slabs. The trade of `main`
    /// alone still leaves a prefill whose `main` held a few objects to the slabs; the
    /// partial sheaf takes barn objects whatever `main` held.
    fn top_up(
        &self,
        sheaf: &mut OwnedSheaf,
        slot: Option<&mut SlotSheaves>,
        node: usize,
        may_grow: bool,
        count: usize,
    ) -> Result<(), AllocError> {
        let before = sheaf.size();
        let mut sheaves = slot;
        let held = sheaves.is_some();
        let mut moved = match sheaves.as_deref_mut() {
            Some(sheaves) => sheaves.main.move_to(sheaf, usize::MAX),
            None => 0,
        };
        if sheaf.size() >= count {
            return Ok(());
        }
        let tally = Tally::shared(&self.counters);
        let barn = &self.barns[node];
        let mut from_barn = 0;
        if self.barn_partial {
            if sheaf.capacity() == self.capacity() {
                let (taken, refused) = barn.take_objects(sheaf);
                for empty in refused.into_iter().flatten() {
                    self.free_sheaf(empty, tally);
                }
                if sheaf.size() >= count {
                    return Ok(());
                }
                from_barn = taken;
            }
        } else if moved == 0
            && let Some(sheaves) = sheaves.as_deref_mut()
            && barn.may_have_full()
        {
            // `main` is empty (it had nothing to give): trade it for a full barn sheaf.
            // Nothing was moved out of the old `main`, so on a later failure the objects
            // moved out of the new one fit back into it.
            let empty = mem::replace(&mut sheaves.main, OwnedSheaf::none());
            match barn.exchange_empty(empty) {
                Ok((full, refused)) => {
                    sheaves.main = full;
                    if let Some(empty) = refused {
                        self.free_sheaf(empty, tally);
                    }
                    moved = sheaves.main.move_to(sheaf, usize::MAX);
                    if sheaf.size() >= count {
                        return Ok(());
                    }
                }
                Err(empty) => sheaves.main = empty,
            }
        }
        let main = sheaves.map(|sheaves| &mut sheaves.main);
        let min = count.saturating_sub(sheaf.size());
        match self.refill_from_slabs(sheaf, node, may_grow, min, tally) {
            Ok(_) => Ok(()),
            Err(error) => {
                if from_barn > 0 {
                    // The barn's objects were moved last: they are the top of the sheaf. They
                    // fit in a sheaf of its capacity, which was the cache's when they were
                    // taken (a concurrent capacity change may have lowered it since).
                    tally.add(Stat::SheafAlloc, 1);
                    let mut gathered = OwnedSheaf::new(sheaf.capacity());
                    let back = sheaf.move_to(&mut gathered, from_barn);
                    debug_assert_eq!(back, from_barn);
                    if let Err(gathered) = barn.put_partial(gathered) {
                        if held {
                            self.discard_held(gathered, tally);
                        } else {
                            self.discard(gathered, tally);
                        }
                    }
                }
                if let Some(main) = main {
                    let back = sheaf.move_to(main, moved);
                    debug_assert_eq!(back, moved);
                }
                debug_assert_eq!(sheaf.size(), before);
                Err(error)
            }
        }
    }

    /// Refills a prefilled `sheaf` to at least `count` (C-REFILL-1..4). Oversize requests
    /// replace it (the old one is returned to the cache).
    pub(crate) fn refill(
        &self,
        sheaf: &mut OwnedSheaf,
        flags: AllocFlags,
        count: usize,
    ) -> Result<(), AllocError> {
        if sheaf.size() >= count {
            return Ok(());
        }
        if count > sheaf.capacity() {
            let replacement = self.prefill(flags, count)?;
            let old = mem::replace(sheaf, replacement);
            self.return_sheaf(old, flags);
            return Ok(());
        }
        let before = sheaf.size();
        let mut slot = if sheaf.capacity() == self.capacity() {
            self.slots.acquire()
        } else {
            None
        };
        let node = match &slot {
            Some(slot) => slot.node(),
            None => self.slots.current_node(),
        };
        // As in `prefill_slow`: with a slot held, first without a new slab; one that is
        // needed is taken with the slot released (the page source may sleep), from the slabs
        // alone. The objects the first try moved out of `main` went back into it.
        let grow_later = flags.may_grow() && slot.is_some();
        let sheaves = slot.as_mut().map(|slot| slot.sheaves());
        let mut result = self.top_up(sheaf, sheaves, node, flags.may_grow() && !grow_later, count);
        if grow_later && matches!(result, Err(AllocError::WouldGrow)) {
            slot = None;
            self.pool.release_queued();
            result = self.top_up(sheaf, None, node, true, count);
        }
        if let Err(error) = result {
            drop(slot);
            self.pool.release_queued();
            return Err(error);
        }
        let added = (sheaf.size() - before) as u64;
        match &slot {
            Some(slot) => slot.counters().add_owned(Stat::PrefillReserved, added),
            None => self.counters.add_shared(Stat::PrefillReserved, added),
        }
        Ok(())
    }

    /// Takes a prefilled sheaf back (C-RETURN-1..4).
    ///
    /// Fast path (inlined): per-CPU with restartable sequences, a sheaf of the cache's
    /// capacity becomes the CPU slot's spare by one sequence when the slot has none
    /// ([`SlotTable::give_back_fast`]); everything else is [`CacheCore::return_locked`], out
    /// of line. Per-thread slots inline the locked path instead, as in
    /// [`CacheCore::prefill`].
    ///
    /// [`SlotTable::give_back_fast`]: crate::slot::SlotTable::give_back_fast
    #[inline(always)]
    pub(crate) fn return_sheaf(&self, sheaf: OwnedSheaf, flags: AllocFlags) {
        if !S::PER_CPU {
            return self.return_held(sheaf, flags);
        }
        if sheaf.capacity() != self.capacity() || !self.has_sheaves {
            return self.return_locked(sheaf, flags);
        }
        if let Err(sheaf) = self.slots.give_back_fast(sheaf) {
            self.return_locked(sheaf, flags);
        }
    }

    /// [`CacheCore::return_sheaf`] past its sequence, out of line.
    #[inline(never)]
    fn return_locked(&self, sheaf: OwnedSheaf, flags: AllocFlags) {
        self.return_held(sheaf, flags);
    }

    /// [`CacheCore::return_sheaf`] with the slot held: the sheaf kept as the spare when the
    /// slot has none, and everything else in [`CacheCore::return_slow`].
    #[inline(always)]
    fn return_held(&self, sheaf: OwnedSheaf, flags: AllocFlags) {
        if sheaf.capacity() != self.capacity() || !self.has_sheaves {
            return self.return_discard(sheaf, flags);
        }
        let mut slot = self.slots.acquire_fast();
        if let Some(slot) = slot.as_mut() {
            let counters = slot.counters();
            let sheaves = slot.sheaves();
            if sheaves.spare.is_none() {
                counters.add_owned(Stat::PrefillUnused, sheaf.size() as u64);
                counters.add_owned(Stat::SheafReturnFast, 1);
                sheaves.spare = Some(sheaf);
                return;
            }
        }
        self.return_slow(slot.map(FastSlot::hold), sheaf, flags);
    }

    /// An oversize (or capacity-0 cache's) sheaf is never cached: flushed and freed. A stale
    /// one (a run-time change came while it was out) is resized to the current capacity and
    /// returned as such.
    #[cold]
    #[inline(never)]
    fn return_discard(&self, sheaf: OwnedSheaf, flags: AllocFlags) {
        let tally = Tally::shared(&self.counters);
        if self.has_sheaves && self.is_stale(&sheaf) {
            let (resized, flushed) = self.resize_sheaf(sheaf, self.capacity(), false, tally);
            // Objects of a sheaf on loan count as live until returned: those flushed are
            // returned here, the rest by the return below.
            tally.add(Stat::PrefillUnused, flushed as u64);
            return self.return_held(resized, flags);
        }
        tally.add(Stat::PrefillUnused, sheaf.size() as u64);
        tally.add(Stat::SheafReturnSlow, 1);
        self.discard(sheaf, tally);
    }

    /// The rest of [`CacheCore::return_sheaf`]: the slot has a spare already, or is busy.
    #[cold]
    #[inline(never)]
    fn return_slow(
        &self,
        slot: Option<SlotGuard<'_, S>>,
        mut sheaf: OwnedSheaf,
        flags: AllocFlags,
    ) {
        let (tally, node) = match &slot {
            Some(slot) => (Tally::owned(slot.counters()), slot.node()),
            None => (Tally::shared(&self.counters), self.slots.current_node()),
        };
        tally.add(Stat::PrefillUnused, sheaf.size() as u64);
        tally.add(Stat::SheafReturnSlow, 1);
        // The rest needs no slot; a top-up may call the page source, which may sleep.
        drop(slot);
        let tally = Tally::shared(&self.counters);
        let barn = &self.barns[node];
        if barn.may_take_full() {
            let room = sheaf.room();
            if room == 0
                || self
                    .refill_from_slabs(&mut sheaf, node, flags.may_grow(), room, tally)
                    .is_ok()
            {
                match barn.put_full(sheaf) {
                    Ok(()) => return,
                    Err(full) => sheaf = full,
                }
            }
        }
        self.discard(sheaf, tally);
    }
}
