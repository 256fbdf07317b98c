//! The slab pool: slabs with an in-slab free list, kept on per-node partial lists.
//!
//! The pool in three files: this one holds [`SlabPool`], its configuration and its paths;
//! `node` the slab header and a node's partial list (and the per-slab equation); `check` the
//! self-checks ([`SlabPool::check_invariants`]).
//!
//! # Bulk paths
//!
//! [`SlabPool::refill`] fills a sheaf's array under a single lock acquisition as long as the
//! node's partial slabs hold enough, taking runs of objects from one slab at a time. Only when
//! they do not, and growth is allowed, does it drop the lock, take a new slab from the page
//! source, and lock again to carve from it. [`SlabPool::free_bulk`] takes each node's lock once
//! per run of consecutive objects of that node, and within it links each run of consecutive
//! objects of one slab into a chain first, then splices the chain onto the slab's free list
//! with one update of the slab's counts (SLUB's detached free list). A failed request gives
//! back everything it had gathered before it returns.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use object_alloc::{AllocError, CacheConfig, ConfigError, PageSource};

use crate::layout::SlabLayout;
use crate::numa::node_count;
use crate::pages::page_source_for;

mod check;
mod node;

use node::{NodeSlot, NodeState, SlabHeader, take_from_slab};

/// Bytes of the slab header, before the first object's alignment padding.
pub(crate) const SLAB_HEADER_BYTES: usize = size_of::<SlabHeader>();

/// Empty slabs a node keeps by default before releasing further ones.
pub const DEFAULT_MIN_PARTIAL: usize = 5;

/// The byte written over freed objects (after their link word) when poisoning is on.
pub const POISON_FREE: u8 = 0x6b;

/// A snapshot of a pool's slabs and objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabStats {
    /// Slabs held (full, partial and empty).
    pub slabs: u64,
    /// Bytes of those slabs.
    pub slab_bytes: u64,
    /// Objects handed out by the pool and not given back (including objects the caller keeps
    /// cached in sheaves).
    pub objects_in_use: u64,
    /// Free objects in the held slabs.
    pub objects_free: u64,
    /// Slabs with objects in use and free objects both (on a partial list, not empty).
    pub partial_slabs: u64,
    /// Empty slabs held (on a partial list or queued for release).
    pub empty_slabs: u64,
    /// Slabs taken from the page source, over the pool's life.
    pub alloc_slab: u64,
    /// Slabs given back to the page source, over the pool's life.
    pub free_slab: u64,
}

/// The slab layer shared by sheaf and the slab-based baselines: slabs with an in-slab free
/// list, per-node partial lists (each behind its own short lock) keeping at least
/// `min_partial` empty slabs, bulk refill of a sheaf's array and bulk flush back.
///
/// The pool never zeroes objects (callers honour `ZERO`). With `config.debug.poison` it fills
/// new slabs' objects and freed objects, except their first word (the free-list link), with
/// [`POISON_FREE`]; debug builds (or `debug.check_invariants`) then check that poison when
/// objects are taken again, and panic naming the object if it was written while free.
///
/// Dropping the pool releases its empty slabs; slabs that still hold live objects are leaked,
/// since those objects may still be in use.
///
/// # Panics
///
/// Allocation panics if the page source breaks its contract by handing out a chunk that is
/// not aligned to its size (the mask lookup would then find the wrong slab). The checks of
/// debug builds and of `DebugOptions::check_invariants` panic with a message naming the slab
/// or object when they find corruption (a double free, a write to a freed object).
///
/// ```
/// use std::mem::MaybeUninit;
/// use std::ptr::NonNull;
/// use object_alloc::CacheConfig;
/// use slab::SlabPool;
///
/// let pool = SlabPool::new(&CacheConfig::new(64))?;
/// let mut sheaf = [MaybeUninit::<NonNull<u8>>::uninit(); 32];
/// let got = pool.refill(0, true, 8, &mut sheaf).unwrap();
/// assert!(got >= 8);
/// // SAFETY: the first `got` slots were written by `refill`.
/// let objects: Vec<NonNull<u8>> = sheaf[..got].iter().map(|s| unsafe { s.assume_init() }).collect();
/// assert_eq!(pool.stats().objects_in_use, got as u64);
/// // SAFETY: each object came from this pool, is live and appears once.
/// unsafe { pool.free_bulk(&objects) };
/// pool.shrink();
/// assert_eq!(pool.stats().slabs, 0);
/// # Ok::<(), object_alloc::ConfigError>(())
/// ```
pub struct SlabPool {
    layout: SlabLayout,
    nodes: Box<[NodeSlot]>,
    source: Arc<dyn PageSource>,
    min_partial: u64,
    /// `refill` prefers one slab (`CacheConfig::refill_one_slab`).
    refill_one_slab: bool,
    poison: bool,
    check_slow_paths: bool,
    alloc_slab: AtomicU64,
    free_slab: AtomicU64,
    /// Empty slabs that frees unlinked where the page source must not be called (see
    /// [`SlabPool::free_bulk_queued`]), linked through `next`, waiting to be given back.
    queued: AtomicPtr<SlabHeader>,
    /// How many slabs `queued` holds (still held from the page source, so counted in the
    /// stats' `slabs`).
    queued_slabs: AtomicU64,
}

impl fmt::Debug for SlabPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabPool")
            .field("layout", &self.layout)
            .field("nodes", &self.nodes.len())
            .field("page_source", &self.source.name())
            .field("min_partial", &self.min_partial)
            .field("poison", &self.poison)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SlabPool {
    /// A pool for `config`'s objects, with [`DEFAULT_MIN_PARTIAL`] and the page source
    /// [`page_source_for`]`(config)`.
    ///
    /// # Errors
    ///
    /// Refuses an invalid `config` with an error naming the field ([`SlabLayout::new`]).
    pub fn new(config: &CacheConfig) -> Result<SlabPool, ConfigError> {
        Self::with_min_partial(config, DEFAULT_MIN_PARTIAL)
    }

    /// A pool that keeps at most `min_partial` empty slabs per node on the free path.
    ///
    /// # Errors
    ///
    /// As [`SlabPool::new`].
    pub fn with_min_partial(
        config: &CacheConfig,
        min_partial: usize,
    ) -> Result<SlabPool, ConfigError> {
        let layout = SlabLayout::new(config)?;
        let nodes: Box<[NodeSlot]> = (0..node_count(config.nodes))
            .map(|_| NodeSlot(Mutex::new(NodeState::new())))
            .collect();
        let pool = SlabPool {
            layout,
            nodes,
            source: page_source_for(config),
            min_partial: min_partial as u64,
            refill_one_slab: config.refill_one_slab,
            poison: config.debug.poison,
            check_slow_paths: cfg!(debug_assertions) || config.debug.check_invariants,
            alloc_slab: AtomicU64::new(0),
            free_slab: AtomicU64::new(0),
            queued: AtomicPtr::new(ptr::null_mut()),
            queued_slabs: AtomicU64::new(0),
        };
        // Once the pool is whole (its `drop` unregisters them).
        for node in pool.nodes.iter() {
            // SAFETY: the nodes live in a boxed slice that moves with the pool without moving
            // them, and `drop` unregisters them first.
            unsafe { crate::fork::register(node) };
        }
        Ok(pool)
    }

    /// The slab geometry.
    #[inline]
    pub fn layout(&self) -> &SlabLayout {
        &self.layout
    }

    /// Number of nodes (partial lists).
    #[inline]
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The page source slabs come from.
    pub fn page_source(&self) -> &Arc<dyn PageSource> {
        &self.source
    }

    /// The most empty slabs a node keeps on the free path.
    pub fn min_partial(&self) -> usize {
        self.min_partial as usize
    }

    #[inline]
    fn lock(&self, node: usize) -> MutexGuard<'_, NodeState> {
        // A panic under the lock (a failed invariant check) leaves the lists consistent
        // enough to keep using; the panic itself has been reported.
        self.nodes[node]
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[inline]
    fn slab_of(&self, object: NonNull<u8>) -> *mut SlabHeader {
        self.layout.slab_base(object).as_ptr().cast()
    }

    /// The node whose partial list the slab of `object` belongs to.
    ///
    /// # Safety
    ///
    /// - `object` was allocated from this pool and is live (so its slab is).
    #[inline]
    pub unsafe fn node_of_object(&self, object: NonNull<u8>) -> usize {
        // SAFETY: a live object's slab is live, and its `node` never changes after creation.
        unsafe { (*self.slab_of(object)).node as usize }
    }

    /// All or nothing: fills every slot of `out` from `node`'s partial slabs, then (only if
    /// `may_grow`) new slabs. On failure every gathered object is back in its slab.
    ///
    /// `node` is taken modulo [`SlabPool::nodes`].
    pub fn alloc_bulk(
        &self,
        node: usize,
        may_grow: bool,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        self.gather(node, may_grow, out.len(), false, out)
            .map(|_| ())
    }

    /// Best effort: fills up to `out.len()` objects, at least `min`; returns how many were
    /// written (always the first n slots). If fewer than `min` can be had, gives back what it
    /// gathered and returns the error.
    ///
    /// Objects already in `node`'s partial slabs are taken up to `out.len()`; new slabs are
    /// taken only while fewer than `min` were found (and only if `may_grow`), and each new
    /// slab is carved up to `out.len()`. `node` is taken modulo [`SlabPool::nodes`].
    ///
    /// With `CacheConfig::refill_one_slab`, the objects come from one slab where they can: the
    /// first partial slab's free objects (however few), then other partial slabs only up to
    /// `min`, then a new slab carved up to `out.len()`.
    pub fn refill(
        &self,
        node: usize,
        may_grow: bool,
        min: usize,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<usize, AllocError> {
        self.gather(node, may_grow, min, self.refill_one_slab, out)
    }

    fn gather(
        &self,
        node: usize,
        may_grow: bool,
        min: usize,
        one_slab: bool,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<usize, AllocError> {
        let max = out.len();
        if max == 0 {
            return Ok(0);
        }
        let min = min.min(max);
        let node = if node < self.nodes.len() {
            node
        } else {
            node % self.nodes.len()
        };
        let layout = &self.layout;
        let mut got = {
            let mut state = self.lock(node);
            if one_slab {
                // SAFETY: the node lock is held for the calls.
                let first = unsafe { state.take_partial_from(layout, out, 1) };
                // SAFETY: as above.
                first + unsafe { state.take_partial(layout, &mut out[first..min.max(first)]) }
            } else {
                // SAFETY: the node lock is held for the call.
                unsafe { state.take_partial(layout, out) }
            }
        };
        while got < min {
            if !may_grow {
                self.give_back(&out[..got]);
                return Err(AllocError::WouldGrow);
            }
            let slab = match self.new_slab(node) {
                Ok(slab) => slab,
                Err(err) => {
                    self.give_back(&out[..got]);
                    return Err(err);
                }
            };
            let mut state = self.lock(node);
            state.slabs += 1;
            // SAFETY: the new slab is ours (published only below) and the lock is held.
            let taken = unsafe { take_from_slab(slab, layout, &mut out[got..]) };
            got += taken;
            if self.check_slow_paths {
                // SAFETY: the slab is live and only this thread can reach it.
                unsafe { self.check_slab(slab.as_ptr(), node) };
            }
            state.free_objects += (layout.objects_per_slab - taken) as u64;
            if taken < layout.objects_per_slab {
                // SAFETY: a new slab with free objects joins the partial list, lock held.
                unsafe { state.push_head(slab.as_ptr()) };
            } else if got < max && !one_slab {
                // Others may have freed objects while the lock was dropped.
                // SAFETY: the lock is held.
                got += unsafe { state.take_partial(layout, &mut out[got..]) };
            }
        }
        if self.poison && self.check_slow_paths {
            self.verify_poison(&out[..got]);
        }
        Ok(got)
    }

    /// Panics if a byte of a just-taken object (after its link word) is not the poison its
    /// slab or its last free left there: something wrote to it while it was free.
    #[cold]
    fn verify_poison(&self, taken: &[MaybeUninit<NonNull<u8>>]) {
        let link = size_of::<usize>();
        for slot in taken {
            // SAFETY: the slots were written by `take_from_slab`.
            let object = unsafe { slot.assume_init() };
            // SAFETY: the object is `stride` bytes of the slab, now ours.
            let bytes = unsafe {
                std::slice::from_raw_parts(object.as_ptr().add(link), self.layout.stride - link)
            };
            if let Some(offset) = bytes.iter().position(|&b| b != POISON_FREE) {
                panic!(
                    "object {object:p} of slab {:p} was written while free: byte {} is {:#04x},                      not the poison {POISON_FREE:#04x} (use after free or overflow)",
                    self.slab_of(object),
                    offset + link,
                    bytes[offset]
                );
            }
        }
    }

    /// Frees objects gathered by a request that then failed.
    fn give_back(&self, gathered: &[MaybeUninit<NonNull<u8>>]) {
        // SAFETY: the slots were initialised by `take_from_slab`, and `MaybeUninit<T>` has the
        // layout of `T`.
        let objects = unsafe {
            std::slice::from_raw_parts(gathered.as_ptr().cast::<NonNull<u8>>(), gathered.len())
        };
        // SAFETY: the objects were just taken from this pool and never handed out.
        unsafe { self.free_objects(objects, false) };
    }

    #[cold]
    fn new_slab(&self, node: usize) -> Result<NonNull<SlabHeader>, AllocError> {
        let bytes = self.layout.slab_bytes;
        let chunk = {
            let _call = crate::fork::PageSourceCall::enter();
            self.source.alloc_chunk(bytes)
        }
        .map_err(|_| AllocError::OutOfMemory)?;
        assert!(
            chunk.addr().get().is_multiple_of(bytes),
            "page source `{}` returned chunk {chunk:p} not aligned to its size {bytes}",
            self.source.name()
        );
        let slab = chunk.cast::<SlabHeader>();
        // SAFETY: the chunk is `bytes >= SLAB_HEADER_BYTES` writable bytes, aligned to `bytes`
        // (more than the header needs), and ours alone.
        unsafe {
            slab.as_ptr().write(SlabHeader {
                node: node as u32,
                inuse: 0,
                carved: 0,
                freelist: ptr::null_mut(),
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            });
        }
        if self.poison {
            let objects = self.layout.objects_per_slab * self.layout.stride;
            // SAFETY: the object area lies inside the chunk, which is ours alone.
            unsafe {
                chunk
                    .add(self.layout.first_offset)
                    .write_bytes(POISON_FREE, objects)
            };
        }
        self.alloc_slab.fetch_add(1, Ordering::Relaxed);
        Ok(slab)
    }

    /// Gives the slabs of a `release` list (linked through `next`) back to the page source.
    #[cold]
    fn release_slabs(&self, mut release: *mut SlabHeader) -> u64 {
        let mut released = 0;
        while let Some(slab) = NonNull::new(release) {
            // SAFETY: released slabs are unlinked from every list, so this is the only
            // reference to them.
            let header = unsafe { &*slab.as_ptr() };
            release = header.next;
            if self.check_slow_paths {
                // SAFETY: as above.
                unsafe { self.check_slab(slab.as_ptr(), header.node as usize) };
                assert_eq!(header.inuse, 0, "released slab {slab:p} still has objects");
            }
            let _call = crate::fork::PageSourceCall::enter();
            // SAFETY: the slab came from `alloc_chunk(slab_bytes)` on this source and no
            // object of it is live.
            unsafe { self.source.free_chunk(slab.cast(), self.layout.slab_bytes) };
            self.free_slab.fetch_add(1, Ordering::Relaxed);
            released += 1;
        }
        released
    }

    #[inline]
    fn poison_object(&self, object: NonNull<u8>) {
        let link = size_of::<usize>();
        // SAFETY: the object is `stride >= link` writable bytes that the caller gave back.
        unsafe {
            object
                .as_ptr()
                .add(link)
                .write_bytes(POISON_FREE, self.layout.stride - link)
        };
    }

    /// Frees `objects` without poisoning them; the slabs to release are queued instead when
    /// `queue` is set.
    ///
    /// # Safety
    ///
    /// As [`SlabPool::free_bulk`].
    unsafe fn free_objects(&self, objects: &[NonNull<u8>], queue: bool) {
        let layout = &self.layout;
        let mut start = 0;
        while start < objects.len() {
            let mut slab = self.slab_of(objects[start]);
            // SAFETY: the object is live, so its slab is too; `node` never changes.
            let node = unsafe { (*slab).node };
            let mut release = ptr::null_mut();
            {
                let mut state = self.lock(node as usize);
                loop {
                    let end = objects[start + 1..]
                        .iter()
                        .position(|&object| self.slab_of(object) != slab)
                        .map_or(objects.len(), |offset| start + 1 + offset);
                    // SAFETY: the slab is this node's, the run's objects are live in it, and
                    // the lock is held.
                    unsafe {
                        state.free_run_locked(
                            layout,
                            slab,
                            &objects[start..end],
                            self.min_partial,
                            &mut release,
                        )
                    };
                    start = end;
                    let Some(&next) = objects.get(start) else {
                        break;
                    };
                    slab = self.slab_of(next);
                    // SAFETY: as above.
                    if unsafe { (*slab).node } != node {
                        break;
                    }
                }
            }
            if !release.is_null() {
                if queue {
                    self.queue_slabs(release);
                } else {
                    let _ = self.release_slabs(release);
                }
            }
        }
    }

    /// Pushes a `release` list (linked through `next`) on the queue of slabs to give back.
    #[cold]
    fn queue_slabs(&self, release: *mut SlabHeader) {
        let (mut last, mut count) = (release, 1);
        // SAFETY: the listed slabs are unlinked from every list and ours alone.
        while let Some(next) = NonNull::new(unsafe { (*last).next }) {
            last = next.as_ptr();
            count += 1;
        }
        self.queued_slabs.fetch_add(count, Ordering::Relaxed);
        let mut head = self.queued.load(Ordering::Relaxed);
        loop {
            // SAFETY: as above; `last` is published only by the exchange below.
            unsafe { (*last).next = head };
            // Release: the thread that takes the list sees the links written here. The whole
            // list is only ever taken at once (a swap), so a head seen here cannot come back
            // as another slab's link.
            match self.queued.compare_exchange_weak(
                head,
                release,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }

    /// Gives back the slabs that [`SlabPool::free_bulk_queued`] queued (one load when there
    /// are none). Call it where the page source may be called.
    #[inline]
    pub fn release_queued(&self) {
        if self.queued.load(Ordering::Relaxed).is_null() {
            return;
        }
        // Acquire: pairs with the pushes' release.
        let release = self.queued.swap(ptr::null_mut(), Ordering::Acquire);
        let released = self.release_slabs(release);
        self.queued_slabs.fetch_sub(released, Ordering::Relaxed);
    }

    /// Frees objects from any mix of slabs and nodes; slabs that become empty beyond
    /// `min_partial` per node are released to the page source. Each node's lock is taken once
    /// per run of consecutive objects of that node.
    ///
    /// # Safety
    ///
    /// - Each object was allocated from this pool, is live, and appears once.
    /// - Nothing uses them after this call.
    pub unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        self.poison_objects(objects);
        // SAFETY: forwarded from the caller.
        unsafe { self.free_objects(objects, false) }
    }

    /// [`SlabPool::free_bulk`] for a caller that must not call the page source now (it holds
    /// a CPU slot that other threads on its CPU would find busy meanwhile, as the kernel
    /// drops its CPU lock around the page allocator): slabs that become empty beyond
    /// `min_partial` are queued, and given back by the next [`SlabPool::release_queued`] (which
    /// the caller makes once it can), [`SlabPool::shrink`] or the pool's drop.
    ///
    /// # Safety
    ///
    /// As [`SlabPool::free_bulk`].
    pub unsafe fn free_bulk_queued(&self, objects: &[NonNull<u8>]) {
        self.poison_objects(objects);
        // SAFETY: forwarded from the caller.
        unsafe { self.free_objects(objects, true) }
    }

    /// Poisons objects being freed, when the pool poisons.
    #[inline]
    fn poison_objects(&self, objects: &[NonNull<u8>]) {
        if self.poison {
            for &object in objects {
                self.poison_object(object);
            }
        }
    }

    /// Frees one object.
    ///
    /// # Safety
    ///
    /// - `object` was allocated from this pool and is live.
    /// - Nothing uses it after this call.
    pub unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_bulk(std::slice::from_ref(&object)) }
    }

    /// Releases every empty slab to the page source (queued ones too).
    pub fn shrink(&self) {
        self.release_queued();
        for node in 0..self.nodes.len() {
            let mut release: *mut SlabHeader = ptr::null_mut();
            {
                let mut state = self.lock(node);
                let mut slab = state.tail;
                // Empty slabs sit at the tail, but a slab emptied by a rollback may not: walk
                // the whole list.
                while !slab.is_null() {
                    // SAFETY: list slabs are live, guarded by the held lock.
                    let prev = unsafe { (*slab).prev };
                    // SAFETY: as above.
                    if unsafe { (*slab).inuse } == 0 {
                        // SAFETY: `slab` is on this list.
                        unsafe { state.unlink(slab) };
                        state.nr_empty -= 1;
                        state.slabs -= 1;
                        state.free_objects -= self.layout.objects_per_slab as u64;
                        // SAFETY: unlinked, so its `next` is ours to use.
                        unsafe { (*slab).next = release };
                        release = slab;
                    }
                    slab = prev;
                }
            }
            let _ = self.release_slabs(release);
        }
    }

    /// A snapshot of the pool's slabs and objects (locks each node in turn).
    pub fn stats(&self) -> SlabStats {
        let mut stats = SlabStats {
            alloc_slab: self.alloc_slab.load(Ordering::Relaxed),
            free_slab: self.free_slab.load(Ordering::Relaxed),
            ..SlabStats::default()
        };
        let per_slab = self.layout.objects_per_slab as u64;
        for node in 0..self.nodes.len() {
            let state = self.lock(node);
            stats.slabs += state.slabs;
            stats.objects_free += state.free_objects;
            stats.objects_in_use += state.slabs * per_slab - state.free_objects;
            stats.partial_slabs += state.nr_partial - state.nr_empty;
            stats.empty_slabs += state.nr_empty;
        }
        let queued = self.queued_slabs.load(Ordering::Relaxed);
        stats.slabs += queued;
        stats.empty_slabs += queued;
        stats.slab_bytes = stats.slabs * self.layout.slab_bytes as u64;
        stats
    }
}

impl Drop for SlabPool {
    fn drop(&mut self) {
        for node in self.nodes.iter() {
            crate::fork::unregister(node);
        }
        self.shrink();
    }
}
