//! Freed slab chunks kept for reuse, one small cache per size class.
//!
//! A class's slab pool gives a slab back to its page source as soon as the slab empties beyond
//! the pool's few kept empty slabs, and takes a new one when it runs short. A program whose
//! working set swings up and down (or whose threads free what others allocated) would pay for
//! each such slab an `mmap` (with two trimming `munmap`s, for alignment), an `munmap`, a
//! retag of its pages in the page map and a page fault per page touched again. Instead, a
//! freed chunk goes on its class's cache, still mapped, populated and tagged, and the next
//! chunk the class asks for is taken from there.
//!
//! The caches of all classes share one budget of [`CACHE_BYTES`]: a class whose objects are
//! freed in bulk may keep much of it while others keep nothing, and the memory kept is
//! bounded however many classes churn. Beyond it, freed chunks are unmapped as before. [`ChunkCache::take_all`] empties a cache
//! (`Kmalloc::trim`). The chunks are linked through their first two words (the next chunk and
//! the chunk's size), which the pool overwrites with a slab header when it takes one.
//!
//! The cache is guarded by a try-lock that no allocating thread waits for: a thread that finds
//! it busy maps or unmaps as if there were none. The lock is held for a few pointer moves and
//! never across a call out, so a `fork` takes every class's lock before the fork and releases
//! them on both sides (`Kmalloc`'s fork handlers, [`ChunkCache::lock_for_fork`]), and the child
//! finds each cache consistent and free.

use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The most bytes of freed chunks all classes together keep.
pub(super) const CACHE_BYTES: usize = 16 << 20;

/// A budget of bytes shared by several caches.
#[derive(Debug)]
pub(super) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub(super) const fn new(limit: usize) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `bytes` from the budget; `false` (nothing taken) if they are not left.
    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&sum| sum <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes taken now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// The budget of the heap's class caches.
pub(super) static BUDGET: Budget = Budget::new(CACHE_BYTES);

/// The words at the start of a cached chunk.
#[repr(C)]
struct Link {
    next: *mut Link,
    bytes: usize,
}

struct Stack {
    head: *mut Link,
}

/// One class's freed chunks (see the module documentation).
pub(super) struct ChunkCache {
    busy: AtomicBool,
    stack: UnsafeCell<Stack>,
    /// The byte budget ([`BUDGET`] but in tests).
    budget: &'static Budget,
}

// SAFETY: `stack` and the chunks it links are touched only by the thread that set `busy`
// (see `ChunkCache::with`); the chunks belong to nobody else while cached.
unsafe impl Sync for ChunkCache {}
// SAFETY: as above; the raw pointers name chunks owned by the cache, not by a thread.
unsafe impl Send for ChunkCache {}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl ChunkCache {
    /// An empty cache that keeps chunks while `budget` has bytes left.
    pub(super) const fn new(budget: &'static Budget) -> Self {
        ChunkCache {
            busy: AtomicBool::new(false),
            stack: UnsafeCell::new(Stack {
                head: ptr::null_mut(),
            }),
            budget,
        }
    }

    /// Runs `f` on the cache if no other thread is using it; `None` (nothing done) if one is.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: setting `busy` gave this thread the cache until it clears it below; `f`
        // only moves pointers and numbers (it cannot panic, which would leave the cache
        // unused for good).
        let result = f(unsafe { &mut *self.stack.get() });
        self.busy.store(false, Ordering::Release);
        Some(result)
    }

    /// A cached chunk of `bytes` bytes, if the most recently cached one has that size (every
    /// chunk of a class has its slab size) and the cache is not busy.
    pub(super) fn take(&self, bytes: usize) -> Option<NonNull<u8>> {
        self.with(|stack| {
            let head = NonNull::new(stack.head)?;
            // SAFETY: a cached chunk starts with its link, written by `put`.
            let link = unsafe { head.as_ptr().read() };
            if link.bytes != bytes {
                return None;
            }
            stack.head = link.next;
            self.budget.give_back(bytes);
            Some(head.cast())
        })
        .flatten()
    }

    /// Keeps `chunk` of `bytes` bytes for reuse; `false` (the caller unmaps it) when it would
    /// take the cache beyond its budget or the cache is busy.
    ///
    /// # Safety
    ///
    /// `chunk` is `bytes >= 16` writable bytes, aligned to 8, that nothing uses any more; the
    /// cache owns it from a `true` return until it hands it out again.
    pub(super) unsafe fn put(&self, chunk: NonNull<u8>, bytes: usize) -> bool {
        self.with(|stack| {
            if !self.budget.reserve(bytes) {
                return false;
            }
            let link = chunk.cast::<Link>().as_ptr();
            // SAFETY: the caller gives the chunk up; its first 16 bytes hold the link.
            unsafe {
                link.write(Link {
                    next: stack.head,
                    bytes,
                })
            };
            stack.head = link;
            true
        })
        .unwrap_or(false)
    }

    /// Empties the cache, calling `free(chunk, bytes)` for each chunk after the lock is
    /// dropped; returns how many there were. Waits for a thread that is using the cache (it
    /// holds the lock for a few pointer moves).
    pub(super) fn take_all(&self, mut free: impl FnMut(NonNull<u8>, usize)) -> usize {
        let mut head = loop {
            if let Some(head) =
                self.with(|stack| std::mem::replace(&mut stack.head, ptr::null_mut()))
            {
                break head;
            }
            std::thread::yield_now();
        };
        let mut count = 0;
        while let Some(chunk) = NonNull::new(head) {
            // SAFETY: a chunk taken off the list starts with the link `put` wrote, and is
            // ours alone now.
            let link = unsafe { chunk.as_ptr().read() };
            head = link.next;
            self.budget.give_back(link.bytes);
            free(chunk.cast(), link.bytes);
            count += 1;
        }
        count
    }

    /// Whether a thread holds the lock now.
    #[cfg(test)]
    pub(super) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// `fork` prepare: takes the lock, waiting for a thread that holds it (never for long: it
    /// holds it for a few pointer moves, and waits for nothing meanwhile).
    pub(super) fn lock_for_fork(&self) {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
    }

    /// `fork` parent and child: releases what [`ChunkCache::lock_for_fork`] took.
    pub(super) fn unlock_after_fork(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boxed, 16-byte aligned stand-ins for chunks.
    fn chunks(count: usize, bytes: usize) -> Vec<NonNull<u8>> {
        (0..count)
            .map(|_| {
                let layout = std::alloc::Layout::from_size_align(bytes, 16).unwrap();
                // SAFETY: a non-zero size.
                NonNull::new(unsafe { std::alloc::alloc(layout) }).unwrap()
            })
            .collect()
    }

    fn dealloc(chunk: NonNull<u8>, bytes: usize) {
        let layout = std::alloc::Layout::from_size_align(bytes, 16).unwrap();
        // SAFETY: allocated by `chunks` with this layout, freed once.
        unsafe { std::alloc::dealloc(chunk.as_ptr(), layout) };
    }

    #[test]
    fn the_shared_budget_is_kept_and_chunks_come_back_last_in_first_out() {
        // Each test has a budget of its own, for the process's life (nothing leaked).
        static BUDGET: Budget = Budget::new(4 * 64);
        let budget = &BUDGET;
        let (cache, other) = (ChunkCache::new(budget), ChunkCache::new(budget));
        let held = chunks(5, 64);
        for &chunk in &held[..3] {
            // SAFETY: a chunk of 64 bytes that nothing uses.
            assert!(unsafe { cache.put(chunk, 64) });
        }
        // SAFETY: as above.
        assert!(unsafe { other.put(held[3], 64) });
        // SAFETY: as above.
        let kept = unsafe { cache.put(held[4], 64) };
        assert!(!kept, "beyond the shared budget");
        assert_eq!(budget.used(), 4 * 64);
        assert_eq!(cache.take(128), None, "another size is not handed out");
        assert_eq!(cache.take(64), Some(held[2]));
        assert_eq!(budget.used(), 3 * 64);
        // A busy cache is passed by, never waited for.
        cache.busy.store(true, Ordering::Relaxed);
        assert_eq!(cache.take(64), None);
        // SAFETY: as above.
        assert!(!unsafe { cache.put(held[2], 64) });
        cache.busy.store(false, Ordering::Relaxed);
        let mut freed = Vec::new();
        assert_eq!(cache.take_all(|chunk, bytes| freed.push((chunk, bytes))), 2);
        assert_eq!(freed, [(held[1], 64), (held[0], 64)]);
        assert_eq!(budget.used(), 64, "the other cache's chunk is still kept");
        assert_eq!(cache.take(64), None);
        assert_eq!(other.take_all(|_, _| {}), 1);
        assert_eq!(budget.used(), 0);
        held.into_iter().for_each(|chunk| dealloc(chunk, 64));
    }

    #[test]
    fn a_fork_lock_makes_the_cache_busy_until_released() {
        static BUDGET: Budget = Budget::new(1 << 10);
        let cache = ChunkCache::new(&BUDGET);
        let held = chunks(1, 64);
        cache.lock_for_fork();
        // SAFETY: a chunk of 64 bytes that nothing uses.
        assert!(!unsafe { cache.put(held[0], 64) });
        cache.unlock_after_fork();
        // SAFETY: as above.
        assert!(unsafe { cache.put(held[0], 64) });
        assert_eq!(cache.take(64), Some(held[0]));
        dealloc(held[0], 64);
    }
}
