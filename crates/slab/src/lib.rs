//! The slab layer: slab pages, page sources, and the per-node slab pool shared by the `sheaf`
//! allocator and the slab-based baselines.
//!
//! Memory flows down through three pieces:
//!
//! - a [`PageSource`] hands out naturally aligned power-of-two chunks: [`MmapPages`] in
//!   production, [`LimitedPages`] (a byte budget and seeded fault injection) in tests;
//! - a [`SlabLayout`] says how one chunk is carved into objects: a header, then objects at a
//!   fixed stride; an object finds its slab by masking its address;
//! - a [`SlabPool`] keeps slabs on per-node partial lists, each behind its own short lock, and
//!   moves objects between slabs and a caller's array in bulk (the refill and flush of a
//!   sheaf), keeping a few empty slabs per node and releasing the rest.
//!
//! Every slab's objects in use, on its free list and never carved add up to its objects (the
//! equation is stated in module `pool::node`, with the slab header it is about); debug builds
//! check it at slow-path points (release builds with `DebugOptions::check_invariants`), and so
//! does [`SlabPool::check_invariants`].
//!
//! The pool does not zero objects: callers honour `AllocFlags::ZERO` themselves.
//!
//! [`SlabLayout::new`], [`SlabPool::new`] and [`SlabPool::with_min_partial`] refuse an invalid
//! configuration with a `ConfigError` naming the field (the rules of
//! `CacheConfig::validate`), so every layout they build keeps each object inside its slab.
//!
//! # Module map
//!
//! - `pages`: the page sources ([`MmapPages`], [`LimitedPages`], [`page_source_for`]); owns
//!   **natural alignment of every chunk**.
//! - `layout`: [`SlabLayout`], how a chunk is carved into objects; owns **every object lies
//!   inside its slab**.
//! - `pool`: [`SlabPool`] and its paths; `pool::node` the slab header and a node's partial
//!   list (owns **the per-slab equation** and **the list and count invariants**);
//!   `pool::check` the self-checks.
//! - `numa`: the CPU-to-node map ([`node_count`], [`node_of_cpu`], [`possible_cpus`]).
//! - [`cpu`]: which CPU the caller runs on, from the rseq area or `sched_getcpu`.
//! - [`rseq`]: the per-CPU try-lock taken by a restartable sequence; owns **the lock states**
//!   (`FREE`, `LOCAL`, `REMOTE`, `ABANDONED`) and who may write each.
//! - [`fork`]: locks taken around `fork()` and the child's repair of registered structures.
//!
//! ```
//! use std::sync::Arc;
//! use std::mem::MaybeUninit;
//! use std::ptr::NonNull;
//! use object_alloc::{AllocError, CacheConfig};
//! use slab::{LimitedPages, PageSource, SlabPool};
//!
//! let pages = Arc::new(LimitedPages::unlimited());
//! let config = CacheConfig::new(128).with_page_source(pages.clone());
//! let pool = SlabPool::new(&config).expect("a valid configuration");
//! let mut out = [MaybeUninit::uninit(); 4];
//! pool.alloc_bulk(0, true, &mut out)?;
//! // SAFETY: `alloc_bulk` succeeded, so every slot holds an object.
//! let objects = out.map(|slot| unsafe { slot.assume_init() });
//! let layout = pool.layout();
//! assert_eq!(layout.slab_base(objects[0]), layout.slab_base(objects[3]));
//!
//! // With the page source exhausted and nothing cached, bulk allocation fails as a whole.
//! pages.set_limit(0);
//! let mut many = vec![MaybeUninit::<NonNull<u8>>::uninit(); 10_000];
//! assert_eq!(pool.alloc_bulk(0, true, &mut many), Err(AllocError::OutOfMemory));
//!
//! // SAFETY: the objects came from this pool, are live and appear once.
//! unsafe { pool.free_bulk(&objects) };
//! pool.shrink();
//! assert_eq!(pages.stats().held_bytes, 0);
//! # Ok::<(), AllocError>(())
//! ```

pub mod cpu;
pub mod fork;
mod layout;
mod numa;
mod pages;
mod pool;
pub mod rseq;

pub use layout::{MAX_SLAB_BYTES, MIN_OBJECTS, MIN_OBJECTS_LARGE, SlabLayout};
pub use numa::{node_count, node_of_cpu, possible_cpus};
pub use object_alloc::{PAGE_SIZE, PageError, PageSource, PageSourceStats};
pub use pages::{LimitedPages, MmapPages, page_source_for};
pub use pool::{DEFAULT_MIN_PARTIAL, POISON_FREE, SlabPool, SlabStats};
