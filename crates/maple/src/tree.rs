//! The range tree: lock-free readers, one writer at a time, copy-on-write nodes.
//!
//! # Shape
//!
//! A B-tree of 256-byte nodes (16 slots and 15 pivots, [`NODE_SIZE`](crate::NODE_SIZE)) in
//! which every level partitions the whole key space `[0, u64::MAX]`: the root covers it, each inner entry hands a sub-range to a child, and the leaves' entries
//! are the stored ranges and the gaps between them (a gap is an entry whose value is empty,
//! as the kernel's maple tree stores `NULL`). Invariants, checked by
//! [`MapleTree::check_structure`]:
//!
//! - every leaf is at level 0 and every child is one level below its parent (equal heights);
//! - within a node, entries are non-empty and their bounds strictly increase;
//! - every node but the root holds at least `MIN_FILL` (6) entries; an inner root holds at
//!   least 2; no node holds more than 16;
//! - a leaf never holds two adjacent gaps (gaps merge as in the kernel).
//!
//! # Writes
//!
//! A write stores a value (or a gap) over `[a, b]`. Under the writer lock it
//!
//! 1. walks to the leaf holding `a` and classifies the write as the kernel's
//!    `mas_wr_store_type` does: *exact fit* (the range is one existing entry), *append* (the
//!    range is the tail of the leaf's last entry and the leaf has room), *node store* (the leaf
//!    is rewritten and still fits), *split* (it overflows), *rebalance* (it underflows), or
//!    *spanning* (`b` lies beyond the leaf);
//! 2. reserves the worst case for that type as `mas_prealloc_calc` does, with `h` the height
//!    of the tree: spanning `3h + 1`, split `2k + 1` and rebalance `2k + 1` where `k` is the
//!    number of levels that may split or underflow (the leaf and the full, or nearly empty,
//!    ancestors above it), node store 1, exact fit and append 0. The reserve is one
//!    [`ObjectAlloc::prefill`] (or, with [`WriteConfig::single_node_alloc`], one plain
//!    [`ObjectAlloc::alloc`] when it is a single node);
//! 3. performs the write. Exact fit and append change the leaf in place with single atomic
//!    stores that leave it consistent at every instant. Every other type rebuilds bottom-up:
//!    at each level the *window* of affected nodes (those holding `a` and `b`, without the
//!    ones entirely inside `[a, b]`, whose subtrees are dropped) is merged into one run of
//!    entries with the write applied, widened by one neighbour (a sibling if possible) when
//!    the run would underflow, and packed into `ceil(n / 16)` fresh nodes, which become the
//!    run of the level above. The climb stops at the first level where a single node is
//!    rewritten in place of a single node, or at the root;
//! 4. publishes the new subtree with one `Release` store of a child slot or of the root, gives
//!    back what is left of the reserve, and frees every replaced node with
//!    [`ObjectAlloc::free_deferred`].
//!
//! Fresh nodes come only from the reserve. Taking one from an empty reserve is a bug of the
//! reservation rule: it is counted ([`WriteInfo::outside_reserve`],
//! [`TreeStats::nodes_outside_reserve`]) and the node is taken with a plain allocation so
//! that the tree stays correct.
//!
//! The rebuild never needs more than the reserve: below the top, a level's run holds at
//! most 15 kept entries on each side plus the at most 3 nodes packed below it (33 entries,
//! 3 nodes), or a run under 6 entries plus one neighbour (21, 2 nodes); the top level adds
//! at most 2 nodes and a new root. A write that runs out is counted, never hidden (above).
//!
//! # Differences from the kernel
//!
//! - Inner nodes are range nodes (16 children). The kernel's address-space trees use
//!   allocation-range inner nodes (10 children and a gap per child, for `get_unmapped_area`),
//!   so its trees are somewhat taller for the same mappings and its reserves larger. The gap
//!   search of generated streams runs on the generator's model instead.
//! - The node type and entry count live in a meta word; there are no parent pointers (a
//!   writer keeps the path it walked).
//! - Spanning stores reserve `3h + 1` from the full height, as `mas_prealloc_calc` first
//!   did; newer kernels lower `h` to the levels that can actually change. Splits and
//!   rebalances already count only those levels (`k`).
//! - The tree is always in RCU mode: a node store copies the node (1 node) even without
//!   readers.
//!
//! # Reads
//!
//! [`MapleTree::lookup`] descends from the root inside a read-side section ([`rcu::read`])
//! with `Acquire` loads and no lock. A node it reaches was fully written before it was
//! published, is never changed except by the in-place stores above, and is freed only after
//! the section ends, so a reader sees every entry either before or after any write.

use std::fmt;
use std::num::NonZeroU64;
use std::ops::Range;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, PoisonError};

use object_alloc::rcu::{self, ReadGuard};
use object_alloc::{AllocError, AllocFlags, ObjectAlloc};

use crate::node::{Entry, MIN_FILL, Node, SLOTS};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("the maple tree stores 64-bit values in pointer-sized slots");

mod check;
mod info;
mod rebuild;

pub use info::{
    CheckError, Extent, StoreKind, TreeShape, TreeStats, WriteConfig, WriteError, WriteInfo,
};

use rebuild::{NodeReserve, Span, Writer, misaligned};

/// The value stored for a range: never zero, because a zero slot is a gap.
pub type Value = NonZeroU64;

#[inline]
fn encode(value: Option<Value>) -> *mut u8 {
    value.map_or(ptr::null_mut(), |v| {
        ptr::without_provenance_mut(v.get() as usize)
    })
}

#[inline]
fn decode(slot: *mut u8) -> Option<Value> {
    NonZeroU64::new(slot.addr() as u64)
}
/// The range tree. See the [module documentation](self) for the algorithm.
///
/// Nodes are objects of `alloc`, whose object size must be at least [`NODE_SIZE`] with an
/// alignment of at least 8 (use [`node_cache_config`]).
///
/// [`NODE_SIZE`]: crate::NODE_SIZE
/// [`node_cache_config`]: crate::node_cache_config
pub struct MapleTree<'a, A: ObjectAlloc> {
    alloc: &'a A,
    root: AtomicPtr<Node>,
    writer: Mutex<Writer>,
}

impl<A: ObjectAlloc> fmt::Debug for MapleTree<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("MapleTree")
            .field("alloc", &A::NAME)
            .field("height", &stats.height)
            .field("live_nodes", &stats.live_nodes)
            .finish()
    }
}
impl<'a, A: ObjectAlloc> MapleTree<'a, A> {
    /// An empty tree (one leaf holding one gap) whose nodes come from `alloc`.
    pub fn new(alloc: &'a A) -> Result<Self, AllocError> {
        Self::with_config(alloc, WriteConfig::default())
    }

    /// An empty tree with the given write configuration.
    pub fn with_config(alloc: &'a A, config: WriteConfig) -> Result<Self, AllocError> {
        let memory = alloc
            .alloc(AllocFlags::empty())
            .ok_or(AllocError::OutOfMemory)?;
        if memory.as_ptr().addr() % 8 != 0 {
            misaligned(memory);
        }
        let gap = Entry {
            last: u64::MAX,
            slot: ptr::null_mut(),
        };
        // SAFETY: a fresh, aligned object of at least NODE_SIZE bytes, used by nothing else.
        let root = unsafe { Node::init(memory, 0, &[gap]) };
        let stats = TreeStats {
            live_nodes: 1,
            height: 1,
            ..TreeStats::default()
        };
        Ok(Self {
            alloc,
            root: AtomicPtr::new(root.as_ptr()),
            writer: Mutex::new(Writer {
                height: 1,
                config,
                stats,
                path: Vec::new(),
                nodes: Vec::new(),
                run: Vec::new(),
                packed: Vec::new(),
                retired: Vec::new(),
                fresh: Vec::new(),
                stack: Vec::new(),
            }),
        })
    }

    /// The allocator the nodes come from.
    pub fn allocator(&self) -> &'a A {
        self.alloc
    }

    /// The value at `index`, in a read-side section of its own.
    #[inline]
    pub fn lookup(&self, index: u64) -> Option<Value> {
        let guard = rcu::read();
        self.extent_in(&guard, index).value
    }

    /// The value at `index`, inside the caller's read-side section (cheaper for many lookups).
    #[inline]
    pub fn lookup_in(&self, guard: &ReadGuard, index: u64) -> Option<Value> {
        self.extent_in(guard, index).value
    }

    /// The entry covering `index`, inside the caller's read-side section.
    #[inline]
    pub fn extent_in(&self, _guard: &ReadGuard, index: u64) -> Extent {
        let mut node = self.root.load(Ordering::Acquire);
        let (mut min, mut max) = (0, u64::MAX);
        loop {
            let ptr = NonNull::new(node).expect("a tree always has a root");
            // SAFETY: the node was reached from the root inside the guard's read-side
            // section: it was fully written before its `Release` publication (we loaded it with
            // `Acquire`) and is freed only after the section ends.
            let n = unsafe { Node::at(ptr) };
            let len = n.len();
            let i = n.offset_of(index, len);
            let (lo, hi) = n.bounds(i, len, min, max);
            if n.level() == 0 {
                return Extent {
                    first: lo,
                    last: hi,
                    value: decode(n.slot(i)),
                };
            }
            node = n.child(i).as_ptr();
            (min, max) = (lo, hi);
        }
    }

    /// Stores `value` over `range` (`None` makes it a gap), replacing or trimming what was
    /// there. Serialized with every other write.
    pub fn store(&self, range: Range<u64>, value: Option<Value>) -> Result<WriteInfo, WriteError> {
        if range.start >= range.end {
            return Err(WriteError::EmptyRange {
                start: range.start,
                end: range.end,
            });
        }
        let write = (range.start, range.end - 1);
        let slot = encode(value);
        let mut guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let w = &mut *guard;
        let height_before = w.height as u8;
        let (kind, reserved) = self.classify(w, write, slot);
        let mut info = WriteInfo {
            kind,
            reserved,
            used: 0,
            outside_reserve: 0,
            retired: 0,
            height_before,
            height_after: height_before,
        };
        match kind {
            StoreKind::ExactFit | StoreKind::Append => {
                self.store_in_place(w, kind, write, slot);
                w.stats.writes_by_kind[kind.index()] += 1;
                return Ok(info);
            }
            _ => {}
        }
        let flags = AllocFlags::empty();
        let mut reserve = NodeReserve {
            alloc: self.alloc,
            sheaf: None,
            single: None,
            used: 0,
            outside: 0,
        };
        if reserved == 1 && w.config.single_node_alloc {
            let node = self.alloc.alloc(flags).ok_or(WriteError::Reserve {
                nodes: 1,
                source: AllocError::OutOfMemory,
            })?;
            reserve.single = Some(node);
            w.stats.single_allocs += 1;
        } else {
            let sheaf = self
                .alloc
                .prefill(flags, reserved as usize)
                .map_err(|source| WriteError::Reserve {
                    nodes: reserved,
                    source,
                })?;
            reserve.sheaf = Some(sheaf);
            w.stats.prefills += 1;
        }
        w.retired.clear();
        w.fresh.clear();
        let outcome = w.rebuild(&self.root, write, slot, &mut reserve);
        info.used = reserve.used;
        info.outside_reserve = reserve.outside;
        w.stats.nodes_outside_reserve += u64::from(reserve.outside);
        if let Err(error) = outcome {
            for node in w.fresh.drain(..) {
                // SAFETY: fresh nodes were never published; they are ours alone.
                unsafe { self.alloc.free(node.cast()) };
            }
            w.retired.clear();
            reserve.finish();
            return Err(error);
        }
        reserve.finish();
        for &node in &w.retired {
            // SAFETY: the node was unlinked by the publication above; no new reference to it
            // can be made, and readers that still hold one are inside read-side sections.
            unsafe { self.alloc.free_deferred(node.cast()) };
        }
        info.retired = w.retired.len() as u32;
        info.height_after = w.height as u8;
        let stats = &mut w.stats;
        stats.writes_by_kind[kind.index()] += 1;
        stats.nodes_reserved += u64::from(reserved);
        stats.nodes_used += u64::from(info.used);
        stats.nodes_retired += u64::from(info.retired);
        stats.live_nodes = stats.live_nodes + w.fresh.len() as u64 - w.retired.len() as u64;
        stats.height = w.height as u64;
        w.retired.clear();
        w.fresh.clear();
        Ok(info)
    }

    /// Walks to the leaf holding `a` and classifies the write (`mas_wr_store_type`), with its
    /// worst-case node count (`mas_prealloc_calc`).
    fn classify(&self, w: &mut Writer, write: (u64, u64), slot: *mut u8) -> (StoreKind, u32) {
        let (a, b) = write;
        let root =
            NonNull::new(self.root.load(Ordering::Relaxed)).expect("a tree always has a root");
        let height = w.height;
        w.path.clear();
        let mut span = Span {
            node: root,
            min: 0,
            max: u64::MAX,
            parent: None,
            slot: 0,
        };
        loop {
            w.path.push(span);
            // SAFETY: the writer holds the lock; nodes reachable from the root are live.
            let node = unsafe { Node::at(span.node) };
            if node.level() == 0 {
                break;
            }
            let len = node.len();
            let i = node.offset_of(a, len);
            let (min, max) = node.bounds(i, len, span.min, span.max);
            span = Span {
                node: node.child(i),
                min,
                max,
                parent: Some(span.node),
                slot: i,
            };
        }
        let leaf = span;
        if b > leaf.max {
            return (StoreKind::Spanning, 3 * height as u32 + 1);
        }
        w.nodes.clear();
        w.nodes.push(leaf);
        w.build_run(0, write, slot, write);
        let new_len = w.run.len();
        // SAFETY: as above.
        let node = unsafe { Node::at(leaf.node) };
        let len = node.len();
        let i = node.offset_of(a, len);
        if new_len == len && node.bounds(i, len, leaf.min, leaf.max) == (a, b) {
            return (StoreKind::ExactFit, 0);
        }
        if new_len == len + 1
            && len < SLOTS
            && b == leaf.max
            && a > node.bounds(len - 1, len, leaf.min, leaf.max).0
        {
            return (StoreKind::Append, 0);
        }
        let len_of = |s: &Span| {
            // SAFETY: path nodes are linked and live while the writer holds the lock.
            unsafe { Node::at(s.node) }.len()
        };
        let ancestors = &w.path[..w.path.len() - 1];
        if new_len > SLOTS {
            let k = 1 + ancestors
                .iter()
                .rev()
                .take_while(|s| len_of(s) == SLOTS)
                .count();
            return (StoreKind::Split, 2 * k as u32 + 1);
        }
        if new_len < MIN_FILL && !ancestors.is_empty() {
            let below_root = &ancestors[1..];
            let k = 1 + below_root
                .iter()
                .rev()
                .take_while(|s| len_of(s) <= MIN_FILL)
                .count();
            return (StoreKind::Rebalance, 2 * k as u32 + 1);
        }
        (StoreKind::NodeStore, 1)
    }

    fn store_in_place(&self, w: &mut Writer, kind: StoreKind, write: (u64, u64), slot: *mut u8) {
        let leaf = *w.path.last().expect("classify walked to a leaf");
        // SAFETY: the writer holds the lock; the leaf is linked and live.
        let node = unsafe { Node::at(leaf.node) };
        let len = node.len();
        if kind == StoreKind::ExactFit {
            node.publish_slot(node.offset_of(write.0, len), slot);
        } else {
            node.append_in_place(write.0 - 1, slot);
        }
    }

    /// Height of the tree (1 = a single leaf).
    pub fn height(&self) -> usize {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .height
    }

    /// Totals over every write so far.
    pub fn stats(&self) -> TreeStats {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats
    }
}

impl<A: ObjectAlloc> Drop for MapleTree<'_, A> {
    fn drop(&mut self) {
        let Some(root) = NonNull::new(*self.root.get_mut()) else {
            return;
        };
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            // SAFETY: `&mut self`: no reader or writer can reach the tree any more; every node
            // reachable from the root is live and owned by the tree.
            let n = unsafe { Node::at(node) };
            if n.level() > 0 {
                for i in 0..n.len() {
                    stack.push(n.child(i));
                }
            }
            // SAFETY: the node came from `alloc`, is unlinked with the whole tree, and no one
            // reads it after this (its children were collected above).
            unsafe { self.alloc.free(node.cast()) };
        }
    }
}
