//! Run-time changes of the sheaf capacity and the barn limits (C-CONF-4): without a flush
//! (the default) and with `resize_by_flush`, stale sheaves in the slots and the barn, prefill
//! loans across a change, and a concurrent stress with changes back and forth.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_alloc::{AllocFlags, LimitChange, MAX_SHEAF_CAPACITY, rcu};
use sheaf::{Cache, PerThread, SlotStrategy};

use crate::common::*;

fn alloc_n<S: SlotStrategy>(cache: &Cache<S>, n: usize) -> Vec<NonNull<u8>> {
    (0..n)
        .map(|_| cache.alloc(AllocFlags::empty()).expect("allocation"))
        .collect()
}

fn free_n<S: SlotStrategy>(cache: &Cache<S>, objects: Vec<NonNull<u8>>) {
    for object in objects {
        // SAFETY: the tests' objects come from `cache`, are live and freed once.
        unsafe { cache.free(object) };
    }
}

both_strategies! {
    fn a_loan_keeps_its_capacity_and_guarantee_across_a_change_and_is_resized_on_return<S>() {
        let (pages, cache) = cache_with::<S>(32);
        let mut loan = cache.prefill(AllocFlags::empty(), 20).unwrap();
        assert!(loan.size() >= 20);
        cache.set_sheaf_capacity(8).unwrap();
        assert_eq!(cache.sheaf_capacity(), 8);
        // The loan is the sheaf it was: its capacity, its objects, its refill range.
        assert_eq!(loan.capacity(), 32);
        let mut used: Vec<_> = (0..20)
            .map(|_| loan.alloc(AllocFlags::empty()).expect("C-PREFILL-2 across a change"))
            .collect();
        loan.refill(AllocFlags::empty(), 30).expect("C-REFILL-2 up to its own capacity");
        assert!(loan.size() >= 30 && loan.capacity() == 32);
        used.extend((0..30).map(|_| loan.alloc(AllocFlags::empty()).expect("C-PREFILL-2")));
        loan.refill(AllocFlags::empty(), 5).unwrap();
        // Returned with 5 or more objects: resized to the new capacity, nothing lost.
        drop(loan);
        assert!(counter(&cache, "sheaf_retired") >= 1);
        // A prefill after the change gets a sheaf of the new capacity.
        let next = cache.prefill(AllocFlags::empty(), 4).unwrap();
        assert_eq!(next.capacity(), 8);
        drop(next);
        assert!(cache.check_invariants());
        free_all_and_check_empty(&pages, &cache, used);
    }
}

both_strategies! {
    fn stale_full_sheaves_in_the_barn_serve_and_empty_ones_are_retired_without_a_flush<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let objects = alloc_n(&cache, 80);
        free_n(&cache, objects);
        let full_before = counter(&cache, "barn_full_sheaves");
        assert!(full_before >= 2, "the barn holds full sheaves of capacity 8");
        let flushes = counter(&cache, "sheaf_flush");
        let report = cache.set_sheaf_capacity(16).unwrap();
        assert_eq!(report.flushed_objects, 0);
        // Everything cached is allocated again: the stale sheaves serve first, and each one
        // that runs empty is freed rather than refilled.
        let objects = alloc_n(&cache, 200);
        assert_eq!(counter(&cache, "sheaf_flush"), flushes, "no flush because of the change");
        assert_eq!(counter(&cache, "resize_flushed"), 0);
        assert!(counter(&cache, "sheaf_retired") >= 1);
        free_n(&cache, objects);
        // The sheaves filled from now on are of the new capacity: a prefill of the spare,
        // which is never resized by the fast path, shows it.
        let loan = cache.prefill(AllocFlags::empty(), 1).unwrap();
        assert_eq!(loan.capacity(), 16);
        drop(loan);
        free_all_and_check_empty(&pages, &cache, []);
    }
}

both_strategies! {
    fn lowered_barn_limits_hold_at_once_and_flush_only_the_sheaves_beyond_them<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> =
            Cache::new(&config.with_sheaf_capacity(4).with_barn_limits(10, 10)).unwrap();
        let objects = alloc_n(&cache, 80);
        free_n(&cache, objects);
        let full = counter(&cache, "barn_full_sheaves");
        assert!(full > 2, "{full} full sheaves");
        let report = cache.set_barn_limits(2, 0).unwrap();
        assert_eq!(cache.barn_limits(), (2, 0));
        assert_eq!(report.flushed_objects, (full - 2) * 4);
        assert_eq!(counter(&cache, "resize_flushed"), report.flushed_objects);
        assert_eq!(counter(&cache, "barn_full_sheaves"), 2);
        assert_eq!(counter(&cache, "barn_empty_sheaves"), 0);
        // And they keep holding (C-RETURN-3).
        let objects = alloc_n(&cache, 80);
        free_n(&cache, objects);
        assert!(counter(&cache, "barn_full_sheaves") <= 2);
        assert!(counter(&cache, "barn_empty_sheaves") == 0);
        free_all_and_check_empty(&pages, &cache, []);
    }
}

#[test]
fn resize_by_flush_empties_the_slot_and_the_barn_and_reports_the_objects() {
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<PerThread> =
        Cache::new(&config.with_sheaf_capacity(8).with_resize_by_flush(true)).unwrap();
    let objects = alloc_n(&cache, 60);
    free_n(&cache, objects);
    let cached = cache.stats().cached_objects.unwrap();
    assert!(cached >= 16);
    let report = cache.set_sheaf_capacity(16).unwrap();
    assert_eq!(report.flushed_objects, cached);
    assert_eq!(cache.stats().cached_objects, Some(0));
    assert_eq!(counter(&cache, "resize_flushed"), cached);
    let loan = cache.prefill(AllocFlags::empty(), 3).unwrap();
    assert_eq!(loan.capacity(), 16);
    drop(loan);
    free_all_and_check_empty(&pages, &cache, []);
}

#[test]
fn refused_changes_name_the_field_and_change_nothing() {
    let (_pages, cache) = cache_with::<PerThread>(8);
    let zero = cache.set_sheaf_capacity(0).unwrap_err();
    assert_eq!(zero.field, "sheaf_capacity");
    let large = cache
        .set_sheaf_capacity(MAX_SHEAF_CAPACITY + 1)
        .unwrap_err();
    assert_eq!(large.field, "sheaf_capacity");
    let limit = cache
        .set_barn_limits(object_alloc::MAX_BARN_LIMIT + 1, 0)
        .unwrap_err();
    assert_eq!(limit.field, "barn_max_full");
    assert_eq!(cache.sheaf_capacity(), 8);
    assert_eq!(cache.barn_limits(), (10, 10));
    // A cache without sheaves has nothing to change.
    let (_pages, none) = cache_with::<PerThread>(0);
    assert_eq!(
        none.set_barn_limits(1, 1).unwrap_err().field,
        "barn_max_full"
    );
    assert_eq!(
        none.set_sheaf_capacity(4).unwrap_err().field,
        "sheaf_capacity"
    );
    assert_eq!(
        none.change_limits(&LimitChange {
            barn_max_empty: Some(3),
            ..LimitChange::default()
        })
        .unwrap_err()
        .field,
        "barn_max_empty"
    );
}

/// Workers allocate, free, prefill (checking every loan's guarantee), refill, return and
/// defer frees while a changer switches the capacity (up and down, around the prefill
/// sizes) and the barn limits back and forth; no allocation may fail and every prefill
/// promise must hold (C-CONF-4), and the accounting balances afterwards.
fn stress_changes<S: SlotStrategy>(by_flush: bool) {
    const RUN: Duration = Duration::from_millis(700);
    const LIMIT: Duration = Duration::from_secs(4);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = cpus + 1;
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<S> = Cache::new(
        &config
            .with_sheaf_capacity(16)
            .with_barn_limits(4, 4)
            .with_resize_by_flush(by_flush),
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let failures = AtomicU64::new(0);
    let changes = std::thread::scope(|s| {
        let (cache, stop, failures) = (&cache, &stop, &failures);
        let mut handles = Vec::new();
        for t in 0..workers {
            handles.push(s.spawn(move || {
                let mut mine: Vec<NonNull<u8>> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match (i + t) % 6 {
                        0 | 1 => match cache.alloc(AllocFlags::empty()) {
                            Some(o) => mine.push(o),
                            None => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        2 => {
                            // Prefill sizes on both sides of every capacity the changer sets.
                            let n = 1 + (i * 7) % 40;
                            match cache.prefill(AllocFlags::empty(), n) {
                                Ok(mut loan) => {
                                    if loan.size() < n {
                                        failures.fetch_add(1, Ordering::Relaxed);
                                    }
                                    for _ in 0..n {
                                        match loan.alloc(AllocFlags::empty()) {
                                            Some(o) => mine.push(o),
                                            None => {
                                                failures.fetch_add(1, Ordering::Relaxed);
                                            }
                                        }
                                    }
                                    let more = (i * 3) % 24;
                                    match loan.refill(AllocFlags::empty(), more) {
                                        Ok(()) if loan.size() >= more => {}
                                        _ => {
                                            failures.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                    if i.is_multiple_of(3)
                                        && let Some(o) = loan.alloc(AllocFlags::empty())
                                    {
                                        mine.push(o);
                                    }
                                    loan.return_with(if i.is_multiple_of(2) {
                                        AllocFlags::NOWAIT
                                    } else {
                                        AllocFlags::empty()
                                    });
                                }
                                Err(_) => {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        3 if mine.len() > 2 => {
                            let o = mine.swap_remove(i % mine.len());
                            let _guard = rcu::read();
                            // SAFETY: a live object we own, freed once.
                            unsafe { cache.free_deferred(o) };
                        }
                        _ => {
                            let keep = if i % 512 < 256 { 64 } else { 4 };
                            while mine.len() > keep {
                                let o = mine.pop().unwrap();
                                // SAFETY: a live object we own, freed once.
                                unsafe { cache.free(o) };
                            }
                        }
                    }
                }
                free_n(cache, mine);
            }));
        }
        let changer = s.spawn(move || {
            let start = Instant::now();
            let mut k = 0usize;
            // A flush-everything change waits for a grace period, which takes hundreds of
            // milliseconds beside busy workers on a small machine: a few changes are enough,
            // within a bound.
            while (start.elapsed() < RUN || k < 2) && start.elapsed() < LIMIT {
                let capacity = [4, 32, 8, 60, 16, 2][k % 6];
                cache
                    .set_sheaf_capacity(capacity)
                    .expect("a valid capacity");
                let (full, empty) = [(0, 0), (10, 10), (2, 1), (4, 4)][k % 4];
                cache.set_barn_limits(full, empty).expect("valid limits");
                k += 1;
                std::thread::sleep(Duration::from_micros(300));
            }
            stop.store(true, Ordering::Relaxed);
            k
        });
        let changes = changer.join().unwrap();
        for handle in handles {
            handle.join().unwrap();
        }
        changes
    });
    assert!(changes >= 2, "only {changes} changes");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed allocations or broken prefills"
    );
    cache.barrier();
    assert!(
        cache.check_invariants(),
        "the accounting equation was not checked"
    );
    assert_eq!(live(&cache), 0);
    free_all_and_check_empty(&pages, &cache, []);
}

both_strategies! {
    fn c_conf_4_changes_back_and_forth_under_load_fail_nothing<S>() {
        stress_changes::<S>(false);
    }
}

both_strategies! {
    fn c_conf_4_flush_everything_changes_under_load_fail_nothing<S>() {
        stress_changes::<S>(true);
    }
}
