use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::Arc;

use object_alloc::{AllocError, CacheConfig, DebugOptions, NodeMap};
use slab::{LimitedPages, POISON_FREE, PageSource, SlabPool};

use crate::{Rng, slots, taken};

fn limited_pool(size: usize, limit: usize) -> (Arc<LimitedPages>, SlabPool) {
    let pages = Arc::new(LimitedPages::new(limit));
    let config = CacheConfig::new(size).with_page_source(pages.clone());
    (pages, SlabPool::new(&config).unwrap())
}

fn free_all(pool: &SlabPool, objects: &[NonNull<u8>]) {
    // SAFETY: the tests pass live objects of `pool`, each once.
    unsafe { pool.free_bulk(objects) };
}

#[test]
fn objects_are_aligned_distinct_and_inside_their_slab() {
    for (size, align) in [
        (1, 1),
        (13, 1),
        (24, 8),
        (64, 64),
        (100, 4),
        (4096, 4096),
        (65536, 8),
    ] {
        let config = CacheConfig::new(size).with_align(align);
        let pool = SlabPool::new(&config).unwrap();
        let layout = *pool.layout();
        let n = layout.objects_per_slab * 2 + 3;
        let mut out = slots(n);
        pool.alloc_bulk(0, true, &mut out).unwrap();
        let objects = taken(&out, n);
        let mut seen = HashSet::new();
        let mut indices = HashSet::new();
        for &object in &objects {
            assert!(seen.insert(object), "{object:p} handed out twice");
            assert_eq!(
                object.addr().get() % align,
                0,
                "{object:p} misaligned for {align}"
            );
            assert!(layout.is_object_start(object));
            let base = layout.slab_base(object);
            let index = layout.object_index(object);
            assert!(index < layout.objects_per_slab);
            assert!(indices.insert((base, index)));
            assert!(object.addr().get() + size <= base.addr().get() + layout.slab_bytes);
            // SAFETY: the object is `size` writable bytes of ours.
            unsafe { object.as_ptr().write_bytes(0xee, size) };
        }
        assert_eq!(pool.stats().slabs, 3);
        pool.check_invariants();
        free_all(&pool, &objects);
        pool.check_invariants();
        pool.shrink();
        assert_eq!(pool.stats().slabs, 0, "size {size}");
    }
}

#[test]
fn alloc_bulk_is_all_or_nothing_when_the_budget_runs_out() {
    let (pages, pool) = limited_pool(256, 0);
    let slab_bytes = pool.layout().slab_bytes;
    let per_slab = pool.layout().objects_per_slab;
    pages.set_limit(2 * slab_bytes);
    // Take part of a slab first, so the failing request also draws from a partial slab.
    let mut first = slots(3);
    pool.alloc_bulk(0, true, &mut first).unwrap();
    let before = pool.stats();
    let mut out = slots(2 * per_slab + 1);
    assert_eq!(
        pool.alloc_bulk(0, true, &mut out),
        Err(AllocError::OutOfMemory)
    );
    let after = pool.stats();
    assert_eq!(after.objects_in_use, before.objects_in_use);
    pool.check_invariants();
    // What the failed request had gathered is usable again.
    let mut again = slots(2 * per_slab - 3);
    pool.alloc_bulk(0, true, &mut again).unwrap();
    free_all(&pool, &taken(&again, again.len()));
    free_all(&pool, &taken(&first, 3));
    pool.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
    assert_eq!(
        pool.stats(),
        slab::SlabStats {
            alloc_slab: 2,
            free_slab: 2,
            ..Default::default()
        }
    );
}

#[test]
fn alloc_bulk_survives_an_injected_fault_without_leaking() {
    let (pages, pool) = limited_pool(512, usize::MAX);
    let per_slab = pool.layout().objects_per_slab;
    for nth in 1..=3 {
        pages.fail_nth(nth);
        let mut out = slots(3 * per_slab);
        assert_eq!(
            pool.alloc_bulk(0, true, &mut out),
            Err(AllocError::OutOfMemory)
        );
        assert_eq!(pool.stats().objects_in_use, 0, "fault on request {nth}");
        pool.check_invariants();
        pool.shrink();
        assert_eq!(pages.stats().held_bytes, 0, "fault on request {nth}");
    }
    let mut out = slots(3 * per_slab);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    free_all(&pool, &taken(&out, out.len()));
    pool.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
}

#[test]
fn refill_takes_what_partial_slabs_hold_before_growing() {
    let (pages, pool) = limited_pool(64, usize::MAX);
    let per_slab = pool.layout().objects_per_slab;
    let mut out = slots(10);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let first = taken(&out, 10);
    let available = per_slab - 10;
    let requests = pages.requests();

    // Enough for `min` in the partial slab: no growth, and everything it has up to max.
    let mut sheaf = slots(per_slab * 2);
    let got = pool.refill(0, true, available, &mut sheaf).unwrap();
    assert_eq!(got, available);
    assert_eq!(
        pages.requests(),
        requests,
        "refill grew although partial slabs sufficed"
    );
    free_all(&pool, &taken(&sheaf, got));

    // More than the partial slabs hold: grows, and fills up to max from the new slab.
    let got = pool.refill(0, true, available + 1, &mut sheaf).unwrap();
    assert_eq!(got, (available + per_slab).min(sheaf.len()));
    assert_eq!(pages.requests(), requests + 1);
    free_all(&pool, &taken(&sheaf, got));

    // min = 0 with nothing to grow into still returns what is there.
    pages.set_limit(0);
    let got = pool.refill(0, false, 0, &mut sheaf).unwrap();
    assert!(got <= sheaf.len() && got >= available);
    free_all(&pool, &taken(&sheaf, got));

    // min above what exists, without growth: error, nothing kept.
    let before = pool.stats();
    assert_eq!(
        pool.refill(0, false, sheaf.len(), &mut sheaf),
        Err(AllocError::WouldGrow)
    );
    assert_eq!(pool.stats().objects_in_use, before.objects_in_use);
    // ... and with growth refused by the page source: out of memory, nothing kept.
    assert_eq!(
        pool.refill(0, true, sheaf.len(), &mut sheaf),
        Err(AllocError::OutOfMemory)
    );
    assert_eq!(pool.stats().objects_in_use, before.objects_in_use);
    pool.check_invariants();

    // An empty array is trivially filled.
    assert_eq!(pool.refill(0, false, 5, &mut []), Ok(0));
    free_all(&pool, &first);
    pool.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
}

#[test]
fn nowait_never_takes_a_page() {
    let (pages, pool) = limited_pool(128, usize::MAX);
    let mut out = slots(4);
    assert_eq!(
        pool.alloc_bulk(0, false, &mut out),
        Err(AllocError::WouldGrow)
    );
    assert_eq!(
        pool.refill(0, false, 1, &mut out),
        Err(AllocError::WouldGrow)
    );
    assert_eq!(pages.requests(), 0);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let held = taken(&out, 4);
    let requests = pages.requests();
    let per_slab = pool.layout().objects_per_slab;
    let mut rest = slots(per_slab - 4);
    pool.alloc_bulk(0, false, &mut rest).unwrap();
    let mut one = slots(1);
    assert_eq!(
        pool.alloc_bulk(0, false, &mut one),
        Err(AllocError::WouldGrow)
    );
    assert_eq!(pages.requests(), requests);
    free_all(&pool, &held);
    free_all(&pool, &taken(&rest, rest.len()));
    pool.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
}

#[test]
fn free_bulk_accepts_mixed_slabs_and_nodes() {
    let pages = Arc::new(LimitedPages::unlimited());
    let config = CacheConfig::new(48)
        .with_nodes(NodeMap::Simulated { nodes: 3 })
        .with_page_source(pages.clone());
    let pool = SlabPool::new(&config).unwrap();
    assert_eq!(pool.nodes(), 3);
    let per_slab = pool.layout().objects_per_slab;
    let mut all = Vec::new();
    for node in 0..3 {
        let mut out = slots(per_slab * 2 + node);
        pool.alloc_bulk(node, true, &mut out).unwrap();
        let objects = taken(&out, out.len());
        for &object in &objects {
            // SAFETY: live object of this pool.
            assert_eq!(unsafe { pool.node_of_object(object) }, node);
        }
        all.extend(objects);
    }
    // Node 0 fills 2 slabs; nodes 1 and 2 spill into a third.
    assert_eq!(pool.stats().slabs, 8);
    let mut rng = Rng::new(42);
    for i in (1..all.len()).rev() {
        all.swap(i, rng.below(i + 1));
    }
    let (half, rest) = all.split_at(all.len() / 2);
    free_all(&pool, half);
    pool.check_invariants();
    free_all(&pool, rest);
    pool.check_invariants();
    let stats = pool.stats();
    assert_eq!(stats.objects_in_use, 0);
    assert_eq!(
        stats.slabs, 8,
        "min_partial 5 per node keeps every emptied slab"
    );
    pool.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
    // Node indices wrap around.
    let mut out = slots(1);
    pool.alloc_bulk(4, true, &mut out).unwrap();
    let object = taken(&out, 1)[0];
    // SAFETY: live object of this pool.
    assert_eq!(unsafe { pool.node_of_object(object) }, 1);
    free_all(&pool, &[object]);
}

#[test]
fn empty_slabs_beyond_min_partial_are_released_on_free() {
    let pages = Arc::new(LimitedPages::unlimited());
    let config = CacheConfig::new(256).with_page_source(pages.clone());
    let pool = SlabPool::with_min_partial(&config, 2).unwrap();
    assert_eq!(pool.min_partial(), 2);
    let per_slab = pool.layout().objects_per_slab;
    let mut out = slots(per_slab * 6);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let objects = taken(&out, out.len());
    assert_eq!(pool.stats().slabs, 6);
    for &object in &objects {
        // SAFETY: each live object freed once.
        unsafe { pool.free(object) };
    }
    let stats = pool.stats();
    assert_eq!((stats.slabs, stats.free_slab, stats.alloc_slab), (2, 4, 6));
    assert_eq!(stats.objects_free, 2 * per_slab as u64);
    assert_eq!(pages.stats().held_bytes, 2 * pool.layout().slab_bytes);
    pool.check_invariants();
    // Kept empty slabs are reused before new pages are taken.
    let requests = pages.requests();
    let mut again = slots(per_slab * 2);
    pool.alloc_bulk(0, false, &mut again).unwrap();
    assert_eq!(pages.requests(), requests);
    free_all(&pool, &taken(&again, again.len()));
    pool.shrink();
    assert_eq!(pages.stats().held_bytes, 0);
    assert_eq!(pool.stats().slabs, 0);
}

/// A free made where the page source must not be called queues the slabs it empties beyond
/// `min_partial`: they stay held (and counted) until `release_queued`, or a shrink, gives
/// them back.
#[test]
fn queued_frees_release_their_slabs_only_when_asked() {
    for shrink in [false, true] {
        let pages = Arc::new(LimitedPages::unlimited());
        let config = CacheConfig::new(256).with_page_source(pages.clone());
        let pool = SlabPool::with_min_partial(&config, 2).unwrap();
        let per_slab = pool.layout().objects_per_slab;
        let slab_bytes = pool.layout().slab_bytes;
        let mut out = slots(per_slab * 6);
        pool.alloc_bulk(0, true, &mut out).unwrap();
        let objects = taken(&out, out.len());
        let (first, second) = objects.split_at(objects.len() / 2);
        for half in [first, second] {
            // SAFETY: live objects of the pool, each freed once.
            unsafe { pool.free_bulk_queued(half) };
        }
        let stats = pool.stats();
        assert_eq!((stats.slabs, stats.free_slab), (6, 0), "{stats:?}");
        assert_eq!(stats.slab_bytes, 6 * slab_bytes as u64);
        assert_eq!(pages.stats().held_bytes, 6 * slab_bytes);
        pool.check_invariants();
        let kept = if shrink {
            pool.shrink();
            0
        } else {
            pool.release_queued();
            2
        };
        let stats = pool.stats();
        assert_eq!(
            (stats.slabs, stats.free_slab),
            (kept, 6 - kept),
            "{stats:?}"
        );
        assert_eq!(pages.stats().held_bytes, kept as usize * slab_bytes);
        pool.check_invariants();
    }
}

#[test]
fn partially_used_slabs_are_filled_before_empty_ones() {
    let pool = SlabPool::new(&CacheConfig::new(128)).unwrap();
    let per_slab = pool.layout().objects_per_slab;
    let mut out = slots(per_slab * 3);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let objects = taken(&out, out.len());
    // Empty the first slab completely and the third one but for one object.
    free_all(&pool, &objects[..per_slab]);
    free_all(&pool, &objects[2 * per_slab..3 * per_slab - 1]);
    let partial_slab = pool.layout().slab_base(objects[3 * per_slab - 1]);
    let mut one = slots(1);
    pool.alloc_bulk(0, false, &mut one).unwrap();
    let got = taken(&one, 1)[0];
    assert_eq!(pool.layout().slab_base(got), partial_slab);
    free_all(&pool, &[got, objects[3 * per_slab - 1]]);
    free_all(&pool, &objects[per_slab..2 * per_slab]);
    pool.check_invariants();
    assert_eq!(pool.stats().objects_in_use, 0);
}

#[test]
fn poisoning_fills_freed_objects_after_the_link() {
    let config = CacheConfig::new(64).with_debug(DebugOptions {
        poison: true,
        check_invariants: true,
    });
    let pool = SlabPool::new(&config).unwrap();
    let mut out = slots(2);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let objects = taken(&out, 2);
    for &object in &objects {
        // SAFETY: 64 writable bytes of ours.
        unsafe { object.as_ptr().write_bytes(0, 64) };
    }
    free_all(&pool, &objects);
    for &object in &objects {
        // SAFETY: the slab is still held (min_partial keeps it); reading freed bytes of our
        // own mapping is what poisoning is for.
        let bytes = unsafe { std::slice::from_raw_parts(object.as_ptr(), 64) };
        assert!(bytes[8..].iter().all(|&b| b == POISON_FREE), "{bytes:?}");
    }
    // Without the option nothing is written.
    let plain = SlabPool::new(&CacheConfig::new(64)).unwrap();
    let mut out = slots(1);
    plain.alloc_bulk(0, true, &mut out).unwrap();
    let object = taken(&out, 1)[0];
    // SAFETY: 64 writable bytes of ours.
    unsafe { object.as_ptr().write_bytes(0x11, 64) };
    free_all(&plain, &[object]);
    // SAFETY: as above.
    let bytes = unsafe { std::slice::from_raw_parts(object.as_ptr(), 64) };
    assert!(bytes[8..].iter().all(|&b| b == 0x11));
}

#[test]
#[should_panic(expected = "slab")]
fn check_invariants_catches_a_double_free() {
    let pool = SlabPool::new(&CacheConfig::new(32)).unwrap();
    let mut out = slots(3);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let objects = taken(&out, 3);
    free_all(&pool, &objects[..1]);
    // A deliberate contract breach: the second free makes the free list a cycle. The slab
    // still has live objects, so the memory stays mapped and the check can see it.
    free_all(&pool, &objects[..1]);
    pool.check_invariants();
}

#[test]
fn stats_add_up_across_operations() {
    let pool = SlabPool::new(&CacheConfig::new(200)).unwrap();
    let per_slab = pool.layout().objects_per_slab as u64;
    let mut out = slots(per_slab as usize + 5);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let objects = taken(&out, out.len());
    let stats = pool.stats();
    assert_eq!(stats.slabs, 2);
    assert_eq!(stats.slab_bytes, 2 * pool.layout().slab_bytes as u64);
    assert_eq!(stats.objects_in_use, per_slab + 5);
    assert_eq!(stats.objects_free, per_slab - 5);
    free_all(&pool, &objects[..7]);
    let stats = pool.stats();
    assert_eq!(stats.objects_in_use + stats.objects_free, 2 * per_slab);
    assert_eq!(stats.objects_in_use, per_slab - 2);
    free_all(&pool, &objects[7..]);
    assert!(format!("{pool:?}").contains("SlabPool"));
}

/// Random bulk operations against a page source that refuses a seeded fraction of requests;
/// after each step the pool's accounting matches the set of live objects.
#[test]
fn seeded_fault_injection_never_leaks_or_duplicates() {
    for seed in 0..300u64 {
        let pages = Arc::new(LimitedPages::new(64 * 4096));
        pages.fail_with_probability(0.2, seed);
        let config = CacheConfig::new(8 + (seed as usize % 5) * 40)
            .with_nodes(NodeMap::Simulated { nodes: 2 })
            .with_page_source(pages.clone());
        let pool = SlabPool::with_min_partial(&config, seed as usize % 3).unwrap();
        let per_slab = pool.layout().objects_per_slab;
        let mut rng = Rng::new(seed);
        let mut live: Vec<NonNull<u8>> = Vec::new();
        let mut unique = HashSet::new();
        for _ in 0..40 {
            let node = rng.below(2);
            match rng.below(4) {
                0 => {
                    let mut out = slots(1 + rng.below(per_slab * 2));
                    let before = pool.stats().objects_in_use;
                    match pool.alloc_bulk(node, rng.below(4) != 0, &mut out) {
                        Ok(()) => live.extend(taken(&out, out.len())),
                        Err(_) => assert_eq!(pool.stats().objects_in_use, before, "seed {seed}"),
                    }
                }
                1 => {
                    let mut out = slots(1 + rng.below(per_slab));
                    let min = rng.below(out.len() + 1);
                    let before = pool.stats().objects_in_use;
                    match pool.refill(node, rng.below(4) != 0, min, &mut out) {
                        Ok(got) => {
                            assert!(got >= min && got <= out.len(), "seed {seed}");
                            live.extend(taken(&out, got));
                        }
                        Err(_) => assert_eq!(pool.stats().objects_in_use, before, "seed {seed}"),
                    }
                }
                2 => {
                    let keep = rng.below(live.len() + 1);
                    for i in (1..live.len()).rev() {
                        live.swap(i, rng.below(i + 1));
                    }
                    free_all(&pool, &live[keep..]);
                    live.truncate(keep);
                }
                _ => pool.shrink(),
            }
            assert_eq!(
                pool.stats().objects_in_use,
                live.len() as u64,
                "seed {seed}"
            );
            unique.clear();
            assert!(
                live.iter().all(|o| unique.insert(*o)),
                "seed {seed}: duplicate"
            );
        }
        pool.check_invariants();
        free_all(&pool, &live);
        pool.shrink();
        pool.check_invariants();
        assert_eq!(pages.stats().held_bytes, 0, "seed {seed}");
        let stats = pool.stats();
        assert_eq!(stats.alloc_slab, stats.free_slab, "seed {seed}");
    }
}

#[test]
fn dropping_the_pool_returns_its_empty_slabs() {
    let pages = Arc::new(LimitedPages::unlimited());
    {
        let pool = SlabPool::new(&CacheConfig::new(64).with_page_source(pages.clone())).unwrap();
        let mut out = slots(100);
        pool.alloc_bulk(0, true, &mut out).unwrap();
        free_all(&pool, &taken(&out, 100));
        assert!(pages.stats().held_bytes > 0);
    }
    assert_eq!(pages.stats().held_bytes, 0);
    let _ = pages.name();
}

#[test]
#[should_panic(expected = "written while free")]
fn poison_check_catches_a_write_after_free() {
    let config = CacheConfig::new(64).with_debug(DebugOptions {
        poison: true,
        check_invariants: true,
    });
    let pool = SlabPool::new(&config).unwrap();
    let mut out = slots(2);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let objects = taken(&out, 2);
    free_all(&pool, &objects[..1]);
    // A deliberate use after free, into memory the pool still holds (objects[1] keeps the
    // slab in use).
    // SAFETY: the slab is mapped; this is the bug the check exists to catch.
    unsafe { objects[0].as_ptr().add(20).write(0) };
    let mut again = slots(1);
    let _ = pool.alloc_bulk(0, false, &mut again);
}

#[test]
fn poisoned_pools_pass_their_own_checks_through_reuse() {
    let config = CacheConfig::new(40).with_align(8).with_debug(DebugOptions {
        poison: true,
        check_invariants: true,
    });
    let pool = SlabPool::new(&config).unwrap();
    let mut rng = Rng::new(9);
    let mut live = Vec::new();
    for _ in 0..200 {
        let mut out = slots(1 + rng.below(50));
        let got = pool.refill(0, true, 1, &mut out).unwrap();
        for &object in &taken(&out, got) {
            // SAFETY: 40 bytes of ours.
            unsafe { object.as_ptr().write_bytes(0x33, 40) };
            live.push(object);
        }
        let keep = rng.below(live.len() + 1);
        free_all(&pool, &live[keep..]);
        live.truncate(keep);
    }
    free_all(&pool, &live);
    pool.check_invariants();
}

#[test]
fn pools_and_sources_are_shareable_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<SlabPool>();
    shareable::<LimitedPages>();
    shareable::<slab::MmapPages>();
}

#[test]
fn stats_count_partly_used_and_empty_slabs_apart() {
    let (_pages, pool) = limited_pool(256, usize::MAX);
    let per_slab = pool.layout().objects_per_slab;
    // Three full slabs.
    let mut out = slots(3 * per_slab);
    pool.alloc_bulk(0, true, &mut out).unwrap();
    let objects = taken(&out, 3 * per_slab);
    let stats = pool.stats();
    assert_eq!(
        (stats.slabs, stats.partial_slabs, stats.empty_slabs),
        (3, 0, 0)
    );
    // One object freed from the first slab, every object of the second: one partly used
    // slab, one empty one, one full one.
    free_all(&pool, &objects[..1]);
    free_all(&pool, &objects[per_slab..2 * per_slab]);
    let stats = pool.stats();
    assert_eq!(
        (stats.slabs, stats.partial_slabs, stats.empty_slabs),
        (3, 1, 1)
    );
    pool.check_invariants();
    free_all(&pool, &objects[1..per_slab]);
    free_all(&pool, &objects[2 * per_slab..]);
    pool.shrink();
    assert_eq!(
        pool.stats(),
        slab::SlabStats {
            alloc_slab: 3,
            free_slab: 3,
            ..Default::default()
        }
    );
}

#[test]
fn a_one_slab_refill_takes_one_partial_slab_and_tops_up_only_to_its_minimum() {
    for one_slab in [false, true] {
        let pages = Arc::new(LimitedPages::new(usize::MAX));
        let config = CacheConfig::new(256)
            .with_page_source(pages.clone())
            .with_refill_one_slab(one_slab);
        let pool = SlabPool::new(&config).unwrap();
        let per_slab = pool.layout().objects_per_slab;
        // Two full slabs, then three objects of each freed: two partial slabs.
        let mut out = slots(2 * per_slab);
        pool.alloc_bulk(0, true, &mut out).unwrap();
        let objects = taken(&out, 2 * per_slab);
        free_all(&pool, &objects[..3]);
        free_all(&pool, &objects[per_slab..per_slab + 3]);
        let slab_of = |o: &NonNull<u8>| pool.layout().slab_base(*o);
        let mut sheaf = slots(32);
        let got = pool.refill(0, true, 1, &mut sheaf).unwrap();
        let refilled = taken(&sheaf, got);
        let slabs: HashSet<_> = refilled.iter().map(slab_of).collect();
        if one_slab {
            assert_eq!((got, slabs.len()), (3, 1), "one slab's free objects");
        } else {
            assert_eq!((got, slabs.len()), (6, 2), "every partial slab's");
        }
        // Below its minimum, a one-slab refill tops up from the other partial slab before
        // it takes a new one.
        free_all(&pool, &refilled);
        let got = pool.refill(0, true, 5, &mut sheaf).unwrap();
        assert!(got >= 5, "{one_slab}: {got}");
        assert_eq!(pool.stats().slabs, 2, "{one_slab}: no new slab");
        free_all(&pool, &taken(&sheaf, got));
        let rest: Vec<NonNull<u8>> = objects[3..per_slab]
            .iter()
            .chain(&objects[per_slab + 3..])
            .copied()
            .collect();
        free_all(&pool, &rest);
        pool.check_invariants();
    }
}
