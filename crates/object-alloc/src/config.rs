//! Cache configuration, shared by every design, validated at creation (contract clause C-CONF-1).

use std::fmt;
use std::sync::Arc;

use crate::error::ConfigError;
use crate::page::{PAGE_SIZE, PageSource};

/// The largest object size any design must accept: one slab of the largest order holds at
/// least a handful of such objects.
pub const MAX_OBJECT_SIZE: usize = 64 * 1024;

/// The largest sheaf capacity a configuration may ask for.
pub const MAX_SHEAF_CAPACITY: usize = 1 << 16;

/// The largest barn limit (full or empty sheaves per node) a configuration may ask for.
pub const MAX_BARN_LIMIT: usize = 1 << 16;

/// The longest hold of recycled `rcu_free` sheaves ([`CacheConfig::rcu_hold_ticks`]) a
/// configuration may ask for: ten seconds of hand-over ticks.
pub const MAX_RCU_HOLD_TICKS: u32 = 1000;

/// The most simulated NUMA nodes a configuration may ask for.
pub const MAX_SIMULATED_NODES: usize = 64;

/// How CPUs map to memory nodes (one barn and one set of partial slab lists per node).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeMap {
    /// The host's real topology, read from sysfs; one node where sysfs says nothing.
    #[default]
    Host,
    /// `nodes` simulated nodes; CPU `c` belongs to node `c % nodes`. For tests and for
    /// studying multi-node behaviour on a single-node machine.
    Simulated {
        /// Number of nodes, at least 1.
        nodes: usize,
    },
}

/// Debugging aids; each costs time on some path and is off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugOptions {
    /// Fill freed objects with a poison pattern, so a use after free reads garbage.
    pub poison: bool,
    /// Check the design's invariants (for example `inuse + free == objects` per slab) on every
    /// slow-path operation, even in release builds. Debug builds always check them.
    pub check_invariants: bool,
}

/// The kernel's default sheaf capacity for objects of `object_size` bytes.
///
/// 60 objects below 256 bytes, 26 below 1 KiB, 12 below a page and 4 from a page up; then
/// grown so that a sheaf (a [`SHEAF_HEADER_BYTES`] header followed by one pointer per object)
/// fills its allocation size class with no slack.
pub fn default_sheaf_capacity(object_size: usize) -> usize {
    let base = match object_size {
        0..256 => 60,
        256..1024 => 26,
        1024..PAGE_SIZE => 12,
        _ => 4,
    };
    let bytes = SHEAF_HEADER_BYTES + base * size_of::<usize>();
    (size_class(bytes) - SHEAF_HEADER_BYTES) / size_of::<usize>()
}

/// The header size assumed for a sheaf's own allocation by [`default_sheaf_capacity`].
pub const SHEAF_HEADER_BYTES: usize = 32;

/// The kmalloc-like size class that `bytes` rounds up to: powers of two plus 96 and 192.
fn size_class(bytes: usize) -> usize {
    match bytes {
        0..=8 => 8,
        65..=96 => 96,
        129..=192 => 192,
        _ => bytes.next_power_of_two(),
    }
}

/// Everything a design needs to create a cache of one object type.
///
/// Designs ignore fields that do not apply to them (a general-purpose allocator has no barn
/// and no page source) and say so through [`Capabilities`](crate::Capabilities).
#[derive(Clone)]
pub struct CacheConfig {
    /// Bytes of every object; at least 1, at most [`MAX_OBJECT_SIZE`].
    pub object_size: usize,
    /// Alignment of every object: a power of two, at most [`PAGE_SIZE`].
    pub align: usize,
    /// Objects per sheaf: `None` for the kernel's default for this size
    /// ([`default_sheaf_capacity`]), `Some(0)` for no sheaves at all (every prefill is then
    /// oversize, C-CONF-2).
    pub sheaf_capacity: Option<usize>,
    /// The most full sheaves a barn keeps per node (the kernel's default is 10).
    pub barn_max_full: usize,
    /// The most empty sheaves a barn keeps per node (the kernel's default is 10).
    pub barn_max_empty: usize,
    /// The CPU-to-node map.
    pub nodes: NodeMap,
    /// Where slab-based designs get pages; `None` for anonymous `mmap`.
    pub page_source: Option<Arc<dyn PageSource>>,
    /// Whether deferred frees are batched (sheaf: whole `rcu_free` sheaves per grace period).
    /// `false` defers each object on its own, the baseline behaviour, for comparison.
    pub deferred_batching: bool,
    /// sheaf: a `NOWAIT` allocation that finds its CPU sheaf empty may not refill it (from
    /// the spare, the barn or the slabs): it takes one object straight from the slabs. This
    /// models the Linux 7.0 regression for comparison; off by default, where a `NOWAIT`
    /// refill uses everything but new slabs. Designs without sheaves ignore it, as they do the
    /// barn limits ([`Capabilities::sheaf_layer`](crate::Capabilities::sheaf_layer)).
    pub nowait_no_refill: bool,
    /// sheaf: a prefill (or refill) short of objects takes them from the barn, through a
    /// per-node *partial sheaf* that keeps what is left of the full sheaf it opened, before
    /// it goes to the slabs. Off: a prefill takes barn objects only by trading an empty CPU
    /// `main` for a full barn sheaf. Designs without sheaves ignore it.
    pub barn_partial: bool,
    /// sheaf: a full `rcu_free` sheaf back from its grace period when the barn's full list
    /// is at its limit is held in the barn, outside the limit, for at most this many
    /// hand-over ticks ([`rcu::HANDOVER_TICK`](crate::rcu::HANDOVER_TICK) each), serving
    /// takers of full sheaves first; one still unused then goes to the slabs. Grace periods
    /// end in batches (a tick's worth of sheaves at once), so with a small barn much of a
    /// batch would otherwise be flushed and refilled from the slabs moments later. What is
    /// held is at most the sheaves whose grace periods ended in that many ticks; it counts
    /// as cached and `shrink` frees it. 0: such a sheaf is flushed at once, as the kernel
    /// does. At most [`MAX_RCU_HOLD_TICKS`]. Designs without sheaves ignore it.
    pub rcu_hold_ticks: u32,
    /// sheaf: a sheaf refilled from the slabs takes its objects from one slab (the first
    /// partial slab's free objects, or a new slab's), topping up from other slabs only to
    /// the minimum the refill needs: the per-CPU slab's locality, for comparison. Off: a
    /// refill gathers from as many partial slabs as it takes to fill the sheaf. Designs
    /// without sheaves ignore it.
    pub refill_one_slab: bool,
    /// sheaf: a run-time change of the sheaf capacity or the barn limits
    /// ([`ObjectAlloc::change_limits`](crate::ObjectAlloc::change_limits)) first waits for
    /// the deferred frees so far and flushes every CPU slot's sheaves and every barn to the
    /// slabs, then goes on with the new values: the flush-everything way, for comparison. Off
    /// (the default): the change takes effect without a flush, each sheaf keeping its own
    /// capacity until a slow path retires or resizes it. Designs without sheaves ignore it.
    pub resize_by_flush: bool,
    /// Debugging aids.
    pub debug: DebugOptions,
}

impl CacheConfig {
    /// A configuration for objects of `object_size` bytes with every other field at its
    /// default: alignment 8 (or the object size rounded down to a power of two, if smaller),
    /// the kernel's default capacity and barn limits, the host's nodes, mmap pages.
    pub fn new(object_size: usize) -> Self {
        let align = if object_size == 0 {
            1
        } else {
            8.min(1 << object_size.trailing_zeros().min(3))
        };
        Self {
            object_size,
            align,
            sheaf_capacity: None,
            barn_max_full: 10,
            barn_max_empty: 10,
            nodes: NodeMap::Host,
            page_source: None,
            deferred_batching: true,
            nowait_no_refill: false,
            barn_partial: true,
            rcu_hold_ticks: 4,
            refill_one_slab: false,
            resize_by_flush: false,
            debug: DebugOptions::default(),
        }
    }

    /// Sets the alignment.
    pub fn with_align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }

    /// Sets the sheaf capacity (`0` for no sheaves).
    pub fn with_sheaf_capacity(mut self, capacity: usize) -> Self {
        self.sheaf_capacity = Some(capacity);
        self
    }

    /// Sets both barn limits.
    pub fn with_barn_limits(mut self, max_full: usize, max_empty: usize) -> Self {
        self.barn_max_full = max_full;
        self.barn_max_empty = max_empty;
        self
    }

    /// Sets the node map.
    pub fn with_nodes(mut self, nodes: NodeMap) -> Self {
        self.nodes = nodes;
        self
    }

    /// Sets the page source.
    pub fn with_page_source(mut self, source: Arc<dyn PageSource>) -> Self {
        self.page_source = Some(source);
        self
    }

    /// Switches batching of deferred frees on or off.
    pub fn with_deferred_batching(mut self, on: bool) -> Self {
        self.deferred_batching = on;
        self
    }

    /// Switches the `NOWAIT` no-refill model on or off ([`CacheConfig::nowait_no_refill`]).
    pub fn with_nowait_no_refill(mut self, on: bool) -> Self {
        self.nowait_no_refill = on;
        self
    }

    /// Switches the barn's partial sheaf on or off ([`CacheConfig::barn_partial`]).
    pub fn with_barn_partial(mut self, on: bool) -> Self {
        self.barn_partial = on;
        self
    }

    /// Sets how many hand-over ticks recycled `rcu_free` sheaves beyond the barn limit are
    /// held ([`CacheConfig::rcu_hold_ticks`]; 0: none).
    pub fn with_rcu_hold_ticks(mut self, ticks: u32) -> Self {
        self.rcu_hold_ticks = ticks;
        self
    }

    /// Switches one-slab refills on or off ([`CacheConfig::refill_one_slab`]).
    pub fn with_refill_one_slab(mut self, on: bool) -> Self {
        self.refill_one_slab = on;
        self
    }

    /// Switches flush-everything run-time changes on or off ([`CacheConfig::resize_by_flush`]).
    pub fn with_resize_by_flush(mut self, on: bool) -> Self {
        self.resize_by_flush = on;
        self
    }

    /// Sets the debugging aids.
    pub fn with_debug(mut self, debug: DebugOptions) -> Self {
        self.debug = debug;
        self
    }

    /// The sheaf capacity in force: the configured one, or the default for the object size.
    pub fn effective_sheaf_capacity(&self) -> usize {
        self.sheaf_capacity
            .unwrap_or_else(|| default_sheaf_capacity(self.object_size))
    }

    /// Bytes one object occupies in a slab: the size rounded up to the alignment, and at
    /// least one pointer (free objects hold a free-list link). Meaningful for a valid
    /// configuration; for sizes so large that the rounding would overflow it is `usize::MAX`.
    pub fn stride(&self) -> usize {
        self.object_size
            .max(size_of::<usize>())
            .checked_next_multiple_of(self.align.max(1))
            .unwrap_or(usize::MAX)
    }

    /// Checks every field; the error names the first bad one (C-CONF-1).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.object_size == 0 || self.object_size > MAX_OBJECT_SIZE {
            return Err(ConfigError::new(
                "object_size",
                self.object_size,
                format!("between 1 and {MAX_OBJECT_SIZE} bytes"),
            ));
        }
        if !self.align.is_power_of_two() || self.align > PAGE_SIZE {
            return Err(ConfigError::new(
                "align",
                self.align,
                format!("a power of two between 1 and {PAGE_SIZE}"),
            ));
        }
        if let Some(capacity) = self.sheaf_capacity
            && capacity > MAX_SHEAF_CAPACITY
        {
            return Err(ConfigError::new(
                "sheaf_capacity",
                capacity,
                format!("0 (no sheaves) up to {MAX_SHEAF_CAPACITY}"),
            ));
        }
        if self.barn_max_full > MAX_BARN_LIMIT {
            return Err(ConfigError::new(
                "barn_max_full",
                self.barn_max_full,
                format!("at most {MAX_BARN_LIMIT}"),
            ));
        }
        if self.barn_max_empty > MAX_BARN_LIMIT {
            return Err(ConfigError::new(
                "barn_max_empty",
                self.barn_max_empty,
                format!("at most {MAX_BARN_LIMIT}"),
            ));
        }
        if self.rcu_hold_ticks > MAX_RCU_HOLD_TICKS {
            return Err(ConfigError::new(
                "rcu_hold_ticks",
                self.rcu_hold_ticks,
                format!("at most {MAX_RCU_HOLD_TICKS}"),
            ));
        }
        if let NodeMap::Simulated { nodes } = self.nodes
            && (nodes == 0 || nodes > MAX_SIMULATED_NODES)
        {
            return Err(ConfigError::new(
                "nodes",
                nodes,
                format!("between 1 and {MAX_SIMULATED_NODES} simulated nodes"),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheConfig")
            .field("object_size", &self.object_size)
            .field("align", &self.align)
            .field("sheaf_capacity", &self.sheaf_capacity)
            .field("barn_max_full", &self.barn_max_full)
            .field("barn_max_empty", &self.barn_max_empty)
            .field("nodes", &self.nodes)
            .field("page_source", &self.page_source.as_ref().map(|s| s.name()))
            .field("deferred_batching", &self.deferred_batching)
            .field("nowait_no_refill", &self.nowait_no_refill)
            .field("barn_partial", &self.barn_partial)
            .field("rcu_hold_ticks", &self.rcu_hold_ticks)
            .field("resize_by_flush", &self.resize_by_flush)
            .field("debug", &self.debug)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capacity_matches_the_kernel_classes() {
        assert_eq!(default_sheaf_capacity(64), 60);
        assert_eq!(default_sheaf_capacity(255), 60);
        assert_eq!(default_sheaf_capacity(256), 28);
        assert_eq!(default_sheaf_capacity(1023), 28);
        assert_eq!(default_sheaf_capacity(1024), 12);
        assert_eq!(default_sheaf_capacity(4096), 4);
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            CacheConfig::new(0).validate().unwrap_err().field,
            "object_size"
        );
        assert_eq!(
            CacheConfig::new(64)
                .with_align(3)
                .validate()
                .unwrap_err()
                .field,
            "align"
        );
        assert_eq!(
            CacheConfig::new(64)
                .with_sheaf_capacity(MAX_SHEAF_CAPACITY + 1)
                .validate()
                .unwrap_err()
                .field,
            "sheaf_capacity"
        );
        assert_eq!(
            CacheConfig::new(64)
                .with_nodes(NodeMap::Simulated { nodes: 0 })
                .validate()
                .unwrap_err()
                .field,
            "nodes"
        );
        assert_eq!(
            CacheConfig::new(64)
                .with_rcu_hold_ticks(MAX_RCU_HOLD_TICKS + 1)
                .validate()
                .unwrap_err()
                .field,
            "rcu_hold_ticks"
        );
        assert!(
            CacheConfig::new(64)
                .with_sheaf_capacity(0)
                .validate()
                .is_ok()
        );
        let message = CacheConfig::new(0).validate().unwrap_err().to_string();
        assert!(
            message.contains("object_size") && message.contains("between 1 and"),
            "{message}"
        );
    }

    #[test]
    fn stride_holds_a_link_and_keeps_alignment() {
        assert_eq!(CacheConfig::new(1).stride(), 8);
        assert_eq!(CacheConfig::new(24).with_align(16).stride(), 32);
        assert_eq!(CacheConfig::new(256).stride(), 256);
    }
}
