//! [`Kmalloc`]: a general-purpose allocator on sheaf caches, as the kernel's `kmalloc` is a
//! set of slab caches that all have sheaves.
//!
//! # Size classes
//!
//! One [`Cache`] per class of [`Kmalloc::SIZE_CLASSES`]: the powers of two from 8 B to 32 KiB
//! and the kernel's two extra classes, 96 and 192 B. A request goes to the smallest class that
//! holds it and is aligned enough; power-of-two classes are naturally aligned (up to a page,
//! as `kmalloc` guarantees), the 96 B class to 32 and the 192 B class to 64. Larger requests,
//! and alignments beyond a page, are mapped on their own (module `large`) and given back to
//! the system when freed, but for a small cache of freed mappings kept for reuse.
//!
//! # Keeping freed slabs
//!
//! A slab that a class's pool gives back goes to the class's cache of freed chunks (module
//! `chunks`), still mapped and tagged, and the class's next new slab is taken from there: a
//! program whose working set swings pays no `mmap`, `munmap` or page faults for slabs it had
//! before. All classes together keep at most 16 MiB this way; [`Kmalloc::trim`] unmaps it all.
//!
//! # Finding the class from the pointer
//!
//! Slabs are naturally aligned chunks (an object finds its slab header by masking), but their
//! size depends on the class, so the mask alone cannot name the class. Each class's page
//! source tags every page of its slabs in a page map (module `radix`): one byte per page,
//! read with two loads on `free`. The slab crate is unchanged; the cost is one tag byte per
//! 4 KiB of slab (0.025 %), a 256 KiB leaf of the map per GiB of address space in use, and a
//! loop over a slab's pages when it is mapped or unmapped (slow paths).
//!
//! # No recursion into itself
//!
//! The caches allocate for themselves (sheaf arrays on refills, slot tables and the fork
//! registry when created, `/sys` reads for the CPU topology), and so do the C library's
//! `pthread_atfork` and thread-local destructor registration when the front-end is the
//! process's `malloc`. A thread-local flag without a destructor (so that it can be read at any
//! time, thread exit included) marks a thread inside the front-end; a request made while it
//! is set is served by the bootstrap arena (module `arena`, `mmap`-backed, one short spin
//! lock), never by a cache's slow paths. `free` goes by the page map's tag, whoever calls it.
//! A class object freed from inside the front-end would have been allocated by the caches' own
//! code outside it, which the caches never do; such a free is leaked rather than re-entering a
//! cache that may hold a lock.
//!
//! The caches' fast paths (`Cache::alloc_fast`, `Cache::free_fast`: one restartable sequence
//! on the CPU's sheaf, which takes no lock, calls nothing and gives up on a slot that anyone,
//! the calling thread included, holds) cannot recurse or wait, so they are tried first, before
//! the flag is looked at: the flag, a thread-local that the shared library reaches through
//! `__tls_get_addr`, is set and cleared only when a request goes past them. A nested request
//! may therefore be served by a cache's fast path; a fork's prepare handlers hold every slot,
//! so theirs never are. The front-end never defers a free, so the caches' grace-period
//! hand-over thread (which runs cache code outside the front-end) is never started.
//!
//! # fork and thread exit
//!
//! The caches take their own locks around `fork` (`slab::fork`). The front-end's state is the
//! page map (lock-free), the lazily built caches, the flag and the arena's lock. The first
//! allocation builds the caches and registers two `pthread_atfork` handlers around the
//! caches' own: one, registered before the caches, takes the arena lock last before the fork
//! and releases it first after; the other, registered after, sets the forking thread's flag
//! first and clears it last, so that what the caches' handlers allocate comes from the arena.
//! The caches are built by the first allocation, which in a Rust program or a preloaded
//! process happens before `main`, on one thread; a fork racing with that first allocation is
//! not covered. Per-CPU caches keep no per-thread state, and the flag needs no destructor, so
//! a thread's exit (its destructors freeing memory) needs nothing from the front-end.

mod arena;
mod chunks;
mod large;
mod radix;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use object_alloc::{AllocFlags, CacheConfig, PAGE_SIZE, PageError, PageSource, PageSourceStats};
use slab::MmapPages;

use crate::Cache;

const CLASSES: usize = 15;
const SIZES: [usize; CLASSES] = [
    8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768,
];
const ALIGNS: [usize; CLASSES] = [
    8, 16, 32, 64, 32, 128, 64, 256, 512, 1024, 2048, 4096, 4096, 4096, 4096,
];
/// The largest class.
const MAX_CLASS: usize = SIZES[CLASSES - 1];
/// The class of each size up to 192 bytes, indexed by `(size + 7) / 8`.
const SMALL: [u8; 25] = {
    let mut table = [0u8; 25];
    let mut slot = 0;
    while slot < table.len() {
        let size = slot * 8;
        let mut class = 0;
        while SIZES[class] < size {
            class += 1;
        }
        table[slot] = class as u8;
        slot += 1;
    }
    table
};

/// The smallest class that holds `size` bytes aligned to `align` (a power of two); `None` for
/// the large path.
#[inline]
fn class_index(size: usize, align: usize) -> Option<usize> {
    let mut index = if size <= 192 {
        usize::from(SMALL[(size + 7) >> 3])
    } else if size <= MAX_CLASS {
        // 256 B is class 7, each power of two above one more.
        (usize::BITS - (size - 1).leading_zeros()) as usize - 1
    } else {
        return None;
    };
    while ALIGNS[index] < align {
        index += 1;
        if index == CLASSES {
            return None;
        }
    }
    Some(index)
}

/// A class's page source: anonymous mappings whose pages are tagged with the class, and the
/// class's cache of freed chunks (module `chunks`).
#[derive(Debug)]
struct ClassPages {
    tag: u8,
    pages: MmapPages,
    cache: chunks::ChunkCache,
}

impl ClassPages {
    fn new(tag: u8) -> Self {
        ClassPages {
            tag,
            pages: MmapPages::new(),
            cache: chunks::ChunkCache::new(&chunks::BUDGET),
        }
    }

    /// Untags and unmaps a chunk.
    ///
    /// # Safety
    ///
    /// As [`PageSource::free_chunk`].
    unsafe fn unmap_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        // Untag first: once unmapped, the range may be mapped and tagged by anyone.
        let _ = radix::set(chunk.addr().get(), bytes, radix::NONE);
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.pages.free_chunk(chunk, bytes) }
    }

    /// Unmaps every cached chunk; returns how many.
    fn trim(&self) -> usize {
        self.cache.take_all(|chunk, bytes| {
            // SAFETY: a cached chunk came from `alloc_chunk(bytes)` and belongs to nobody.
            unsafe { self.unmap_chunk(chunk, bytes) }
        })
    }
}

// SAFETY: every chunk comes from `MmapPages`, which keeps the trait's promise, either fresh or
// from the cache, which holds only chunks given back whole and hands each out once; the tags
// are bookkeeping beside the memory.
unsafe impl PageSource for ClassPages {
    fn name(&self) -> &'static str {
        "kmalloc"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
        // Still tagged with this class from when it was first handed out.
        if let Some(chunk) = self.cache.take(bytes) {
            return Ok(chunk);
        }
        let chunk = self.pages.alloc_chunk(bytes)?;
        if radix::set(chunk.addr().get(), bytes, self.tag).is_err() {
            // SAFETY: allocated just above with this size, never handed out.
            unsafe { self.pages.free_chunk(chunk, bytes) };
            return Err(PageError::Os { bytes, errno: 12 });
        }
        Ok(chunk)
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        // SAFETY: the caller gives up the chunk, `bytes >= PAGE_SIZE` bytes aligned to them.
        if unsafe { self.cache.put(chunk, bytes) } {
            return;
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.unmap_chunk(chunk, bytes) }
    }

    fn stats(&self) -> PageSourceStats {
        self.pages.stats()
    }
}

struct Heap {
    caches: [Cache; CLASSES],
    pages: [Arc<ClassPages>; CLASSES],
}

const UNINIT: u8 = 0;
const BUILDING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

/// Aligned to its own cache lines (128 bytes: the adjacent-line prefetcher pulls lines in
/// pairs): every `malloc` and `free` reads it, and it must not share a line with statics that
/// are written, such as the arena's lock.
#[repr(align(128))]
struct HeapCell {
    state: AtomicU8,
    heap: UnsafeCell<MaybeUninit<Heap>>,
}

// SAFETY: `heap` is written once, by the thread that moved `state` to `BUILDING`, and read
// only after `state` is `READY` (release, then acquire); the caches themselves are shared
// between threads, which the assertion below checks they allow.
unsafe impl Sync for HeapCell {}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Heap>();
};

static HEAP: HeapCell = HeapCell {
    state: AtomicU8::new(UNINIT),
    heap: UnsafeCell::new(MaybeUninit::uninit()),
};

/// The caches, built by the first call (inside the front-end, so that what building them
/// allocates comes from the arena); `None` if they could not be built.
#[inline]
fn heap() -> Option<&'static Heap> {
    if HEAP.state.load(Ordering::Acquire) == READY {
        // SAFETY: `READY` is stored after the heap is written, and it is never written again.
        return Some(unsafe { (*HEAP.heap.get()).assume_init_ref() });
    }
    build_heap()
}

#[cold]
fn build_heap() -> Option<&'static Heap> {
    loop {
        match HEAP
            .state
            .compare_exchange(UNINIT, BUILDING, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => {
                let state = match new_heap() {
                    Some(heap) => {
                        // SAFETY: this thread won `BUILDING`; nobody reads before `READY`.
                        unsafe { (*HEAP.heap.get()).write(heap) };
                        READY
                    }
                    None => FAILED,
                };
                HEAP.state.store(state, Ordering::Release);
            }
            Err(READY) => {
                // SAFETY: as in `heap`.
                return Some(unsafe { (*HEAP.heap.get()).assume_init_ref() });
            }
            Err(FAILED) => return None,
            // `sched_yield` does not allocate.
            Err(_) => std::thread::yield_now(),
        }
    }
}

fn new_heap() -> Option<Heap> {
    // Registered before the caches' handlers: its prepare runs after theirs (which allocate
    // from the arena), its parent and child handlers before theirs.
    // SAFETY: the handlers are `extern "C"` functions without arguments.
    unsafe {
        libc::pthread_atfork(
            Some(arena::prepare_fork),
            Some(arena::after_fork),
            Some(arena::after_fork),
        )
    };
    let mut caches = Vec::with_capacity(CLASSES);
    let mut sources = Vec::with_capacity(CLASSES);
    for (index, (&size, &align)) in SIZES.iter().zip(&ALIGNS).enumerate() {
        let pages = Arc::new(ClassPages::new(index as u8 + 1));
        let config = CacheConfig::new(size)
            .with_align(align)
            .with_page_source(pages.clone());
        caches.push(Cache::new(&config).ok()?);
        sources.push(pages);
    }
    let caches = caches.try_into().ok()?;
    let pages = sources.try_into().ok()?;
    // Registered after the caches' handlers: the forking thread is inside the front-end from
    // before their prepare until after their parent and child handlers.
    // SAFETY: as above.
    unsafe { libc::pthread_atfork(Some(fork_enter), Some(fork_leave), Some(fork_leave)) };
    Some(Heap { caches, pages })
}

thread_local! {
    /// Whether this thread is inside the front-end. No destructor: readable at any time.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// The calling thread is inside the front-end while this lives. It keeps the flag's address,
/// so that leaving costs no second thread-local lookup (a call to `__tls_get_addr` in the
/// shared library).
struct Inside(NonNull<Cell<bool>>);

impl Inside {
    /// Enters the front-end; `None` if the thread is already inside (a nested request).
    #[inline]
    fn enter() -> Option<Inside> {
        INSIDE.with(|inside| {
            // Lazily: an `Inside` made and dropped on the nested path would clear the flag.
            (!inside.replace(true)).then(|| Inside(NonNull::from(inside)))
        })
    }
}

impl Drop for Inside {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the flag of the thread that made this guard, which drops it before it
        // returns from the front-end (the guard is neither `Send` nor stored); the flag has no
        // destructor, so its storage lives as long as the thread.
        unsafe { self.0.as_ref() }.set(false);
    }
}

/// The built heap, if it is (without building it).
#[inline]
fn built_heap() -> Option<&'static Heap> {
    (HEAP.state.load(Ordering::Acquire) == READY)
        // SAFETY: as in `heap`.
        .then(|| unsafe { (*HEAP.heap.get()).assume_init_ref() })
}

extern "C" fn fork_enter() {
    INSIDE.with(|inside| inside.set(true));
    // The chunk caches' locks are taken first and released last: their holders wait for
    // nothing, and while they are held every other thread passes the caches by.
    if let Some(heap) = built_heap() {
        heap.pages
            .iter()
            .for_each(|pages| pages.cache.lock_for_fork());
    }
}

extern "C" fn fork_leave() {
    if let Some(heap) = built_heap() {
        heap.pages
            .iter()
            .for_each(|pages| pages.cache.unlock_after_fork());
    }
    INSIDE.with(|inside| inside.set(false));
}

/// A general-purpose allocator on sheaf caches, usable as a Rust global allocator.
///
/// Every `Kmalloc` value is a handle to the same process-wide heap, built on first use: a
/// pointer from one may be freed through another. `Kmalloc::new` is `const`, so it can name
/// the global allocator:
///
/// ```no_run
/// #[global_allocator]
/// static ALLOC: sheaf::Kmalloc = sheaf::Kmalloc::new();
/// ```
///
/// Requests up to [`Kmalloc::MAX_CLASS_SIZE`] bytes and aligned up to a page are served by
/// the sheaf cache of their size class ([`Kmalloc::SIZE_CLASSES`]); larger ones are mapped on
/// their own. See the module documentation of `kmalloc` in the source for how `free` finds the
/// class, and how the heap avoids recursing into itself and stays usable across `fork`.
/// The C interface (`malloc`, `free`, ... for `LD_PRELOAD`) is the `sheaf-malloc` crate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kmalloc(());

impl Kmalloc {
    /// The size classes, in bytes: the powers of two from 8 to 32768, and 96 and 192.
    pub const SIZE_CLASSES: [usize; CLASSES] = SIZES;
    /// The largest request served by a size class; larger ones are mapped on their own.
    pub const MAX_CLASS_SIZE: usize = MAX_CLASS;

    /// A handle to the process's heap (built lazily by the first allocation).
    pub const fn new() -> Self {
        Kmalloc(())
    }

    /// Allocates `size` bytes aligned to `align`: null if `align` is not a power of two or
    /// memory cannot be had. A size of 0 gets a unique pointer, as for 1 byte.
    #[inline]
    pub fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return ptr::null_mut();
        }
        let Some(index) = class_index(size, align) else {
            return large::alloc(size, align, false);
        };
        // The fast path needs no guard (see the module documentation).
        if let Some(object) = built_heap().and_then(|heap| heap.caches[index].alloc_fast()) {
            return object.as_ptr();
        }
        Self::alloc_guarded(index, size, align)
    }

    /// [`Kmalloc::alloc`] past the caches' fast path: inside the front-end.
    #[inline(never)]
    fn alloc_guarded(index: usize, size: usize, align: usize) -> *mut u8 {
        let Some(_inside) = Inside::enter() else {
            return arena::alloc(size, align);
        };
        heap()
            .and_then(|heap| heap.caches[index].alloc(AllocFlags::empty()))
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    /// Gives memory the heap keeps for reuse back to the system: every cache's empty slabs
    /// (`Cache::shrink`), the freed slab chunks each class keeps, and the cached large
    /// mappings. Returns how many chunks and mappings were unmapped. Does nothing (returns 0)
    /// when called from inside the heap (from one of its own nested requests).
    ///
    /// Other threads may allocate and free meanwhile; what they free after the call has
    /// passed their class may be kept again.
    pub fn trim(&self) -> usize {
        let Some(_inside) = Inside::enter() else {
            return 0;
        };
        let mut unmapped = large::trim();
        if let Some(heap) = built_heap() {
            for (cache, pages) in heap.caches.iter().zip(&heap.pages) {
                cache.shrink();
                unmapped += pages.trim();
            }
        }
        unmapped
    }

    /// Allocates `count * size` zeroed bytes aligned to `align`; null if the product
    /// overflows, `align` is not a power of two, or memory cannot be had.
    pub fn alloc_zeroed(&self, count: usize, size: usize, align: usize) -> *mut u8 {
        let Some(bytes) = count.checked_mul(size) else {
            return ptr::null_mut();
        };
        if align.is_power_of_two() && class_index(bytes, align).is_none() {
            // Cleared only when it reuses a cached mapping: a fresh one reads as zeroes.
            return large::alloc(bytes, align, true);
        }
        let object = self.alloc(bytes, align);
        if !object.is_null() {
            // SAFETY: `object` is a new allocation of at least `bytes` bytes.
            unsafe { object.write_bytes(0, bytes) };
        }
        object
    }

    /// Frees `object` (nothing for null).
    ///
    /// # Safety
    ///
    /// `object` is null or was returned by this heap and not freed since; nothing uses it
    /// after this call. A pointer the heap does not know (no tag in its page map) is ignored.
    #[inline]
    pub unsafe fn free(&self, object: *mut u8) {
        let Some(nonnull) = NonNull::new(object) else {
            return;
        };
        match radix::get(object.addr()) {
            radix::NONE => {}
            // SAFETY: tagged large, so a live large object (the caller's contract).
            radix::LARGE => unsafe { large::free(object) },
            // SAFETY: tagged arena, so a live arena object (the caller's contract).
            radix::ARENA => unsafe { arena::free(object) },
            tag => {
                // A tagged class page exists only once the heap is built.
                let Some(heap) = built_heap() else {
                    return;
                };
                let cache = &heap.caches[usize::from(tag - 1)];
                // SAFETY: the page's tag names the class whose cache allocated it, and the
                // caller gives it up. The fast path needs no guard (module documentation).
                if let Err(object) = unsafe { cache.free_fast(nonnull) } {
                    // SAFETY: as above; `free_fast` gave the object back untouched.
                    unsafe { Self::free_guarded(cache, object) }
                }
            }
        }
    }

    /// [`Kmalloc::free`] past the caches' fast path: inside the front-end.
    ///
    /// # Safety
    ///
    /// `object` is a live object of `cache`, which the caller gives up.
    #[inline(never)]
    unsafe fn free_guarded(cache: &Cache, object: NonNull<u8>) {
        // Nested: leaked (see the module documentation).
        let Some(_inside) = Inside::enter() else {
            return;
        };
        // SAFETY: the caller's contract.
        unsafe { cache.free(object) }
    }

    /// The bytes usable at `object` (at least what was asked for): its class's size, or up
    /// to the end of its mapping; 0 for null or a pointer the heap does not know.
    ///
    /// # Safety
    ///
    /// `object` is null or a live allocation of this heap.
    pub unsafe fn usable_size(&self, object: *mut u8) -> usize {
        if object.is_null() {
            return 0;
        }
        match radix::get(object.addr()) {
            radix::NONE => 0,
            // SAFETY: tagged large, so a live large object (the caller's contract).
            radix::LARGE => unsafe { large::usable_size(object) },
            // SAFETY: tagged arena, so a live arena object (the caller's contract).
            radix::ARENA => unsafe { arena::usable_size(object) },
            tag => SIZES[usize::from(tag - 1)],
        }
    }

    /// Resizes `object` to `size` bytes keeping its contents up to the smaller size, and
    /// returns where it now is (null, with `object` untouched, if memory cannot be had or the
    /// heap does not know `object`). A null `object` is a fresh allocation.
    ///
    /// It stays in place when it still fits its class and would need no class smaller than
    /// the next one down (growing within the class, or shrinking by one class); a large
    /// object is resized with `mremap` (no copy), or kept if aligned beyond a page and it
    /// still fits. Otherwise it moves, aligned to `align` (a power of two).
    ///
    /// # Safety
    ///
    /// `object` is null or a live allocation of this heap aligned to `align`; after a
    /// non-null return only the returned pointer is used.
    pub unsafe fn realloc(&self, object: *mut u8, size: usize, align: usize) -> *mut u8 {
        if object.is_null() {
            return self.alloc(size, align);
        }
        let usable = match radix::get(object.addr()) {
            radix::NONE => return ptr::null_mut(),
            radix::LARGE => {
                if class_index(size, align).is_none() && align <= PAGE_SIZE {
                    // SAFETY: a live large object (the caller's contract).
                    if let Some(resized) = unsafe { large::resize(object, size) } {
                        return resized.as_ptr();
                    }
                }
                // SAFETY: as above.
                let usable = unsafe { large::usable_size(object) };
                if size <= usable && size > usable / 2 {
                    return object;
                }
                usable
            }
            radix::ARENA => {
                // SAFETY: a live arena object (the caller's contract).
                let usable = unsafe { arena::usable_size(object) };
                if size <= usable {
                    return object;
                }
                usable
            }
            tag => {
                let index = usize::from(tag - 1);
                if size <= SIZES[index]
                    && class_index(size, align).is_some_and(|new| new + 1 >= index)
                {
                    return object;
                }
                SIZES[index]
            }
        };
        let moved = self.alloc(size, align);
        if !moved.is_null() {
            // SAFETY: both are live and distinct; `object` has `usable` bytes, `moved` at
            // least `size`.
            unsafe {
                ptr::copy_nonoverlapping(object, moved, usable.min(size));
                self.free(object);
            }
        }
        moved
    }
}

// SAFETY: `alloc` returns null or `layout.size()` bytes aligned to `layout.align()` that no
// other allocation overlaps until freed; `realloc` keeps the contents and alignment.
unsafe impl GlobalAlloc for Kmalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Kmalloc::alloc(self, layout.size(), layout.align())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Kmalloc::alloc_zeroed(self, 1, layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller's contract: a live allocation of this allocator.
        unsafe { Kmalloc::free(self, ptr) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: a live allocation of this allocator with `layout`.
        unsafe { Kmalloc::realloc(self, ptr, new_size, layout.align()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_fit_and_align() {
        for size in 0..=MAX_CLASS + 1 {
            for align in [1, 8, 16, 32, 64, 128, 256, 4096] {
                let Some(index) = class_index(size, align) else {
                    assert!(size > MAX_CLASS, "size {size} align {align}");
                    continue;
                };
                assert!(SIZES[index] >= size.max(1) && ALIGNS[index] >= align);
                // The smallest such class.
                let smaller = (0..index).find(|&i| SIZES[i] >= size && ALIGNS[i] >= align);
                assert_eq!(smaller, None, "size {size} align {align} class {index}");
            }
        }
        assert_eq!(class_index(70, 1), Some(4));
        assert_eq!(class_index(70, 64), Some(5));
        assert_eq!(class_index(150, 1), Some(6));
        assert_eq!(class_index(8, 8192), None);
    }

    #[test]
    fn nested_requests_stay_in_the_arena() {
        let k = Kmalloc::new();
        let inside = Inside::enter().expect("the test thread starts outside");
        // Past the caches' fast path (which may serve a nested request: it cannot recurse).
        let index = class_index(40, 8).unwrap();
        let nested: Vec<_> = (0..3)
            .map(|_| Kmalloc::alloc_guarded(index, 40, 8))
            .collect();
        for &object in &nested {
            assert_eq!(radix::get(object.addr()), radix::ARENA);
        }
        drop(inside);
        let outside = k.alloc(40, 8);
        assert_eq!(
            radix::get(outside.addr()),
            class_index(40, 8).unwrap() as u8 + 1
        );
        // SAFETY: live allocations, each freed once.
        unsafe { nested.into_iter().chain([outside]).for_each(|o| k.free(o)) };
    }

    #[test]
    fn objects_find_their_class_and_size() {
        let k = Kmalloc::new();
        for size in [
            0,
            1,
            8,
            9,
            96,
            97,
            192,
            4000,
            MAX_CLASS,
            MAX_CLASS + 1,
            1 << 20,
        ] {
            let object = k.alloc(size, 8);
            assert!(!object.is_null());
            // SAFETY: a live allocation of `size` bytes, freed once.
            unsafe {
                object.write_bytes(0x5a, size);
                let usable = k.usable_size(object);
                assert!(usable >= size, "size {size}: usable {usable}");
                if size <= MAX_CLASS {
                    assert_eq!(usable, SIZES[class_index(size, 1).unwrap()]);
                }
                k.free(object);
            }
        }
    }

    #[test]
    fn a_freed_slab_chunk_is_reused_without_a_new_mapping() {
        let pages = ClassPages::new(CLASSES as u8);
        let bytes = 64 * 1024;
        let chunk = pages.alloc_chunk(bytes).unwrap();
        // SAFETY: handed out just above with this size, freed once.
        unsafe { pages.free_chunk(chunk, bytes) };
        assert_eq!(radix::get(chunk.addr().get()), CLASSES as u8, "kept tagged");
        assert_eq!(pages.alloc_chunk(bytes), Ok(chunk));
        assert_eq!(pages.stats().chunks_allocated, 1, "no second mapping");
        // SAFETY: as above.
        unsafe { pages.free_chunk(chunk, bytes) };
        assert_eq!(pages.trim(), 1);
        assert_eq!(pages.stats().chunks_freed, 1);
        assert_eq!(pages.stats().held_bytes, 0);
        assert_eq!(radix::get(chunk.addr().get()), radix::NONE);
    }

    #[test]
    fn trim_gives_back_the_kept_slabs_of_a_class() {
        let k = Kmalloc::new();
        // A class no other test of this module uses.
        let size = 16 * 1024;
        let index = class_index(size, 8).unwrap();
        let objects: Vec<_> = (0..400).map(|_| k.alloc(size, 8)).collect();
        assert!(objects.iter().all(|o| !o.is_null()));
        // SAFETY: live allocations, each freed once.
        unsafe { objects.into_iter().for_each(|o| k.free(o)) };
        let heap = built_heap().unwrap();
        let before = heap.pages[index].stats();
        assert!(k.trim() > 0);
        let after = heap.pages[index].stats();
        assert!(after.chunks_freed > before.chunks_freed);
        assert_eq!(after.held_bytes, 0, "every slab of the class is unmapped");
    }

    #[test]
    fn a_fork_waits_for_a_held_chunk_cache_and_the_child_finds_it_free() {
        use std::sync::mpsc;
        let k = Kmalloc::new();
        // SAFETY: allocated and freed here.
        unsafe { k.free(k.alloc(8, 8)) };
        let heap = built_heap().unwrap();
        let cache = &heap.pages[CLASSES - 1].cache;
        let (held, wait) = mpsc::channel();
        // Another thread holds the cache's lock across the fork's start.
        let holder = std::thread::spawn(move || {
            cache.lock_for_fork();
            held.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            cache.unlock_after_fork();
        });
        wait.recv().unwrap();
        // SAFETY: the child only reads atomics and exits without unwinding.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let busy = heap.pages.iter().any(|p| p.cache.is_busy());
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(i32::from(busy)) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just made.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child inherited a chunk cache held by a thread it does not have"
        );
        holder.join().unwrap();
        assert!(!cache.is_busy());
    }
}
