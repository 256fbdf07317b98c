//! Slab metadata: the slab's free list and counters, kept outside the slab's pages.
//!
//! # Why the free-list links live here and not in the objects
//!
//! SLUB keeps each free object's link inside the object. Its lockless allocation fast path
//! therefore reads a word of an object that another CPU may, at that instant, be handing back
//! to the page allocator; the kernel can afford this because freed slab pages stay mapped in
//! its direct map. In user space a released slab is unmapped, and that read would fault.
//!
//! So the link of object `i` is `links[i]` of the slab's [`SlabMeta`], and `SlabMeta`s are
//! *type-stable*: once created they are recycled between slabs of the same cache but never
//! freed while the cache lives ([`MetaPool`]). A stale read of a link is then always a read of
//! valid memory, possibly of a value that belongs to another slab by now; the transaction id
//! makes the compare-and-swap that would use it fail (see the crate documentation). Slabs of
//! one cache share one geometry, so every `links` array has the same length and an index from
//! any slab of the cache is in bounds of any other's.
//!
//! # The slab word
//!
//! `state` packs SLUB's `freelist` and `counters` into one `u64`, updated by compare-and-swap
//! (the kernel's `cmpxchg_double_slab` on `(freelist, counters)`):
//!
//! ```text
//! bits  0..32  head   index of the first object on the slab's free list, NONE for empty
//! bits 32..63  inuse  objects not on the slab's free list
//! bit  63      frozen the slab is a CPU slab: its CPU owns the objects it took
//! ```
//!
//! Invariant: `inuse + |slab free list| == objects`. Objects on a CPU free list count as in
//! use from the slab's point of view (they left the slab's list when the CPU took it).
//!
//! The slab's own free list is only ever pushed (one object or a chain: remote frees) or
//! taken whole (a CPU freezing the slab), never popped one object at a time by concurrent
//! threads, so the compare-and-swap on it has no ABA hazard.

use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use slab::SlabLayout;

/// The end of a free list.
pub(crate) const NONE: u32 = u32::MAX;

const INUSE_SHIFT: u32 = 32;
const INUSE_MASK: u64 = (1 << 31) - 1;
const FROZEN: u64 = 1 << 63;

/// The unpacked slab word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlabState {
    pub(crate) head: u32,
    pub(crate) inuse: u32,
    pub(crate) frozen: bool,
}

impl SlabState {
    #[inline]
    pub(crate) fn unpack(word: u64) -> Self {
        Self {
            head: word as u32,
            inuse: ((word >> INUSE_SHIFT) & INUSE_MASK) as u32,
            frozen: word & FROZEN != 0,
        }
    }

    #[inline]
    pub(crate) fn pack(self) -> u64 {
        u64::from(self.head)
            | (u64::from(self.inuse) & INUSE_MASK) << INUSE_SHIFT
            | if self.frozen { FROZEN } else { 0 }
    }
}

/// Geometry of every slab of one cache, with the address arithmetic the fast paths need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) layout: SlabLayout,
    mask: usize,
    /// `ceil(2^32 / stride)`: object index by multiplication (the kernel's `obj_to_index`).
    reciprocal: u64,
}

impl Geometry {
    pub(crate) fn new(layout: SlabLayout) -> Self {
        assert!(
            layout.first_offset >= size_of::<usize>(),
            "the slab layout leaves no room for the slab header"
        );
        assert!(layout.objects_per_slab < NONE as usize && layout.slab_bytes <= 1 << 31);
        let stride = layout.stride as u64;
        Self {
            layout,
            mask: !(layout.slab_bytes - 1),
            reciprocal: (1u64 << 32).div_ceil(stride),
        }
    }

    /// Objects in one slab.
    #[inline]
    pub(crate) fn objects(&self) -> u32 {
        self.layout.objects_per_slab as u32
    }

    /// The base address of the slab holding `object`.
    #[inline]
    pub(crate) fn base(&self, object: usize) -> usize {
        object & self.mask
    }

    /// The index of `object` in its slab. Exact for every object start: with
    /// `offset = i * stride < 2^31`, `offset * ceil(2^32 / stride) >> 32 == i`.
    #[inline]
    pub(crate) fn index(&self, object: usize) -> u32 {
        let offset = (object & !self.mask).wrapping_sub(self.layout.first_offset) as u64;
        ((offset * self.reciprocal) >> 32) as u32
    }

    /// The address of object `index` of the slab at `base`.
    #[inline]
    pub(crate) fn object(&self, base: usize, index: u32) -> usize {
        base + self.layout.first_offset + index as usize * self.layout.stride
    }

    /// The metadata of the slab holding `object`, read from the slab header.
    ///
    /// # Safety
    ///
    /// - `object` is an object of a slab of this cache that is still held (a live object, or
    ///   one on a list the caller owns).
    #[inline]
    pub(crate) unsafe fn meta_of(&self, object: usize) -> *const SlabMeta {
        let header = ptr::with_exposed_provenance::<*const SlabMeta>(self.base(object));
        // SAFETY: the slab is held, so its header is mapped; it was written before any object
        // of the slab was handed out, and the handover of the object ordered that write before
        // this read.
        unsafe { header.read() }
    }
}

/// Metadata of one slab; recycled between slabs, never freed while its cache lives.
#[derive(Debug)]
pub(crate) struct SlabMeta {
    /// The packed slab word (see the module documentation).
    pub(crate) state: AtomicU64,
    /// Base address of the slab's chunk, 0 while the metadata is unused.
    pub(crate) base: AtomicUsize,
    /// Node whose partial list the slab belongs to.
    pub(crate) node: AtomicUsize,
    /// Whether the slab is on its node's partial list (guarded by that list's lock).
    pub(crate) on_node_partial: AtomicBool,
    /// Neighbours on the list the slab is on (node partial: both; CPU partial: `next` only);
    /// guarded by that list's lock.
    pub(crate) prev: AtomicPtr<SlabMeta>,
    pub(crate) next: AtomicPtr<SlabMeta>,
    /// `links[i]`: index of the object after object `i` on whichever free list holds it.
    pub(crate) links: Box<[AtomicU32]>,
}

impl SlabMeta {
    fn new(objects: u32) -> Self {
        Self {
            state: AtomicU64::new(0),
            base: AtomicUsize::new(0),
            node: AtomicUsize::new(0),
            on_node_partial: AtomicBool::new(false),
            prev: AtomicPtr::new(ptr::null_mut()),
            next: AtomicPtr::new(ptr::null_mut()),
            links: (0..objects).map(|_| AtomicU32::new(NONE)).collect(),
        }
    }

    /// The link of object `index`; `NONE` for an index out of range (only a torn read of a
    /// stale slab can produce one, and its compare-and-swap fails).
    #[inline]
    pub(crate) fn link(&self, index: u32) -> u32 {
        match self.links.get(index as usize) {
            Some(link) => link.load(Ordering::Relaxed),
            None => NONE,
        }
    }

    /// Sets the link of object `index`.
    #[inline]
    pub(crate) fn set_link(&self, index: u32, next: u32) {
        if let Some(link) = self.links.get(index as usize) {
            link.store(next, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn load(&self) -> SlabState {
        SlabState::unpack(self.state.load(Ordering::Acquire))
    }

    /// One compare-and-swap of the slab word.
    #[inline]
    pub(crate) fn update(&self, old: SlabState, new: SlabState) -> bool {
        self.state
            .compare_exchange(old.pack(), new.pack(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Every `SlabMeta` a cache ever created: the ones bound to slabs and a free pool of unbound
/// ones. `SlabMeta`s are boxed, so their addresses are stable; they are dropped only with the
/// pool, when the cache is dropped.
#[derive(Debug, Default)]
pub(crate) struct MetaPool {
    inner: Mutex<MetaPoolInner>,
}

#[derive(Debug, Default)]
struct MetaPoolInner {
    // Boxed on purpose: the `Vec` grows and moves its elements, but each `SlabMeta` must keep
    // its address for the cache's life.
    #[allow(clippy::vec_box)]
    all: Vec<Box<SlabMeta>>,
    unused: Vec<*const SlabMeta>,
}

// SAFETY: the raw pointers in `unused` point into boxes owned by `all`; all access to both
// goes through the mutex, and `SlabMeta` itself is made of atomics.
unsafe impl Send for MetaPoolInner {}

impl MetaPool {
    /// Locks the pool until a fork is over (see `slab::fork`).
    ///
    /// # Safety
    ///
    /// - The cache that owns the pool is registered with `slab::fork`.
    pub(crate) unsafe fn hold_for_fork(&self, held: &mut slab::fork::Held) {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the caller's obligation: the pool lives while its cache is registered.
        unsafe { held.hold(guard) };
    }

    /// An unused `SlabMeta` (recycled or new), valid until the pool is dropped.
    pub(crate) fn get(&self, objects: u32) -> *const SlabMeta {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(meta) = inner.unused.pop() {
            return meta;
        }
        let meta = Box::new(SlabMeta::new(objects));
        let pointer: *const SlabMeta = &*meta;
        inner.all.push(meta);
        pointer
    }

    /// Puts back a `SlabMeta` whose slab was released.
    pub(crate) fn put(&self, meta: *const SlabMeta) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.unused.push(meta);
    }

    /// Calls `f` on every `SlabMeta` currently bound to a slab.
    pub(crate) fn for_each_bound(&self, mut f: impl FnMut(&SlabMeta)) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for meta in &inner.all {
            if meta.base.load(Ordering::Acquire) != 0 {
                f(meta);
            }
        }
    }

    /// Number of `SlabMeta`s ever created.
    pub(crate) fn created(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_alloc::CacheConfig;

    #[test]
    fn state_round_trips() {
        for state in [
            SlabState {
                head: NONE,
                inuse: 0,
                frozen: false,
            },
            SlabState {
                head: 3,
                inuse: (1 << 31) - 1,
                frozen: true,
            },
            SlabState {
                head: 0,
                inuse: 17,
                frozen: false,
            },
        ] {
            assert_eq!(SlabState::unpack(state.pack()), state);
        }
    }

    #[test]
    fn index_by_reciprocal_is_exact() {
        for size in [1, 8, 24, 40, 64, 96, 100, 192, 1000, 4096, 5000, 65536] {
            let g = Geometry::new(SlabLayout::new(&CacheConfig::new(size)).unwrap());
            let base = 0x7f00_0000_0000usize & !(g.layout.slab_bytes - 1);
            for i in 0..g.objects() {
                let object = g.object(base, i);
                assert_eq!(g.base(object), base);
                assert_eq!(g.index(object), i, "size {size}");
            }
        }
    }
}
