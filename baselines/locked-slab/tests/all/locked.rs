//! Tests of the locked-slab design's own behaviour.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use locked_slab::{LockedSlab, POISON_FREE};
use object_alloc::rcu::{self};
use object_alloc::{
    AllocError, AllocFlags, CacheConfig, DebugOptions, ObjectAlloc, PageSource, Prefill,
};
use slab::LimitedPages;

fn limited(size: usize, limit: usize) -> (Arc<LimitedPages>, LockedSlab) {
    let pages = Arc::new(LimitedPages::new(limit));
    let config = CacheConfig::new(size).with_page_source(pages.clone());
    (pages, LockedSlab::new(&config).unwrap())
}

fn bulk(cache: &LockedSlab, flags: AllocFlags, n: usize) -> Result<Vec<NonNull<u8>>, AllocError> {
    let mut out = vec![MaybeUninit::uninit(); n];
    cache.alloc_bulk(flags, &mut out)?;
    // SAFETY: `alloc_bulk` succeeded, so every slot is written.
    Ok(out
        .into_iter()
        .map(|s| unsafe { s.assume_init() })
        .collect())
}

struct Sent(Vec<NonNull<u8>>);
// SAFETY: ownership of the objects moves with the value.
unsafe impl Send for Sent {}

#[test]
fn objects_have_the_size_and_alignment_asked_for() {
    for (size, align) in [
        (1, 1),
        (24, 8),
        (100, 4),
        (64, 64),
        (3000, 1024),
        (65536, 4096),
    ] {
        let config = CacheConfig::new(size).with_align(align);
        let cache = LockedSlab::new(&config).unwrap();
        let objects = bulk(&cache, AllocFlags::empty(), 40).unwrap();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for &object in &objects {
            assert_eq!(object.addr().get() % align, 0, "size {size} align {align}");
            // SAFETY: `size` writable bytes of ours.
            unsafe { object.as_ptr().write_bytes(0x5a, size) };
            ranges.push((object.addr().get(), object.addr().get() + size));
        }
        ranges.sort();
        assert!(
            ranges.windows(2).all(|w| w[0].1 <= w[1].0),
            "overlap at size {size}"
        );
        // SAFETY: live objects of this cache, each once.
        unsafe { cache.free_bulk(&objects) };
        cache.shrink();
        assert_eq!(cache.stats().slab_bytes, Some(0));
    }
}

#[test]
fn refuses_a_bad_config_naming_the_field() {
    let err = LockedSlab::new(&CacheConfig::new(64).with_align(48)).unwrap_err();
    assert_eq!(err.field, "align");
}

#[test]
fn no_two_live_objects_overlap_across_threads() {
    let cache = LockedSlab::new(&CacheConfig::new(40)).unwrap();
    let all: Vec<Vec<NonNull<u8>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let cache = &cache;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..500 {
                        let object = if i % 3 == 0 {
                            bulk(cache, AllocFlags::empty(), 3).unwrap()
                        } else {
                            vec![cache.alloc(AllocFlags::empty()).unwrap()]
                        };
                        for &o in &object {
                            // SAFETY: 40 bytes of ours.
                            unsafe { o.as_ptr().write_bytes(t, 40) };
                        }
                        mine.extend(object);
                        if i % 5 == 0 {
                            let o = mine.swap_remove(0);
                            // SAFETY: a live object of ours.
                            unsafe { cache.free(o) };
                        }
                    }
                    for &o in &mine {
                        // SAFETY: our objects; another thread writing them would show here.
                        let bytes = unsafe { std::slice::from_raw_parts(o.as_ptr(), 40) };
                        assert!(bytes.iter().all(|&b| b == t), "object {o:p} overwritten");
                    }
                    Sent(mine)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().0).collect()
    });
    let mut seen = HashSet::new();
    for &o in all.iter().flatten() {
        assert!(seen.insert(o), "{o:p} live twice");
    }
    assert_eq!(cache.stats().live_objects, Some(seen.len() as u64));
    cache.check_invariants();
    for objects in &all {
        // SAFETY: live objects, each once.
        unsafe { cache.free_bulk(objects) };
    }
    cache.shrink();
    assert_eq!(cache.stats().slab_bytes, Some(0));
}

#[test]
fn zero_holds_on_reused_objects() {
    let cache = LockedSlab::new(&CacheConfig::new(96)).unwrap();
    let dirty = bulk(&cache, AllocFlags::empty(), 8).unwrap();
    for &o in &dirty {
        // SAFETY: 96 bytes of ours.
        unsafe { o.as_ptr().write_bytes(0xff, 96) };
    }
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&dirty) };
    let single = cache.alloc(AllocFlags::ZERO).unwrap();
    let many = bulk(&cache, AllocFlags::ZERO, 7).unwrap();
    let mut reused = 0;
    for &o in many.iter().chain([&single]) {
        reused += usize::from(dirty.contains(&o));
        // SAFETY: 96 bytes of ours.
        let bytes = unsafe { std::slice::from_raw_parts(o.as_ptr(), 96) };
        assert!(bytes.iter().all(|&b| b == 0), "{o:p} not zeroed");
    }
    assert_eq!(
        reused, 8,
        "LIFO reuse expected: the check must see dirty memory"
    );
    // Prefilled objects honour ZERO too.
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&many) };
    let mut sheaf = cache.prefill(AllocFlags::empty(), 4).unwrap();
    let o = sheaf.alloc(AllocFlags::ZERO).unwrap();
    // SAFETY: 96 bytes of ours.
    let bytes = unsafe { std::slice::from_raw_parts(o.as_ptr(), 96) };
    assert!(bytes.iter().all(|&b| b == 0));
    drop(sheaf);
    // SAFETY: live objects, each once.
    unsafe {
        cache.free(o);
        cache.free(single);
    }
}

#[test]
fn objects_freed_on_another_thread_are_reused() {
    let cache = LockedSlab::new(&CacheConfig::new(64)).unwrap();
    let objects = bulk(&cache, AllocFlags::empty(), 100).unwrap();
    let sent = Sent(objects.clone());
    thread::scope(|s| {
        s.spawn(|| {
            let sent = sent;
            // SAFETY: objects handed over by their owner, each freed once.
            unsafe { cache.free_bulk(&sent.0) };
        });
    });
    assert_eq!(cache.stats().live_objects, Some(0));
    let again = bulk(&cache, AllocFlags::NOWAIT, 100).unwrap();
    let before: HashSet<_> = objects.iter().collect();
    assert!(again.iter().all(|o| before.contains(o)));
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&again) };
}

#[test]
fn bulk_is_all_or_nothing_when_pages_run_out() {
    let (pages, cache) = limited(128, 0);
    let slab_bytes = cache.layout().slab_bytes;
    let per_slab = cache.layout().objects_per_slab;
    pages.set_limit(2 * slab_bytes);
    let held = bulk(&cache, AllocFlags::empty(), 5).unwrap();
    let before = cache.stats();
    assert_eq!(
        bulk(&cache, AllocFlags::empty(), 2 * per_slab).unwrap_err(),
        AllocError::OutOfMemory
    );
    let after = cache.stats();
    assert_eq!(after.live_objects, before.live_objects);
    assert_eq!(
        after.slab_bytes, before.slab_bytes,
        "the slab taken before the refusal went back"
    );
    assert_eq!(pages.stats().held_bytes, slab_bytes);
    cache.check_invariants();
    // NOWAIT beyond the cached objects fails without asking for a page.
    let requests = pages.requests();
    assert_eq!(
        bulk(&cache, AllocFlags::NOWAIT, per_slab).unwrap_err(),
        AllocError::WouldGrow
    );
    assert!(cache.alloc(AllocFlags::NOWAIT).is_some_and(|o| {
        // SAFETY: a live object, freed once.
        unsafe { cache.free(o) };
        true
    }));
    assert_eq!(pages.requests(), requests);
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&held) };
    cache.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
}

#[test]
fn nowait_never_takes_a_page() {
    let (pages, cache) = limited(64, usize::MAX);
    assert!(cache.alloc(AllocFlags::NOWAIT).is_none());
    assert!(cache.prefill(AllocFlags::NOWAIT, 2).is_err());
    assert_eq!(pages.requests(), 0);
    let o = cache.alloc(AllocFlags::empty()).unwrap();
    assert_eq!(pages.requests(), 1);
    // SAFETY: live, freed once.
    unsafe { cache.free(o) };
}

#[test]
fn prefill_is_emulated_with_bulk_calls_even_beyond_capacity() {
    let (pages, cache) = limited(256, usize::MAX);
    let capacity = CacheConfig::new(256).effective_sheaf_capacity();
    let mut sheaf = cache.prefill(AllocFlags::empty(), 5).unwrap();
    assert!(sheaf.size() >= 5);
    assert_eq!(sheaf.capacity(), capacity);
    assert_eq!(cache.stats().live_objects, Some(sheaf.size() as u64));
    pages.set_limit(0);
    let objects: Vec<_> = (0..5)
        .map(|_| sheaf.alloc(AllocFlags::empty()).unwrap())
        .collect();
    assert_eq!(sheaf.size(), 0);
    assert!(sheaf.alloc(AllocFlags::empty()).is_none());
    pages.set_limit(usize::MAX);
    let over = capacity * 2 + 3;
    sheaf.refill(AllocFlags::empty(), over).unwrap();
    assert!(sheaf.size() >= over && sheaf.capacity() >= over);
    drop(sheaf);
    let mut oversize = cache.prefill(AllocFlags::empty(), over).unwrap();
    assert!(oversize.size() >= over);
    let taken = oversize.alloc(AllocFlags::empty()).unwrap();
    oversize.return_with(AllocFlags::NOWAIT);
    assert_eq!(cache.stats().live_objects, Some(6));
    // SAFETY: live objects, each once.
    unsafe {
        cache.free_bulk(&objects);
        cache.free(taken);
    }
    cache.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
}

#[test]
fn a_failed_prefill_or_refill_leaks_nothing() {
    let (pages, cache) = limited(512, 0);
    assert_eq!(
        cache.prefill(AllocFlags::empty(), 3).unwrap_err(),
        AllocError::OutOfMemory
    );
    pages.set_limit(cache.layout().slab_bytes);
    let mut sheaf = cache.prefill(AllocFlags::empty(), 3).unwrap();
    let per_slab = cache.layout().objects_per_slab;
    assert!(sheaf.refill(AllocFlags::empty(), per_slab + 1).is_err());
    assert_eq!(sheaf.size(), 3);
    drop(sheaf);
    assert_eq!(cache.stats().live_objects, Some(0));
}

#[test]
fn deferred_free_waits_for_an_active_reader() {
    let cache = LockedSlab::new(&CacheConfig::new(64)).unwrap();
    let object = cache.alloc(AllocFlags::empty()).unwrap();
    let reader = rcu::read();
    // SAFETY: a live object, unpublished; the reader may still read it.
    unsafe { cache.free_deferred(object) };
    for _ in 0..100 {
        rcu::flush();
    }
    assert_eq!(
        cache.stats().live_objects,
        Some(1),
        "freed while a reader was active"
    );
    let mut taken = Vec::new();
    while let Some(o) = cache.alloc(AllocFlags::NOWAIT) {
        assert_ne!(o, object, "handed out again while a reader was active");
        taken.push(o);
    }
    drop(reader);
    cache.barrier();
    assert_eq!(cache.stats().live_objects, Some(taken.len() as u64));
    let again = cache.alloc(AllocFlags::NOWAIT).unwrap();
    assert_eq!(again, object);
    // SAFETY: live objects, each once.
    unsafe {
        cache.free_bulk(&taken);
        cache.free(again);
    }
    std::thread::sleep(Duration::from_millis(1));
}

#[test]
fn no_page_is_held_after_free_and_shrink() {
    let (pages, cache) = limited(200, usize::MAX);
    let per_slab = cache.layout().objects_per_slab;
    let objects = bulk(&cache, AllocFlags::empty(), per_slab * 4).unwrap();
    // Keep one object in the third slab: only the others can go.
    let keep = objects[per_slab * 2];
    let rest: Vec<_> = objects.iter().copied().filter(|&o| o != keep).collect();
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&rest) };
    cache.shrink();
    let slab_bytes = cache.layout().slab_bytes;
    assert_eq!(pages.stats().held_bytes, slab_bytes);
    assert_eq!(cache.stats().slab_bytes, Some(slab_bytes as u64));
    assert_eq!(cache.stats().counter("free_slab"), 3);
    cache.check_invariants();
    // The kept slab's other objects are still usable.
    let reused = bulk(&cache, AllocFlags::NOWAIT, per_slab - 1).unwrap();
    // SAFETY: live objects, each once.
    unsafe {
        cache.free_bulk(&reused);
        cache.free(keep);
    }
    cache.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
    assert_eq!(cache.stats().slab_bytes, Some(0));
    assert_eq!(cache.stats().counter("alloc_slab"), 4);
}

#[test]
fn poisoning_fills_freed_objects() {
    let config = CacheConfig::new(48).with_debug(DebugOptions {
        poison: true,
        check_invariants: false,
    });
    let cache = LockedSlab::new(&config).unwrap();
    let keep = cache.alloc(AllocFlags::empty()).unwrap();
    let object = cache.alloc(AllocFlags::ZERO).unwrap();
    // SAFETY: a live object, freed once.
    unsafe { cache.free(object) };
    // SAFETY: the slab is still held (`keep` is live in it); reading the freed bytes is the
    // point of poisoning.
    let bytes = unsafe { std::slice::from_raw_parts(object.as_ptr(), 48) };
    assert!(bytes[8..].iter().all(|&b| b == POISON_FREE));
    // SAFETY: live, freed once.
    unsafe { cache.free(keep) };
}

#[test]
#[should_panic(expected = "twice")]
fn check_invariants_catches_a_double_free() {
    let cache = LockedSlab::new(&CacheConfig::new(32)).unwrap();
    let objects = bulk(&cache, AllocFlags::empty(), 3).unwrap();
    // SAFETY: a deliberate double free, to check that the walk sees it; the objects stay
    // inside a held slab.
    unsafe {
        cache.free(objects[0]);
        cache.free(objects[1]);
        cache.free(objects[0]);
    }
    cache.check_invariants();
}

/// Random single, bulk and prefill operations against a page source that refuses a seeded
/// fraction of requests: accounting matches the live set after every step, and nothing is
/// held once everything is freed and shrunk.
#[test]
fn seeded_faults_never_leak_or_duplicate() {
    for seed in 0..100u64 {
        let pages = Arc::new(LimitedPages::new(16 * 4096));
        pages.fail_with_probability(0.25, seed);
        let config =
            CacheConfig::new(24 + (seed as usize % 4) * 100).with_page_source(pages.clone());
        let cache = LockedSlab::new(&config).unwrap();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut live: Vec<NonNull<u8>> = Vec::new();
        for _ in 0..60 {
            let flags = if next(4) == 0 {
                AllocFlags::NOWAIT
            } else {
                AllocFlags::empty()
            };
            match next(5) {
                0 => live.extend(cache.alloc(flags)),
                1 => {
                    if let Ok(objects) = bulk(&cache, flags, 1 + next(80) as usize) {
                        live.extend(objects);
                    }
                }
                2 => {
                    if let Ok(mut sheaf) = cache.prefill(flags, next(40) as usize) {
                        let take = next(sheaf.size() as u64 + 1);
                        for _ in 0..take {
                            live.push(sheaf.alloc(AllocFlags::empty()).unwrap());
                        }
                    }
                }
                3 => {
                    let keep = next(live.len() as u64 + 1) as usize;
                    // SAFETY: live objects, each once.
                    unsafe { cache.free_bulk(&live[keep..]) };
                    live.truncate(keep);
                }
                _ => cache.shrink(),
            }
            assert_eq!(
                cache.stats().live_objects,
                Some(live.len() as u64),
                "seed {seed}"
            );
        }
        cache.check_invariants();
        let unique: HashSet<_> = live.iter().collect();
        assert_eq!(
            unique.len(),
            live.len(),
            "seed {seed}: an object is live twice"
        );
        // SAFETY: live objects, each once.
        unsafe { cache.free_bulk(&live) };
        cache.shrink();
        assert_eq!(pages.stats().held_bytes, 0, "seed {seed}");
    }
}
