//! `locked-slab`: one global lock around one free list, the floor every other design is
//! measured against.
//!
//! # Design
//!
//! The cache holds one [`Mutex`] guarding a singly linked list of free objects (each free
//! object stores the next one's address in its first word) and the list of slabs it owns.
//! Every operation, single or bulk, takes that lock once:
//!
//! - `alloc` pops the head; an empty list takes one new slab from the page source, threads all
//!   its objects onto the list and pops one (never under `NOWAIT`, which fails instead);
//! - `alloc_bulk(n)` first makes sure the list holds `n` objects (taking all the slabs it
//!   needs up front, and giving them back if the page source refuses one), then pops `n`: all
//!   or nothing without a rollback;
//! - `free`/`free_bulk` push objects back; nothing is returned to the page source on the free
//!   path;
//! - `shrink` gives back every slab whose objects are all on the free list.
//!
//! Slabs come from the config's page source with the geometry of [`slab::SlabLayout`], so page
//! accounting, fault injection and slab sizes match the slab-based designs; the slab header
//! area is left unused. There is no per-CPU or per-node state and no cache above the list:
//! every thread contends on the one lock, which is the point of the baseline. Prefill is
//! emulated with [`BulkPrefill`](object_alloc::BulkPrefill); deferred frees defer each object
//! on its own through [`Deferrer`].
//!
//! Invariant, under the lock: `free == |list|` and
//! `slabs × objects_per_slab == free + live` (deferred frees still pending count as live).
//!
//! ```
//! use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc, Prefill};
//! use locked_slab::LockedSlab;
//!
//! let cache = LockedSlab::new(&CacheConfig::new(64)).unwrap();
//! let object = cache.alloc(AllocFlags::ZERO).unwrap();
//! // SAFETY: the object is 64 bytes of ours.
//! assert_eq!(unsafe { *object.as_ptr().add(63) }, 0);
//! let mut sheaf = cache.prefill(AllocFlags::empty(), 3).unwrap();
//! let from_sheaf = sheaf.alloc(AllocFlags::empty()).unwrap();
//! drop(sheaf);
//! // SAFETY: both objects came from this cache and are live.
//! unsafe {
//!     cache.free(object);
//!     cache.free(from_sheaf);
//! }
//! cache.shrink();
//! assert_eq!(cache.stats().slab_bytes, Some(0));
//! ```

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use object_alloc::rcu::{DeferTarget, Deferrer};
use object_alloc::{
    AllocError, AllocFlags, AllocStats, CacheConfig, Capabilities, ConfigError, ObjectAlloc,
    PageSource,
};
use slab::{SlabLayout, page_source_for};

/// The byte written over freed objects (after their link word) with `debug.poison`.
pub const POISON_FREE: u8 = 0x6b;

/// The free list and the slabs, behind the global lock.
#[derive(Debug)]
struct FreeList {
    head: *mut u8,
    /// Objects on the list.
    free: usize,
    /// Objects handed out and not yet freed (deferred ones count until they are freed).
    live: u64,
    /// Every slab the cache holds.
    slabs: Vec<NonNull<u8>>,
    alloc_slab: u64,
    free_slab: u64,
}

// SAFETY: the pointers name slabs and objects owned by the cache; they are only followed with
// the global lock held.
unsafe impl Send for FreeList {}

impl FreeList {
    /// # Safety
    ///
    /// `object` is a free object of this cache, not on the list.
    #[inline]
    unsafe fn push(&mut self, object: NonNull<u8>) {
        // SAFETY: objects are at least pointer-sized; the link is stored unaligned because
        // objects may be byte-aligned.
        unsafe { object.as_ptr().cast::<*mut u8>().write_unaligned(self.head) };
        self.head = object.as_ptr();
        self.free += 1;
    }

    /// Pops one object; the caller has checked `free > 0`.
    #[inline]
    fn pop(&mut self) -> NonNull<u8> {
        let object = NonNull::new(self.head).expect("pop from an empty free list");
        // SAFETY: a listed object holds the link to the next one in its first word.
        self.head = unsafe { object.as_ptr().cast::<*mut u8>().read_unaligned() };
        self.free -= 1;
        object
    }
}

/// The state deferred frees act on: owned by the cache's [`Deferrer`].
#[derive(Debug)]
struct Shared {
    list: Mutex<FreeList>,
    layout: SlabLayout,
    source: Arc<dyn PageSource>,
    poison: bool,
    lock_contended: AtomicU64,
}

impl Shared {
    /// Takes the global lock, counting the times it was already held.
    #[inline]
    fn lock(&self) -> MutexGuard<'_, FreeList> {
        match self.list.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => {
                self.lock_contended.fetch_add(1, Ordering::Relaxed);
                self.list
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            }
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        }
    }

    /// Takes `count` new slabs and threads their objects onto the list; if the page source
    /// refuses one, gives back those taken by this call and changes nothing.
    #[cold]
    fn grow(&self, list: &mut FreeList, count: usize) -> Result<(), AllocError> {
        let bytes = self.layout.slab_bytes;
        let first = list.slabs.len();
        for _ in 0..count {
            match self.source.alloc_chunk(bytes) {
                Ok(chunk) => list.slabs.push(chunk),
                Err(_) => {
                    for chunk in list.slabs.drain(first..) {
                        // SAFETY: taken above with this size; no object of it was handed out.
                        unsafe { self.source.free_chunk(chunk, bytes) };
                    }
                    return Err(AllocError::OutOfMemory);
                }
            }
        }
        let layout = self.layout;
        for slab in first..list.slabs.len() {
            let chunk = list.slabs[slab];
            list.alloc_slab += 1;
            // Pushed from the last object down, so allocation walks the slab upwards.
            for index in (0..layout.objects_per_slab).rev() {
                // SAFETY: the object lies inside the new slab, which is ours alone.
                let object = unsafe { chunk.add(layout.first_offset + index * layout.stride) };
                // SAFETY: a fresh object of this cache, not on the list.
                unsafe { list.push(object) };
            }
        }
        Ok(())
    }

    #[inline]
    fn poison(&self, object: NonNull<u8>) {
        let link = size_of::<usize>();
        // SAFETY: the object is `stride >= link` bytes that its owner gave back.
        unsafe {
            object
                .as_ptr()
                .add(link)
                .write_bytes(POISON_FREE, self.layout.stride - link)
        };
    }

    /// # Safety
    ///
    /// Each object is a live object of this cache, given up by its owner, and appears once.
    unsafe fn free_objects(&self, objects: &[NonNull<u8>]) {
        if self.poison {
            objects.iter().for_each(|&object| self.poison(object));
        }
        let mut list = self.lock();
        for &object in objects {
            // SAFETY: per the contract, the object is live, so not on the list.
            unsafe { list.push(object) };
        }
        list.live -= objects.len() as u64;
    }

    /// Gives back every slab whose objects are all free.
    fn shrink(&self) {
        let layout = self.layout;
        let per_slab = layout.objects_per_slab;
        let mut list = self.lock();
        let mut released: Vec<NonNull<u8>> = Vec::new();
        if list.free == list.slabs.len() * per_slab {
            // Everything is free: the whole list goes with its slabs.
            list.head = ptr::null_mut();
            list.free = 0;
            released = std::mem::take(&mut list.slabs);
        } else if list.free >= per_slab {
            let mask = !(layout.slab_bytes - 1);
            let mut free_in: HashMap<usize, usize> = HashMap::new();
            let mut cursor = list.head;
            while let Some(object) = NonNull::new(cursor) {
                *free_in.entry(object.addr().get() & mask).or_default() += 1;
                // SAFETY: listed objects hold their link in the first word.
                cursor = unsafe { object.as_ptr().cast::<*mut u8>().read_unaligned() };
            }
            let empty = |base: usize| free_in.get(&base) == Some(&per_slab);
            if free_in.values().any(|&n| n == per_slab) {
                // Rebuild the list without the objects of the empty slabs.
                let mut cursor = std::mem::replace(&mut list.head, ptr::null_mut());
                list.free = 0;
                while let Some(object) = NonNull::new(cursor) {
                    // SAFETY: as above.
                    cursor = unsafe { object.as_ptr().cast::<*mut u8>().read_unaligned() };
                    if !empty(object.addr().get() & mask) {
                        // SAFETY: the object was on the list, which is being rebuilt.
                        unsafe { list.push(object) };
                    }
                }
                let (gone, kept) = list
                    .slabs
                    .iter()
                    .partition(|chunk| empty(chunk.addr().get()));
                list.slabs = kept;
                released = gone;
            }
        }
        list.free_slab += released.len() as u64;
        drop(list);
        for chunk in released {
            // SAFETY: every object of the slab was free and is no longer listed.
            unsafe { self.source.free_chunk(chunk, layout.slab_bytes) };
        }
    }
}

impl DeferTarget for Shared {
    unsafe fn free_now(&self, object: NonNull<u8>) {
        // SAFETY: `defer_free` was given a live object of this cache; its grace period is over.
        unsafe { self.free_objects(std::slice::from_ref(&object)) }
    }
}

/// The free list's lock is the only lock: a fork takes it so that the child finds the list
/// whole (objects other threads held at the fork are lost to the child).
impl slab::fork::AtFork for Shared {
    fn lock_all(&self, held: &mut slab::fork::Held) {
        let guard = self.list.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the shared state is registered from the cache's creation to its drop.
        unsafe { held.hold(guard) };
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // First: a fork being prepared may hold the lock (this waits for it to finish).
        slab::fork::unregister(self);
        let list = self.list.get_mut().unwrap_or_else(|p| p.into_inner());
        // Objects still live may still be used: their slabs are leaked rather than unmapped.
        if list.live == 0 {
            for chunk in list.slabs.drain(..) {
                // SAFETY: no object of the cache is live, and the cache is going away.
                unsafe { self.source.free_chunk(chunk, self.layout.slab_bytes) };
            }
        }
    }
}

/// The floor design: one global lock and a free list (see the crate documentation).
#[derive(Debug)]
pub struct LockedSlab {
    deferrer: Deferrer<Shared>,
    object_size: usize,
    sheaf_capacity: usize,
}

impl LockedSlab {
    #[inline]
    fn shared(&self) -> &Shared {
        self.deferrer.get()
    }

    /// The slab geometry in use.
    pub fn layout(&self) -> &SlabLayout {
        &self.shared().layout
    }

    /// Panics, naming the object or the count, unless the free list holds exactly `free`
    /// distinct objects, each an object start inside a held slab, and
    /// `free + live == slabs × objects_per_slab`. Walks the whole list under the lock.
    pub fn check_invariants(&self) {
        let shared = self.shared();
        let layout = shared.layout;
        let list = shared.lock();
        let held: std::collections::HashSet<usize> =
            list.slabs.iter().map(|chunk| chunk.addr().get()).collect();
        let mut seen = std::collections::HashSet::new();
        let mut cursor = list.head;
        while let Some(object) = NonNull::new(cursor) {
            let base = object.addr().get() & !(layout.slab_bytes - 1);
            assert!(
                held.contains(&base) && layout.is_object_start(object),
                "locked-slab: free-list entry {object:p} is not an object of a held slab"
            );
            assert!(
                seen.insert(object),
                "locked-slab: {object:p} is on the free list twice (double free)"
            );
            // SAFETY: listed objects hold their link in the first word.
            cursor = unsafe { object.as_ptr().cast::<*mut u8>().read_unaligned() };
        }
        assert_eq!(seen.len(), list.free, "locked-slab: free count");
        assert_eq!(
            list.free as u64 + list.live,
            (list.slabs.len() * layout.objects_per_slab) as u64,
            "locked-slab: free + live != slabs x objects_per_slab"
        );
    }

    #[inline]
    fn zero(&self, object: NonNull<u8>) {
        // SAFETY: the object is `object_size` writable bytes that now belong to the caller.
        unsafe { object.as_ptr().write_bytes(0, self.object_size) };
    }
}

impl ObjectAlloc for LockedSlab {
    const NAME: &'static str = "locked-slab";
    const DESCRIPTION: &'static str =
        "one global lock around one free list of objects carved from slab pages (the floor)";
    const CAPABILITIES: Capabilities = Capabilities {
        native_prefill: false,
        honours_nowait: true,
        uses_page_source: true,
        tracks_live_objects: true,
        sheaf_layer: false,
    };

    fn new(config: &CacheConfig) -> Result<Self, ConfigError> {
        let layout = SlabLayout::new(config)?;
        let shared = Shared {
            list: Mutex::new(FreeList {
                head: ptr::null_mut(),
                free: 0,
                live: 0,
                slabs: Vec::new(),
                alloc_slab: 0,
                free_slab: 0,
            }),
            layout,
            source: page_source_for(config),
            poison: config.debug.poison,
            lock_contended: AtomicU64::new(0),
        };
        let cache = Self {
            deferrer: Deferrer::new(shared),
            object_size: config.object_size,
            sheaf_capacity: config.effective_sheaf_capacity(),
        };
        // SAFETY: the shared state stays behind the deferrer's `Arc` until dropped, and its
        // `drop` unregisters it first.
        unsafe { slab::fork::register(cache.shared()) };
        Ok(cache)
    }

    #[inline]
    fn alloc(&self, flags: AllocFlags) -> Option<NonNull<u8>> {
        let shared = self.shared();
        let object = {
            let mut list = shared.lock();
            if list.free == 0 && (!flags.may_grow() || shared.grow(&mut list, 1).is_err()) {
                return None;
            }
            list.live += 1;
            list.pop()
        };
        if flags.zero() {
            self.zero(object);
        }
        Some(object)
    }

    #[inline]
    unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.shared().free_objects(std::slice::from_ref(&object)) }
    }

    fn alloc_bulk(
        &self,
        flags: AllocFlags,
        out: &mut [MaybeUninit<NonNull<u8>>],
    ) -> Result<(), AllocError> {
        let shared = self.shared();
        {
            let mut list = shared.lock();
            if list.free < out.len() {
                if !flags.may_grow() {
                    return Err(AllocError::WouldGrow);
                }
                let missing = out.len() - list.free;
                shared.grow(&mut list, missing.div_ceil(shared.layout.objects_per_slab))?;
            }
            for slot in out.iter_mut() {
                slot.write(list.pop());
            }
            list.live += out.len() as u64;
        }
        if flags.zero() {
            for slot in out.iter() {
                // SAFETY: every slot was written above.
                self.zero(unsafe { slot.assume_init() });
            }
        }
        Ok(())
    }

    unsafe fn free_bulk(&self, objects: &[NonNull<u8>]) {
        // SAFETY: forwarded from the caller.
        unsafe { self.shared().free_objects(objects) }
    }

    object_alloc::emulated_prefill_and_deferral!(
        deferrer: deferrer,
        object_size: object_size,
        sheaf_capacity: sheaf_capacity
    );

    fn shrink(&self) {
        self.shared().shrink();
    }

    fn stats(&self) -> AllocStats {
        let shared = self.shared();
        let (live, slabs, alloc_slab, free_slab) = {
            let list = shared.lock();
            (list.live, list.slabs.len(), list.alloc_slab, list.free_slab)
        };
        let mut stats = AllocStats {
            live_objects: Some(live),
            cached_objects: Some(0),
            slab_bytes: Some((slabs * shared.layout.slab_bytes) as u64),
            slabs: Some(slabs as u64),
            ..AllocStats::default()
        };
        stats.add("alloc_slab", alloc_slab);
        stats.add("free_slab", free_slab);
        stats.add(
            "lock_contended",
            shared.lock_contended.load(Ordering::Relaxed),
        );
        stats
    }
}
