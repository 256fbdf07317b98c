//! Bulk allocation and free: one detach of the CPU free list per batch.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use object_alloc::{AllocError, AllocFlags};

use crate::stats::Stat;

use super::{Cache, lock};

impl Cache {
    /// `kmem_cache_alloc_bulk`: all or nothing. The CPU free list is detached once, objects
    /// are taken off it in a plain loop (refilled as needed under the same lock), and the
    /// rest is put back once.
    pub(crate) fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        if out.is_empty() {
            return Ok(());
        }
        let slot = self.slot();
        let mut partial = lock(&slot.partial);
        let mut cpu_slab = self.detach(slot);
        let mut filled = 0;
        let mut failure = None;
        while filled < out.len() {
            if let Some(object) = self.pop(&mut cpu_slab) {
                out[filled].write(Self::object_ptr(object));
                filled += 1;
                continue;
            }
            if let Err(error) = self.refill(slot, &mut partial, &mut cpu_slab, flags.may_grow()) {
                failure = Some(error);
                break;
            }
        }
        self.attach(slot, cpu_slab);
        drop(partial);
        // SAFETY: the first `filled` slots were written above.
        let taken =
            unsafe { std::slice::from_raw_parts(out.as_ptr().cast::<NonNull<u8>>(), filled) };
        if let Some(error) = failure {
            // SAFETY: the objects were just allocated and never handed out.
            unsafe { self.free_bulk(taken) };
            return Err(error);
        }
        slot.stats.add(Stat::AllocBulk, filled as u64);
        if flags.zero() {
            for object in taken {
                // SAFETY: each object is `object_size` writable bytes owned by the caller.
                unsafe { object.as_ptr().write_bytes(0, self.object_size) };
            }
        }
        Ok(())
    }

    /// `kmem_cache_free_bulk`: runs of consecutive objects of one slab become one chain and
    /// one free (as `build_detached_freelist` does).
    ///
    /// # Safety
    ///
    /// Every object is a live object of this cache, listed once, owned by the caller.
    pub(crate) unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        let mut rest = objects;
        while let Some((&first, _)) = rest.split_first() {
            let head = first.as_ptr().expose_provenance();
            let base = self.geometry.base(head);
            // SAFETY: a live object's slab is held.
            let meta = unsafe { self.geometry.meta_of(head) };
            let meta_ref = Self::meta(meta);
            let mut tail = head;
            let mut count = 1;
            if self.poison {
                // SAFETY: the object is the caller's until freed.
                unsafe {
                    first
                        .as_ptr()
                        .write_bytes(slab::POISON_FREE, self.object_size)
                };
            }
            for object in &rest[1..] {
                let address = object.as_ptr().expose_provenance();
                if self.geometry.base(address) != base {
                    break;
                }
                if self.poison {
                    // SAFETY: as above.
                    unsafe {
                        object
                            .as_ptr()
                            .write_bytes(slab::POISON_FREE, self.object_size)
                    };
                }
                meta_ref.set_link(self.geometry.index(tail), self.geometry.index(address));
                tail = address;
                count += 1;
            }
            // SAFETY: the chain is `count` live objects of `meta`'s slab, owned by us.
            unsafe { self.free_chain(meta, head, tail, count) };
            rest = &rest[count as usize..];
        }
        self.slot().stats.add(Stat::FreeBulk, objects.len() as u64);
    }
}
