//! Run-time changes of the sheaf capacity and the barn limits (C-CONF-4), without a global
//! stop.
//!
//! Every sheaf carries its own capacity in its header, and every path reads it from there
//! (the restartable sequences included), so a change needs nobody to stop. A change stores
//! the new capacity, which sheaves made from then on get; the sheaves of an old capacity,
//! *stale* ones, are dealt with at the slow paths that meet them:
//!
//! - an empty stale sheaf is freed where a slow path would keep or reuse it (an empty CPU
//!   `main` being refilled, an empty sheaf stashed in or taken from the barn), so refills
//!   from the barn or the slabs fill sheaves of the new capacity;
//! - a non-empty stale sheaf keeps serving (allocations empty it, frees fill it to its own
//!   capacity, a full one is traded at the barn like any full sheaf) until it runs empty;
//!   nothing is flushed to make it go away;
//! - a prefill that takes a stale sheaf (the CPU's spare, a barn sheaf) moves its objects
//!   into a sheaf of the new capacity (of at least the request, if that is larger), and a
//!   returned stale sheaf is resized the same way: objects beyond the new capacity are
//!   flushed (`resize_flushed`). A sheaf out on prefill keeps its capacity until it is
//!   returned, so its guarantee holds across any change.
//!
//! New barn limits hold from the moment they are set: the barn hands back the sheaves beyond
//! them, which are flushed and freed here.
//!
//! With [`CacheConfig::resize_by_flush`](object_alloc::CacheConfig::resize_by_flush) a change
//! instead flushes every CPU slot's `main` and `spare` and every barn to the slabs after the
//! cache's deferred frees have completed: the flush-everything way, for comparison. A slot
//! it cannot reach (held by an operation beyond the visit's patience, see
//! `SlotTable::for_each_reachable`) keeps its sheaves, which are then stale and dealt with as
//! above; nothing needs more, since every path already meets stale sheaves safely.
//!
//! Capacities are told apart by `max_capacity`, the largest the cache has had: a sheaf of a
//! capacity other than the current one, up to that, is stale; above it, oversize.

use std::sync::atomic::Ordering;

use object_alloc::{ChangeReport, ConfigError, LimitChange};

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{REACH_PATIENCE, SlotStrategy};
use crate::stats::{Stat, Tally};

impl<S: SlotStrategy> CacheCore<S> {
    /// Whether `sheaf` is a sheaf of a capacity the cache had before a run-time change.
    ///
    /// Read without ordering against a concurrent change: a sheaf of a capacity set a moment
    /// ago may then look oversize (a return flushes it instead of keeping it) or current (it
    /// is kept until a later slow path sees it); neither touches a promise.
    #[inline]
    pub(super) fn is_stale(&self, sheaf: &OwnedSheaf) -> bool {
        let capacity = sheaf.capacity();
        capacity != self.capacity()
            && !sheaf.is_none()
            && capacity <= self.max_capacity.load(Ordering::Relaxed)
    }

    /// An empty sheaf a slow path is about to use: itself, or a new one of the current
    /// capacity in place of a stale one (which is freed).
    pub(super) fn current_empty(&self, sheaf: OwnedSheaf, tally: Tally<'_>) -> OwnedSheaf {
        if !self.is_stale(&sheaf) {
            return sheaf;
        }
        self.retire_empty(sheaf, tally);
        self.new_sheaf(tally)
    }

    /// Frees an empty stale sheaf.
    pub(super) fn retire_empty(&self, sheaf: OwnedSheaf, tally: Tally<'_>) {
        debug_assert!(sheaf.is_empty());
        self.resize_counts.retired();
        self.free_sheaf(sheaf, tally);
    }

    /// Moves the objects of `sheaf` into a new sheaf of `capacity` and frees `sheaf`; objects
    /// beyond `capacity` go back to the slabs (queued when `held`: the caller holds a CPU
    /// slot and releases queued slabs after it). Returns the new sheaf and how many objects
    /// were flushed.
    pub(super) fn resize_sheaf(
        &self,
        mut sheaf: OwnedSheaf,
        capacity: usize,
        held: bool,
        tally: Tally<'_>,
    ) -> (OwnedSheaf, usize) {
        tally.add(Stat::SheafAlloc, 1);
        let mut resized = OwnedSheaf::new(capacity);
        // From the bottom up would keep the order; the top is as good for free objects.
        sheaf.move_to(&mut resized, usize::MAX);
        let flushed = sheaf.size();
        if flushed > 0 {
            self.resize_counts.flushed(flushed as u64);
            if held {
                self.flush_held(&mut sheaf, tally);
            } else {
                self.flush(&mut sheaf, tally);
            }
        }
        self.resize_counts.retired();
        self.free_sheaf(sheaf, tally);
        (resized, flushed)
    }

    /// Applies `change` (validated by the caller); with `resize_by_flush` the caller has
    /// waited for the deferred frees and calls [`CacheCore::flush_everything`] next. Returns
    /// the objects flushed because of lowered barn limits.
    pub(crate) fn apply_change(&self, change: &LimitChange) -> Result<u64, ConfigError> {
        if !self.has_sheaves
            && let Some((field, value)) = change.first_field()
        {
            return Err(ConfigError::new(
                field,
                value,
                "a cache created with sheaf_capacity 0 has no sheaves to change",
            ));
        }
        if let Some(capacity) = change.sheaf_capacity {
            // The maximum first: a sheaf made with the new capacity is never taken for
            // oversize.
            self.max_capacity.fetch_max(capacity, Ordering::Relaxed);
            self.capacity.store(capacity, Ordering::Relaxed);
        }
        let mut flushed = 0;
        if change.barn_max_full.is_some() || change.barn_max_empty.is_some() {
            let tally = Tally::shared(&self.counters);
            for barn in self.barns.iter() {
                let (full, empty) = barn.limits();
                let beyond = barn.set_limits(
                    change.barn_max_full.unwrap_or(full),
                    change.barn_max_empty.unwrap_or(empty),
                );
                for sheaf in beyond {
                    flushed += sheaf.size() as u64;
                    self.discard(sheaf, tally);
                }
            }
            self.resize_counts.flushed(flushed);
        }
        Ok(flushed)
    }

    /// The flush-everything way: every reachable CPU slot's `main` and `spare`, and every
    /// barn, to the slabs. Returns the objects flushed; an unreached slot's sheaves are not
    /// among them and stay in it, stale (module docs).
    pub(crate) fn flush_everything(&self) -> u64 {
        let tally = Tally::shared(&self.counters);
        let mut flushed = 0u64;
        self.slots
            .for_each_reachable(REACH_PATIENCE, |sheaves, _, _| {
                let main = std::mem::replace(&mut sheaves.main, OwnedSheaf::none());
                flushed += main.size() as u64;
                self.discard_held(main, tally);
                if let Some(spare) = sheaves.spare.take() {
                    flushed += spare.size() as u64;
                    self.discard_held(spare, tally);
                }
            });
        for barn in self.barns.iter() {
            for sheaf in barn.drain() {
                flushed += sheaf.size() as u64;
                self.discard(sheaf, tally);
            }
        }
        self.pool.release_queued();
        self.resize_counts.flushed(flushed);
        flushed
    }

    /// Whether run-time changes flush every sheaf first.
    pub(crate) fn resize_by_flush(&self) -> bool {
        self.resize_by_flush
    }

    /// Serialises run-time changes.
    pub(crate) fn lock_resizing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.resizing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first barn's limits (every barn has the same).
    pub(crate) fn barn_limits(&self) -> (usize, usize) {
        self.barns[0].limits()
    }
}

/// A change's report from the objects flushed.
pub(crate) fn change_report(flushed_objects: u64) -> ChangeReport {
    ChangeReport { flushed_objects }
}
