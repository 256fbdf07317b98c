//! The cache core ([`CacheCore`]): the state a cache shares between threads, and every path
//! over it, CPU-local sheaves over the barn over the slabs. One file per path:
//!
//! - `alloc`: alloc and free of one object (the fast paths and their refill and overflow);
//! - `bulk`: bulk alloc and free;
//! - `prefill`: the prefilled-sheaf handle and its paths (prefill, refill, return);
//! - `deferred`: deferred frees (`rcu_free` sheaves, grace periods, the hand-over thread);
//! - `quiescent`: orphan adoption and shrink;
//! - `accounting`: live objects, the stats snapshot, and the accounting equation;
//! - `resize`: run-time changes of the capacity and the barn limits (stale sheaves);
//! - `sheaves`: sheaf bookkeeping every path uses (new, free, flush, stash, refill);
//! - `fork`: the locks a `fork` takes and the child's repair.
//!
//! The alloc, free, prefill, return and deferred-free fast paths use the slot as a `FastSlot`
//! (they call out to nothing); every slow path holds it first (see `slot`).

use std::mem;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use object_alloc::{CacheConfig, ConfigError};
use slab::SlabPool;

use crate::barn::Barn;
use crate::sheaf::OwnedSheaf;
use crate::slot::{SlotStrategy, SlotTable};
use crate::stats::{Counters, NowaitCounters, ResizeCounters, Tally};

mod accounting;
mod alloc;
mod bulk;
mod deferred;
mod fork;
mod prefill;
mod quiescent;
mod resize;
mod sheaves;
mod transit;

pub use prefill::PrefilledSheaf;
pub(crate) use resize::change_report;

/// The cache core: everything a [`Cache`](crate::Cache) shares between threads and with its
/// deferred callbacks (slots, barns, slabs, counters), and every allocation path over them.
pub(crate) struct CacheCore<S: SlotStrategy> {
    slots: SlotTable<S>,
    barns: Box<[Barn]>,
    pool: SlabPool,
    /// Objects per sheaf for new sheaves; changed at run time by `change_limits` (see
    /// `resize`). Each sheaf keeps the capacity it was made with.
    capacity: AtomicUsize,
    /// The largest capacity the cache has had: a sheaf of another capacity up to this one is
    /// a *stale* sheaf of the cache (retired or resized at a slow path); above it, oversize.
    max_capacity: AtomicUsize,
    /// Whether the cache has sheaves (a capacity above 0); fixed at creation.
    has_sheaves: bool,
    /// Run-time changes flush every sheaf first (`CacheConfig::resize_by_flush`).
    resize_by_flush: bool,
    /// Serialises run-time changes.
    resizing: Mutex<()>,
    object_size: usize,
    batching: bool,
    /// `NOWAIT` allocations may not refill `main` (`CacheConfig::nowait_no_refill`).
    nowait_no_refill: bool,
    /// Prefill top-ups go through the barn's partial sheaf (`CacheConfig::barn_partial`).
    barn_partial: bool,
    /// Events counted without a slot (slow paths and deferred callbacks).
    counters: Counters,
    /// Where `NOWAIT` allocations were served beyond `main` (counted only here).
    nowait: NowaitCounters,
    /// What run-time changes retired and flushed (counted only here).
    resize_counts: ResizeCounters,
    /// What a `fork` left this process (in a child: the objects lost with the other threads).
    fork: fork::ForkState,
    /// Adoptions whose sheaves are on their way to the slabs (see `transit`).
    transit: transit::InTransit,
    /// The stamp read right before this cache's last grace-period request for its sealed
    /// sheaves (`deferred`): while it has not expired, that request is still pending, and a
    /// deferring thread that seals a sheaf asks for no other.
    requested: std::sync::atomic::AtomicU64,
}

impl<S: SlotStrategy> CacheCore<S> {
    /// Builds the layers for `config`, refusing an invalid one; `id` is unique among caches.
    pub(crate) fn new(config: &CacheConfig, id: u64) -> Result<Self, ConfigError> {
        let pool = SlabPool::new(config)?;
        let nodes = pool.nodes().max(1);
        let cpu_nodes: Box<[usize]> = (0..slab::possible_cpus().max(1))
            .map(|cpu| slab::node_of_cpu(config.nodes, cpu) % nodes)
            .collect();
        let barns = (0..nodes)
            .map(|_| {
                Barn::with_hold(
                    config.barn_max_full,
                    config.barn_max_empty,
                    config.rcu_hold_ticks as usize,
                )
            })
            .collect();
        Ok(Self {
            slots: SlotTable::new(id, cpu_nodes),
            barns,
            pool,
            capacity: AtomicUsize::new(config.effective_sheaf_capacity()),
            max_capacity: AtomicUsize::new(config.effective_sheaf_capacity()),
            has_sheaves: config.effective_sheaf_capacity() > 0,
            resize_by_flush: config.resize_by_flush,
            resizing: Mutex::new(()),
            object_size: config.object_size,
            batching: config.deferred_batching,
            nowait_no_refill: config.nowait_no_refill,
            barn_partial: config.barn_partial,
            counters: Counters::default(),
            nowait: NowaitCounters::default(),
            resize_counts: ResizeCounters::default(),
            fork: fork::ForkState::default(),
            transit: transit::InTransit::default(),
            requested: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Objects per sheaf for sheaves made or refilled from now on (0: no sheaves).
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Bytes of every object.
    #[inline]
    pub(crate) fn object_size(&self) -> usize {
        self.object_size
    }

    /// The slab layer.
    pub(crate) fn pool(&self) -> &SlabPool {
        &self.pool
    }

    /// Whether deferred frees are batched in sheaves.
    pub(crate) fn batching(&self) -> bool {
        self.batching && self.has_sheaves
    }

    /// The shared counter block.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The slots (for `Cache::new`'s copy of the per-CPU sequences, and the slot module's
    /// tests).
    pub(crate) fn slots(&self) -> &SlotTable<S> {
        &self.slots
    }

    #[inline]
    fn zero(&self, object: NonNull<u8>) {
        // SAFETY: every object spans `object_size` writable bytes, and it belongs to the
        // caller that is being handed it.
        unsafe { object.as_ptr().write_bytes(0, self.object_size) };
    }
}

impl<S: SlotStrategy> Drop for CacheCore<S> {
    fn drop(&mut self) {
        // First: a fork being prepared may be using the locks (this waits for it to finish).
        #[cfg(not(loom))]
        slab::fork::unregister(self);
        let tally = Tally::shared(&self.counters);
        let mut left = Vec::new();
        // SAFETY: `&mut self`: no thread can be inside an operation on this cache.
        unsafe {
            self.slots.for_each_exclusive(|sheaves| {
                left.push(mem::replace(&mut sheaves.main, OwnedSheaf::none()));
                left.extend(sheaves.spare.take());
            });
            // Empty by now (the cache's drop handed them to a grace period), unless a fork
            // left some behind.
            left.extend(self.slots.take_all_chains());
        }
        for barn in self.barns.iter() {
            left.extend(barn.drain());
        }
        for sheaf in left {
            self.discard(sheaf, tally);
        }
        self.pool.shrink();
    }
}

impl<S: SlotStrategy> std::fmt::Debug for CacheCore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCore")
            .field("slots", &self.slots)
            .field("barns", &self.barns)
            .field("pool", &self.pool)
            .field("capacity", &self.capacity())
            .field("object_size", &self.object_size)
            .finish_non_exhaustive()
    }
}
