//! C-CONF-1, C-CONF-2 and C-CONF-3.

use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};
use sheaf::{Cache, PerCpu, PerThread, TypedCache};

use crate::common::*;

/// C-CONF-1: invalid configurations are refused with an error naming the field.
#[test]
fn c_conf_1_invalid_config_names_the_field() {
    let err = Cache::<PerCpu>::new(&CacheConfig::new(0)).unwrap_err();
    assert_eq!(err.field, "object_size");
    let err = Cache::<PerThread>::new(&CacheConfig::new(64).with_align(48)).unwrap_err();
    assert_eq!(err.field, "align");
    let err = Cache::<PerCpu>::new(&CacheConfig::new(64).with_sheaf_capacity(1 << 20)).unwrap_err();
    assert_eq!(err.field, "sheaf_capacity");
    assert!(err.to_string().contains("sheaf_capacity"), "{err}");
}

/// C-CONF-3: no safe constructor accepts a geometry whose objects would not fit a slab,
/// whatever the layer; the error names the field.
#[test]
fn c_conf_3_unusable_geometries_are_refused_at_every_layer() {
    let poison = object_alloc::DebugOptions {
        poison: true,
        check_invariants: true,
    };
    for size in [object_alloc::MAX_OBJECT_SIZE + 1, 2 << 20, usize::MAX] {
        let config = CacheConfig::new(size).with_debug(poison);
        assert_eq!(
            Cache::<PerCpu>::new(&config).unwrap_err().field,
            "object_size"
        );
        assert_eq!(
            Cache::<PerThread>::new(&config).unwrap_err().field,
            "object_size"
        );
    }
    for align in [0, 3, 8192, 1 << 63] {
        let config = CacheConfig::new(64).with_align(align);
        assert_eq!(Cache::<PerCpu>::new(&config).unwrap_err().field, "align");
    }
    #[repr(align(8192))]
    struct OverAligned(#[allow(dead_code)] u8);
    type Huge = [u8; 2 << 20];
    assert_eq!(TypedCache::<Huge>::new().unwrap_err().field, "object_size");
    assert_eq!(TypedCache::<OverAligned>::new().unwrap_err().field, "align");
    // An invalid alignment is refused even where raising it to the type's would hide it.
    let err = TypedCache::<u64>::with_config(CacheConfig::new(8).with_align(3)).unwrap_err();
    assert_eq!(err.field, "align");
    let typed = TypedCache::<u64>::with_config(CacheConfig::new(1).with_align(16)).unwrap();
    assert_eq!(typed.cache().object_size(), 8);
}

/// The default capacity is the kernel's (60 for 64-byte objects) and names are stable.
#[test]
fn default_capacity_and_names() {
    let cache: Cache = Cache::new(&CacheConfig::new(64)).unwrap();
    assert_eq!(cache.sheaf_capacity(), 60);
    let cache: Cache = Cache::new(&CacheConfig::new(512)).unwrap();
    assert_eq!(
        cache.sheaf_capacity(),
        object_alloc::default_sheaf_capacity(512)
    );
    assert_eq!(Cache::<PerCpu>::NAME, "sheaf");
    assert_eq!(Cache::<PerThread>::NAME, "sheaf-thread");
    assert_eq!(<Cache<PerCpu> as ObjectAlloc>::NAME, "sheaf");
    assert_eq!(<Cache<PerThread> as ObjectAlloc>::NAME, "sheaf-thread");
}

both_strategies! {
    /// C-CONF-2: with `sheaf_capacity = 0` every prefill is oversize and every prefill
    /// clause still holds; alloc and free go straight to the slabs.
    fn c_conf_2_no_sheaves_still_honours_prefill<S>() {
        let (pages, cache) = cache_with::<S>(0);
        assert_eq!(cache.sheaf_capacity(), 0);
        // C-PREFILL-7
        let empty = cache.prefill(AllocFlags::empty(), 0).unwrap();
        assert_eq!(empty.size(), 0);
        drop(empty);
        // C-PREFILL-1, -4, -3
        let mut sheaf = cache.prefill(AllocFlags::empty(), 5).unwrap();
        assert_eq!(sheaf.size(), 5);
        let mut used = Vec::new();
        for left in (0..5).rev() {
            used.push(sheaf.alloc(AllocFlags::ZERO).unwrap());
            assert_eq!(sheaf.size(), left);
        }
        assert_eq!(sheaf.alloc(AllocFlags::empty()), None);
        // C-REFILL-3 from an empty oversize sheaf, C-REFILL-1
        sheaf.refill(AllocFlags::empty(), 7).unwrap();
        assert!(sheaf.size() >= 7);
        sheaf.refill(AllocFlags::empty(), 3).unwrap();
        // C-PREFILL-6 / C-REFILL-4 with the source shut
        pages.set_limit(held(&pages));
        let size = sheaf.size();
        assert!(sheaf.refill(AllocFlags::NOWAIT, 200).is_err());
        assert_eq!(sheaf.size(), size);
        assert!(cache.prefill(AllocFlags::NOWAIT, 500).is_err());
        pages.set_limit(usize::MAX / 2);
        // C-PREFILL-5 / C-RETURN-4
        sheaf.return_with(AllocFlags::NOWAIT);
        let stats = cache.stats();
        assert_eq!(stats.counter("barn_full_sheaves"), 0);
        // prefill(0), prefill(5), the replacing refill(7), and the two refused requests.
        assert_eq!(stats.counter("sheaf_prefill_oversize"), 5);
        // Alloc and free bypass sheaves.
        let o = cache.alloc(AllocFlags::empty()).unwrap();
        // SAFETY: live object, freed once.
        unsafe { cache.free(o) };
        let stats = cache.stats();
        assert_eq!(stats.counter("alloc_fastpath"), 0);
        assert_eq!(stats.counter("free_fastpath"), 0);
        assert_eq!(stats.cached_objects, Some(0));
        // Deferred frees work without sheaves (per object).
        let d = cache.alloc(AllocFlags::empty()).unwrap();
        // SAFETY: live object, freed once.
        unsafe { cache.free_deferred(d) };
        cache.barrier();
        assert_eq!(cache.stats().counter("free_rcu_sheaf"), 0);
        free_all_and_check_empty(&pages, &cache, used);
    }
}
