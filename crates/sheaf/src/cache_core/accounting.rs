//! Accounting: live objects from the counters, the `stats()` snapshot, and the cache's
//! accounting equation, which is stated here and nowhere else.
//!
//! # The accounting equation
//!
//! At every quiescent point (no operation in flight, no deferred callback pending):
//!
//! ```text
//! objects_in_use == live + in_slot_sheaves + in_barn + lost_at_fork
//! ```
//!
//! - `objects_in_use`: what the slabs count as handed out (`SlabStats::objects_in_use`);
//! - `live`: the live-object gauge computed from the counters (module `stats` defines it):
//!   objects handed out, reserved in outstanding prefilled sheaves, or deferred and not yet
//!   past their grace period (those in `rcu_free` sheaves included);
//! - `in_slot_sheaves`: objects in the slots' `main` and `spare` sheaves;
//! - `in_barn`: objects in the barns' full sheaves;
//! - `lost_at_fork`: 0, except in a child process, where it counts the objects lost with the
//!   other threads at the fork (module `fork` measures it).
//!
//! [`CacheCore::check_accounting`] verifies it by walking every sheaf
//! ([`Cache::check_invariants`](crate::Cache::check_invariants)); tests call it after every
//! step.

use std::time::Duration;

use object_alloc::AllocStats;

use super::CacheCore;
use crate::slot::{REACH_PATIENCE, SlotStrategy};
use crate::stats::{NowaitPath, Stat};

impl<S: SlotStrategy> CacheCore<S> {
    /// Sums every counter block, after moving the counts of the per-CPU restartable fast
    /// paths into them.
    fn totals(&self) -> [u64; Stat::ALL.len()] {
        self.slots.fold_fast_counts();
        self.slots
            .fold_chain_counts(|moved| self.count_moved(moved));
        let mut totals = [0; Stat::ALL.len()];
        self.slots.sum_counters(&self.counters, &mut totals);
        totals
    }

    /// Objects handed out (or reserved, or deferred) and not yet back.
    pub(crate) fn live_objects(&self) -> u64 {
        let t = self.totals();
        live_from(&t)
    }

    /// The snapshot reported by `stats()`.
    pub(crate) fn stats(&self) -> AllocStats {
        let totals = self.totals();
        let live = live_from(&totals);
        let slabs = self.pool.stats();
        let mut stats = AllocStats {
            live_objects: Some(live),
            cached_objects: Some(slabs.objects_in_use.saturating_sub(live)),
            slab_bytes: Some(slabs.slab_bytes),
            slabs: Some(slabs.slabs),
            partial_slabs: Some(slabs.partial_slabs),
            ..AllocStats::default()
        };
        for &stat in Stat::ALL {
            stats.add(stat.name(), totals[stat as usize]);
        }
        for &stat in NowaitPath::ALL {
            stats.add(stat.name(), self.nowait.get(stat));
        }
        for (name, value) in self.resize_counts.values() {
            stats.add(name, value);
        }
        let (mut full, mut empty) = (0, 0);
        let (mut get, mut get_fail, mut put, mut put_fail, mut contended) = (0, 0, 0, 0, 0);
        let mut partial_objects = 0;
        let (mut held_now, mut held, mut held_used, mut held_aged) = (0, 0, 0, 0);
        for barn in self.barns.iter() {
            let snapshot = barn.snapshot();
            full += snapshot.full as u64;
            empty += snapshot.empty as u64;
            get += snapshot.counters.get;
            get_fail += snapshot.counters.get_fail;
            put += snapshot.counters.put;
            put_fail += snapshot.counters.put_fail;
            contended += snapshot.contended;
            partial_objects += snapshot.counters.partial_objects;
            held_now += snapshot.held as u64;
            held += snapshot.counters.held;
            held_used += snapshot.counters.held_used;
            held_aged += snapshot.counters.held_aged;
        }
        stats.add("barn_get", get);
        stats.add("barn_get_fail", get_fail);
        stats.add("barn_put", put);
        stats.add("barn_put_fail", put_fail);
        stats.add("barn_lock_contended", contended);
        stats.add("barn_partial_objects", partial_objects);
        stats.add("barn_full_sheaves", full);
        stats.add("barn_empty_sheaves", empty);
        stats.add("barn_held_sheaves", held_now);
        stats.add("rcu_sheaf_held", held);
        stats.add("rcu_sheaf_held_used", held_used);
        stats.add("rcu_sheaf_held_aged", held_aged);
        stats.add("alloc_slab", slabs.alloc_slab);
        stats.add("free_slab", slabs.free_slab);
        stats.add("slabs", slabs.slabs);
        if !S::PER_CPU {
            stats.add("slot_drained", self.slots.drained());
        }
        stats
    }

    /// Checks the accounting equation (module docs) and the slabs' own invariants; panics
    /// with the figures when it does not hold. Meaningful at a quiescent point only. The slots
    /// of other live threads (per-thread) and the CPU slots (per-CPU) are counted when they
    /// can be taken, and other threads' adoptions in transit are waited for, within
    /// `REACH_PATIENCE` in all (see `SlotTable::for_each_reachable` and `transit`); if a slot
    /// cannot be taken (its thread runs, or holds the CPU slot inside an operation) or an
    /// adoption does not end (its thread is descheduled or blocked in the page source), the
    /// equation is not checked and `false` is returned. Sheaves that the hand-over thread
    /// ages out of the barn while the figures are read make the check read them again. In a
    /// child process, objects lost at the fork with the other threads are a term of their own
    /// (see `fork`).
    pub(crate) fn check_accounting(&self) -> bool {
        self.pool.check_invariants();
        // A thread whose exit is still running its thread-local destructors (a scoped
        // thread, once its closure returned) orphans its slot during the walk: adopted on the
        // next round, as long as the patience lasts.
        let start = std::time::Instant::now();
        loop {
            let in_slots = loop {
                self.adopt_orphans(false);
                // Another thread's adoption (descheduled, or blocked in the page source) holds
                // objects that are nowhere else: waited for within the patience, else not checked.
                if self
                    .transit
                    .wait_for_others(REACH_PATIENCE.saturating_sub(start.elapsed()))
                    > 0
                {
                    return false;
                }
                let mut in_slots = 0u64;
                let patience = REACH_PATIENCE.saturating_sub(start.elapsed());
                let unreached = self.slots.for_each_reachable(patience, |sheaves, _, _| {
                    in_slots += sheaves.main.size() as u64;
                    in_slots += sheaves.spare.as_ref().map_or(0, |s| s.size() as u64);
                    for sheaf in [&sheaves.main].into_iter().chain(sheaves.spare.as_ref()) {
                        assert!(
                            sheaf.is_none()
                                || sheaf.capacity() == self.capacity()
                                || self.is_stale(sheaf),
                            "slot sheaf {sheaf:?} has capacity other than {} (or an \
                                 earlier one)",
                            self.capacity()
                        );
                    }
                });
                if unreached > 0 {
                    return false;
                }
                // Slots orphaned, or sheaves handed over by threads that found a drain request,
                // during the walk; or adopted during it by another thread (the hand-over thread),
                // whose adoption is still in transit: not in the slot the walk skipped, not yet
                // in the slabs. An adoption counts itself in transit before it takes the orphans
                // (under the registry lock), so no orphans and none in transit, read in this
                // order, means every adoption begun so far has ended.
                if !self.slots.has_orphans() && self.transit.wait_for_others(Duration::ZERO) == 0 {
                    break in_slots;
                }
                if start.elapsed() >= REACH_PATIENCE {
                    return false;
                }
                std::thread::yield_now();
            };
            // Another thread may start moving cached sheaves to the slabs after the walk (the
            // hand-over thread ageing held sheaves out of the barn, at any time): the figures
            // below count only if no such move was in transit while they were read, else they
            // are read again, within the patience.
            let begun = self.transit.begun();
            if self.transit.wait_for_others(Duration::ZERO) == 0 {
                let mut in_barn = 0u64;
                for barn in self.barns.iter() {
                    in_barn += barn.snapshot().objects as u64;
                }
                // In a child forked from inside a page source the objects lost are unknown.
                let Some(lost) = self.fork.lost() else {
                    return false;
                };
                let live = self.live_objects();
                let in_use = self.pool.stats().objects_in_use;
                if self.transit.begun() == begun {
                    let expected = (live + in_slots + in_barn) as i64 + lost;
                    assert_eq!(
                        in_use as i64, expected,
                        "accounting: slabs count {in_use} objects in use, but live {live} + in \
                     slot sheaves {in_slots} + in barn {in_barn} + lost at a fork {lost} = \
                     {expected}",
                    );
                    return true;
                }
            }
            if start.elapsed() >= REACH_PATIENCE {
                return false;
            }
            std::thread::yield_now();
        }
    }
}

/// Live objects from summed counters (see the `stats` module docs).
fn live_from(t: &[u64; Stat::ALL.len()]) -> u64 {
    let out = t[Stat::AllocFastpath as usize]
        .wrapping_add(t[Stat::AllocSlowpath as usize])
        .wrapping_add(t[Stat::PrefillReserved as usize]);
    let back = t[Stat::FreeFastpath as usize]
        .wrapping_add(t[Stat::FreeSlowpath as usize])
        .wrapping_add(t[Stat::PrefillUnused as usize])
        .wrapping_add(t[Stat::RcuObjectsCompleted as usize]);
    // Relaxed reads of counters being written may briefly see more frees than allocations.
    out.saturating_sub(back)
}
