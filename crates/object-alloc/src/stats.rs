//! What a design can tell about itself: gauges of memory and objects, and per-path counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A snapshot of a cache's state and of the paths its operations took.
///
/// Gauges a design cannot tell are `None`, never a made-up zero. Counters are named after the
/// Linux SLUB stat items in snake case (`alloc_fastpath`, `barn_get`, `sheaf_prefill_fast`, ...)
/// so that results of different designs read alike; each design documents its own names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocStats {
    /// Objects handed out and not yet freed (deferred frees still waiting for their grace
    /// period count as live).
    pub live_objects: Option<u64>,
    /// Free objects held in caches above the slabs (CPU sheaves, barn, magazines, depot).
    pub cached_objects: Option<u64>,
    /// Bytes of pages currently held from the page source.
    pub slab_bytes: Option<u64>,
    /// Slabs currently held (full, partly used and empty); `None` for a design without slabs.
    #[serde(default)]
    pub slabs: Option<u64>,
    /// Slabs that hold both objects in use and free objects: the fragmentation a cache's
    /// free pattern leaves behind. `None` for a design that does not count them.
    #[serde(default)]
    pub partial_slabs: Option<u64>,
    /// Per-path event counters, by name.
    pub counters: BTreeMap<String, u64>,
}

impl AllocStats {
    /// The counter `name`, or 0 when the design never counted it.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Adds `value` to the counter `name`.
    pub fn add(&mut self, name: &str, value: u64) {
        *self.counters.entry(name.to_owned()).or_default() += value;
    }
}
