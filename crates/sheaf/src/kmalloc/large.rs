//! Large allocations: requests above the largest size class, or aligned beyond a page, are
//! mapped on their own, as the kernel's `kmalloc` hands large requests to the page allocator.
//!
//! A mapping starts with one header page; the object starts at the first multiple of its
//! alignment after it, and the 16 bytes just before the object record the mapping's base and
//! length. The object's first page carries the [`LARGE`](super::radix::LARGE) tag.
//!
//! # The mapping cache
//!
//! A program that allocates and frees objects of tens of KiB in a loop would otherwise pay an
//! `mmap`, an `munmap` and a page fault per page for each. Freed mappings of up to
//! [`MAX_CACHED_LEN`] bytes are kept, up to [`CACHE_SLOTS`] of them and [`MAX_CACHED_BYTES`]
//! in all, still populated, and a later request whose mapping they fit with at most a quarter
//! to spare takes the smallest that fits. The cache is guarded by a try-lock that nobody waits
//! for: a thread that finds it busy maps or unmaps as if there were none, so it adds no wait
//! to any request, and a `fork` that catches it held leaves the child without a cache, never
//! blocked (the mappings it held then stay mapped in the child, at most [`MAX_CACHED_BYTES`]).
//! [`trim`] unmaps every cached mapping.
//! Nothing here allocates through the process allocator.

use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

use object_alloc::PAGE_SIZE;
use rustix::mm::{MapFlags, MremapFlags, ProtFlags, mmap_anonymous, mremap, munmap};

use super::radix;

/// Where a large object's mapping lies, stored just before the object.
#[derive(Clone, Copy)]
#[repr(C)]
struct Header {
    base: usize,
    len: usize,
}

const HEADER: usize = size_of::<Header>();

/// The most freed mappings kept for reuse.
pub(super) const CACHE_SLOTS: usize = 32;
/// The largest mapping kept for reuse (a 1 MiB object and its header page).
pub(super) const MAX_CACHED_LEN: usize = (1 << 20) + PAGE_SIZE;
/// The most bytes of freed mappings kept for reuse.
pub(super) const MAX_CACHED_BYTES: usize = 8 << 20;

/// Freed mappings kept for reuse: `(base, len)` pairs.
struct Cached {
    entries: [(usize, usize); CACHE_SLOTS],
    count: usize,
    bytes: usize,
}

/// The mapping cache and its try-lock (see the module documentation).
struct MappingCache {
    busy: AtomicBool,
    cached: UnsafeCell<Cached>,
}

// SAFETY: `cached` is touched only by the thread that set `busy` (see `MappingCache::with`).
unsafe impl Sync for MappingCache {}

static CACHE: MappingCache = MappingCache {
    busy: AtomicBool::new(false),
    cached: UnsafeCell::new(Cached {
        entries: [(0, 0); CACHE_SLOTS],
        count: 0,
        bytes: 0,
    }),
};

impl MappingCache {
    /// Runs `f` on the cache if no other thread is using it; `None` (nothing done) if one is.
    fn with<R>(&self, f: impl FnOnce(&mut Cached) -> R) -> Option<R> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: setting `busy` gave this thread the cache until it clears it below; `f`
        // only moves numbers (it cannot panic, which would leave the cache unused for good).
        let result = f(unsafe { &mut *self.cached.get() });
        self.busy.store(false, Ordering::Release);
        Some(result)
    }

    /// Takes the smallest cached mapping of `len` bytes or at most a quarter more.
    fn take(&self, len: usize) -> Option<(usize, usize)> {
        self.with(|cached| {
            let fits = |&(_, have): &(usize, usize)| have >= len && have - len <= len / 4;
            let index = (0..cached.count)
                .filter(|&i| fits(&cached.entries[i]))
                .min_by_key(|&i| cached.entries[i].1)?;
            let entry = cached.entries[index];
            cached.count -= 1;
            cached.entries[index] = cached.entries[cached.count];
            cached.bytes -= entry.1;
            Some(entry)
        })
        .flatten()
    }

    /// Keeps the mapping `[base, base + len)` for reuse; `false` (the caller unmaps it) when
    /// it is too large, the cache is full or busy.
    fn put(&self, base: usize, len: usize) -> bool {
        len <= MAX_CACHED_LEN
            && self
                .with(|cached| {
                    if cached.count == CACHE_SLOTS || cached.bytes + len > MAX_CACHED_BYTES {
                        return false;
                    }
                    cached.entries[cached.count] = (base, len);
                    cached.count += 1;
                    cached.bytes += len;
                    true
                })
                .unwrap_or(false)
    }
}

/// Unmaps every cached mapping (`Kmalloc::trim`); returns how many. Waits for a thread that
/// is using the cache (it holds it for a few moves of numbers).
pub(super) fn trim() -> usize {
    let taken = loop {
        if let Some(taken) = CACHE.with(|cached| {
            let taken = (cached.entries, cached.count);
            cached.count = 0;
            cached.bytes = 0;
            taken
        }) {
            break taken;
        }
        std::thread::yield_now();
    };
    let (entries, count) = taken;
    for &(base, len) in &entries[..count] {
        // SAFETY: a cached mapping belongs to nobody (its provenance was exposed by `free`).
        unsafe { unmap(ptr::with_exposed_provenance_mut(base), len) };
    }
    count
}

/// A fresh private anonymous read-write mapping of `bytes` (a multiple of the page size).
pub(super) fn map(bytes: usize) -> Option<*mut u8> {
    // SAFETY: a new anonymous private mapping at an address the kernel chooses aliases
    // nothing.
    let raw = unsafe {
        mmap_anonymous(
            ptr::null_mut(),
            bytes,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .ok()?;
    Some(raw.cast())
}

/// Unmaps `[addr, addr + bytes)`.
///
/// # Safety
///
/// The range was mapped by [`map`] (or is a whole-page part of such a mapping), and nothing
/// refers to it any more.
pub(super) unsafe fn unmap(addr: *mut u8, bytes: usize) {
    // SAFETY: the caller's contract. A failed unmap leaves the range mapped and unused: a
    // leak, never a fault.
    let _ = unsafe { munmap(addr.cast(), bytes) };
}

/// Maps an object of `size` bytes aligned to `align` (a power of two), zeroed if `zero`
/// (a fresh mapping reads as zeroes; one from the cache is cleared); null when the system
/// refuses or the size overflows.
pub(super) fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    let align = align.max(PAGE_SIZE);
    // At least one page of body, so that the tagged first page lies inside the mapping.
    let Some(len) = size
        .max(1)
        .checked_next_multiple_of(PAGE_SIZE)
        .and_then(|body| body.checked_add(PAGE_SIZE + (align - PAGE_SIZE)))
        .filter(|&len| len <= isize::MAX as usize)
    else {
        return ptr::null_mut();
    };
    if align == PAGE_SIZE
        && let Some((base, cached_len)) = CACHE.take(len)
    {
        // The mapping's provenance was exposed when it was cached (`free`).
        let base = ptr::with_exposed_provenance_mut::<u8>(base);
        // SAFETY: a cached mapping belongs to nobody; `cached_len >= len`.
        let object = unsafe { place(base, cached_len, PAGE_SIZE) };
        if zero && !object.is_null() {
            // SAFETY: the mapping's `cached_len - PAGE_SIZE >= size` bytes after the object
            // are the caller's now.
            unsafe { object.write_bytes(0, size) };
        }
        return object;
    }
    let Some(base) = map(len) else {
        return ptr::null_mut();
    };
    // SAFETY: mapped just above for an object aligned to `align`.
    unsafe { place(base, len, align) }
}

/// Places an object at the first multiple of `align` after the first page of the mapping
/// `[base, base + len)`: tags its first page and writes its header; null (the mapping
/// unmapped) if the page map cannot tag it.
///
/// # Safety
///
/// The mapping is the caller's to give to the object (or to unmap), and holds a page-aligned
/// object of the caller's size after its first page at that alignment.
unsafe fn place(base: *mut u8, len: usize, align: usize) -> *mut u8 {
    let object = (base.addr() + PAGE_SIZE).next_multiple_of(align);
    if radix::set(object, PAGE_SIZE, radix::LARGE).is_err() {
        // SAFETY: the caller's mapping, never handed out.
        unsafe { unmap(base, len) };
        return ptr::null_mut();
    }
    let object = base.with_addr(object);
    // SAFETY: the header page lies inside the mapping, before `object`, which is page aligned.
    unsafe {
        write_header(
            object,
            Header {
                base: base.addr(),
                len,
            },
        )
    };
    object
}

/// # Safety
///
/// `object` is a page-aligned address inside a mapping whose previous page is also mapped.
unsafe fn write_header(object: *mut u8, header: Header) {
    // SAFETY: the caller's contract; the 16 bytes before a page-aligned object are aligned.
    unsafe { object.sub(HEADER).cast::<Header>().write(header) }
}

/// # Safety
///
/// `object` is a live large object.
unsafe fn header(object: *mut u8) -> Header {
    // SAFETY: written by `alloc` or `realloc`, and the header page stays mapped while the
    // object lives.
    unsafe { object.sub(HEADER).cast::<Header>().read() }
}

/// Bytes usable at `object`: up to the end of its mapping.
///
/// # Safety
///
/// `object` is a live large object.
pub(super) unsafe fn usable_size(object: *mut u8) -> usize {
    // SAFETY: forwarded.
    let header = unsafe { header(object) };
    header.base + header.len - object.addr()
}

/// Frees a large object: its mapping goes to the cache, or is unmapped.
///
/// # Safety
///
/// `object` is a live large object, not used after this call.
pub(super) unsafe fn free(object: *mut u8) {
    // SAFETY: forwarded.
    let header = unsafe { header(object) };
    // The tag goes first: once unmapped, the address may be handed out by anyone.
    let _ = radix::set(object.addr(), PAGE_SIZE, radix::NONE);
    // Exposed: a later `alloc` takes the mapping back from its address alone.
    if CACHE.put(
        object.with_addr(header.base).expose_provenance(),
        header.len,
    ) {
        return;
    }
    // SAFETY: the whole mapping belonged to this object, which the caller gives up.
    unsafe { unmap(object.with_addr(header.base), header.len) };
}

/// Resizes a page-aligned large object to `size` bytes with `mremap` (moving it if the
/// kernel must, without copying); `None` if the object is aligned beyond a page (its offset in
/// a moved mapping would change) or the kernel refuses, and then the object is unchanged.
///
/// # Safety
///
/// `object` is a live large object; on success the caller uses only the returned pointer.
pub(super) unsafe fn resize(object: *mut u8, size: usize) -> Option<NonNull<u8>> {
    // SAFETY: forwarded.
    let header = unsafe { header(object) };
    if header.base + PAGE_SIZE != object.addr() {
        return None;
    }
    let len = size
        .max(1)
        .checked_next_multiple_of(PAGE_SIZE)?
        .checked_add(PAGE_SIZE)
        .filter(|&len| len <= isize::MAX as usize)?;
    if len == header.len {
        return NonNull::new(object);
    }
    let base = object.with_addr(header.base);
    // The old tag goes first: once the kernel moves the mapping, the old address may be
    // mapped and tagged by anyone.
    let _ = radix::set(object.addr(), PAGE_SIZE, radix::NONE);
    // SAFETY: `[base, base + len)` is this object's whole mapping, which the caller owns; a
    // moved mapping leaves nothing at the old address that anyone refers to.
    let moved = unsafe { mremap(base.cast(), header.len, len, MremapFlags::MAYMOVE) };
    let Ok(moved) = moved else {
        // The mapping is unchanged; the tag cannot fail to return (its leaf exists).
        let _ = radix::set(object.addr(), PAGE_SIZE, radix::LARGE);
        return None;
    };
    let moved = moved.cast::<u8>();
    let new_object = moved.wrapping_add(PAGE_SIZE);
    // Tagging fails only when no leaf of the page map can be mapped; the object is then kept
    // untagged (`free` leaks it) rather than lost while the caller holds it.
    let _ = radix::set(new_object.addr(), PAGE_SIZE, radix::LARGE);
    // SAFETY: the new mapping starts with its header page, and the object is page aligned.
    unsafe {
        write_header(
            new_object,
            Header {
                base: moved.addr(),
                len,
            },
        )
    };
    NonNull::new(new_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_mapping_is_reused_for_a_request_it_fits_and_cleared_for_a_zeroed_one() {
        // Sizes no other test uses, so that a concurrent test's mapping is not taken here.
        let size = 200 * 1024 + 123;
        let first = alloc(size, 8, false);
        assert!(!first.is_null());
        // SAFETY: a live large object of `size` bytes.
        unsafe {
            first.write_bytes(0xAB, size);
            free(first);
        }
        // Within a quarter of the freed mapping's length: the same mapping, cleared.
        let again = alloc(size - 3000, 8, true);
        assert_eq!(again, first);
        assert_eq!(radix::get(again.addr()), radix::LARGE);
        // SAFETY: a live large object of at least `size - 3000` bytes.
        unsafe {
            assert!(
                std::slice::from_raw_parts(again, size - 3000)
                    .iter()
                    .all(|&b| b == 0)
            );
            assert!(usable_size(again) >= size);
            free(again);
        }
        // Far smaller: a mapping of its own, not the cached one.
        let small = alloc(40 * 1024 + 5, 8, false);
        assert_ne!(small, first);
        // SAFETY: live large objects.
        unsafe { free(small) };
    }

    #[test]
    fn the_cache_refuses_what_is_too_large_and_beyond_its_bytes() {
        let cache = MappingCache {
            busy: AtomicBool::new(false),
            cached: UnsafeCell::new(Cached {
                entries: [(0, 0); CACHE_SLOTS],
                count: 0,
                bytes: 0,
            }),
        };
        assert!(!cache.put(0x1000_0000, MAX_CACHED_LEN + PAGE_SIZE));
        let each = MAX_CACHED_LEN;
        let fit = MAX_CACHED_BYTES / each;
        for i in 0..fit {
            assert!(cache.put(0x1000_0000 + i * (2 << 20), each));
        }
        assert!(!cache.put(0x7000_0000, each), "over the byte limit");
        // A busy cache is passed by, never waited for.
        cache.busy.store(true, Ordering::Relaxed);
        assert_eq!(cache.take(each), None);
        cache.busy.store(false, Ordering::Relaxed);
        assert!(cache.take(each).is_some());
        assert_eq!(cache.take(each / 2), None, "more than a quarter to spare");
    }
}
