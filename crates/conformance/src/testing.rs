//! The generic allocator test suite: the same checks, run on every design.
//!
//! Each function takes a design as a type parameter, builds its own caches, and panics with a
//! message naming the clause and the values involved when the design breaks it. The checks are
//! short and deterministic (a few thousand objects each), so they suit `cargo test` in debug
//! builds; the conformance suite is where clauses are checked under load.
//!
//! [`allocator_tests!`](crate::allocator_tests) expands to one `#[test]` per check:
//!
//! ```ignore
//! // tests/generic.rs
//! conformance::allocator_tests!(my_design::MyCache);
//!
//! // tests/deferred.rs: a binary of its own (see `deferred_free_waits_for_readers`)
//! #[test]
//! fn deferred_free_waits_for_readers() {
//!     conformance::testing::deferred_free_waits_for_readers::<my_design::MyCache>();
//! }
//! ```
//!
//! What a check cannot observe it does not pretend to: accounting is checked only for designs
//! whose [`Capabilities::tracks_live_objects`](object_alloc::Capabilities) is set, and a bulk
//! allocation's failure path only where a test can force a failure (not here: a
//! general-purpose allocator cannot be made to fail on demand; see `object_alloc::bulk`'s tests for
//! the shared failure loop).

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::{Barrier, mpsc};
use std::thread;

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc, Prefill, rcu};

/// Object sizes the layout checks cover.
pub const SIZES: [usize; 4] = [8, 64, 256, 4096];
/// Alignments the layout checks cover.
pub const ALIGNS: [usize; 3] = [8, 64, 4096];

/// Allocations after which a freed object is expected back: LIFO caches return it at once,
/// designs that batch frees (a page's local free list) within a page's worth of objects.
const REUSE_WINDOW: usize = 1 << 16;

fn cache<A: ObjectAlloc>(config: &CacheConfig) -> A {
    A::new(config).unwrap_or_else(|e| panic!("{}: creating a cache for {config:?}: {e}", A::NAME))
}

/// The byte an object's pattern has at `offset`: varies with the object's tag and the offset,
/// so that a shifted or overlapping object reads wrong.
fn pattern(tag: usize, offset: usize) -> u8 {
    (tag.wrapping_mul(31) ^ offset.wrapping_mul(7) ^ (offset >> 8)) as u8 | 1
}

/// Writes the pattern of `tag` over all `size` bytes of `object`.
///
/// # Safety
///
/// - `object` points to at least `size` writable bytes owned by the caller.
unsafe fn fill(object: NonNull<u8>, size: usize, tag: usize) {
    for offset in 0..size {
        // SAFETY: `offset < size`, within the object (the caller's obligation).
        unsafe { object.as_ptr().add(offset).write(pattern(tag, offset)) };
    }
}

/// Checks that all `size` bytes of `object` hold the pattern of `tag`.
///
/// # Safety
///
/// - `object` points to at least `size` readable bytes owned by the caller.
unsafe fn verify(name: &str, object: NonNull<u8>, size: usize, tag: usize) {
    for offset in 0..size {
        // SAFETY: `offset < size`, within the object (the caller's obligation).
        let byte = unsafe { object.as_ptr().add(offset).read() };
        assert_eq!(
            byte,
            pattern(tag, offset),
            "{name}: object #{tag} at {object:p}: byte {offset} was overwritten (C-OBJ-2)"
        );
    }
}

fn check_aligned(name: &str, object: NonNull<u8>, align: usize) {
    assert_eq!(
        object.as_ptr() as usize % align,
        0,
        "{name}: object {object:p} is not aligned to {align} (C-OBJ-1)"
    );
}

/// Objects whose addresses cross threads in these checks.
#[derive(Clone, Copy)]
struct Sent(NonNull<u8>);

// SAFETY: the objects are plain memory; each check hands ownership from one thread to the
// other and never touches an object from two threads at once.
unsafe impl Send for Sent {}

/// C-CONF-1: creation refuses a zero size and a non-power-of-two alignment, naming the field.
pub fn config_is_validated<A: ObjectAlloc>() {
    let zero_size = A::new(&CacheConfig::new(0));
    assert_eq!(
        zero_size.err().map(|e| e.field),
        Some("object_size"),
        "{}: a zero object size must be refused naming `object_size`",
        A::NAME
    );
    let bad_align = A::new(&CacheConfig::new(64).with_align(24));
    assert_eq!(
        bad_align.err().map(|e| e.field),
        Some("align"),
        "{}: alignment 24 must be refused naming `align`",
        A::NAME
    );
}

/// C-OBJ-1: for every size of [`SIZES`] and alignment of [`ALIGNS`], objects are aligned and
/// every byte of the configured size holds what was written.
pub fn objects_are_aligned_and_writable<A: ObjectAlloc>() {
    const OBJECTS: usize = 64;
    for size in SIZES {
        for align in ALIGNS {
            let config = CacheConfig::new(size).with_align(align);
            let cache: A = cache(&config);
            let objects: Vec<_> = (0..OBJECTS)
                .map(|_| {
                    cache
                        .alloc(AllocFlags::empty())
                        .unwrap_or_else(|| panic!("{}: allocation failed for {config:?}", A::NAME))
                })
                .collect();
            for (tag, &object) in objects.iter().enumerate() {
                check_aligned(A::NAME, object, align);
                // SAFETY: a live object of `size` bytes that this check owns.
                unsafe { fill(object, size, tag) };
            }
            for (tag, &object) in objects.iter().enumerate() {
                // SAFETY: as above.
                unsafe { verify(A::NAME, object, size, tag) };
                // SAFETY: allocated by `cache`, live, not used afterwards.
                unsafe { cache.free(object) };
            }
        }
    }
}

/// C-OBJ-2: live objects never overlap, on one thread and across two threads allocating at the
/// same time (each object is filled with its own pattern, then, with every object still live,
/// every pattern is verified).
pub fn objects_do_not_overlap<A: ObjectAlloc>() {
    const OBJECTS: usize = 1000;
    for size in [8, 64, 4096] {
        let config = CacheConfig::new(size);
        let cache: A = cache(&config);
        let start = Barrier::new(2);
        let per_thread: Vec<Vec<Sent>> = thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|thread_index| {
                    let (cache, start) = (&cache, &start);
                    s.spawn(move || {
                        start.wait();
                        let objects: Vec<_> = (0..OBJECTS)
                            .map(|i| {
                                let object = cache
                                    .alloc(AllocFlags::empty())
                                    .unwrap_or_else(|| panic!("{}: allocation failed", A::NAME));
                                // SAFETY: a live object of `size` bytes owned by this thread.
                                unsafe { fill(object, size, thread_index * OBJECTS + i) };
                                Sent(object)
                            })
                            .collect();
                        objects
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut seen = HashSet::new();
        for (thread_index, objects) in per_thread.iter().enumerate() {
            for (i, object) in objects.iter().enumerate() {
                assert!(
                    seen.insert(object.0),
                    "{}: {:p} handed out twice while live (C-OBJ-2)",
                    A::NAME,
                    object.0
                );
                // SAFETY: live, `size` bytes, now owned by this thread.
                unsafe { verify(A::NAME, object.0, size, thread_index * OBJECTS + i) };
            }
        }
        for object in per_thread.into_iter().flatten() {
            // SAFETY: allocated by `cache`, live, freed once.
            unsafe { cache.free(object.0) };
        }
    }
}

/// C-OBJ-3: `ZERO` objects read as zero even when their memory held a pattern before, through
/// `alloc`, `alloc_bulk` and a prefilled sheaf. Each path allocates until it has been handed
/// back at least one of the dirtied objects (designs that reuse a page's freed objects only
/// once its fresh ones run out need more than one batch; a design whose bulk path bypasses its
/// per-thread cache gets one `shrink` after a window without reuse), so the check is never
/// vacuous.
pub fn zero_holds_on_reused_memory<A: ObjectAlloc>() {
    const OBJECTS: usize = 64;
    for size in SIZES {
        let config = CacheConfig::new(size).with_sheaf_capacity(8);
        let cache: A = cache(&config);
        for (round, path) in ["alloc", "alloc_bulk", "prefill"].into_iter().enumerate() {
            let dirty: Vec<_> = (0..OBJECTS)
                .map(|i| {
                    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                    // SAFETY: a live object of `size` bytes that this check owns.
                    unsafe { fill(object, size, i) };
                    object
                })
                .collect();
            let dirty_set: HashSet<_> = dirty.iter().copied().collect();
            // SAFETY: each was allocated by `cache`, is live and appears once.
            unsafe { cache.free_bulk(&dirty) };
            let mut zeroed: Vec<NonNull<u8>> = Vec::new();
            let mut reused = 0;
            let mut shrunk = false;
            while reused == 0 && zeroed.len() < 2 * REUSE_WINDOW {
                if zeroed.len() >= REUSE_WINDOW && !shrunk {
                    // A design whose bulk path bypasses its per-thread cache (jemalloc's
                    // batch allocation takes slab regions, not the tcache) hands the freed
                    // objects back only once they have left that cache: shrink, and give
                    // it one more window.
                    cache.shrink();
                    shrunk = true;
                }
                let batch: Vec<NonNull<u8>> = match round {
                    0 => (0..OBJECTS)
                        .map(|_| cache.alloc(AllocFlags::ZERO).expect("allocation failed"))
                        .collect(),
                    1 => {
                        let mut out = vec![MaybeUninit::uninit(); OBJECTS];
                        cache
                            .alloc_bulk(AllocFlags::ZERO, &mut out)
                            .expect("bulk allocation failed");
                        // SAFETY: the bulk allocation succeeded, so every slot is written.
                        out.iter()
                            .map(|slot| unsafe { slot.assume_init() })
                            .collect()
                    }
                    _ => {
                        let mut sheaf = cache
                            .prefill(AllocFlags::empty(), OBJECTS)
                            .expect("prefill failed");
                        (0..OBJECTS)
                            .map(|_| {
                                sheaf
                                    .alloc(AllocFlags::ZERO)
                                    .expect("prefilled alloc failed")
                            })
                            .collect()
                    }
                };
                for &object in &batch {
                    reused += usize::from(dirty_set.contains(&object));
                    for offset in 0..size {
                        // SAFETY: a live object of `size` bytes that this check owns.
                        let byte = unsafe { object.as_ptr().add(offset).read() };
                        assert_eq!(
                            byte,
                            0,
                            "{}: ZERO object {object:p} from {path}, size {size}: byte {offset} \
                             is {byte:#x} (C-OBJ-3)",
                            A::NAME
                        );
                    }
                }
                zeroed.extend(batch);
            }
            // SAFETY: each was allocated by `cache`, is live and appears once.
            unsafe { cache.free_bulk(&zeroed) };
            assert!(
                reused > 0,
                "{}: no freed object came back through {path} within {REUSE_WINDOW} \
                 allocations, nor within as many more after a shrink (size {size}), so ZERO \
                 on reused memory was not exercised",
                A::NAME
            );
        }
    }
}

/// C-OBJ-4: objects allocated on one thread are freed on another (with `free` and
/// `free_bulk`), and the other way round; contents cross intact.
pub fn remote_free_is_allowed<A: ObjectAlloc>() {
    const OBJECTS: usize = 1000;
    let size = 64;
    let cache: A = cache(&CacheConfig::new(size));
    for round in 0..3 {
        let objects: Vec<_> = (0..OBJECTS)
            .map(|i| {
                let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                // SAFETY: a live object of `size` bytes that this thread owns.
                unsafe { fill(object, size, round * OBJECTS + i) };
                Sent(object)
            })
            .collect();
        let theirs = thread::scope(|s| {
            let cache = &cache;
            s.spawn(move || {
                let (singles, batch) = objects.split_at(OBJECTS / 2);
                for (i, object) in objects.iter().enumerate() {
                    // SAFETY: live, `size` bytes, handed over to this thread.
                    unsafe { verify(A::NAME, object.0, size, round * OBJECTS + i) };
                }
                for object in singles {
                    // SAFETY: allocated by `cache` on another thread, live, freed once.
                    unsafe { cache.free(object.0) };
                }
                let batch: Vec<_> = batch.iter().map(|o| o.0).collect();
                // SAFETY: as above, each appears once.
                unsafe { cache.free_bulk(&batch) };
                let mine: Vec<_> = (0..OBJECTS)
                    .map(|i| {
                        let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
                        // SAFETY: a live object of `size` bytes that this thread owns.
                        unsafe { fill(object, size, i) };
                        Sent(object)
                    })
                    .collect();
                mine
            })
            .join()
            .unwrap()
        });
        for (i, object) in theirs.iter().enumerate() {
            // SAFETY: live, `size` bytes, handed over to this thread; the allocating thread
            // has exited.
            unsafe { verify(A::NAME, object.0, size, i) };
            // SAFETY: allocated by `cache` on another thread, live, freed once.
            unsafe { cache.free(object.0) };
        }
    }
}

/// C-BULK-1 (success path) and C-BULK-2: `alloc_bulk` fills every slot with distinct, aligned,
/// writable objects, across sheaf-sized and larger requests; `free_bulk` takes back a mix of
/// objects from two bulk calls and single allocations.
pub fn bulk_alloc_fills_every_slot<A: ObjectAlloc>() {
    let size = 256;
    let align = 64;
    let cache: A = cache(&CacheConfig::new(size).with_align(align));
    for count in [0, 1, 7, 64, 1000] {
        let mut out = vec![MaybeUninit::uninit(); count];
        cache
            .alloc_bulk(AllocFlags::empty(), &mut out)
            .unwrap_or_else(|e| panic!("{}: alloc_bulk({count}) failed: {e}", A::NAME));
        // SAFETY: the bulk allocation succeeded, so every slot is written.
        let mut objects: Vec<_> = out
            .iter()
            .map(|slot| unsafe { slot.assume_init() })
            .collect();
        let distinct: HashSet<_> = objects.iter().collect();
        assert_eq!(
            distinct.len(),
            count,
            "{}: alloc_bulk({count}) returned the same object twice (C-BULK-1)",
            A::NAME
        );
        for (tag, &object) in objects.iter().enumerate() {
            check_aligned(A::NAME, object, align);
            // SAFETY: a live object of `size` bytes that this check owns.
            unsafe { fill(object, size, tag) };
        }
        for (tag, &object) in objects.iter().enumerate() {
            // SAFETY: as above.
            unsafe { verify(A::NAME, object, size, tag) };
        }
        objects.extend((0..3).map(|_| cache.alloc(AllocFlags::empty()).expect("alloc failed")));
        objects.reverse();
        // SAFETY: each was allocated by `cache`, is live and appears once.
        unsafe { cache.free_bulk(&objects) };
    }
}

/// Takes `count` objects from `sheaf`, checking that each succeeds and lowers the size by one,
/// and fills each with the pattern of its index in `taken`.
fn take<P: Prefill>(
    name: &str,
    size: usize,
    sheaf: &mut P,
    count: usize,
    taken: &mut Vec<NonNull<u8>>,
) {
    for _ in 0..count {
        let before = sheaf.size();
        let object = sheaf
            .alloc(AllocFlags::empty())
            .unwrap_or_else(|| panic!("{name}: alloc failed with size {before} (C-PREFILL-2)"));
        assert_eq!(
            sheaf.size(),
            before - 1,
            "{name}: size must drop by one (C-PREFILL-4)"
        );
        // SAFETY: a live object of `size` bytes that this check owns.
        unsafe { fill(object, size, taken.len()) };
        taken.push(object);
    }
}

/// C-PREFILL-1..5, 7, 8 and C-REFILL-1..3, through the design's `Prefill` handle (native or
/// [`BulkPrefill`](object_alloc::BulkPrefill)): sizes, exhaustion, refill in place and oversize,
/// return by call and by drop, and freeing the objects taken by every free path.
pub fn prefill_serves_what_it_promised<A: ObjectAlloc>() {
    let size = 64;
    let capacity = 8;
    let cache: A = cache(&CacheConfig::new(size).with_sheaf_capacity(capacity));
    let live_before = cache.stats().live_objects;
    let mut taken = Vec::new();

    let mut sheaf = cache
        .prefill(AllocFlags::empty(), 5)
        .expect("prefill(5) failed");
    assert!(
        sheaf.size() >= 5,
        "{}: prefill(5) holds {} (C-PREFILL-1)",
        A::NAME,
        sheaf.size()
    );
    take(A::NAME, size, &mut sheaf, 5, &mut taken);
    let rest = sheaf.size();
    take(A::NAME, size, &mut sheaf, rest, &mut taken);
    assert!(
        sheaf.alloc(AllocFlags::empty()).is_none(),
        "{}: alloc on an empty sheaf must fail (C-PREFILL-3)",
        A::NAME
    );
    assert_eq!(sheaf.size(), 0);

    sheaf
        .refill(AllocFlags::empty(), 6)
        .expect("refill(6) failed");
    assert!(
        sheaf.size() >= 6,
        "{}: refill(6) holds {} (C-REFILL-2)",
        A::NAME,
        sheaf.size()
    );
    take(A::NAME, size, &mut sheaf, 2, &mut taken);
    let before = sheaf.size();
    sheaf
        .refill(AllocFlags::empty(), 3)
        .expect("refill(3) failed");
    assert_eq!(
        sheaf.size(),
        before,
        "{}: refill below size must change nothing (C-REFILL-1)",
        A::NAME
    );
    let oversize = sheaf.capacity() + 5;
    sheaf
        .refill(AllocFlags::empty(), oversize)
        .expect("oversize refill failed");
    assert!(
        sheaf.size() >= oversize,
        "{}: refill({oversize}) holds {} (C-REFILL-3)",
        A::NAME,
        sheaf.size()
    );
    take(A::NAME, size, &mut sheaf, oversize, &mut taken);
    sheaf.return_with(AllocFlags::empty());

    let oversize = capacity * 3;
    let mut sheaf = cache
        .prefill(AllocFlags::empty(), oversize)
        .expect("oversize prefill failed");
    assert!(
        sheaf.size() >= oversize,
        "{}: prefill({oversize}) holds {} (C-PREFILL-5)",
        A::NAME,
        sheaf.size()
    );
    take(A::NAME, size, &mut sheaf, oversize - 4, &mut taken);
    drop(sheaf);

    let empty = cache
        .prefill(AllocFlags::empty(), 0)
        .expect("prefill(0) must succeed (C-PREFILL-7)");
    drop(empty);

    for (tag, &object) in taken.iter().enumerate() {
        // SAFETY: live, `size` bytes, owned by this check.
        unsafe { verify(A::NAME, object, size, tag) };
    }
    // C-PREFILL-8: every free path takes objects from a sheaf.
    let (singles, rest) = taken.split_at(taken.len() / 3);
    let (batch, deferred) = rest.split_at(rest.len() / 2);
    for &object in singles {
        // SAFETY: allocated through `cache`, live, freed once.
        unsafe { cache.free(object) };
    }
    // SAFETY: as above.
    unsafe { cache.free_bulk(batch) };
    for &object in deferred {
        // SAFETY: as above; no reader holds it.
        unsafe { cache.free_deferred(object) };
    }
    cache.barrier();
    if A::CAPABILITIES.tracks_live_objects {
        assert_eq!(
            cache.stats().live_objects,
            live_before,
            "{}: live objects after returning every sheaf and freeing every object (C-OBJ-5)",
            A::NAME
        );
    }
}

/// C-DEFER-1 and C-DEFER-2: an object passed to `free_deferred` while another thread is inside
/// a read-side section keeps its contents and is not handed out again (over
/// many allocations and epoch flushes); after the reader leaves and `barrier` returns, it is
/// handed out again.
///
/// Run it in a test binary of its own (a `tests/*.rs` file with this one test): the read-side
/// machinery is process-wide, so another test's epoch collection could run the deferred free
/// on that test's thread, and a thread-caching allocator would then hand the object out there,
/// never here.
pub fn deferred_free_waits_for_readers<A: ObjectAlloc>() {
    let size = 64;
    let sentinel = 0x5eed;
    let cache: A = cache(&CacheConfig::new(size));
    // Settle the allocator's per-thread state first: glibc, for one, may move a thread to
    // another arena early in its life, and an object freed to the arena left behind is not
    // handed out to this thread again.
    let warm_up: Vec<_> = (0..REUSE_WINDOW)
        .map(|_| cache.alloc(AllocFlags::empty()).expect("allocation failed"))
        .collect();
    // SAFETY: each was allocated by `cache`, is live and appears once.
    unsafe { cache.free_bulk(&warm_up) };
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    // SAFETY: a live object of `size` bytes that this check owns.
    unsafe { fill(object, size, sentinel) };
    let (entered_tx, entered) = mpsc::channel();
    let (leave, leave_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        // Owned by this closure, so that a failed check drops it and the reader leaves
        // instead of waiting forever.
        let leave = leave;
        s.spawn(move || {
            let section = rcu::read();
            entered_tx.send(()).unwrap();
            // Either the signal or the sender dropped by a failed check ends the section.
            let _ = leave_rx.recv();
            drop(section);
        });
        entered.recv().unwrap();
        // SAFETY: allocated by `cache`, live; the reader may still read it.
        unsafe { cache.free_deferred(object) };
        for _ in 0..1000 {
            rcu::flush();
        }
        let held: Vec<_> = (0..REUSE_WINDOW)
            .map(|_| cache.alloc(AllocFlags::empty()).expect("allocation failed"))
            .collect();
        assert!(
            !held.contains(&object),
            "{}: an object freed deferred was handed out while a reader was active (C-DEFER-1)",
            A::NAME
        );
        // SAFETY: the object is not yet freed (its grace period has not ended), so its memory is
        // still as a reader would see it.
        unsafe { verify(A::NAME, object, size, sentinel) };
        // SAFETY: each was allocated by `cache`, is live and appears once.
        unsafe { cache.free_bulk(&held) };
        leave.send(()).unwrap();
    });
    cache.barrier();
    let mut held = Vec::new();
    let mut found = false;
    while held.len() < REUSE_WINDOW && !found {
        let again = cache.alloc(AllocFlags::empty()).expect("allocation failed");
        found = again == object;
        held.push(again);
    }
    // SAFETY: each was allocated by `cache`, is live and appears once.
    unsafe { cache.free_bulk(&held) };
    assert!(
        found,
        "{}: after the reader left and barrier() returned, the deferred object was not handed \
         out again within {REUSE_WINDOW} allocations (C-DEFER-2)",
        A::NAME
    );
}

/// Expands to one `#[test]` per check of [`conformance::testing`](crate::testing), run on the
/// design `$alloc`, except [`deferred_free_waits_for_readers`], which needs a test binary of
/// its own.
#[macro_export]
macro_rules! allocator_tests {
    ($alloc:ty) => {
        #[test]
        fn config_is_validated() {
            $crate::testing::config_is_validated::<$alloc>();
        }
        #[test]
        fn objects_are_aligned_and_writable() {
            $crate::testing::objects_are_aligned_and_writable::<$alloc>();
        }
        #[test]
        fn objects_do_not_overlap() {
            $crate::testing::objects_do_not_overlap::<$alloc>();
        }
        #[test]
        fn zero_holds_on_reused_memory() {
            $crate::testing::zero_holds_on_reused_memory::<$alloc>();
        }
        #[test]
        fn remote_free_is_allowed() {
            $crate::testing::remote_free_is_allowed::<$alloc>();
        }
        #[test]
        fn bulk_alloc_fills_every_slot() {
            $crate::testing::bulk_alloc_fills_every_slot::<$alloc>();
        }
        #[test]
        fn prefill_serves_what_it_promised() {
            $crate::testing::prefill_serves_what_it_promised::<$alloc>();
        }
    };
}
