//! The cache proper: CPU slots, per-CPU and per-node partial lists, and every path between
//! them. The crate documentation explains the protocol; comments here say which step of it a
//! line is.

use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::CachePadded;
use object_alloc::{AllocError, AllocFlags, AllocStats, CacheConfig, ConfigError, PageSource};
use slab::SlabLayout;

use crate::meta::{Geometry, MetaPool, NONE, SlabMeta, SlabState};
use crate::pair::FreelistTid;
use crate::stats::{Stat, StatRow};
use slab::cpu::{self, CpuSource};

/// The kernel's `MIN_PARTIAL` and `MAX_PARTIAL`: bounds of the empty slabs a node keeps.
const MIN_PARTIAL: usize = 5;
const MAX_PARTIAL: usize = 10;

/// One CPU's state. Padded to its own cache lines (`CachePadded`: 128 bytes on x86-64, where
/// the adjacent-line prefetcher pairs lines) because other CPUs read it (migrated threads,
/// `stats`, `shrink`) and must not drag the owner's hot line around on every such read.
#[derive(Debug)]
pub(crate) struct CpuSlot {
    /// The CPU free list: objects of `slab` this CPU may hand out, and the transaction id.
    pub(crate) pair: FreelistTid,
    /// The CPU slab (`kmem_cache_cpu.slab`), null when the CPU has none. Changes only under
    /// `partial`'s lock, and only as the protocol says: set to null *before* the tid bump
    /// that detaches the free list, set to a slab *after* the tid bump that attaches one.
    pub(crate) slab: AtomicPtr<SlabMeta>,
    /// The node this CPU allocates slabs on.
    node: usize,
    /// The per-CPU partial list. Its lock is also the slow-path lock of this CPU (the
    /// kernel's `local_lock`): whoever changes `slab` holds it.
    partial: Mutex<CpuPartial>,
    pub(crate) stats: StatRow,
}

/// Slabs with free objects reserved for one CPU, linked through `SlabMeta::next`.
#[derive(Debug)]
struct CpuPartial {
    head: *const SlabMeta,
    count: usize,
}

// SAFETY: the pointers are to `SlabMeta`s, which are atomics only and outlive the cache's
// lists; the list itself is only reached through its mutex.
unsafe impl Send for CpuPartial {}

impl CpuPartial {
    fn push(&mut self, meta: &SlabMeta) {
        meta.next.store(self.head.cast_mut(), Ordering::Relaxed);
        self.head = meta;
        self.count += 1;
    }

    fn pop(&mut self) -> Option<*const SlabMeta> {
        if self.head.is_null() {
            return None;
        }
        let meta = self.head;
        // SAFETY: slabs on the list have live, type-stable metadata.
        self.head = unsafe { &*meta }.next.load(Ordering::Relaxed);
        self.count -= 1;
        Some(meta)
    }

    fn take(&mut self) -> *const SlabMeta {
        self.count = 0;
        std::mem::replace(&mut self.head, ptr::null())
    }
}

/// A node's partial slabs: a doubly linked list through `SlabMeta::{prev, next}`.
#[derive(Debug)]
struct NodePartial {
    head: *const SlabMeta,
    tail: *const SlabMeta,
    nr_partial: usize,
}

// SAFETY: as for `CpuPartial`.
unsafe impl Send for NodePartial {}

impl NodePartial {
    fn add_tail(&mut self, meta: &SlabMeta) {
        meta.next.store(ptr::null_mut(), Ordering::Relaxed);
        meta.prev.store(self.tail.cast_mut(), Ordering::Relaxed);
        if self.tail.is_null() {
            self.head = meta;
        } else {
            // SAFETY: the tail is a listed slab with live metadata.
            unsafe { &*self.tail }
                .next
                .store(ptr::from_ref(meta).cast_mut(), Ordering::Relaxed);
        }
        self.tail = meta;
        meta.on_node_partial.store(true, Ordering::Relaxed);
        self.nr_partial += 1;
    }

    fn remove(&mut self, meta: &SlabMeta) {
        debug_assert!(meta.on_node_partial.load(Ordering::Relaxed));
        let prev = meta.prev.load(Ordering::Relaxed);
        let next = meta.next.load(Ordering::Relaxed);
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: a listed neighbour with live metadata.
            unsafe { &*prev }.next.store(next, Ordering::Relaxed);
        }
        if next.is_null() {
            self.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { &*next }.prev.store(prev, Ordering::Relaxed);
        }
        meta.on_node_partial.store(false, Ordering::Relaxed);
        self.nr_partial -= 1;
    }

    fn pop_front(&mut self) -> Option<*const SlabMeta> {
        let head = self.head;
        if head.is_null() {
            return None;
        }
        // SAFETY: a listed slab with live metadata.
        self.remove(unsafe { &*head });
        Some(head)
    }
}

/// A CPU slab taken out of its slot by the slow path: the slab and the CPU free list.
#[derive(Debug)]
pub(crate) struct Detached {
    slab: *const SlabMeta,
    head: usize,
}

/// Outcome of one fast-path attempt.
pub(crate) enum Attempt {
    /// The operation completed (for an allocation: this object).
    Done(usize),
    /// The fast path does not apply (no CPU free list / not the CPU slab).
    Slow,
    /// The compare-and-swap lost a race; try again.
    Raced,
}

/// The cache.
#[derive(Debug)]
pub(crate) struct Cache {
    geometry: Geometry,
    object_size: usize,
    /// How this machine tells the calling thread's CPU (rseq or `sched_getcpu`).
    cpu_source: CpuSource,
    slots: Box<[CachePadded<CpuSlot>]>,
    nodes: Box<[CachePadded<Mutex<NodePartial>>]>,
    pages: Arc<dyn PageSource>,
    metas: MetaPool,
    /// Empty slabs a node keeps on its partial list (`kmem_cache.min_partial`).
    min_partial: usize,
    /// Slabs a per-CPU partial list holds before it is drained (`cpu_partial_slabs`).
    cpu_partial_slabs: usize,
    /// Slabs held from the page source.
    slabs: AtomicU64,
    poison: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a list lock was held leaves the list consistent (every list operation
    // is a handful of stores that cannot panic), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// Refuses an invalid `config` with an error naming the field.
    pub(crate) fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        let layout = SlabLayout::new(config)?;
        let geometry = Geometry::new(layout);
        let cpus = slab::possible_cpus().max(1);
        let nodes = slab::node_count(config.nodes).max(1);
        let slots = (0..cpus)
            .map(|cpu| {
                CachePadded::new(CpuSlot {
                    // The kernel starts each CPU's tid at its CPU number; any start works.
                    pair: FreelistTid::new(cpu as u64),
                    slab: AtomicPtr::new(ptr::null_mut()),
                    node: slab::node_of_cpu(config.nodes, cpu).min(nodes - 1),
                    partial: Mutex::new(CpuPartial {
                        head: ptr::null(),
                        count: 0,
                    }),
                    stats: StatRow::default(),
                })
            })
            .collect();
        let nodes = (0..nodes)
            .map(|_| {
                CachePadded::new(Mutex::new(NodePartial {
                    head: ptr::null(),
                    tail: ptr::null(),
                    nr_partial: 0,
                }))
            })
            .collect();
        // The kernel's `calculate_sizes`/`set_min_partial`: ilog2(size) / 2, within 5..=10.
        let min_partial =
            (layout.object_size.max(1).ilog2() as usize / 2).clamp(MIN_PARTIAL, MAX_PARTIAL);
        // The kernel's `set_cpu_partial`: a budget of objects by size, turned into slabs as
        // DIV_ROUND_UP(objects * 2, objects per slab).
        let cpu_partial_objects: usize = match layout.object_size {
            s if s >= slab::PAGE_SIZE => 2,
            s if s >= 1024 => 6,
            s if s >= 256 => 13,
            _ => 30,
        };
        let cpu_partial_slabs = (cpu_partial_objects * 2).div_ceil(layout.objects_per_slab);
        Ok(Self {
            geometry,
            object_size: config.object_size,
            slots,
            cpu_source: cpu::cpu_source(),
            nodes,
            pages: slab::page_source_for(config),
            metas: MetaPool::default(),
            min_partial,
            cpu_partial_slabs: cpu_partial_slabs.max(1),
            slabs: AtomicU64::new(0),
            poison: config.debug.poison,
        })
    }

    pub(crate) fn page_source(&self) -> &Arc<dyn PageSource> {
        &self.pages
    }

    pub(crate) fn layout(&self) -> &SlabLayout {
        &self.geometry.layout
    }

    /// The slot of the CPU the caller runs on now.
    #[inline]
    pub(crate) fn slot(&self) -> &CpuSlot {
        &self.slots[cpu::current_cpu_below(self.cpu_source, self.slots.len())]
    }

    /// The slot of CPU `cpu` (tests drive a chosen slot).
    #[cfg(test)]
    pub(crate) fn slot_of(&self, cpu: usize) -> &CpuSlot {
        &self.slots[cpu % self.slots.len()]
    }

    #[inline]
    fn meta<'a>(pointer: *const SlabMeta) -> &'a SlabMeta {
        // SAFETY: every `SlabMeta` pointer the cache handles comes from its `MetaPool`, which
        // frees none while the cache lives.
        unsafe { &*pointer }
    }

    #[inline]
    fn object_ptr(address: usize) -> NonNull<u8> {
        NonNull::new(ptr::with_exposed_provenance_mut(address))
            .expect("objects are never at address 0")
    }

    /// Allocates on a chosen slot, whatever CPU runs the caller (tests of migration).
    #[cfg(test)]
    pub(crate) fn alloc_on(&self, slot: &CpuSlot) -> usize {
        loop {
            match self.try_alloc_fast(slot) {
                Attempt::Done(object) => return object,
                Attempt::Raced => {}
                Attempt::Slow => return self.alloc_slow(slot, true).expect("memory"),
            }
        }
    }

    /// Frees on a chosen slot, whatever CPU runs the caller.
    ///
    /// # Safety
    ///
    /// As [`Cache::free`].
    #[cfg(test)]
    pub(crate) unsafe fn free_on(&self, slot: &CpuSlot, object: usize) {
        // SAFETY: a live object's slab is held.
        let meta = unsafe { self.geometry.meta_of(object) };
        loop {
            match self.try_free_fast(slot, meta, object, object) {
                Attempt::Done(_) => return,
                Attempt::Raced => {}
                Attempt::Slow => return self.slab_free(Self::meta(meta), object, object, 1),
            }
        }
    }

    /// The object after `object` on the free list that holds it, 0 for none.
    #[cfg(test)]
    pub(crate) fn next_free(&self, object: usize) -> usize {
        // SAFETY: tests call this on objects of held slabs.
        let meta = Self::meta(unsafe { self.geometry.meta_of(object) });
        match meta.link(self.geometry.index(object)) {
            NONE => 0,
            next => self.geometry.object(self.geometry.base(object), next),
        }
    }

    // ---------------------------------------------------------------------------------
    // Allocation.

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
    fn pop(&self, cpu_slab: &mut Detached) -> Option<usize> {
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
    fn refill(
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
    fn discard(&self, meta: &SlabMeta) {
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

    // ---------------------------------------------------------------------------------
    // Free.

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
    unsafe fn free_chain(&self, meta: *const SlabMeta, head: usize, tail: usize, count: u32) {
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
    fn put_partials(&self, mut list: *const SlabMeta) {
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
    fn deactivate(&self, slot: &CpuSlot, meta: &SlabMeta, head: usize) {
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

    // ---------------------------------------------------------------------------------
    // Bulk.

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

    // ---------------------------------------------------------------------------------
    // Shrink, statistics, checks.

    /// `kmem_cache_shrink`: flushes every CPU slab and per-CPU partial list, then releases
    /// every empty slab of every node.
    pub(crate) fn shrink(&self) {
        for slot in self.slots.iter() {
            let mut partial = lock(&slot.partial);
            let cpu_slab = self.detach(slot);
            if !cpu_slab.slab.is_null() {
                slot.stats.add(Stat::CpuslabFlush, 1);
                self.deactivate(slot, Self::meta(cpu_slab.slab), cpu_slab.head);
            }
            let list = partial.take();
            drop(partial);
            self.put_partials(list);
        }
        for node in self.nodes.iter() {
            let mut empty = Vec::new();
            let mut node = lock(node);
            let mut cursor = node.head;
            while !cursor.is_null() {
                let meta = Self::meta(cursor);
                cursor = meta.next.load(Ordering::Relaxed);
                if meta.load().inuse == 0 {
                    node.remove(meta);
                    empty.push(meta);
                }
            }
            drop(node);
            for meta in empty {
                self.discard(meta);
            }
        }
    }

    /// Gauges and counters. `live_objects` is exact at quiescent points: objects in use by
    /// the slabs' count, less the objects sitting on CPU free lists.
    pub(crate) fn stats(&self) -> AllocStats {
        let mut stats = AllocStats::default();
        for &stat in Stat::ALL {
            let total = self.slots.iter().map(|slot| slot.stats.get(stat)).sum();
            stats.add(stat.name(), total);
        }
        let mut in_slabs = 0u64;
        self.metas
            .for_each_bound(|meta| in_slabs += u64::from(meta.load().inuse));
        let mut on_cpu_lists = 0u64;
        for slot in self.slots.iter() {
            let _partial = lock(&slot.partial);
            let slab = slot.slab.load(Ordering::Acquire);
            let mut cursor = slot.pair.freelist();
            if slab.is_null() {
                continue;
            }
            let meta = Self::meta(slab);
            // Bounded: a list never holds more than a slab's objects.
            for _ in 0..self.geometry.objects() {
                if cursor == 0 {
                    break;
                }
                on_cpu_lists += 1;
                let next = meta.link(self.geometry.index(cursor));
                cursor = if next == NONE {
                    0
                } else {
                    self.geometry.object(self.geometry.base(cursor), next)
                };
            }
        }
        stats.live_objects = Some(in_slabs.saturating_sub(on_cpu_lists));
        // SLUB has no cache above its slabs: a CPU free list is the CPU slab's own objects.
        stats.cached_objects = Some(0);
        let slabs = self.slabs.load(Ordering::Relaxed);
        stats.slab_bytes = Some(slabs * self.geometry.layout.slab_bytes as u64);
        stats
    }

    /// Checks `inuse + |slab free list| == objects` for every slab, and that the listed
    /// slabs are unfrozen. Meant for quiescent points (tests); panics naming the slab.
    pub(crate) fn check_invariants(&self) {
        let objects = self.geometry.objects();
        self.metas.for_each_bound(|meta| {
            let state = meta.load();
            let base = meta.base.load(Ordering::Relaxed);
            let mut free = 0u32;
            let mut cursor = state.head;
            while cursor != NONE {
                free += 1;
                assert!(free <= objects, "slab {base:#x}: free list has a cycle");
                cursor = meta.link(cursor);
            }
            assert_eq!(
                state.inuse + free,
                objects,
                "slab {base:#x}: inuse {} + free {free} != objects {objects}",
                state.inuse
            );
            if meta.on_node_partial.load(Ordering::Relaxed) {
                assert!(!state.frozen, "slab {base:#x}: on a node list but frozen");
            }
        });
        for node in self.nodes.iter() {
            let node = lock(node);
            let mut count = 0;
            let mut cursor = node.head;
            while !cursor.is_null() {
                count += 1;
                cursor = Self::meta(cursor).next.load(Ordering::Relaxed);
            }
            assert_eq!(count, node.nr_partial, "node partial count is off");
        }
    }

    /// `SlabMeta`s ever created (type-stable metadata is kept for the cache's life).
    pub(crate) fn metadata_created(&self) -> usize {
        self.metas.created()
    }
}

/// A fork takes every CPU's partial lock (the CPU's slow-path lock, under which node locks and
/// the metadata pool are taken), then every node lock, then the metadata pool's, so that the
/// child finds every list whole. The CPU free lists change only by compare-exchange, which a
/// fork cannot split; objects other threads held are lost to the child.
impl slab::fork::AtFork for Cache {
    fn lock_all(&self, held: &mut slab::fork::Held) {
        for slot in self.slots.iter() {
            // SAFETY: the cache is registered from its creation to its drop.
            unsafe { held.hold(lock(&slot.partial)) };
        }
        for node in self.nodes.iter() {
            // SAFETY: as above.
            unsafe { held.hold(lock(node)) };
        }
        // SAFETY: as above.
        unsafe { self.metas.hold_for_fork(held) };
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // First: a fork being prepared may hold the locks (this waits for it to finish).
        slab::fork::unregister(self);
        // `kmem_cache_destroy`: every slab goes back, whatever it holds.
        let slab_bytes = self.geometry.layout.slab_bytes;
        let mut bases = Vec::new();
        self.metas
            .for_each_bound(|meta| bases.push(meta.base.swap(0, Ordering::AcqRel)));
        for base in bases {
            // SAFETY: each base is a chunk taken with `alloc_chunk(slab_bytes)` and not yet
            // freed; the cache is being dropped, so no object of it is used any more.
            unsafe { self.pages.free_chunk(Self::object_ptr(base), slab_bytes) };
        }
    }
}
