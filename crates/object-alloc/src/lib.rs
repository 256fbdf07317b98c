//! The seam between object-cache allocator designs and everything that uses or measures them.
//!
//! Every design (the `sheaf` allocator and each baseline) implements [`ObjectAlloc`]: a cache
//! of fixed-size objects with single and bulk allocation, deferred (RCU-style) free, and the
//! prefill API of the Linux SLUB sheaves. Benchmarks, the conformance suite and workloads are
//! generic over `A: ObjectAlloc` and monomorphized per design, so no dynamic call sits in a
//! measured loop.
//!
//! This crate names no design. It holds the trait and the types every design shares:
//! [`CacheConfig`] (validated at creation, C-CONF-1), [`AllocFlags`], [`AllocError`],
//! [`ConfigError`], [`AllocStats`], the [`PageSource`] seam, the read-side section and
//! deferral machinery of [`rcu`], and [`BulkPrefill`], the prefill emulation for designs
//! without a native one, with [`bulk::alloc_bulk_with`], the all-or-nothing loop for designs
//! without a batch path of their own. Three macros ([`emulated_prefill_and_deferral!`],
//! [`bulk_by_single_calls!`], [`object_ops_via!`]) write the trait methods that designs share
//! word for word. The generic test suite every design runs lives in the
//! `conformance` crate (`conformance::testing`), beside the contract checks.
//!
//! # Modules
//!
//! - this file: the [`ObjectAlloc`] trait (its safety contract) and [`Capabilities`];
//! - `change`: [`LimitChange`] and [`ChangeReport`], run-time limit changes;
//! - `config`: [`CacheConfig`], its limits and its validation, which names the refused field;
//! - `error`, `flags`, `stats`: [`AllocError`] and [`ConfigError`], [`AllocFlags`],
//!   [`AllocStats`];
//! - [`page`]: the [`PageSource`] seam; owns "a chunk of `bytes` is aligned to `bytes`";
//! - `prefill`: the [`Prefill`] handle and [`BulkPrefill`]; owns "a sheaf of `n` serves `n`
//!   allocations";
//! - [`bulk`]: all-or-nothing bulk allocation from single ones (C-BULK-1);
//! - [`rcu`]: read-side sections and deferred frees (C-DEFER-1..3), split into the collector
//!   generation, per-thread callback queues, the hand-over thread and the deferrer (its own map);
//! - `testing` (feature `testing`): the generic behaviour suite.
//!
//! ```
//! use object_alloc::{AllocFlags, CacheConfig};
//!
//! let config = CacheConfig::new(256).with_sheaf_capacity(32);
//! assert!(config.validate().is_ok());
//! assert!(AllocFlags::NOWAIT.contains(AllocFlags::NOWAIT));
//! let err = CacheConfig::new(0).validate().unwrap_err();
//! assert_eq!(err.field, "object_size");
//! ```

pub mod bulk;
mod change;
mod config;
mod delegate;
mod error;
mod flags;
pub mod page;
mod prefill;
pub mod rcu;
mod stats;

use std::mem::MaybeUninit;
use std::ptr::NonNull;

pub use change::{ChangeReport, LimitChange};
pub use config::{
    CacheConfig, DebugOptions, MAX_BARN_LIMIT, MAX_OBJECT_SIZE, MAX_RCU_HOLD_TICKS,
    MAX_SHEAF_CAPACITY, MAX_SIMULATED_NODES, NodeMap, SHEAF_HEADER_BYTES, default_sheaf_capacity,
};
pub use error::{AllocError, ConfigError};
pub use flags::AllocFlags;
pub use page::{PAGE_SIZE, PageError, PageSource, PageSourceStats};
pub use prefill::{BULK_PREFILL_INLINE, BULK_PREFILL_MAX, BulkPrefill, Prefill};
pub use stats::AllocStats;

/// What a design can promise, so that checks of clauses that do not apply to it are reported
/// not applicable, with the reason, instead of silently passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The prefill API is native (sheaves), not emulated with bulk calls.
    pub native_prefill: bool,
    /// `NOWAIT` is honoured: a `NOWAIT` request never takes new pages.
    pub honours_nowait: bool,
    /// The design takes its memory from [`CacheConfig::page_source`], so page accounting and
    /// fault injection apply to it.
    pub uses_page_source: bool,
    /// [`AllocStats::live_objects`] is reported.
    pub tracks_live_objects: bool,
    /// The design keeps sheaves in CPU slots and a barn, with the barn limits of the config.
    pub sheaf_layer: bool,
}

/// An object cache: one design of allocator for objects of one size and alignment.
///
/// # Contract
///
/// `docs/contract.md` states the clauses (C-OBJ-*, C-BULK-*, C-PREFILL-*, ...) every
/// implementation honours, and the conformance suite checks them. In short: objects are
/// aligned, sized and disjoint; frees may happen on any thread; bulk allocation is
/// all-or-nothing; a prefilled sheaf of `n` serves `n` allocations without failure.
pub trait ObjectAlloc: Send + Sync + Sized + 'static {
    /// Short stable name used on the command line and in result files (`"sheaf"`, ...).
    const NAME: &'static str;
    /// One line that says what the design is.
    const DESCRIPTION: &'static str;
    /// What the design promises (see [`Capabilities`]).
    const CAPABILITIES: Capabilities;

    /// The prefilled-sheaf handle; designs without a native one use [`BulkPrefill`].
    type Prefill<'a>: Prefill
    where
        Self: 'a;

    /// Creates a cache; refuses an invalid configuration with an error naming the field.
    fn new(config: &CacheConfig) -> Result<Self, ConfigError>;

    /// Allocates one object, or `None` when memory cannot be had (or, with `NOWAIT`, cannot be
    /// had without growing the cache).
    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>>;

    /// Frees one object, on any thread.
    ///
    /// # Safety
    ///
    /// - `object` was allocated by this cache and is live (not freed since).
    /// - Nothing uses it after this call.
    unsafe fn free(&self, object: NonNull<u8>);

    /// Fills every slot of `out` with a distinct new object, or fails having allocated
    /// nothing (C-BULK-1).
    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError>;

    /// Frees every object of `objects`, which may come from any mix of slabs and threads.
    ///
    /// # Safety
    ///
    /// - Each object was allocated by this cache, is live, and appears once.
    /// - Nothing uses them after this call.
    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]);

    /// Frees `object` once every read-side section ([`rcu::read`]) active now has ended: the
    /// role of `kfree_rcu` (C-DEFER-1). The grace period must start within a documented delay
    /// even if the calling thread never runs again (C-DEFER-3); through
    /// [`rcu::Deferrer`] it is [`rcu::HANDOVER_TICK`].
    ///
    /// # Safety
    ///
    /// - `object` was allocated by this cache and is live.
    /// - No new reference to it is published after this call; existing readers may still read
    ///   it until their sections end.
    unsafe fn free_deferred(&self, object: NonNull<u8>);

    /// Borrows a sheaf holding at least `count` objects (C-PREFILL-1..8).
    fn prefill(&self, flags: AllocFlags, count: usize) -> Result<Self::Prefill<'_>, AllocError>;

    /// Waits until every deferred free so far has completed (`rcu_barrier`, C-DEFER-2),
    /// without waiting for any other thread to run again (C-DEFER-3).
    fn barrier(&self);

    /// Deferred frees not yet completed, for a design that counts them (`None` otherwise):
    /// lets a check see that a deferred free completed wherever it ran, where the design
    /// keeps no live-object count.
    fn deferred_pending(&self) -> Option<usize> {
        None
    }

    /// Gives back every cached object and empty slab the design can release; after all
    /// objects are freed, a barrier and a shrink, a slab-based design holds no page (C-OBJ-5).
    fn shrink(&self) {}

    /// A snapshot of the design's gauges and counters.
    fn stats(&self) -> AllocStats {
        AllocStats::default()
    }

    /// Whether [`ObjectAlloc::change_limits`] can change anything in this design (known before
    /// a cache exists, so that a run that asks for a change is refused before it starts).
    const LIMIT_CHANGES: bool = false;

    /// Changes the sheaf capacity and barn limits while the cache is in use, without making an
    /// allocation fail or breaking a prefill guarantee (C-CONF-4). The default refuses, naming
    /// the first field the change sets: the design fixes its limits when it is created.
    fn change_limits(&self, change: &LimitChange) -> Result<ChangeReport, ConfigError> {
        let (field, value) = change.first_field().unwrap_or(("sheaf_capacity", 0));
        Err(ConfigError::new(
            field,
            value,
            format!("{} fixes it when the cache is created", Self::NAME),
        ))
    }
}
