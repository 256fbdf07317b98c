//! Orphans and shrink: the paths that empty slots other than the caller's.
//!
//! Exited threads' per-thread slots (orphans) are adopted by the next slow path that looks
//! for objects, by `shrink`, `barrier` and the accounting check; `shrink` empties every slot it
//! can reach and the barns, then gives the empty slabs back.

use std::mem;
use std::time::Instant;

use super::CacheCore;
use crate::sheaf::OwnedSheaf;
use crate::slot::{REACH_PATIENCE, SlotSheaves, SlotStrategy};
use crate::stats::{Counters, Stat, Tally};

impl<S: SlotStrategy> CacheCore<S> {
    /// Per-thread: flushes the sheaves of exited threads' slots and folds their counters into
    /// the shared block; their deferred-free chains move to the orphan chain (`slot::chain`).
    /// With `held` the caller holds its own slot: slabs the flush empties beyond what the pool
    /// keeps are queued, for the caller to release once it has let the slot go.
    pub(crate) fn adopt_orphans(&self, held: bool) {
        // Flushed after the registry lock is released: a flush may release a slab, and the
        // page source may call into this cache (whose slot lookups and `stats` take the lock).
        let mut retired = Vec::new();
        let mut transit = None;
        self.slots.adopt_orphans(
            &mut |sheaves: &mut SlotSheaves, counters: &Counters, _node| {
                // Under the registry lock, before the slot leaves it.
                transit.get_or_insert_with(|| self.transit.begin());
                retired.push(mem::replace(&mut sheaves.main, OwnedSheaf::none()));
                retired.extend(sheaves.spare.take());
                for &stat in Stat::ALL {
                    self.counters.add_shared(stat, counters.get(stat));
                }
            },
            &mut |moved| self.count_moved(moved),
        );
        let tally = Tally::shared(&self.counters);
        for sheaf in retired {
            if held {
                self.discard_held(sheaf, tally);
            } else {
                self.discard(sheaf, tally);
            }
        }
        drop(transit);
    }

    /// Empties a slot's `main` and `spare` into the slabs and frees them; the slot is held,
    /// so emptied slabs are queued for the shrink's end.
    fn retire(&self, sheaves: &mut SlotSheaves, _node: usize) {
        let tally = Tally::shared(&self.counters);
        let main = mem::replace(&mut sheaves.main, OwnedSheaf::none());
        self.discard_held(main, tally);
        if let Some(spare) = sheaves.spare.take() {
            self.discard_held(spare, tally);
        }
    }

    /// Returns every cached sheaf and empty slab the caller can reach (C-OBJ-5). The cache
    /// seals and stamps the deferred-free sheaves first ([`CacheCore::visit_chains`]).
    ///
    /// Waits for other threads' adoptions in transit and for held slots for at most
    /// `REACH_PATIENCE` in all; returns what it left: slots not reached plus adoptions still
    /// in transit (0: everything cached was reached).
    pub(crate) fn shrink(&self) -> usize {
        let start = Instant::now();
        // Another thread's adoption still holds sheaves of exited threads: they reach the
        // slabs when it ends, for the next shrink if not for this one.
        let in_transit = self.transit.wait_for_others(REACH_PATIENCE);
        let unreached = self.slots.for_each_reachable(
            REACH_PATIENCE.saturating_sub(start.elapsed()),
            |sheaves, _, node| self.retire(sheaves, node),
        );
        let tally = Tally::shared(&self.counters);
        for barn in self.barns.iter() {
            for sheaf in barn.drain() {
                self.discard(sheaf, tally);
            }
        }
        self.pool.shrink();
        unreached + in_transit
    }
}
