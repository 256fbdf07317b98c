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

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;
use std::ops::Range;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, PoisonError};

use object_alloc::rcu::{self, ReadGuard};
use object_alloc::{AllocError, AllocFlags, ObjectAlloc, Prefill};
use serde::{Deserialize, Serialize};

use crate::node::{Entry, MIN_FILL, Node, SLOTS};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("the maple tree stores 64-bit values in pointer-sized slots");

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

/// The kind of a write, as the kernel's `mas_wr_store_type` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// The range is exactly one existing entry: its slot is replaced in place (0 nodes).
    ExactFit,
    /// The range is the tail of the leaf's last entry and the leaf has room (0 nodes).
    Append,
    /// The leaf is rewritten into one new node (1 node).
    NodeStore,
    /// The leaf overflows and splits, possibly up the tree (`2k + 1` nodes).
    Split,
    /// The leaf underflows and merges with a sibling, possibly up the tree (`2k + 1` nodes).
    Rebalance,
    /// The range reaches beyond the leaf holding its start (`3h + 1` nodes).
    Spanning,
}

impl StoreKind {
    /// Every kind, in the order of [`TreeStats::writes_by_kind`].
    pub const ALL: [StoreKind; 6] = [
        StoreKind::ExactFit,
        StoreKind::Append,
        StoreKind::NodeStore,
        StoreKind::Split,
        StoreKind::Rebalance,
        StoreKind::Spanning,
    ];

    /// Stable lower-case name (`"exact-fit"`, ..., `"spanning"`).
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::ExactFit => "exact-fit",
            StoreKind::Append => "append",
            StoreKind::NodeStore => "node-store",
            StoreKind::Split => "split",
            StoreKind::Rebalance => "rebalance",
            StoreKind::Spanning => "spanning",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How writes take their nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteConfig {
    /// A write whose worst case is one node takes it with a plain `alloc` instead of a
    /// prefilled sheaf, as the kernel's maple tree does.
    pub single_node_alloc: bool,
}

/// What one write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WriteInfo {
    /// Its kind.
    pub kind: StoreKind,
    /// Nodes reserved before the write (the worst case for its kind).
    pub reserved: u32,
    /// Nodes taken from the reserve.
    pub used: u32,
    /// Nodes the write needed beyond its reserve (always 0 unless the reservation rule is
    /// wrong; such nodes are allocated with a plain `alloc` and counted here).
    pub outside_reserve: u32,
    /// Nodes the write unlinked and handed to `free_deferred`.
    pub retired: u32,
    /// Tree height before the write.
    pub height_before: u8,
    /// Tree height after the write.
    pub height_after: u8,
}

/// Totals over every write of a tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeStats {
    /// Writes, indexed as [`StoreKind::ALL`].
    pub writes_by_kind: [u64; 6],
    /// Sum of [`WriteInfo::reserved`].
    pub nodes_reserved: u64,
    /// Sum of [`WriteInfo::used`].
    pub nodes_used: u64,
    /// Sum of [`WriteInfo::outside_reserve`]: non-zero means the reservation rule is broken.
    pub nodes_outside_reserve: u64,
    /// Sum of [`WriteInfo::retired`].
    pub nodes_retired: u64,
    /// Prefilled sheaves taken.
    pub prefills: u64,
    /// Single-node reserves taken with a plain `alloc` ([`WriteConfig::single_node_alloc`]).
    pub single_allocs: u64,
    /// Nodes in the tree now.
    pub live_nodes: u64,
    /// Height of the tree now (1 = a single leaf).
    pub height: u64,
}

impl TreeStats {
    /// Total writes.
    pub fn writes(&self) -> u64 {
        self.writes_by_kind.iter().sum()
    }
}

/// Why a write was refused; the tree is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// `start >= end`.
    #[error("empty range {start:#x}..{end:#x}: a write needs start < end")]
    EmptyRange {
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
    },
    /// The reserve could not be had.
    #[error("could not reserve {nodes} tree nodes: {source}")]
    Reserve {
        /// Nodes asked for.
        nodes: u32,
        /// The allocator's answer.
        source: AllocError,
    },
    /// A node beyond the reserve was needed and a plain allocation failed too.
    #[error("a write needed a node beyond its reserve and none could be allocated")]
    OutOfNodes,
}

/// A broken invariant or a difference from the model, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("maple tree check failed: {0}")]
pub struct CheckError(pub String);

/// The entry covering a looked-up key: the range `[first, last]` and its value (`None` for a
/// gap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First key of the entry.
    pub first: u64,
    /// Last key of the entry (inclusive).
    pub last: u64,
    /// The value, or `None` in a gap.
    pub value: Option<Value>,
}

/// Figures from a full walk of the tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeShape {
    /// Height (1 = a single leaf).
    pub height: usize,
    /// Nodes.
    pub nodes: usize,
    /// Leaves.
    pub leaves: usize,
    /// Leaf entries holding a value.
    pub ranges: usize,
    /// Leaf entries that are gaps.
    pub gaps: usize,
}

/// A node reached by a writer's walk, with its bounds and where its parent holds it.
#[derive(Clone, Copy, Debug)]
struct Span {
    node: NonNull<Node>,
    min: u64,
    max: u64,
    parent: Option<NonNull<Node>>,
    slot: usize,
}

/// State only the writer touches, behind the tree's lock (the role of `mmap_lock`).
struct Writer {
    height: usize,
    config: WriteConfig,
    stats: TreeStats,
    path: Vec<Span>,
    nodes: Vec<Span>,
    run: Vec<Entry>,
    packed: Vec<Entry>,
    retired: Vec<NonNull<Node>>,
    fresh: Vec<NonNull<Node>>,
    stack: Vec<NonNull<Node>>,
}

// SAFETY: the raw pointers are nodes owned by the tree, used only by the thread holding the
// writer lock; the scratch vectors hold no pointer across writes that another thread could
// act on.
unsafe impl Send for Writer {}

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

/// Where a write takes its nodes from, and what it took.
struct NodeReserve<'a, A: ObjectAlloc> {
    alloc: &'a A,
    sheaf: Option<A::Prefill<'a>>,
    single: Option<NonNull<u8>>,
    used: u32,
    outside: u32,
}

impl<'a, A: ObjectAlloc> NodeReserve<'a, A> {
    #[inline]
    fn take(&mut self) -> Option<NonNull<u8>> {
        let reserved = match &mut self.sheaf {
            Some(sheaf) => sheaf.alloc(AllocFlags::empty()),
            None => self.single.take(),
        };
        match reserved {
            Some(node) => {
                self.used += 1;
                Some(node)
            }
            None => self.beyond_reserve(),
        }
    }

    #[cold]
    fn beyond_reserve(&mut self) -> Option<NonNull<u8>> {
        self.outside += 1;
        self.alloc.alloc(AllocFlags::empty())
    }

    /// Gives back what is left.
    fn finish(self) {
        if let Some(sheaf) = self.sheaf {
            sheaf.return_with(AllocFlags::empty());
        }
        if let Some(node) = self.single {
            // SAFETY: the node came from `alloc` and was never handed out.
            unsafe { self.alloc.free(node) };
        }
    }
}

/// A fresh node at `level` holding `entries`, taken from the reserve and listed in `fresh`.
fn new_node<A: ObjectAlloc>(
    fresh: &mut Vec<NonNull<Node>>,
    level: usize,
    entries: &[Entry],
    reserve: &mut NodeReserve<'_, A>,
) -> Result<NonNull<Node>, WriteError> {
    let memory = reserve.take().ok_or(WriteError::OutOfNodes)?;
    if memory.as_ptr().addr() % 8 != 0 {
        misaligned(memory);
    }
    // SAFETY: `memory` is a fresh object of at least NODE_SIZE bytes, 8-byte aligned (checked
    // above), that nothing else references.
    let node = unsafe { Node::init(memory, level as u8, entries) };
    fresh.push(node);
    Ok(node)
}

#[cold]
fn misaligned(node: NonNull<u8>) -> ! {
    panic!("allocator returned a node at {node:p}, not 8-byte aligned: use node_cache_config()")
}

/// The node at `level` holding `key`, found from `root` at `root_level`.
fn descend(root: NonNull<Node>, root_level: usize, key: u64, level: usize) -> Span {
    let mut span = Span {
        node: root,
        min: 0,
        max: u64::MAX,
        parent: None,
        slot: 0,
    };
    for _ in level..root_level {
        // SAFETY: the writer holds the lock; every node reachable from the root is live.
        let node = unsafe { Node::at(span.node) };
        let len = node.len();
        let i = node.offset_of(key, len);
        let (min, max) = node.bounds(i, len, span.min, span.max);
        span = Span {
            node: node.child(i),
            min,
            max,
            parent: Some(span.node),
            slot: i,
        };
    }
    span
}

/// Appends to `out`, in key order, the nodes at `level` that intersect `[lo, hi]` and are not
/// entirely inside `[a, b]`.
fn collect(
    span: Span,
    span_level: usize,
    level: usize,
    window: (u64, u64),
    write: (u64, u64),
    out: &mut Vec<Span>,
) {
    if span_level == level {
        out.push(span);
        return;
    }
    // SAFETY: the writer holds the lock; every node reachable from the root is live.
    let node = unsafe { Node::at(span.node) };
    let len = node.len();
    for i in 0..len {
        let (min, max) = node.bounds(i, len, span.min, span.max);
        if max < window.0 {
            continue;
        }
        if min > window.1 {
            break;
        }
        if write.0 <= min && max <= write.1 {
            continue;
        }
        let child = Span {
            node: node.child(i),
            min,
            max,
            parent: Some(span.node),
            slot: i,
        };
        collect(child, span_level - 1, level, window, write, out);
    }
}

/// Pushes a leaf entry, merging a gap into a preceding gap.
#[inline]
fn push_leaf(run: &mut Vec<Entry>, last: u64, slot: *mut u8) {
    if slot.is_null()
        && let Some(prev) = run.last_mut()
        && prev.is_gap()
    {
        prev.last = last;
        return;
    }
    run.push(Entry { last, slot });
}

impl Writer {
    /// The run of entries at `level` for the nodes in `self.nodes`, with the write of `slot`
    /// over `[a, b]` applied (leaves) or the children inside `prev` replaced by `self.packed`.
    fn build_run(&mut self, level: usize, write: (u64, u64), slot: *mut u8, prev: (u64, u64)) {
        let (a, b) = write;
        let run = &mut self.run;
        run.clear();
        let mut inserted = false;
        for span in &self.nodes {
            // SAFETY: the writer holds the lock; collected nodes are reachable, hence live.
            let node = unsafe { Node::at(span.node) };
            let len = node.len();
            for i in 0..len {
                let (lo, hi) = node.bounds(i, len, span.min, span.max);
                let old = node.slot(i);
                if level == 0 {
                    if hi < a {
                        push_leaf(run, hi, old);
                        continue;
                    }
                    if lo < a {
                        push_leaf(run, a - 1, old);
                    }
                    if !inserted {
                        push_leaf(run, b, slot);
                        inserted = true;
                    }
                    if hi > b {
                        push_leaf(run, hi, old);
                    }
                } else if hi < prev.0 {
                    run.push(Entry {
                        last: hi,
                        slot: old,
                    });
                } else {
                    if !inserted {
                        run.extend_from_slice(&self.packed);
                        inserted = true;
                    }
                    if lo > prev.1 {
                        run.push(Entry {
                            last: hi,
                            slot: old,
                        });
                    }
                }
            }
        }
        if !inserted {
            if level == 0 {
                push_leaf(run, b, slot);
            } else {
                run.extend_from_slice(&self.packed);
            }
        }
    }

    /// Packs `self.run` into `ceil(n / 16)` balanced nodes at `level`; their entries become
    /// `self.packed`.
    fn pack<A: ObjectAlloc>(
        &mut self,
        level: usize,
        reserve: &mut NodeReserve<'_, A>,
    ) -> Result<(), WriteError> {
        self.packed.clear();
        let n = self.run.len();
        let k = n.div_ceil(SLOTS);
        let (base, extra) = (n / k, n % k);
        let mut at = 0;
        for j in 0..k {
            let size = base + usize::from(j < extra);
            let chunk = &self.run[at..at + size];
            let node = new_node(&mut self.fresh, level, chunk, reserve)?;
            self.packed.push(Entry {
                last: chunk[size - 1].last,
                slot: node.as_ptr().cast(),
            });
            at += size;
        }
        Ok(())
    }

    /// Adds `top` and every node below it to the retired list.
    fn retire_subtree(&mut self, top: NonNull<Node>) {
        self.stack.push(top);
        while let Some(node) = self.stack.pop() {
            self.retired.push(node);
            // SAFETY: the writer holds the lock and the subtree is still linked.
            let n = unsafe { Node::at(node) };
            if n.level() > 0 {
                for i in 0..n.len() {
                    self.stack.push(n.child(i));
                }
            }
        }
    }

    /// The bottom-up copy-on-write rebuild for every write that is not in place. On success
    /// the new subtree is published and the replaced nodes are in `self.retired`; on failure
    /// nothing is published and the fresh nodes are in `self.fresh`.
    fn rebuild<A: ObjectAlloc>(
        &mut self,
        root_slot: &AtomicPtr<Node>,
        write: (u64, u64),
        slot: *mut u8,
        reserve: &mut NodeReserve<'_, A>,
    ) -> Result<(), WriteError> {
        let root =
            NonNull::new(root_slot.load(Ordering::Relaxed)).expect("a tree always has a root");
        let root_span = Span {
            node: root,
            min: 0,
            max: u64::MAX,
            parent: None,
            slot: 0,
        };
        let root_level = self.height - 1;
        let (a, b) = write;
        let mut window = write;
        let mut prev = write;
        self.packed.clear();
        for level in 0..=root_level {
            self.nodes.clear();
            collect(root_span, root_level, level, window, write, &mut self.nodes);
            window = hull(&self.nodes, window);
            self.build_run(level, write, slot, prev);
            if level < root_level
                && self.run.len() < MIN_FILL
                && let Some(neighbour) = neighbour(root, root_level, level, window)
            {
                window = (window.0.min(neighbour.min), window.1.max(neighbour.max));
                self.nodes.clear();
                collect(root_span, root_level, level, window, write, &mut self.nodes);
                self.build_run(level, write, slot, prev);
            }
            for i in 0..self.nodes.len() {
                let span = self.nodes[i];
                self.retired.push(span.node);
                if level == 0 {
                    continue;
                }
                // SAFETY: the writer holds the lock; the node is still linked.
                let node = unsafe { Node::at(span.node) };
                let len = node.len();
                for c in 0..len {
                    let (lo, hi) = node.bounds(c, len, span.min, span.max);
                    if a <= lo && hi <= b {
                        self.retire_subtree(node.child(c));
                    }
                }
            }

            if level == root_level {
                let new_root = if self.run.len() == 1 && level > 0 {
                    NonNull::new(self.run[0].slot.cast::<Node>())
                        .expect("inner entries hold children")
                } else if self.run.len() <= SLOTS {
                    new_node(&mut self.fresh, level, &self.run, reserve)?
                } else {
                    self.pack(level, reserve)?;
                    new_node(&mut self.fresh, level + 1, &self.packed, reserve)?
                };
                root_slot.store(new_root.as_ptr(), Ordering::Release);
                // SAFETY: the new root is live: fresh, or a kept child of the old tree.
                self.height = usize::from(unsafe { Node::at(new_root) }.level()) + 1;
                return Ok(());
            }

            let only = self.nodes.len() == 1
                && self.nodes[0].min <= window.0
                && window.1 <= self.nodes[0].max;
            if only && (MIN_FILL..=SLOTS).contains(&self.run.len()) {
                let span = self.nodes[0];
                let node = new_node(&mut self.fresh, level, &self.run, reserve)?;
                let parent = span
                    .parent
                    .expect("a node below the root level has a parent");
                // SAFETY: the writer holds the lock; the parent is linked and live.
                unsafe { Node::at(parent) }.publish_slot(span.slot, node.as_ptr().cast());
                return Ok(());
            }
            if self.run.len() == 1 && level > 0 && window == (0, u64::MAX) {
                // The whole level collapsed into one child: hand it up unchanged.
                self.packed.clear();
                self.packed.push(self.run[0]);
            } else {
                self.pack(level, reserve)?;
            }
            prev = window;
        }
        unreachable!("the climb ends at the root level")
    }
}

fn hull(nodes: &[Span], window: (u64, u64)) -> (u64, u64) {
    match (nodes.first(), nodes.last()) {
        (Some(first), Some(last)) => (window.0.min(first.min), window.1.max(last.max)),
        _ => window,
    }
}

/// The node adjacent to the window at `level`: a sibling of the window's edge node if there
/// is one, else the node on the left, else the one on the right.
fn neighbour(
    root: NonNull<Node>,
    root_level: usize,
    level: usize,
    window: (u64, u64),
) -> Option<Span> {
    let left = (window.0 > 0).then(|| descend(root, root_level, window.0 - 1, level));
    let right = (window.1 < u64::MAX).then(|| descend(root, root_level, window.1 + 1, level));
    if let Some(left) = left
        && left.parent == descend(root, root_level, window.0, level).parent
    {
        return Some(left);
    }
    if let Some(right) = right
        && right.parent == descend(root, root_level, window.1, level).parent
    {
        return Some(right);
    }
    left.or(right)
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

    /// Every stored range with its value, in key order (gaps left out).
    pub fn ranges(&self) -> Vec<(Range<u64>, Value)> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        let root =
            NonNull::new(self.root.load(Ordering::Acquire)).expect("a tree always has a root");
        let mut visit = |first: u64, last: u64, value: Option<Value>| {
            if let Some(value) = value {
                out.push((first..last + 1, value));
            }
        };
        walk_leaves(root, 0, u64::MAX, &mut visit);
        out
    }

    /// Checks every structural invariant of the [module documentation](self) and the node
    /// count; returns the tree's shape.
    pub fn check_structure(&self) -> Result<TreeShape, CheckError> {
        let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let root =
            NonNull::new(self.root.load(Ordering::Acquire)).expect("a tree always has a root");
        let mut shape = TreeShape {
            height: w.height,
            ..TreeShape::default()
        };
        // SAFETY: the writer lock is held; the root is live.
        let root_level = usize::from(unsafe { Node::at(root) }.level());
        if root_level + 1 != w.height {
            return Err(CheckError(format!(
                "root is at level {root_level} but the tree records height {}",
                w.height
            )));
        }
        check_node(root, root_level, 0, u64::MAX, true, &mut shape)?;
        if shape.nodes as u64 != w.stats.live_nodes {
            return Err(CheckError(format!(
                "walk found {} nodes, the writer accounts for {}",
                shape.nodes, w.stats.live_nodes
            )));
        }
        Ok(shape)
    }

    /// Checks the structure, then that the stored ranges are exactly those of `model`
    /// (start → (end, value)).
    pub fn check(&self, model: &BTreeMap<u64, (u64, Value)>) -> Result<TreeShape, CheckError> {
        let shape = self.check_structure()?;
        let ranges = self.ranges();
        let mut expected = model
            .iter()
            .map(|(&start, &(end, value))| (start..end, value));
        for (i, got) in ranges.iter().enumerate() {
            match expected.next() {
                Some(want) if want == *got => {}
                Some(want) => {
                    return Err(CheckError(format!(
                        "range {i}: tree holds {:#x}..{:#x} = {}, model {:#x}..{:#x} = {}",
                        got.0.start, got.0.end, got.1, want.0.start, want.0.end, want.1
                    )));
                }
                None => {
                    return Err(CheckError(format!(
                        "tree holds {:#x}..{:#x} = {} beyond the model's {} ranges",
                        got.0.start,
                        got.0.end,
                        got.1,
                        model.len()
                    )));
                }
            }
        }
        if let Some(want) = expected.next() {
            return Err(CheckError(format!(
                "model range {:#x}..{:#x} = {} missing from the tree ({} ranges)",
                want.0.start,
                want.0.end,
                want.1,
                ranges.len()
            )));
        }
        Ok(shape)
    }
}

fn walk_leaves(
    node: NonNull<Node>,
    min: u64,
    max: u64,
    visit: &mut impl FnMut(u64, u64, Option<Value>),
) {
    // SAFETY: callers hold the writer lock (or own the tree); the subtree is live.
    let n = unsafe { Node::at(node) };
    let len = n.len();
    for i in 0..len {
        let (lo, hi) = n.bounds(i, len, min, max);
        if n.level() == 0 {
            visit(lo, hi, decode(n.slot(i)));
        } else {
            walk_leaves(n.child(i), lo, hi, visit);
        }
    }
}

fn check_node(
    node: NonNull<Node>,
    level: usize,
    min: u64,
    max: u64,
    is_root: bool,
    shape: &mut TreeShape,
) -> Result<(), CheckError> {
    // SAFETY: the writer lock is held; the subtree is live.
    let n = unsafe { Node::at(node) };
    let len = n.len();
    let at = || format!("node {node:p} (level {level}, keys {min:#x}..={max:#x})");
    shape.nodes += 1;
    if usize::from(n.level()) != level {
        return Err(CheckError(format!("{}: records level {}", at(), n.level())));
    }
    if len == 0 || len > SLOTS {
        return Err(CheckError(format!("{}: holds {len} entries", at())));
    }
    let least = if !is_root {
        MIN_FILL
    } else if level > 0 {
        2
    } else {
        1
    };
    if len < least {
        return Err(CheckError(format!(
            "{}: holds {len} entries, fewer than {least}",
            at()
        )));
    }
    let mut prev_gap = false;
    for i in 0..len {
        let (lo, hi) = n.bounds(i, len, min, max);
        if lo > hi || (i > 0 && lo <= min) {
            return Err(CheckError(format!(
                "{}: entry {i} spans {lo:#x}..={hi:#x}",
                at()
            )));
        }
        if level == 0 {
            let gap = n.slot(i).is_null();
            if gap && prev_gap {
                return Err(CheckError(format!(
                    "{}: adjacent gaps at entries {} and {i}",
                    at(),
                    i - 1
                )));
            }
            prev_gap = gap;
            if gap {
                shape.gaps += 1;
            } else {
                shape.ranges += 1;
            }
        } else {
            check_node(n.child(i), level - 1, lo, hi, false, shape)?;
        }
    }
    if level == 0 {
        shape.leaves += 1;
    }
    Ok(())
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
