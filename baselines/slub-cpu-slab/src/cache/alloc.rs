//! Allocation: the lockless fast path and `___slab_alloc`, which refills the CPU slab from
//! the slab's own free list, the per-CPU partial list, the node's list or a new slab.

use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use object_alloc::{AllocError, AllocFlags};

use crate::meta::{NONE, SlabMeta, SlabState};
use crate::stats::Stat;

use super::lists::CpuPartial;
use super::{Attempt, Cache, CpuSlot, Detached, lock};

impl Cache {
    /// One attempt of the lockless fast path on `slot` (`slab_alloc_node`'s fast path).
    #[inline]
    pub(crate) fn try_alloc_fast(&self, slot: &CpuSlot) -> Attempt {
        // Order matters: tid first, then the list and the slab (see the crate docs).
        let tid = slot.pair.tid();
        let head = slot.pair.freelist();
        let slab = slot.slab.load(Ordering::Acquire);
        if head == 0 || slab.is_null() {
            return Attempt::Slow;
        }
        // The link may be stale (the slab may even be another by now): then the tid has
        // changed and the compare-and-swap below fails.
        let next = Self::meta(slab).link(self.geometry.index(head));
        let next = if next == NONE {
            0
        } else {
            self.geometry.object(self.geometry.base(head), next)
        };
        if slot.pair.compare_exchange(head, tid, next) {
            Attempt::Done(head)
        } else {
            Attempt::Raced
        }
    }

    #[inline]
    pub(crate) fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        let object = loop {
            let slot = self.slot();
            match self.try_alloc_fast(slot) {
                Attempt::Done(object) => {
                    slot.stats.add(Stat::AllocFastpath, 1);
                    break object;
                }
                Attempt::Raced => slot.stats.add(Stat::CmpxchgDoubleCpuFail, 1),
                Attempt::Slow => break self.alloc_slow(slot, flags.may_grow()).ok()?,
            }
        };
        let object = Self::object_ptr(object);
        if flags.zero() {
            // SAFETY: the object is `object_size` writable bytes now owned by the caller.
            unsafe { object.as_ptr().write_bytes(0, self.object_size) };
        }
        Some(object)
    }

    /// `___slab_alloc`: under the CPU's slow-path lock, take the CPU slab out of its slot,
    /// make sure it has a free object, take one, put the slab back.
    #[cold]
    pub(crate) fn alloc_slow(&self, slot: &CpuSlot, may_grow: bool) -> Result<usize, AllocError> {
        let mut partial = lock(&slot.partial);
        let mut cpu_slab = self.detach(slot);
        let result = self
            .refill(slot, &mut partial, &mut cpu_slab, may_grow)
            .map(|()| self.pop(&mut cpu_slab).expect("refill leaves an object"));
        self.attach(slot, cpu_slab);
        drop(partial);
        slot.stats.add(Stat::AllocSlowpath, 1);
        result
    }

    /// Takes the CPU slab and its free list out of `slot`. The caller holds the slot's lock.
    ///
    /// Step 1 hides the slab, so fast-path frees go to the slow path; step 2 takes the list
    /// with a tid bump, so every fast path that read the slot before fails its
    /// compare-and-swap. From then on no one else can change the slot until `attach`.
    pub(crate) fn detach(&self, slot: &CpuSlot) -> Detached {
        let slab = slot.slab.swap(ptr::null_mut(), Ordering::AcqRel);
        loop {
            let tid = slot.pair.tid();
            let head = slot.pair.freelist();
            if slot.pair.compare_exchange(head, tid, 0) {
                return Detached { slab, head };
            }
        }
    }

    /// Puts a detached CPU slab back: the list first (with a tid bump), then the slab.
    pub(crate) fn attach(&self, slot: &CpuSlot, cpu_slab: Detached) {
        debug_assert!(cpu_slab.head == 0 || !cpu_slab.slab.is_null());
        loop {
            let tid = slot.pair.tid();
            let head = slot.pair.freelist();
            // With the slab hidden no fast path can push, so the list is still empty.
            debug_assert_eq!(head, 0, "a CPU free list changed while detached");
            if slot.pair.compare_exchange(head, tid, cpu_slab.head) {
                break;
            }
        }
        slot.slab.store(cpu_slab.slab.cast_mut(), Ordering::Release);
    }

    /// Pops one object from a detached CPU free list.
    pub(super) fn pop(&self, cpu_slab: &mut Detached) -> Option<usize> {
        let object = cpu_slab.head;
        if object == 0 {
            return None;
        }
        let next = Self::meta(cpu_slab.slab).link(self.geometry.index(object));
        cpu_slab.head = if next == NONE {
            0
        } else {
            self.geometry.object(self.geometry.base(object), next)
        };
        Some(object)
    }

    /// Makes sure the detached CPU slab has at least one free object: from remote frees to
    /// the CPU slab, else a slab from the per-CPU partial list, else one from the node's
    /// partial list, else (if allowed) a new slab.
    pub(super) fn refill(
        &self,
        slot: &CpuSlot,
        partial: &mut CpuPartial,
        cpu_slab: &mut Detached,
        may_grow: bool,
    ) -> Result<(), AllocError> {
        while cpu_slab.head == 0 {
            if !cpu_slab.slab.is_null() {
                let meta = Self::meta(cpu_slab.slab);
                let head = self.get_freelist(slot, meta);
                if head != NONE {
                    cpu_slab.head = self
                        .geometry
                        .object(meta.base.load(Ordering::Relaxed), head);
                    slot.stats.add(Stat::AllocRefill, 1);
                    return Ok(());
                }
                // Full: unfrozen by `get_freelist`; a later free puts it on a partial list.
                cpu_slab.slab = ptr::null();
                slot.stats.add(Stat::DeactivateBypass, 1);
            }
            let meta = if let Some(meta) = partial.pop() {
                slot.stats.add(Stat::CpuPartialAlloc, 1);
                meta
            } else if let Some(meta) = self.get_partial_node(slot, partial) {
                slot.stats.add(Stat::AllocFromPartial, 1);
                meta
            } else if !may_grow {
                return Err(AllocError::WouldGrow);
            } else {
                let (meta, head) = self.new_slab(slot.node)?;
                slot.stats.add(Stat::AllocSlab, 1);
                *cpu_slab = Detached { slab: meta, head };
                return Ok(());
            };
            let meta_ref = Self::meta(meta);
            let head = self.freeze(slot, meta_ref);
            cpu_slab.slab = meta;
            if head != NONE {
                cpu_slab.head = self
                    .geometry
                    .object(meta_ref.base.load(Ordering::Relaxed), head);
            }
        }
        Ok(())
    }

    /// `get_freelist`: takes the CPU slab's own free list (remote frees); if it is empty the
    /// slab is unfrozen, so that the next free to it puts it on a partial list.
    fn get_freelist(&self, slot: &CpuSlot, meta: &SlabMeta) -> u32 {
        loop {
            let old = meta.load();
            let new = SlabState {
                head: NONE,
                inuse: self.geometry.objects(),
                frozen: old.head != NONE,
            };
            if meta.update(old, new) {
                return old.head;
            }
            slot.stats.add(Stat::CmpxchgDoubleFail, 1);
        }
    }

    /// `freeze_slab`: makes a partial slab a CPU slab, taking its whole free list.
    fn freeze(&self, slot: &CpuSlot, meta: &SlabMeta) -> u32 {
        loop {
            let old = meta.load();
            debug_assert!(!old.frozen, "froze a frozen slab");
            let new = SlabState {
                head: NONE,
                inuse: self.geometry.objects(),
                frozen: true,
            };
            if meta.update(old, new) {
                return old.head;
            }
            slot.stats.add(Stat::CmpxchgDoubleFail, 1);
        }
    }

    /// `get_partial_node`: the first slab of the node's partial list for the CPU slab, and a
    /// few more for the per-CPU partial list.
    fn get_partial_node(
        &self,
        slot: &CpuSlot,
        partial: &mut CpuPartial,
    ) -> Option<*const SlabMeta> {
        let mut node = lock(&self.nodes[slot.node]);
        let first = node.pop_front()?;
        let mut moved = 0;
        while moved <= self.cpu_partial_slabs / 2 {
            let Some(meta) = node.pop_front() else { break };
            partial.push(Self::meta(meta));
            moved += 1;
        }
        drop(node);
        slot.stats.add(Stat::CpuPartialNode, moved as u64);
        Some(first)
    }

    /// A new slab from the page source, frozen for the caller, with every object on the
    /// returned chain.
    fn new_slab(&self, node: usize) -> Result<(*const SlabMeta, usize), AllocError> {
        let layout = &self.geometry.layout;
        let chunk = self
            .pages
            .alloc_chunk(layout.slab_bytes)
            .map_err(|_| AllocError::OutOfMemory)?;
        let base = chunk.as_ptr().expose_provenance();
        let objects = self.geometry.objects();
        let pointer = self.metas.get(objects);
        let meta = Self::meta(pointer);
        for (index, link) in meta.links.iter().enumerate() {
            let next = index as u32 + 1;
            link.store(if next < objects { next } else { NONE }, Ordering::Relaxed);
        }
        meta.node.store(node, Ordering::Relaxed);
        meta.prev.store(ptr::null_mut(), Ordering::Relaxed);
        meta.next.store(ptr::null_mut(), Ordering::Relaxed);
        meta.on_node_partial.store(false, Ordering::Relaxed);
        meta.state.store(
            SlabState {
                head: NONE,
                inuse: objects,
                frozen: true,
            }
            .pack(),
            Ordering::Release,
        );
        // SAFETY: the chunk is `slab_bytes >= PAGE_SIZE` bytes, aligned to that, and ours;
        // the first `first_offset >= 8` bytes are the header, where the metadata pointer goes.
        unsafe { chunk.as_ptr().cast::<*const SlabMeta>().write(pointer) };
        meta.base.store(base, Ordering::Release);
        self.slabs.fetch_add(1, Ordering::Relaxed);
        Ok((pointer, self.geometry.object(base, 0)))
    }

    /// Gives an empty, unlisted, unfrozen slab back to the page source.
    pub(super) fn discard(&self, meta: &SlabMeta) {
        debug_assert_eq!(meta.load().inuse, 0, "discarded a slab with objects in use");
        let base = meta.base.swap(0, Ordering::AcqRel);
        let chunk = Self::object_ptr(base);
        // SAFETY: `base` is a chunk this cache took with `alloc_chunk(slab_bytes)` and has
        // not freed; the slab is empty and on no list, so nothing reaches its memory again
        // (fast paths read links from the metadata, which stays).
        unsafe {
            self.pages
                .free_chunk(chunk, self.geometry.layout.slab_bytes)
        };
        self.metas.put(meta);
        self.slabs.fetch_sub(1, Ordering::Relaxed);
        self.slot().stats.add(Stat::FreeSlab, 1);
    }
}
