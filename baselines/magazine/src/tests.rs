//! Design-specific tests: magazine rounds, resizing under forced contention, depot limits.

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};
use slab::{LimitedPages, PageSource};

use crate::{MagazineCache, MagazineTuning};

fn cache_with(config: CacheConfig, tuning: MagazineTuning) -> (MagazineCache, Arc<LimitedPages>) {
    let pages = Arc::new(LimitedPages::unlimited());
    let cache = MagazineCache::with_tuning(&config.with_page_source(pages.clone()), tuning)
        .expect("valid config");
    (cache, pages)
}

fn alloc_n(cache: &MagazineCache, n: usize) -> Vec<NonNull<u8>> {
    (0..n)
        .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
        .collect()
}

fn free_all(cache: &MagazineCache, objects: &[NonNull<u8>]) {
    for &object in objects {
        // SAFETY: tests free each object they allocated once.
        unsafe { cache.free(object) };
    }
}

fn finish(cache: &MagazineCache, pages: &LimitedPages) {
    assert_eq!(cache.stats().live_objects, Some(0));
    cache.shrink();
    cache.check_invariants();
    assert_eq!(cache.stats().cached_objects, Some(0));
    assert_eq!(pages.stats().held_bytes, 0);
}

#[test]
fn rounds_follow_loaded_previous_then_depot() {
    let (cache, pages) = cache_with(CacheConfig::new(64), MagazineTuning::default());
    assert_eq!(cache.stats().counter("magazine_size"), 15);
    let first = cache.alloc(AllocFlags::empty()).unwrap();
    assert_eq!(
        cache.stats().counter("alloc_slowpath"),
        1,
        "an empty cache goes to the slabs"
    );
    free_all(&cache, &[first]);
    let again = cache.alloc(AllocFlags::empty()).unwrap();
    assert_eq!(again, first, "the loaded magazine is LIFO");
    assert_eq!(cache.stats().counter("alloc_fastpath"), 1);

    // 45 frees: loaded fills (15), swaps with the empty previous (15 more), then the full
    // previous goes to the depot for an empty magazine (15 more).
    let mut objects = alloc_n(&cache, 44);
    objects.push(again);
    free_all(&cache, &objects);
    let stats = cache.stats();
    assert_eq!(stats.cached_objects, Some(45));
    assert_eq!(stats.counter("depot_put"), 1);
    assert_eq!(stats.counter("depot_full"), 1);
    assert_eq!(stats.counter("free_slowpath"), 0);
    // 45 allocations take them all back without a slab call.
    let slow = stats.counter("alloc_slowpath");
    let objects = alloc_n(&cache, 45);
    let stats = cache.stats();
    assert_eq!(stats.counter("alloc_slowpath"), slow);
    assert_eq!(stats.counter("depot_get"), 1);
    assert_eq!(stats.cached_objects, Some(0));
    free_all(&cache, &objects);
    finish(&cache, &pages);
}

#[test]
fn magazines_grow_when_the_depot_is_contended() {
    let tuning = MagazineTuning {
        contention_threshold: 0,
        update_interval: Duration::ZERO,
    };
    let (cache, pages) = cache_with(CacheConfig::new(64), tuning);
    // Without contention, no resize however many depot trips.
    let objects = alloc_n(&cache, 300);
    free_all(&cache, &objects);
    let objects = alloc_n(&cache, 300);
    assert_eq!(cache.stats().counter("magazine_resize"), 0);
    assert_eq!(cache.stats().counter("magazine_size"), 15);

    // Force one contended depot acquisition: hold the depot while another thread frees
    // enough to need it, and let go once it is seen waiting.
    let inner = cache.cache();
    let held = inner.hold_depot();
    let addresses: Vec<usize> = objects.iter().map(|o| o.as_ptr() as usize).collect();
    std::thread::scope(|s| {
        let freer = s.spawn(|| {
            let objects: Vec<_> = addresses
                .iter()
                .map(|&a| NonNull::new(a as *mut u8).unwrap())
                .collect();
            free_all(&cache, &objects);
        });
        let start = Instant::now();
        while inner.depot_contended() == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the freer never reached the depot"
            );
            std::thread::yield_now();
        }
        drop(held);
        freer.join().unwrap();
    });
    let stats = cache.stats();
    assert_eq!(stats.counter("depot_contended"), 1);
    assert_eq!(stats.counter("magazine_resize"), 1);
    assert_eq!(
        stats.counter("magazine_size"),
        31,
        "15 rounds grow to libumem's next type"
    );
    // The new size is in force: from empty magazines, 62 frees fit in loaded + previous.
    cache.shrink();
    let objects = alloc_n(&cache, 62);
    let puts = cache.stats().counter("depot_put");
    free_all(&cache, &objects);
    assert_eq!(
        cache.stats().counter("depot_put"),
        puts,
        "62 frees fit in loaded + previous"
    );
    finish(&cache, &pages);
}

#[test]
fn the_depot_never_exceeds_its_limits() {
    let (max_full, max_empty) = (4, 1);
    let config = CacheConfig::new(64).with_barn_limits(max_full, max_empty);
    let (cache, pages) = cache_with(config, MagazineTuning::default());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..5 {
                    let objects = alloc_n(&cache, 1000);
                    free_all(&cache, &objects);
                    let stats = cache.stats();
                    assert!(stats.counter("depot_full") <= max_full as u64);
                    assert!(stats.counter("depot_empty") <= max_empty as u64);
                }
            });
        }
    });
    let stats = cache.stats();
    assert!(
        stats.counter("depot_full_high_water") <= max_full as u64,
        "{stats:?}"
    );
    assert!(
        stats.counter("depot_empty_high_water") <= max_empty as u64,
        "{stats:?}"
    );
    // The limits were reached and enforced, not merely never approached.
    assert_eq!(stats.counter("depot_full_high_water"), max_full as u64);
    assert_eq!(stats.counter("depot_empty_high_water"), max_empty as u64);
    assert!(stats.counter("depot_put_fail") > 0, "{stats:?}");
    assert!(stats.counter("depot_put_empty_fail") > 0, "{stats:?}");
    // What is cached is bounded by the limits: two CPU magazines per CPU plus the depot.
    let cpus = slab::possible_cpus() as u64;
    assert!(stats.cached_objects.unwrap() <= (2 * cpus + max_full as u64) * 15);
    finish(&cache, &pages);
}

#[test]
fn zero_capacity_disables_the_magazine_layer() {
    let config = CacheConfig::new(64).with_sheaf_capacity(0);
    let (cache, pages) = cache_with(config, MagazineTuning::default());
    let objects = alloc_n(&cache, 100);
    free_all(&cache, &objects);
    let mut out = [MaybeUninit::uninit(); 10];
    cache.alloc_bulk(AllocFlags::empty(), &mut out).unwrap();
    // SAFETY: a successful bulk allocation initialised every slot.
    let bulk: Vec<_> = out.iter().map(|o| unsafe { o.assume_init() }).collect();
    // SAFETY: live objects, each once.
    unsafe { cache.free_bulk(&bulk) };
    let stats = cache.stats();
    assert_eq!(stats.counter("alloc_slowpath"), 100);
    assert_eq!(stats.counter("free_slowpath"), 100);
    assert_eq!(stats.cached_objects, Some(0));
    finish(&cache, &pages);
}
