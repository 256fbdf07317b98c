//! The bulk paths: alloc and free move objects between `main` and the caller's array in block
//! copies. An empty `main` is refilled from the spare or the barn and the rest comes straight
//! from the slabs; a full `main` makes room as a free does.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use object_alloc::{AllocError, AllocFlags};

use super::CacheCore;
use crate::slot::SlotStrategy;
use crate::stats::{Stat, Tally};

impl<S: SlotStrategy> CacheCore<S> {
    /// Fills every entry of `out`, or none (C-BULK-1): the slot's sheaves first, then slabs.
    pub(crate) fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        let n = out.len();
        if n == 0 {
            return Ok(());
        }
        match self.slots.acquire() {
            Some(mut slot) => {
                let tally = Tally::owned(slot.counters());
                let node = slot.node();
                let mut taken = 0;
                if self.has_sheaves {
                    let sheaves = slot.sheaves();
                    loop {
                        // A block copy from the top of `main`, not one pop per object.
                        taken += sheaves.main.pop_into(&mut out[taken..]);
                        if taken == n
                            || self
                                .fill_main(sheaves, node, flags.may_grow(), false, tally)
                                .is_err()
                        {
                            break;
                        }
                    }
                }
                tally.add(Stat::AllocFastpath, taken as u64);
                if taken < n {
                    // The rest comes from the slabs, which may call the page source: without
                    // the slot, so that a page source that sleeps holds up no one on this CPU.
                    drop(slot);
                    self.pool.release_queued();
                    let shared = Tally::shared(&self.counters);
                    if let Err(error) =
                        self.pool
                            .alloc_bulk(node, flags.may_grow(), &mut out[taken..])
                    {
                        // SAFETY: the first `taken` entries were written above with free
                        // objects of this cache, handed out to no one.
                        let taken_objects: Vec<NonNull<u8>> = out[..taken]
                            .iter()
                            .map(|o| unsafe { o.assume_init() })
                            .collect();
                        // SAFETY: free objects of this cache, each once.
                        unsafe { self.pool.free_bulk(&taken_objects) };
                        // Counted out above: counted back, so that the live count holds.
                        shared.add(Stat::FreeSlowpath, taken as u64);
                        return Err(error);
                    }
                    shared.add(Stat::AllocSlowpath, (n - taken) as u64);
                }
            }
            None => {
                let tally = Tally::shared(&self.counters);
                tally.add(Stat::CpuSlotBusy, 1);
                self.pool
                    .alloc_bulk(self.slots.current_node(), flags.may_grow(), out)?;
                tally.add(Stat::AllocSlowpath, n as u64);
            }
        }
        if !S::PER_CPU {
            // Slabs an adoption in `fill_main` emptied (only per-thread slots have orphans).
            self.pool.release_queued();
        }
        if flags.zero() {
            for object in out.iter() {
                // SAFETY: every entry was written on success.
                self.zero(unsafe { object.assume_init() });
            }
        }
        Ok(())
    }

    /// Frees objects from any mix of slabs and threads (C-BULK-2): into the slot's sheaves.
    ///
    /// # Safety
    ///
    /// - Each object is a live object of this cache, appears once, and is not used after.
    pub(crate) unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        if objects.is_empty() {
            return;
        }
        let slot = if self.has_sheaves {
            self.slots.acquire()
        } else {
            None
        };
        let Some(mut slot) = slot else {
            let tally = Tally::shared(&self.counters);
            tally.add(Stat::FreeSlowpath, objects.len() as u64);
            // SAFETY: forwarded.
            unsafe { self.pool.free_bulk(objects) };
            return;
        };
        let tally = Tally::owned(slot.counters());
        let node = slot.node();
        let sheaves = slot.sheaves();
        let mut rest = objects;
        let mut made_room = false;
        loop {
            // A block copy into `main`'s room, not one push per object.
            rest = &rest[sheaves.main.push_slice(rest)..];
            if rest.is_empty() {
                break;
            }
            // `main` is full (or the sentinel): `make_room` leaves it room for at least one.
            self.make_room(sheaves, node, tally);
            made_room = true;
        }
        tally.add(Stat::FreeFastpath, objects.len() as u64);
        if made_room {
            drop(slot);
            self.pool.release_queued();
        }
    }
}
