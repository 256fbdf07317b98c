//! The node: 256 bytes, 16 slots and 15 pivots, like the kernel's `maple_range_64` and
//! `maple_leaf_64`.
//!
//! A node covers an implicit key range `[min, max]` given by its parent (the root covers
//! `[0, u64::MAX]`). Its `len` entries cover that range contiguously: entry `i` covers
//! `(pivot[i - 1], pivot[i]]` (the first starts at `min`), and the last entry ends at `max`,
//! so only `len - 1` pivots are stored. A leaf's slot holds a value (`0` for a gap); an inner
//! node's slot holds a child pointer.
//!
//! Every field is an atomic so that readers, which never lock, may load them while the writer
//! stores: the writer only ever changes a node a reader may see with single atomic stores that
//! leave it consistent at every instant (a child or value slot replaced, or an append that
//! writes the new slot and pivot beyond `len` before publishing `len + 1` with `Release`).
//! Everything else is copy-on-write: a fresh node is written in full before a `Release` store
//! publishes it, and readers load child pointers and `meta` with `Acquire`.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Slots per node.
pub(crate) const SLOTS: usize = 16;
/// Pivots per node.
pub(crate) const PIVOTS: usize = SLOTS - 1;
/// The fewest entries a node other than the root holds (the kernel's `mt_min_slots` for
/// range and leaf nodes: `16 / 2 - 2`).
pub(crate) const MIN_FILL: usize = SLOTS / 2 - 2;

/// Size in bytes of one tree node, and so the object size of the cache that serves them.
pub const NODE_SIZE: usize = 256;

/// The alignment the kernel gives its `maple_node` cache (the size of a node, so that the low
/// bits of a node pointer are free to encode the node type). This tree keeps the type in the
/// node's meta word instead and needs only 8-byte alignment, but [`node_cache_config`]
/// asks for 256 so that the allocator under test lays nodes out as the kernel's cache does.
///
/// [`node_cache_config`]: crate::node_cache_config
pub const NODE_ALIGN: usize = 256;

/// One tree node, laid out like the kernel's 64-bit range node: a meta word where the kernel
/// keeps its parent pointer, 15 pivots, 16 slots.
#[repr(C)]
pub(crate) struct Node {
    /// Bits 0..8: `len`, the number of entries (1..=16). Bits 8..16: level (0 = leaf).
    meta: AtomicU64,
    pivots: [AtomicU64; PIVOTS],
    slots: [AtomicPtr<u8>; SLOTS],
}

const _: () = assert!(size_of::<Node>() == NODE_SIZE);
const _: () = assert!(align_of::<Node>() <= 8);

/// An entry of a node being built: the last key it covers and its slot word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) last: u64,
    pub(crate) slot: *mut u8,
}

impl Entry {
    #[inline]
    pub(crate) fn is_gap(&self) -> bool {
        self.slot.is_null()
    }
}

#[inline]
fn meta_word(len: usize, level: u8) -> u64 {
    debug_assert!((1..=SLOTS).contains(&len), "node length {len}");
    len as u64 | (u64::from(level) << 8)
}

impl Node {
    /// The node behind `ptr`.
    ///
    /// # Safety
    ///
    /// - `ptr` points to an initialised node that stays allocated for `'n`: the caller is the
    ///   writer holding the tree's lock, or a reader inside a read-side section that reached
    ///   the node through the tree.
    #[inline]
    pub(crate) unsafe fn at<'n>(ptr: NonNull<Node>) -> &'n Node {
        // SAFETY: the caller guarantees the node is initialised and live for 'n; every field
        // is an atomic, so shared references may coexist with the writer's stores.
        unsafe { ptr.as_ref() }
    }

    /// Writes a complete node into fresh memory.
    ///
    /// # Safety
    ///
    /// - `memory` is [`NODE_SIZE`] writable bytes, 8-byte aligned, that no one else uses.
    pub(crate) unsafe fn init(memory: NonNull<u8>, level: u8, entries: &[Entry]) -> NonNull<Node> {
        debug_assert!(!entries.is_empty() && entries.len() <= SLOTS);
        debug_assert_eq!(
            memory.as_ptr() as usize % 8,
            0,
            "node {memory:p} misaligned"
        );
        let node = memory.cast::<Node>();
        let raw = node.as_ptr();
        // SAFETY: the caller hands over NODE_SIZE exclusive, aligned bytes; each write targets
        // a field inside them and initialises it (atomics have no drop glue).
        unsafe {
            (&raw mut (*raw).meta).write(AtomicU64::new(meta_word(entries.len(), level)));
            for i in 0..PIVOTS {
                let pivot = if i + 1 < entries.len() {
                    entries[i].last
                } else {
                    0
                };
                (&raw mut (*raw).pivots[i]).write(AtomicU64::new(pivot));
            }
            for i in 0..SLOTS {
                let slot = entries.get(i).map_or(ptr::null_mut(), |e| e.slot);
                (&raw mut (*raw).slots[i]).write(AtomicPtr::new(slot));
            }
        }
        node
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        (self.meta.load(Ordering::Acquire) & 0xff) as usize
    }

    #[inline]
    pub(crate) fn level(&self) -> u8 {
        (self.meta.load(Ordering::Relaxed) >> 8) as u8
    }

    #[inline]
    pub(crate) fn pivot(&self, i: usize) -> u64 {
        self.pivots[i].load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn slot(&self, i: usize) -> *mut u8 {
        self.slots[i].load(Ordering::Acquire)
    }

    /// The child in slot `i` of an inner node.
    #[inline]
    pub(crate) fn child(&self, i: usize) -> NonNull<Node> {
        let child = self.slot(i).cast::<Node>();
        debug_assert!(!child.is_null(), "inner node slot {i} empty");
        // Inner nodes hold a child in each of their first `len` slots and callers pass
        // `i < len`: a null here is a broken tree.
        NonNull::new(child).unwrap_or_else(|| corrupt(i))
    }

    /// The offset of the entry covering `index`, given `len` as loaded once by the caller.
    #[inline]
    pub(crate) fn offset_of(&self, index: u64, len: usize) -> usize {
        let mut i = 0;
        while i + 1 < len && self.pivot(i) < index {
            i += 1;
        }
        i
    }

    /// Bounds `[lo, hi]` of entry `i` of a node covering `[min, max]` with `len` entries.
    #[inline]
    pub(crate) fn bounds(&self, i: usize, len: usize, min: u64, max: u64) -> (u64, u64) {
        let lo = if i == 0 { min } else { self.pivot(i - 1) + 1 };
        let hi = if i + 1 == len { max } else { self.pivot(i) };
        (lo, hi)
    }

    /// Replaces the slot word of entry `i` (exact-fit store, or publication of a child).
    #[inline]
    pub(crate) fn publish_slot(&self, i: usize, slot: *mut u8) {
        self.slots[i].store(slot, Ordering::Release);
    }

    /// Appends an entry in place: entry `len - 1` now ends at `split_last`, and a new last
    /// entry holding `slot` covers the rest. Readers that loaded the old `len` never look at
    /// the slot and pivot written here; those that load the new one see them (`Release`).
    pub(crate) fn append_in_place(&self, split_last: u64, slot: *mut u8) {
        let meta = self.meta.load(Ordering::Relaxed);
        let len = (meta & 0xff) as usize;
        debug_assert!(len < SLOTS);
        self.slots[len].store(slot, Ordering::Relaxed);
        self.pivots[len - 1].store(split_last, Ordering::Relaxed);
        self.meta.store(meta + 1, Ordering::Release);
    }
}

#[cold]
fn corrupt(i: usize) -> NonNull<Node> {
    panic!("maple tree corrupt: inner node slot {i} holds no child")
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn layout_is_the_kernels_range_node() {
        assert_eq!(size_of::<Node>(), 256);
        assert_eq!(offset_of!(Node, pivots), 8);
        assert_eq!(offset_of!(Node, slots), 8 + 15 * 8);
        assert_eq!(MIN_FILL, 6);
    }

    #[test]
    fn entries_bounds_and_in_place_append() {
        let mut memory = [0u64; NODE_SIZE / 8];
        let base = NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
        let value = |x: usize| ptr::without_provenance_mut::<u8>(x);
        let entries = [
            Entry {
                last: 9,
                slot: value(1),
            },
            Entry {
                last: 19,
                slot: ptr::null_mut(),
            },
            Entry {
                last: 99,
                slot: value(3),
            },
        ];
        // SAFETY: `memory` is 256 writable, 8-byte aligned bytes used by nothing else.
        let node = unsafe { Node::at(Node::init(base, 0, &entries)) };
        assert_eq!((node.len(), node.level()), (3, 0));
        assert_eq!(node.bounds(1, 3, 0, 99), (10, 19));
        assert_eq!(node.bounds(2, 3, 0, 99), (20, 99));
        assert_eq!(node.offset_of(15, 3), 1);
        assert_eq!(node.offset_of(1000, 3), 2);
        node.append_in_place(49, value(4));
        assert_eq!(node.len(), 4);
        assert_eq!(node.bounds(2, 4, 0, 99), (20, 49));
        assert_eq!(node.bounds(3, 4, 0, 99), (50, 99));
        assert_eq!(node.slot(3).addr(), 4);
        node.publish_slot(1, value(7));
        assert_eq!(node.slot(1).addr(), 7);
    }
}
