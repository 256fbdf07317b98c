//! `TypedCache` and its owning handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use object_alloc::{AllocFlags, CacheConfig};
use sheaf::{Owned, PerThread, TypedCache};

struct Counted {
    value: u64,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn owned_handle_drops_and_frees() {
    let cache: TypedCache<Counted> = TypedCache::new().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let mut handles: Vec<_> = (0..100)
        .map(|value| {
            cache
                .alloc(Counted {
                    value,
                    drops: drops.clone(),
                })
                .unwrap()
        })
        .collect();
    handles[5].value = 500;
    assert_eq!(handles[5].value, 500);
    assert_eq!(cache.cache().stats().live_objects, Some(100));
    let taken = Owned::into_inner(handles.pop().unwrap());
    assert_eq!(taken.value, 99);
    drop(taken);
    drop(handles);
    assert_eq!(drops.load(Ordering::Relaxed), 100);
    assert_eq!(cache.cache().stats().live_objects, Some(0));
}

#[test]
fn typed_prefill_constructs_in_reserved_objects() {
    #[repr(align(32))]
    struct Wide([u8; 40]);
    let cache: TypedCache<Wide, PerThread> =
        TypedCache::with_config(CacheConfig::new(1).with_sheaf_capacity(4)).unwrap();
    let mut reserve = cache.prefill(AllocFlags::empty(), 6).unwrap();
    let made: Vec<_> = (0..6)
        .map(|i| reserve.alloc(Wide([i; 40])).ok().unwrap())
        .collect();
    assert!(
        reserve.alloc(Wide([9; 40])).is_err(),
        "an empty reserve allocated"
    );
    for (i, w) in made.iter().enumerate() {
        assert_eq!(w.0[39], i as u8);
        assert_eq!(&**w as *const Wide as usize % 32, 0);
    }
    reserve.return_with(AllocFlags::empty());
    drop(made);
    cache.cache().check_invariants();
}
