//! Helpers shared by the tests.

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;

use object_alloc::{AllocFlags, CacheConfig, PageSource};
use sheaf::{Cache, SlotStrategy};
use slab::LimitedPages;

/// Runs a generic test body on both slot strategies.
macro_rules! both_strategies {
    ($(#[$meta:meta])* fn $name:ident<$s:ident>() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run<$s: sheaf::SlotStrategy>() $body

            #[test]
            $(#[$meta])*
            fn per_cpu() {
                run::<sheaf::PerCpu>();
            }

            #[test]
            $(#[$meta])*
            fn per_thread() {
                run::<sheaf::PerThread>();
            }
        }
    };
}
pub(crate) use both_strategies;

/// A config of 64-byte objects on a fresh limited page source.
pub(crate) fn limited_config(limit_bytes: usize) -> (Arc<LimitedPages>, CacheConfig) {
    let pages = Arc::new(LimitedPages::new(limit_bytes));
    let config = CacheConfig::new(64).with_page_source(pages.clone() as Arc<dyn PageSource>);
    (pages, config)
}

/// A cache of 64-byte objects with `capacity`, on an unlimited, observable page source.
pub(crate) fn cache_with<S: SlotStrategy>(capacity: usize) -> (Arc<LimitedPages>, Cache<S>) {
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache = Cache::new(&config.with_sheaf_capacity(capacity)).expect("valid config");
    (pages, cache)
}

/// Live objects reported.
pub(crate) fn live<S: SlotStrategy>(cache: &Cache<S>) -> u64 {
    cache
        .stats()
        .live_objects
        .expect("sheaf reports live objects")
}

/// Bytes the page source still holds.
pub(crate) fn held(pages: &LimitedPages) -> usize {
    pages.stats().held_bytes
}

/// Frees every object, barriers, shrinks, and checks that no page is held (C-OBJ-5).
pub(crate) fn free_all_and_check_empty<S: SlotStrategy>(
    pages: &LimitedPages,
    cache: &Cache<S>,
    objects: impl IntoIterator<Item = NonNull<u8>>,
) {
    for object in objects {
        // SAFETY: test objects come from `cache` and are live.
        unsafe { cache.free(object) };
    }
    cache.barrier();
    assert!(
        cache.check_invariants(),
        "the accounting equation was not checked"
    );
    assert_eq!(live(cache), 0, "live objects after freeing all");
    cache.shrink();
    cache.barrier();
    cache.shrink();
    assert!(
        cache.check_invariants(),
        "the accounting equation was not checked"
    );
    assert_eq!(held(pages), 0, "pages held after freeing all and shrinking");
    assert_eq!(cache.stats().slab_bytes, Some(0));
}

/// `n` objects from `alloc_bulk`.
pub(crate) fn bulk<S: SlotStrategy>(
    cache: &Cache<S>,
    flags: AllocFlags,
    n: usize,
) -> Vec<NonNull<u8>> {
    let mut out = vec![MaybeUninit::uninit(); n];
    cache.alloc_bulk(flags, &mut out).expect("bulk allocation");
    // SAFETY: every entry was written on success.
    out.into_iter()
        .map(|o| unsafe { o.assume_init() })
        .collect()
}

/// Writes a recognisable pattern over an object.
pub(crate) fn scribble(object: NonNull<u8>, size: usize, byte: u8) {
    // SAFETY: test objects span `size` writable bytes that the test owns.
    unsafe { object.as_ptr().write_bytes(byte, size) };
}

/// Whether every byte of the object is zero.
pub(crate) fn is_zero(object: NonNull<u8>, size: usize) -> bool {
    // SAFETY: test objects span `size` readable bytes that the test owns.
    unsafe { std::slice::from_raw_parts(object.as_ptr(), size) }
        .iter()
        .all(|&b| b == 0)
}
