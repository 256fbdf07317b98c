//! Bulk allocation and free: whole runs of rounds per magazine, the rest from the slab
//! layer in one call.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use object_alloc::{AllocError, AllocFlags};

use super::Cache;
use super::magazine::Round;
use super::stat::Stat;

impl Cache {
    /// All or nothing: rounds from the magazines (whole runs at a time), the rest from the
    /// slab layer in one bulk call.
    pub(crate) fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        let cpu = self.cpu();
        let mut filled = 0;
        let mut mags = self.lock_cpu(cpu);
        while filled < out.len() && self.reload_for_alloc(&mut mags) {
            let take = (out.len() - filled).min(mags.loaded.len());
            let start = mags.loaded.len() - take;
            for (slot, round) in out[filled..filled + take]
                .iter_mut()
                .zip(mags.loaded.drain(start..))
            {
                slot.write(round.0);
            }
            filled += take;
        }
        mags.count(Stat::AllocBulk, out.len() as u64);
        drop(mags);
        self.resize_if_due();
        if filled < out.len()
            && let Err(error) = self
                .pool
                .alloc_bulk(cpu.node, flags.may_grow(), &mut out[filled..])
        {
            // SAFETY: the first `filled` slots were written above.
            let taken =
                unsafe { std::slice::from_raw_parts(out.as_ptr().cast::<NonNull<u8>>(), filled) };
            // SAFETY: just taken, never handed out.
            unsafe { self.free_bulk(taken) };
            return Err(error);
        }
        if flags.zero() {
            for slot in out.iter() {
                // SAFETY: every slot is initialised, and the object is the caller's.
                unsafe { slot.assume_init().as_ptr().write_bytes(0, self.object_size) };
            }
        }
        Ok(())
    }

    /// Fills the loaded magazine a run at a time.
    ///
    /// # Safety
    ///
    /// Every object is a live object of this cache, listed once, owned by the caller.
    pub(crate) unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        if self.poison {
            for object in objects {
                // SAFETY: as in `free`.
                unsafe {
                    object
                        .as_ptr()
                        .write_bytes(slab::POISON_FREE, self.object_size)
                };
            }
        }
        let cpu = self.cpu();
        let mut mags = self.lock_cpu(cpu);
        let mut rest = objects;
        while !rest.is_empty() && self.reload_for_free(&mut mags) {
            let room = (mags.magsize - mags.loaded.len()).min(rest.len());
            let (run, tail) = rest.split_at(room);
            mags.loaded.extend(run.iter().map(|&o| Round(o)));
            rest = tail;
        }
        mags.count(Stat::FreeBulk, objects.len() as u64);
        drop(mags);
        self.resize_if_due();
        if !rest.is_empty() {
            // SAFETY: the caller's contract; magazines are disabled.
            unsafe { self.pool.free_bulk(rest) };
        }
    }
}
