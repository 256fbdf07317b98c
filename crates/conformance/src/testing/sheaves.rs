//! Bulk and prefill checks through the public API: `alloc_bulk` success, and the prefill,
//! refill and return clauses through the design's `Prefill` handle (C-BULK-1, C-BULK-2,
//! C-PREFILL-*, C-REFILL-1..3).

use std::collections::HashSet;
use std::ptr::NonNull;

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc, Prefill};

use super::{bulk, check_aligned, fill, new_cache, release_all, verify};

/// C-BULK-1 (success path) and C-BULK-2: `alloc_bulk` fills every slot with distinct, aligned,
/// writable objects, across sheaf-sized and larger requests; `free_bulk` takes back a mix of
/// objects from two bulk calls and single allocations.
pub fn bulk_alloc_fills_every_slot<A: ObjectAlloc>() {
    let size = 256;
    let align = 64;
    let fixture = new_cache::<A>(CacheConfig::new(size).with_align(align));
    let cache = &fixture.cache;
    for count in [0, 1, 7, 64, 1000] {
        let mut objects = bulk(cache, AllocFlags::empty(), count)
            .unwrap_or_else(|e| panic!("{}: alloc_bulk({count}) failed: {e}", A::NAME));
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
        release_all(&fixture, &objects);
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
    let fixture = new_cache::<A>(CacheConfig::new(size).with_sheaf_capacity(capacity));
    let cache = &fixture.cache;
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
    release_all(&fixture, &[]);
}
