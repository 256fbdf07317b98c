use std::sync::Arc;

use object_alloc::CacheConfig;
use slab::{LimitedPages, MmapPages, PAGE_SIZE, PageError, PageSource, page_source_for};

#[test]
fn mmap_chunks_are_naturally_aligned_writable_and_counted() {
    let pages = MmapPages::new();
    let mut chunks = Vec::new();
    let mut bytes = PAGE_SIZE;
    while bytes <= 1 << 21 {
        let chunk = pages.alloc_chunk(bytes).unwrap();
        assert_eq!(
            chunk.addr().get() % bytes,
            0,
            "chunk of {bytes} at {chunk:p}"
        );
        // SAFETY: the chunk is `bytes` writable bytes of ours.
        unsafe {
            chunk.as_ptr().write_bytes(0xa5, bytes);
            assert_eq!(*chunk.as_ptr().add(bytes - 1), 0xa5);
        }
        chunks.push((chunk, bytes));
        bytes *= 2;
    }
    let total: usize = chunks.iter().map(|&(_, b)| b).sum();
    let stats = pages.stats();
    assert_eq!(stats.held_bytes, total);
    assert_eq!(stats.peak_bytes, total);
    assert_eq!(stats.chunks_allocated, chunks.len() as u64);
    for (chunk, bytes) in chunks {
        // SAFETY: allocated above with this size, freed once.
        unsafe { pages.free_chunk(chunk, bytes) };
    }
    let stats = pages.stats();
    assert_eq!(stats.held_bytes, 0);
    assert_eq!(stats.peak_bytes, total);
    assert_eq!(stats.chunks_freed, stats.chunks_allocated);
}

#[test]
fn bad_chunk_sizes_are_refused_and_counted() {
    let pages = MmapPages::new();
    for bytes in [0, 1, 3000, 6000, PAGE_SIZE + 1, PAGE_SIZE / 2] {
        assert_eq!(pages.alloc_chunk(bytes), Err(PageError::BadSize { bytes }));
    }
    assert_eq!(pages.stats().refusals, 6);
    let huge = 1usize << (usize::BITS - 1);
    assert!(matches!(pages.alloc_chunk(huge), Err(PageError::Os { bytes, .. }) if bytes == huge));
    assert_eq!(pages.stats().refusals, 7);
    assert_eq!(pages.stats().held_bytes, 0);
}

#[test]
fn limited_pages_enforce_the_budget_and_give_it_back() {
    let pages = LimitedPages::new(3 * PAGE_SIZE);
    let a = pages.alloc_chunk(2 * PAGE_SIZE).unwrap();
    let b = pages.alloc_chunk(PAGE_SIZE).unwrap();
    assert_eq!(
        pages.alloc_chunk(PAGE_SIZE),
        Err(PageError::Exhausted {
            held: 3 * PAGE_SIZE,
            limit: 3 * PAGE_SIZE
        })
    );
    // SAFETY: allocated above, freed once.
    unsafe { pages.free_chunk(a, 2 * PAGE_SIZE) };
    let c = pages.alloc_chunk(2 * PAGE_SIZE).unwrap();
    pages.set_limit(0);
    assert!(matches!(
        pages.alloc_chunk(PAGE_SIZE),
        Err(PageError::Exhausted { .. })
    ));
    // SAFETY: allocated above, freed once.
    unsafe {
        pages.free_chunk(b, PAGE_SIZE);
        pages.free_chunk(c, 2 * PAGE_SIZE);
    }
    let stats = pages.stats();
    assert_eq!(stats.held_bytes, 0);
    assert_eq!(stats.refusals, 2);
    assert_eq!(pages.requests(), 5);
    assert_eq!(pages.limit(), 0);
}

#[test]
fn fail_nth_refuses_exactly_that_request_once() {
    let pages = LimitedPages::unlimited();
    let first = pages.alloc_chunk(PAGE_SIZE).unwrap();
    pages.fail_nth(3);
    let mut outcomes = Vec::new();
    let mut held = vec![first];
    for _ in 0..5 {
        match pages.alloc_chunk(PAGE_SIZE) {
            Ok(chunk) => {
                held.push(chunk);
                outcomes.push(true);
            }
            Err(err) => {
                assert_eq!(err, PageError::Injected { request: 4 });
                outcomes.push(false);
            }
        }
    }
    assert_eq!(outcomes, [true, true, false, true, true]);
    for chunk in held {
        // SAFETY: allocated above, freed once.
        unsafe { pages.free_chunk(chunk, PAGE_SIZE) };
    }
    assert_eq!(pages.stats().held_bytes, 0);
    assert_eq!(pages.stats().refusals, 1);
}

fn refusal_pattern(p: f64, seed: u64) -> Vec<bool> {
    let pages = LimitedPages::unlimited();
    pages.fail_with_probability(p, seed);
    (0..200)
        .map(|_| match pages.alloc_chunk(PAGE_SIZE) {
            Ok(chunk) => {
                // SAFETY: just allocated, freed once.
                unsafe { pages.free_chunk(chunk, PAGE_SIZE) };
                false
            }
            Err(_) => true,
        })
        .collect()
}

#[test]
fn probabilistic_faults_are_seeded_and_deterministic() {
    let a = refusal_pattern(0.25, 7);
    assert_eq!(a, refusal_pattern(0.25, 7));
    assert_ne!(a, refusal_pattern(0.25, 8));
    let refused = a.iter().filter(|&&r| r).count();
    assert!(
        (20..=80).contains(&refused),
        "{refused} of 200 refused at p = 0.25"
    );
    assert!(refusal_pattern(0.0, 7).iter().all(|&r| !r));
    assert!(refusal_pattern(1.0, 7).iter().all(|&r| r));
}

#[test]
fn page_source_for_prefers_the_configured_source() {
    let limited: Arc<dyn PageSource> = Arc::new(LimitedPages::new(PAGE_SIZE));
    let config = CacheConfig::new(64).with_page_source(Arc::clone(&limited));
    assert!(Arc::ptr_eq(&page_source_for(&config), &limited));
    assert_eq!(page_source_for(&CacheConfig::new(64)).name(), "mmap");
}

/// A `munmap` that fails leaves the chunk counted as held and does not panic (in any build).
#[test]
fn a_failing_munmap_is_a_counted_leak_not_a_panic() {
    let pages = MmapPages::new();
    let chunk = pages.alloc_chunk(PAGE_SIZE).unwrap();
    let inside = chunk.map_addr(|addr| addr.checked_add(8).unwrap());
    // SAFETY: deliberately not a chunk of this source: `munmap` refuses an address that is
    // not page aligned (EINVAL) before touching any mapping, which is the only way a test can
    // make it fail. The real chunk stays mapped and is freed below.
    unsafe { pages.free_chunk(inside, PAGE_SIZE) };
    assert_eq!(pages.stats().held_bytes, PAGE_SIZE);
    assert_eq!(pages.stats().chunks_freed, 0);
    // SAFETY: the chunk came from this source, is still mapped, and is freed once.
    unsafe { chunk.as_ptr().write(1) };
    // SAFETY: as above.
    unsafe { pages.free_chunk(chunk, PAGE_SIZE) };
    assert_eq!(pages.stats().held_bytes, 0);
}
