//! Where `NOWAIT` allocations are served (and the `nowait_no_refill` model), and prefill
//! top-ups through the barn's partial sheaf (`barn_partial`). Per-thread slots: the thread's
//! slot is the same whatever CPU it runs on, so the paths taken are deterministic.

use std::ptr::NonNull;

use object_alloc::{AllocFlags, AllocStats};
use sheaf::{Cache, PerThread};

use crate::common::*;

fn counter(stats: &AllocStats, name: &str) -> u64 {
    stats.counter(name)
}

fn alloc_n(cache: &Cache<PerThread>, flags: AllocFlags, n: usize) -> Vec<NonNull<u8>> {
    (0..n)
        .map(|_| cache.alloc(flags).expect("allocation"))
        .collect()
}

fn free_n(cache: &Cache<PerThread>, objects: Vec<NonNull<u8>>) {
    for object in objects {
        // SAFETY: the tests' objects come from `cache`, are live and freed once.
        unsafe { cache.free(object) };
    }
}

/// Slabs holding free objects, and nothing cached: one object kept live, the rest shrunk
/// back to the slabs.
fn cache_with_partial_slabs(
    no_refill: bool,
) -> (
    std::sync::Arc<slab::LimitedPages>,
    Cache<PerThread>,
    NonNull<u8>,
) {
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<PerThread> = Cache::new(
        &config
            .with_sheaf_capacity(8)
            .with_nowait_no_refill(no_refill),
    )
    .unwrap();
    let keeper = cache.alloc(AllocFlags::empty()).unwrap();
    let objects = alloc_n(&cache, AllocFlags::empty(), 20);
    free_n(&cache, objects);
    cache.shrink();
    (pages, cache, keeper)
}

#[test]
fn a_nowait_allocation_refills_main_from_the_barn() {
    let (pages, cache) = cache_with::<PerThread>(8);
    let objects = alloc_n(&cache, AllocFlags::empty(), 48);
    free_n(&cache, objects);
    let before = cache.stats();
    assert!(counter(&before, "barn_full_sheaves") >= 2, "{before:?}");
    pages.set_limit(0);
    let objects = alloc_n(&cache, AllocFlags::NOWAIT, 48);
    let after = cache.stats();
    let delta = |name| counter(&after, name) - counter(&before, name);
    assert!(delta("nowait_refill_barn") >= 2, "{after:?}");
    assert_eq!(delta("nowait_from_slabs"), 0);
    assert_eq!(delta("nowait_failed"), 0);
    assert_eq!(delta("alloc_fastpath"), 48);
    pages.set_limit(usize::MAX / 2);
    free_all_and_check_empty(&pages, &cache, objects);
}

#[test]
fn a_nowait_allocation_refills_main_from_free_objects_of_the_slabs_but_takes_no_new_slab() {
    let (pages, cache, keeper) = cache_with_partial_slabs(false);
    let held_before = held(&pages);
    pages.set_limit(held_before);
    let before = cache.stats();
    let object = cache
        .alloc(AllocFlags::NOWAIT)
        .expect("free objects in a slab");
    let after = cache.stats();
    let delta = |name| counter(&after, name) - counter(&before, name);
    assert_eq!(delta("nowait_refill_slabs"), 1, "{after:?}");
    assert_eq!(delta("sheaf_refill"), 1);
    assert_eq!(delta("nowait_from_slabs"), 0);
    assert_eq!(held(&pages), held_before, "a NOWAIT refill took a new slab");
    // Every free object of the slabs handed out: the next refill would need a new slab.
    let mut objects = vec![keeper, object];
    while let Some(object) = cache.alloc(AllocFlags::NOWAIT) {
        objects.push(object);
    }
    assert_eq!(counter(&cache.stats(), "nowait_failed"), 1);
    assert_eq!(held(&pages), held_before);
    pages.set_limit(usize::MAX / 2);
    free_all_and_check_empty(&pages, &cache, objects);
}

#[test]
fn with_nowait_no_refill_each_nowait_allocation_takes_one_object_from_the_slabs() {
    let (pages, cache, keeper) = cache_with_partial_slabs(true);
    let before = cache.stats();
    let mut objects = alloc_n(&cache, AllocFlags::NOWAIT, 10);
    let after = cache.stats();
    let delta = |name| counter(&after, name) - counter(&before, name);
    assert_eq!(delta("nowait_from_slabs"), 10, "{after:?}");
    assert_eq!(delta("alloc_slowpath"), 10);
    assert_eq!(delta("sheaf_refill"), 0);
    assert_eq!(
        delta("nowait_refill_slabs") + delta("nowait_refill_barn"),
        0
    );
    // Allocations that may block still refill.
    objects.push(cache.alloc(AllocFlags::empty()).unwrap());
    assert_eq!(
        counter(&cache.stats(), "sheaf_refill") - counter(&before, "sheaf_refill"),
        1
    );
    objects.push(keeper);
    free_all_and_check_empty(&pages, &cache, objects);
}

/// A prefill whose spare is short and whose `main` holds a few objects: with `barn_partial`
/// the rest comes from a full barn sheaf (its leftover kept as the barn's partial sheaf),
/// without it from the slabs. Returns the stats before and after that prefill.
fn short_prefill_with_a_few_in_main(barn_partial: bool) -> (AllocStats, AllocStats) {
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<PerThread> = Cache::new(
        &config
            .with_sheaf_capacity(8)
            .with_barn_partial(barn_partial),
    )
    .unwrap();
    let objects = alloc_n(&cache, AllocFlags::empty(), 48);
    free_n(&cache, objects);
    // The spare: a prefilled sheaf used down to 2 and returned.
    let mut sheaf = cache.prefill(AllocFlags::empty(), 8).unwrap();
    let mut used: Vec<NonNull<u8>> = (0..sheaf.size() - 2)
        .map(|_| sheaf.alloc(AllocFlags::empty()).unwrap())
        .collect();
    drop(sheaf);
    // `main` down to 2 objects.
    while counter(&cache.stats(), "alloc_fastpath") % 8 != 6 {
        used.push(cache.alloc(AllocFlags::empty()).unwrap());
    }
    let before = cache.stats();
    let sheaf = cache.prefill(AllocFlags::empty(), 8).unwrap();
    assert!(sheaf.size() >= 8);
    let after = cache.stats();
    drop(sheaf);
    free_all_and_check_empty(&pages, &cache, used);
    (before, after)
}

#[test]
fn with_barn_partial_a_short_prefill_takes_barn_objects_whatever_main_held() {
    let (before, after) = short_prefill_with_a_few_in_main(true);
    let delta = |name| counter(&after, name) - counter(&before, name);
    assert_eq!(delta("sheaf_prefill_slow"), 1, "{after:?}");
    assert_eq!(delta("sheaf_refill"), 0, "{after:?}");
    assert_eq!(delta("barn_partial_objects"), 4, "{after:?}");
    assert_eq!(
        counter(&before, "barn_full_sheaves") - counter(&after, "barn_full_sheaves"),
        1
    );
}

#[test]
fn without_barn_partial_the_same_prefill_refills_from_the_slabs() {
    let (before, after) = short_prefill_with_a_few_in_main(false);
    let delta = |name| counter(&after, name) - counter(&before, name);
    assert_eq!(delta("sheaf_prefill_slow"), 1, "{after:?}");
    assert_eq!(delta("sheaf_refill"), 1, "{after:?}");
    assert_eq!(delta("barn_partial_objects"), 0);
}
