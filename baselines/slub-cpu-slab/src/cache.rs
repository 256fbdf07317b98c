//! The cache proper: CPU slots, per-CPU and per-node partial lists, and every path between
//! them. The crate documentation explains the protocol; comments here say which step of it a
//! line is.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::CachePadded;
use object_alloc::{CacheConfig, ConfigError, PageSource};
use slab::SlabLayout;

#[cfg(test)]
use crate::meta::NONE;
use crate::meta::{Geometry, MetaPool, SlabMeta};
use crate::pair::FreelistTid;
use crate::stats::StatRow;
use slab::cpu::{self, CpuSource};

mod alloc;
mod bulk;
mod free;
mod lists;
mod shrink;

use lists::{CpuPartial, NodePartial};

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
