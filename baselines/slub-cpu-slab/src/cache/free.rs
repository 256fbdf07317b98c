//! Free: the lockless fast path and `__slab_free`, with the moves of a slab between the
//! per-CPU partial list and its node's list that a free causes.

use std::ptr::{self, NonNull};
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use crate::meta::{NONE, SlabMeta, SlabState};
use crate::stats::Stat;

use super::lists::NodePartial;
use super::{Attempt, Cache, CpuSlot, lock};

impl Cache {
    /// One attempt to push the chain `head..=tail` of `meta`'s objects on `slot`'s CPU free
    /// list (`do_slab_free`'s fast path).
    #[inline]
    pub(crate) fn try_free_fast(
        &self,
        slot: &CpuSlot,
        meta: *const SlabMeta,
        head: usize,
        tail: usize,
    ) -> Attempt {
        let tid = slot.pair.tid();
        if slot.slab.load(Ordering::Acquire).cast_const() != meta {
            return Attempt::Slow;
        }
        let first = slot.pair.freelist();
        let link = if first == 0 {
            NONE
        } else {
            self.geometry.index(first)
        };
        // `tail` is ours, so writing its link is safe whatever happens next.
        Self::meta(meta).set_link(self.geometry.index(tail), link);
        if slot.pair.compare_exchange(first, tid, head) {
            Attempt::Done(head)
        } else {
            Attempt::Raced
        }
    }

    /// Frees one object.
    ///
    /// # Safety
    ///
    /// `object` is a live object of this cache, and nothing uses it afterwards.
    #[inline]
    pub(crate) unsafe fn free(&self, object: NonNull<u8>) {
        let address = object.as_ptr().expose_provenance();
        if self.poison {
            // SAFETY: the object is ours until it is on a free list.
            unsafe {
                object
                    .as_ptr()
                    .write_bytes(slab::POISON_FREE, self.object_size)
            };
        }
        // SAFETY: the object is live, so its slab is held.
        let meta = unsafe { self.geometry.meta_of(address) };
        // SAFETY: one live object is a chain of one.
        unsafe { self.free_chain(meta, address, address, 1) };
    }

    /// Frees the chain `head..=tail` of `count` objects of slab `meta`, linked by
    /// `meta.links` (except `tail`'s link, which is set here).
    ///
    /// # Safety
    ///
    /// The chain's objects are live objects of `meta`'s slab, owned by the caller.
    #[inline]
    pub(super) unsafe fn free_chain(
        &self,
        meta: *const SlabMeta,
        head: usize,
        tail: usize,
        count: u32,
    ) {
        loop {
            let slot = self.slot();
            match self.try_free_fast(slot, meta, head, tail) {
                Attempt::Done(_) => {
                    slot.stats.add(Stat::FreeFastpath, 1);
                    return;
                }
                Attempt::Raced => slot.stats.add(Stat::CmpxchgDoubleCpuFail, 1),
                Attempt::Slow => break,
            }
        }
        self.slab_free(Self::meta(meta), head, tail, count);
    }

    /// `__slab_free`: pushes a chain on its slab's own free list and moves the slab between
    /// lists if it went from full to partial or from partial to empty.
    #[cold]
    pub(crate) fn slab_free(&self, meta: &SlabMeta, head: usize, tail: usize, count: u32) {
        let slot = self.slot();
        slot.stats.add(Stat::FreeSlowpath, 1);
        let head_index = self.geometry.index(head);
        let tail_index = self.geometry.index(tail);
        let node_index = meta.node.load(Ordering::Relaxed);
        let mut node: Option<MutexGuard<'_, NodePartial>>;
        let (prior, was_frozen, new, on_node_partial) = loop {
            node = None;
            let old = meta.load();
            meta.set_link(tail_index, old.head);
            let new = SlabState {
                head: head_index,
                inuse: old.inuse - count,
                frozen: old.frozen,
            };
            let mut on_node_partial = false;
            // A partial slab that becomes empty may have to leave its node's list: hold the
            // list lock across the update so the slab cannot be taken meanwhile.
            if new.inuse == 0 && old.head != NONE && !old.frozen {
                let guard = lock(&self.nodes[node_index]);
                on_node_partial = meta.on_node_partial.load(Ordering::Relaxed);
                node = Some(guard);
            }
            if meta.update(old, new) {
                break (old.head, old.frozen, new, on_node_partial);
            }
            slot.stats.add(Stat::CmpxchgDoubleFail, 1);
        };
        let Some(mut node) = node else {
            if was_frozen {
                slot.stats.add(Stat::FreeFrozen, 1);
            } else if prior == NONE {
                // It was full: it now has free objects; this CPU keeps it at hand.
                self.put_cpu_partial(meta);
                slot.stats.add(Stat::CpuPartialFree, 1);
            }
            return;
        };
        // Partial and now empty. If it is on a per-CPU partial list (not the node's), that
        // list's owner deals with it.
        if !on_node_partial || node.nr_partial < self.min_partial {
            return;
        }
        debug_assert_eq!(new.inuse, 0);
        node.remove(meta);
        drop(node);
        slot.stats.add(Stat::FreeRemovePartial, 1);
        self.discard(meta);
    }

    /// `put_cpu_partial`: puts a slab on the current CPU's partial list; a full list is
    /// drained to the node lists first.
    fn put_cpu_partial(&self, meta: &SlabMeta) {
        let slot = self.slot();
        let mut partial = lock(&slot.partial);
        let drained = if partial.count >= self.cpu_partial_slabs {
            partial.take()
        } else {
            ptr::null()
        };
        partial.push(meta);
        drop(partial);
        if !drained.is_null() {
            slot.stats.add(Stat::CpuPartialDrain, 1);
            self.put_partials(drained);
        }
    }

    /// `__put_partials`: moves a detached per-CPU partial list to the node lists, releasing
    /// empty slabs beyond `min_partial`.
    pub(super) fn put_partials(&self, mut list: *const SlabMeta) {
        while !list.is_null() {
            let meta = Self::meta(list);
            list = meta.next.load(Ordering::Relaxed);
            let mut node = lock(&self.nodes[meta.node.load(Ordering::Relaxed)]);
            if meta.load().inuse == 0 && node.nr_partial >= self.min_partial {
                drop(node);
                self.discard(meta);
            } else {
                node.add_tail(meta);
            }
        }
    }

    /// `deactivate_slab`: gives a CPU slab back, merging its CPU free list into the slab's
    /// own, then lists it by how full it is.
    pub(super) fn deactivate(&self, slot: &CpuSlot, meta: &SlabMeta, head: usize) {
        let mut count = 0;
        let mut tail = NONE;
        let mut cursor = head;
        while cursor != 0 {
            count += 1;
            tail = self.geometry.index(cursor);
            let next = meta.link(tail);
            cursor = if next == NONE {
                0
            } else {
                self.geometry.object(self.geometry.base(cursor), next)
            };
        }
        let new = loop {
            let old = meta.load();
            if tail != NONE {
                meta.set_link(tail, old.head);
            }
            let new = SlabState {
                head: if head == 0 {
                    old.head
                } else {
                    self.geometry.index(head)
                },
                inuse: old.inuse - count,
                frozen: false,
            };
            if meta.update(old, new) {
                break new;
            }
            slot.stats.add(Stat::CmpxchgDoubleFail, 1);
        };
        if new.head == NONE {
            slot.stats.add(Stat::DeactivateFull, 1);
            return;
        }
        let mut node = lock(&self.nodes[meta.node.load(Ordering::Relaxed)]);
        if new.inuse == 0 && node.nr_partial >= self.min_partial {
            drop(node);
            slot.stats.add(Stat::DeactivateEmpty, 1);
            self.discard(meta);
        } else {
            node.add_tail(meta);
            slot.stats.add(Stat::DeactivateToTail, 1);
        }
    }
}
