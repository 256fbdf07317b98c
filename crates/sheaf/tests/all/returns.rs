//! C-RETURN-1..4.

use object_alloc::{AllocFlags, CacheConfig};
use sheaf::Cache;

use crate::common::*;

both_strategies! {
    /// C-RETURN-1: returning (by drop or explicitly) any size from 0 to capacity keeps the
    /// remaining objects: they count as free (cached), none is lost.
    fn c_return_1_any_size_keeps_objects<S>() {
        let (pages, cache) = cache_with::<S>(10);
        let mut used = Vec::new();
        for keep in 0..=10 {
            let mut sheaf = cache.prefill(AllocFlags::empty(), 10).unwrap();
            while sheaf.size() > keep {
                used.push(sheaf.alloc(AllocFlags::empty()).unwrap());
            }
            if keep % 2 == 0 {
                drop(sheaf);
            } else {
                sheaf.return_with(AllocFlags::empty());
            }
            assert_eq!(live(&cache), used.len() as u64, "after returning a sheaf of {keep}");
            cache.check_invariants();
        }
        free_all_and_check_empty(&pages, &cache, used);
    }
}

both_strategies! {
    /// C-RETURN-2: returning with NOWAIT never grows the cache: with the page source shut,
    /// the sheaf is kept or flushed, and no page is requested.
    fn c_return_2_nowait_never_grows<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> = Cache::new(&config.with_sheaf_capacity(16).with_barn_limits(4, 4)).unwrap();
        // Occupy the slot's spare so that returns go the barn way.
        let keep = cache.prefill(AllocFlags::empty(), 1).unwrap();
        let mut sheaves: Vec<_> = (0..6).map(|_| cache.prefill(AllocFlags::empty(), 16).unwrap()).collect();
        let mut used = Vec::new();
        for sheaf in &mut sheaves {
            for _ in 0..10 {
                used.push(sheaf.alloc(AllocFlags::empty()).unwrap());
            }
        }
        drop(keep);
        let _spare_taker = cache.alloc(AllocFlags::empty()).map(|o| used.push(o));
        let requests = pages.requests();
        let bytes = held(&pages);
        pages.set_limit(bytes);
        for sheaf in sheaves {
            sheaf.return_with(AllocFlags::NOWAIT);
        }
        assert_eq!(pages.requests(), requests, "a NOWAIT return asked for pages");
        assert!(held(&pages) <= bytes);
        let stats = cache.stats();
        assert!(stats.counter("barn_full_sheaves") <= 4);
        cache.check_invariants();
        pages.set_limit(usize::MAX / 2);
        free_all_and_check_empty(&pages, &cache, used);
    }
}

both_strategies! {
    /// C-RETURN-3: the barn never holds more full or empty sheaves than its limits, under
    /// many returns and frees.
    fn c_return_3_barn_limits_hold<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> = Cache::new(&config.with_sheaf_capacity(4).with_barn_limits(2, 3)).unwrap();
        let check = |when: &str| {
            let stats = cache.stats();
            assert!(stats.counter("barn_full_sheaves") <= 2, "{when}: {stats:?}");
            assert!(stats.counter("barn_empty_sheaves") <= 3, "{when}: {stats:?}");
        };
        let sheaves: Vec<_> = (0..10).map(|_| cache.prefill(AllocFlags::empty(), 4).unwrap()).collect();
        check("after prefills");
        for sheaf in sheaves {
            sheaf.return_with(AllocFlags::empty());
            check("after a return");
        }
        let objects = bulk(&cache, AllocFlags::empty(), 100);
        check("after bulk alloc");
        for &o in &objects {
            // SAFETY: live objects, freed once.
            unsafe { cache.free(o) };
            check("after a free");
        }
        let objects = bulk(&cache, AllocFlags::empty(), 100);
        // SAFETY: live objects, freed once.
        unsafe { cache.free_bulk(&objects) };
        check("after bulk free");
        assert!(cache.stats().counter("barn_put_fail") > 0, "limits never reached");
        free_all_and_check_empty(&pages, &cache, []);
    }
}

both_strategies! {
    /// C-RETURN-4: an oversize sheaf is never kept in a CPU slot or the barn: after its
    /// return every sheaf in the cache has the regular capacity (checked by
    /// `check_invariants`) and the barn gained nothing.
    fn c_return_4_oversize_never_kept<S>() {
        let (pages, cache) = cache_with::<S>(8);
        for n in [9, 20, 64] {
            let sheaf = cache.prefill(AllocFlags::empty(), n).unwrap();
            assert_eq!(sheaf.capacity(), n);
            let before = cache.stats();
            drop(sheaf);
            let after = cache.stats();
            assert_eq!(after.counter("sheaf_return_fast"), before.counter("sheaf_return_fast"));
            assert_eq!(after.counter("barn_put"), before.counter("barn_put"));
            assert_eq!(after.counter("sheaf_free"), before.counter("sheaf_free") + 1);
            cache.check_invariants();
        }
        free_all_and_check_empty(&pages, &cache, []);
    }
}

/// C-RETURN-1: the kernel's order: a returned sheaf becomes the spare first (fast), then
/// goes topped up to the barn.
#[test]
fn c_return_1_spare_first_then_barn() {
    let (_pages, config) = limited_config(usize::MAX / 2);
    // Per-thread slots: the test must stay on one slot, which a migrating thread would not.
    let cache: Cache<sheaf::PerThread> = Cache::new(&config.with_sheaf_capacity(8)).unwrap();
    let a = cache.prefill(AllocFlags::empty(), 8).unwrap();
    let mut b = cache.prefill(AllocFlags::empty(), 8).unwrap();
    let object = b.alloc(AllocFlags::empty()).unwrap();
    drop(a);
    assert_eq!(cache.stats().counter("sheaf_return_fast"), 1);
    drop(b);
    let stats = cache.stats();
    assert_eq!(stats.counter("sheaf_return_slow"), 1);
    assert_eq!(stats.counter("barn_full_sheaves"), 1, "{stats:?}");
    // SAFETY: a live object, freed once.
    unsafe { cache.free(object) };
    let _ = CacheConfig::new(8);
}
