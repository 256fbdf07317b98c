//! A range tree shaped like the Linux maple tree, whose nodes are objects of the allocator
//! under test, and the address-space operation streams that drive it.
//!
//! The kernel's maple tree holds every process's memory mappings. Before each write it
//! reserves the worst-case number of nodes the write could need (it may not allocate under
//! its lock), uses only a few, and frees the nodes its copy-on-write replaced only after
//! concurrent readers are gone. The prefill API of slab sheaves exists for that pattern; this
//! crate reproduces it with a real tree instead of a loop that imitates it:
//!
//! - [`MapleTree`]: a B-tree over non-overlapping ranges of `u64` keys with 256-byte nodes
//!   (16 slots, 15 pivots), lock-free readers inside [`object_alloc::rcu::read`] sections, one
//!   writer at a time, copy-on-write nodes published with one atomic store and retired with
//!   [`ObjectAlloc::free_deferred`](object_alloc::ObjectAlloc::free_deferred), and a
//!   worst-case [`prefill`](object_alloc::ObjectAlloc::prefill) per write computed as the
//!   kernel's `mas_prealloc_calc` does ([`tree`] explains the algorithm and its invariants);
//! - [`ops`]: `mmap`, `munmap`, `mprotect` and `brk` operations, and a seeded generator of
//!   them whose mix and sizes are a serde-deserializable [`StreamSpec`];
//! - [`trace`]: a line-oriented trace format for such streams over several address spaces,
//!   with replay; [`strace`]: its importer from `strace -f -e trace=memory` logs;
//! - [`run`]: the loops a harness calls, with a per-write hook ([`WriteRecorder`]);
//! - [`RangeModel`]: the same semantics over a `BTreeMap`, to check a tree after a run.
//!
//! # Modules
//!
//! - `node`: the 256-byte node; owns "a node a reader can see changes only by single atomic
//!   stores that leave it consistent".
//! - [`tree`]: [`MapleTree`]: reads, write classification and in-place stores (`tree.rs`);
//!   `tree/rebuild.rs`: the writer's state, the node reserve and the bottom-up rebuild (owns
//!   "fresh nodes come only from the reserve, and a shortfall is counted"); `tree/check.rs`:
//!   whole-tree reads and the structural invariants; `tree/info.rs`: write configuration,
//!   per-write figures, totals and errors.
//! - [`ops`], [`trace`], [`strace`], [`run`]: as listed above; `model`: [`RangeModel`];
//!   [`testing`]: a counted test allocator for code built on the tree.
//!
//! # Usage
//!
//! ```
//! use maple::{MapleTree, StreamSpec, run};
//! # use maple::testing::TestAlloc as NodeCache;
//! use object_alloc::ObjectAlloc;
//!
//! // The allocator under test, configured for tree nodes.
//! let cache = NodeCache::new(&maple::node_cache_config()).unwrap();
//! let tree = MapleTree::new(&cache).unwrap();
//!
//! // A generated stream, prepared before timing.
//! let spec = StreamSpec { ops: 2_000, ..StreamSpec::default() };
//! let ops = maple::ops::generate(&spec).unwrap();
//!
//! // Writes, with a hook per write (timing, histograms: the harness's business).
//! let mut writes = 0u64;
//! let totals = run::run_writes(&tree, &ops, &mut |_op: &maple::Op, info: &maple::WriteInfo| {
//!     assert!(info.used <= info.reserved);
//!     writes += 1;
//! })
//! .unwrap();
//! assert_eq!(totals.nodes_outside_reserve, 0);
//!
//! // Readers run `tree.lookup(addr)` (or `lookup_in` under one guard) concurrently.
//! let _ = tree.lookup(0x7f00_0000_0000);
//!
//! // After the run: the tree against a model of the same stream.
//! let model = run::model_of(&ops);
//! tree.check(model.as_map()).unwrap();
//! ```
//!
//! # Wiring a workload
//!
//! - **Allocator**: create it with [`node_cache_config`] (256-byte objects aligned to 256, as
//!   the kernel's `maple_node` cache); other fields (sheaf capacity, barn limits, deferred
//!   batching) are the harness's to set. Call `barrier()` after the trees are dropped before
//!   reading leak or cache figures: replaced nodes are freed deferred.
//! - **`maple-tree` kind**: embed a [`StreamSpec`] (serde, `deny_unknown_fields`, every field
//!   defaulted) and a [`WriteConfig`] (`single_node_alloc`, the kernel's switch) in the
//!   workload spec. Generate with [`ops::generate`] before timing. One writer thread: time
//!   each [`run::apply`] (one sample per write; `Ok(None)` means the operation wrote nothing
//!   and should not be sampled), or [`run::run_writes`] with a timing [`WriteRecorder`]. Reader threads: [`run::reader_loop`] until a stop flag, or
//!   [`MapleTree::lookup`] / [`MapleTree::lookup_in`] in the harness's own loop. Figures:
//!   [`WriteInfo`] per write (kind, nodes `reserved` / `used`, `outside_reserve`, `retired`),
//!   [`MapleTree::stats`] for totals ([`TreeStats`]; `nodes_outside_reserve > 0` means a
//!   write needed more than its reserve: report it as a failure of the run). After the run,
//!   [`MapleTree::check`] against [`run::model_of`] the same ops.
//! - **`trace-replay` kind**: read the file, [`Trace::parse`] (errors carry the line), and
//!   [`run::replay`] with a [`WriteRecorder`] (a closure `|op, info|` works) for the per-write
//!   figures; `check: true` keeps a model per address space and checks each tree at its exit
//!   (costs time: use it in tests and `--quick` runs). For one latency sample per write,
//!   read the clock in [`WriteRecorder::before`] and [`WriteRecorder::record`]: only the tree
//!   write runs between them. `fork` copies are not passed to the recorder
//!   ([`ReplayOutcome::fork_copy_writes`] counts them).
//! - **`sheafbench trace import`**: [`strace::import`] on the log text returns the
//!   [`Trace`] (write it with `to_string()`: header and one record per line) and
//!   [`strace::ImportStats`] (its `Display` is a one-line summary). It never fails on content.
//!
//! [`MapleTree::stats`] and [`MapleTree::height`] take the writer lock: call them from the
//! writer thread or after the run, not from readers.

mod node;
pub mod ops;
pub mod run;
pub mod strace;
pub mod trace;
pub mod tree;

mod model;

pub mod testing;

pub use model::RangeModel;
pub use node::{NODE_ALIGN, NODE_SIZE};
pub use ops::{Op, OpKind, StreamSpec};
pub use run::{ReplayOutcome, WriteRecorder};
pub use trace::{Trace, TraceEvent, TraceRecord};
pub use tree::{
    CheckError, Extent, MapleTree, StoreKind, TreeShape, TreeStats, Value, WriteConfig, WriteError,
    WriteInfo,
};

use object_alloc::CacheConfig;

/// The cache configuration for tree nodes: [`NODE_SIZE`] bytes aligned to [`NODE_ALIGN`],
/// as the kernel creates its `maple_node` cache. Other fields keep their defaults; a harness
/// may change them (capacity, barn limits) but must keep the size and at least 8-byte
/// alignment.
pub fn node_cache_config() -> CacheConfig {
    CacheConfig::new(NODE_SIZE).with_align(NODE_ALIGN)
}
