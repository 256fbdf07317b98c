//! The operations that visit every list: shrink, statistics and the invariant check.

use std::sync::atomic::Ordering;

use object_alloc::AllocStats;

use crate::meta::NONE;
use crate::stats::Stat;

use super::{Cache, lock};

impl Cache {
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
        let mut partial = 0u64;
        let objects = self.geometry.objects();
        self.metas.for_each_bound(|meta| {
            let inuse = meta.load().inuse;
            in_slabs += u64::from(inuse);
            partial += u64::from(inuse > 0 && inuse < objects);
        });
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
        stats.slabs = Some(slabs);
        // By the slabs' `inuse`: objects on a CPU free list count as used, as objects cached
        // in sheaves or magazines do in the other designs' figures.
        stats.partial_slabs = Some(partial);
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
