//! Sheaf bookkeeping shared by every path: making, freeing, flushing and stashing sheaves,
//! and filling one from the slabs. Each counts its events in the `Tally` it is given.

use object_alloc::AllocError;

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::SlotStrategy;
use crate::stats::{Stat, Tally};

impl<S: SlotStrategy> CacheCore<S> {
    pub(super) fn new_sheaf(&self, tally: Tally<'_>) -> OwnedSheaf {
        tally.add(Stat::SheafAlloc, 1);
        OwnedSheaf::new(self.capacity())
    }

    pub(super) fn free_sheaf(&self, sheaf: OwnedSheaf, tally: Tally<'_>) {
        if !sheaf.is_none() {
            tally.add(Stat::SheafFree, 1);
            sheaf.free();
        }
    }

    /// An empty sheaf of the cache's capacity: from the barn (unless stale), else new.
    pub(super) fn empty_sheaf(&self, node: usize, tally: Tally<'_>) -> OwnedSheaf {
        match self.barns[node].get_empty() {
            Some(sheaf) => self.current_empty(sheaf, tally),
            None => self.new_sheaf(tally),
        }
    }

    /// Gives every object of `sheaf` back to the slabs.
    pub(super) fn flush(&self, sheaf: &mut OwnedSheaf, tally: Tally<'_>) {
        if sheaf.is_empty() {
            return;
        }
        // SAFETY: a sheaf holds free objects of this cache, each once; they leave the sheaf.
        unsafe { self.pool.free_bulk(sheaf.objects()) };
        sheaf.clear();
        tally.add(Stat::SheafFlush, 1);
    }

    /// [`CacheCore::flush`] for a caller that holds a CPU slot: slabs it empties beyond what
    /// the pool keeps are queued, not given to the page source, which the caller's
    /// `SlabPool::release_queued` does once the slot is released (as the kernel drops its
    /// CPU lock around the page allocator), or the next shrink.
    pub(super) fn flush_held(&self, sheaf: &mut OwnedSheaf, tally: Tally<'_>) {
        if sheaf.is_empty() {
            return;
        }
        // SAFETY: a sheaf holds free objects of this cache, each once; they leave the sheaf.
        unsafe { self.pool.free_bulk_queued(sheaf.objects()) };
        sheaf.clear();
        tally.add(Stat::SheafFlush, 1);
    }

    /// Flushes and frees a sheaf.
    pub(super) fn discard(&self, mut sheaf: OwnedSheaf, tally: Tally<'_>) {
        self.flush(&mut sheaf, tally);
        self.free_sheaf(sheaf, tally);
    }

    /// [`CacheCore::discard`] with a CPU slot held (see [`CacheCore::flush_held`]).
    pub(super) fn discard_held(&self, mut sheaf: OwnedSheaf, tally: Tally<'_>) {
        self.flush_held(&mut sheaf, tally);
        self.free_sheaf(sheaf, tally);
    }

    /// An empty sheaf goes to the barn if it has room, else is freed; a stale one is freed.
    pub(super) fn stash_empty(&self, sheaf: OwnedSheaf, node: usize, tally: Tally<'_>) {
        if sheaf.is_none() {
            return;
        }
        if self.is_stale(&sheaf) {
            return self.retire_empty(sheaf, tally);
        }
        if let Err(sheaf) = self.barns[node].put_empty(sheaf) {
            self.free_sheaf(sheaf, tally);
        }
    }

    /// Fills the vacant entries of `sheaf` from `node`'s slabs, at least `min` of them.
    pub(super) fn refill_from_slabs(
        &self,
        sheaf: &mut OwnedSheaf,
        node: usize,
        may_grow: bool,
        min: usize,
        tally: Tally<'_>,
    ) -> Result<usize, AllocError> {
        let got = self.pool.refill(node, may_grow, min, sheaf.vacant_mut())?;
        // SAFETY: `refill` wrote the first `got` vacant entries with free objects.
        unsafe { sheaf.grow(got) };
        if got > 0 {
            tally.add(Stat::SheafRefill, 1);
        }
        Ok(got)
    }
}
