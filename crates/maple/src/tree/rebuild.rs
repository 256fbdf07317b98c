//! The writer's state and the bottom-up rebuild of the nodes a write replaces, with the
//! reserve every fresh node comes from.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};

use object_alloc::{AllocFlags, ObjectAlloc, Prefill};

use super::{TreeStats, WriteConfig, WriteError};
use crate::node::{Entry, MIN_FILL, Node, SLOTS};

/// A node reached by a writer's walk, with its bounds and where its parent holds it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    pub(super) node: NonNull<Node>,
    pub(super) min: u64,
    pub(super) max: u64,
    pub(super) parent: Option<NonNull<Node>>,
    pub(super) slot: usize,
}

/// State only the writer touches, behind the tree's lock (the role of `mmap_lock`).
pub(super) struct Writer {
    pub(super) height: usize,
    pub(super) config: WriteConfig,
    pub(super) stats: TreeStats,
    pub(super) path: Vec<Span>,
    pub(super) nodes: Vec<Span>,
    pub(super) run: Vec<Entry>,
    pub(super) packed: Vec<Entry>,
    pub(super) retired: Vec<NonNull<Node>>,
    pub(super) fresh: Vec<NonNull<Node>>,
    pub(super) stack: Vec<NonNull<Node>>,
}

// SAFETY: the raw pointers are nodes owned by the tree, used only by the thread holding the
// writer lock; the scratch vectors hold no pointer across writes that another thread could
// act on.
unsafe impl Send for Writer {}

/// Where a write takes its nodes from, and what it took.
pub(super) struct NodeReserve<'a, A: ObjectAlloc> {
    pub(super) alloc: &'a A,
    pub(super) sheaf: Option<A::Prefill<'a>>,
    pub(super) single: Option<NonNull<u8>>,
    pub(super) used: u32,
    pub(super) outside: u32,
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
    pub(super) fn finish(self) {
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
pub(super) fn misaligned(node: NonNull<u8>) -> ! {
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
    pub(super) fn build_run(
        &mut self,
        level: usize,
        write: (u64, u64),
        slot: *mut u8,
        prev: (u64, u64),
    ) {
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
    pub(super) fn rebuild<A: ObjectAlloc>(
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
