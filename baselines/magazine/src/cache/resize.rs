//! The operations that visit every CPU and the depot: magazine resizing, purging (shrink)
//! and statistics.

use std::ptr::NonNull;
#[cfg(test)]
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use object_alloc::AllocStats;

use super::magazine::{as_objects, next_rounds};
use super::stat::Stat;
use super::{Cache, Depot, lock};

impl Cache {
    /// `umem_cache_magazine_resize`: with every CPU cache and the depot locked, empties all
    /// magazines to the slabs and moves every CPU to the next magazine size.
    pub(super) fn resize_if_due(&self) {
        if !self.resize_pending.load(Ordering::Relaxed)
            || !self.resize_pending.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let mut objects = Vec::new();
        {
            let mut cpus: Vec<_> = self.cpus.iter().map(|cpu| self.lock_cpu(cpu)).collect();
            let mut depot = lock(&self.depot);
            let Some(rounds) = next_rounds(self.magsize.load(Ordering::Relaxed), self.chunk) else {
                return;
            };
            for mags in &mut cpus {
                mags.purge(&mut objects);
                mags.magsize = rounds;
            }
            Self::purge_depot(&mut depot, &mut objects);
            depot.resizes += 1;
            self.magsize.store(rounds, Ordering::Relaxed);
        }
        // SAFETY: rounds are free objects of the pool, each held once.
        unsafe { self.pool.free_bulk(&objects) };
    }

    fn purge_depot(depot: &mut Depot, into: &mut Vec<NonNull<u8>>) {
        for mag in depot.full.drain(..) {
            into.extend_from_slice(as_objects(&mag));
        }
        depot.empty.clear();
    }

    /// `umem_cache_magazine_purge` and a slab shrink.
    pub(crate) fn shrink(&self) {
        let mut objects = Vec::new();
        for cpu in self.cpus.iter() {
            self.lock_cpu(cpu).purge(&mut objects);
        }
        Self::purge_depot(&mut lock(&self.depot), &mut objects);
        // SAFETY: rounds are free objects of the pool, each held once.
        unsafe { self.pool.free_bulk(&objects) };
        self.pool.shrink();
    }

    pub(crate) fn stats(&self) -> AllocStats {
        let mut stats = AllocStats::default();
        let mut totals = [0u64; Stat::ALL.len()];
        let mut cached = 0u64;
        for cpu in self.cpus.iter() {
            let mags = self.lock_cpu(cpu);
            for (total, value) in totals.iter_mut().zip(mags.stats) {
                *total += value;
            }
            cached += (mags.loaded.len() + mags.previous.len()) as u64;
        }
        {
            let depot = lock(&self.depot);
            cached += depot.full.iter().map(|m| m.len() as u64).sum::<u64>();
            stats.add("depot_full", depot.full.len() as u64);
            stats.add("depot_empty", depot.empty.len() as u64);
            stats.add("depot_full_high_water", depot.full_high_water as u64);
            stats.add("depot_empty_high_water", depot.empty_high_water as u64);
            stats.add("depot_contended", depot.contention);
            stats.add("magazine_resize", depot.resizes);
        }
        for &stat in Stat::ALL {
            stats.add(stat.name(), totals[stat as usize]);
        }
        stats.add("magazine_size", self.magsize.load(Ordering::Relaxed) as u64);
        let slabs = self.pool.stats();
        stats.add("alloc_slab", slabs.alloc_slab);
        stats.add("free_slab", slabs.free_slab);
        stats.live_objects = Some(slabs.objects_in_use.saturating_sub(cached));
        stats.cached_objects = Some(cached);
        stats.slab_bytes = Some(slabs.slab_bytes);
        stats.slabs = Some(slabs.slabs);
        stats.partial_slabs = Some(slabs.partial_slabs);
        stats
    }

    /// Contended depot acquisitions so far (readable while the depot is locked).
    #[cfg(test)]
    pub(crate) fn depot_contended(&self) -> u64 {
        self.depot_contended.load(Ordering::Relaxed)
    }

    /// Holds the depot lock (tests force contention with it).
    #[cfg(test)]
    pub(crate) fn hold_depot(&self) -> MutexGuard<'_, impl Sized> {
        lock(&self.depot)
    }
}
