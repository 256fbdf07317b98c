//! C-REFILL-1..4.

use object_alloc::{AllocError, AllocFlags};
use sheaf::Cache;

use crate::common::*;

both_strategies! {
    /// C-REFILL-1: `refill(n)` with `size() >= n` changes nothing and succeeds, even with the
    /// page source exhausted.
    fn c_refill_1_enough_changes_nothing<S>() {
        let (pages, cache) = cache_with::<S>(16);
        let mut sheaf = cache.prefill(AllocFlags::empty(), 10).unwrap();
        let size = sheaf.size();
        let before = cache.stats();
        pages.set_limit(0);
        sheaf.refill(AllocFlags::NOWAIT, 10).unwrap();
        sheaf.refill(AllocFlags::empty(), 3).unwrap();
        assert_eq!(sheaf.size(), size);
        assert_eq!(cache.stats(), before);
        drop(sheaf);
        pages.set_limit(usize::MAX / 2);
        free_all_and_check_empty(&pages, &cache, []);
    }
}

both_strategies! {
    /// C-REFILL-2: `refill(n)` with `n <= capacity()` tops the sheaf up in place to >= n.
    fn c_refill_2_tops_up_in_place<S>() {
        let (pages, cache) = cache_with::<S>(16);
        let mut sheaf = cache.prefill(AllocFlags::empty(), 16).unwrap();
        let mut used = Vec::new();
        while sheaf.size() > 2 {
            used.push(sheaf.alloc(AllocFlags::empty()).unwrap());
        }
        let capacity = sheaf.capacity();
        sheaf.refill(AllocFlags::empty(), 12).unwrap();
        assert!(sheaf.size() >= 12);
        assert_eq!(sheaf.capacity(), capacity, "a regular refill replaced the sheaf");
        for _ in 0..12 {
            used.push(sheaf.alloc(AllocFlags::empty()).unwrap());
        }
        drop(sheaf);
        free_all_and_check_empty(&pages, &cache, used);
    }
}

both_strategies! {
    /// C-REFILL-3: `refill(n)` with `n > capacity()` replaces the sheaf with one of >= n;
    /// the old sheaf's objects go back to the cache.
    fn c_refill_3_oversize_replaces<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let mut sheaf = cache.prefill(AllocFlags::empty(), 8).unwrap();
        let a = sheaf.alloc(AllocFlags::empty()).unwrap();
        sheaf.refill(AllocFlags::empty(), 30).unwrap();
        assert!(sheaf.size() >= 30);
        assert!(sheaf.capacity() >= 30);
        // The old sheaf's unused objects are no longer reserved: live = a + the new 30.
        assert_eq!(live(&cache), 1 + sheaf.size() as u64);
        // Grow an oversize sheaf further.
        sheaf.refill(AllocFlags::empty(), 45).unwrap();
        assert!(sheaf.size() >= 45);
        cache.check_invariants();
        drop(sheaf);
        free_all_and_check_empty(&pages, &cache, [a]);
    }
}

both_strategies! {
    /// C-REFILL-4: a failed refill leaves the sheaf exactly as it was (same size, same
    /// objects still usable) and leaks nothing: regular and oversize requests.
    fn c_refill_4_failure_leaves_sheaf_unchanged<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> = Cache::new(&config.with_sheaf_capacity(16)).unwrap();
        let mut sheaf = cache.prefill(AllocFlags::empty(), 16).unwrap();
        let used: Vec<_> = (0..12).map(|_| sheaf.alloc(AllocFlags::empty()).unwrap()).collect();
        // Use up everything cached, then shut the page source.
        let mut hoard = Vec::new();
        pages.set_limit(held(&pages));
        while let Some(o) = cache.alloc(AllocFlags::empty()) {
            hoard.push(o);
        }
        let size = sheaf.size();
        let capacity = sheaf.capacity();
        let before = cache.stats();
        assert_eq!(sheaf.refill(AllocFlags::empty(), 16).unwrap_err(), AllocError::OutOfMemory);
        assert_eq!(sheaf.refill(AllocFlags::NOWAIT, 10).unwrap_err(), AllocError::WouldGrow);
        assert!(sheaf.refill(AllocFlags::empty(), 100).is_err());
        assert_eq!((sheaf.size(), sheaf.capacity()), (size, capacity));
        let after = cache.stats();
        assert_eq!(after.live_objects, before.live_objects);
        assert_eq!(after.cached_objects, before.cached_objects);
        // The remaining objects still work.
        let rest: Vec<_> = (0..size).map(|_| sheaf.alloc(AllocFlags::ZERO).unwrap()).collect();
        for &o in &rest {
            assert!(is_zero(o, 64));
        }
        drop(sheaf);
        cache.check_invariants();
        pages.set_limit(usize::MAX / 2);
        free_all_and_check_empty(&pages, &cache, used.into_iter().chain(hoard).chain(rest));
    }
}
