//! One 64-byte alloc+free pair: through `ObjectAlloc` and through the raw calls it could wrap,
//! in one run, so that any cost of the wrapper (or of the call it chose) shows.
//!
//! `cargo bench -p baseline-mimalloc -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use baseline_mimalloc::MimallocCache;
use criterion::{Criterion, criterion_group, criterion_main};
use libmimalloc_sys as mi;
use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};

/// The pair as every workload runs it: generic, statically dispatched.
#[inline]
fn object_alloc_pair<A: ObjectAlloc>(cache: &A) {
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    // SAFETY: just allocated by `cache`, freed once.
    unsafe { cache.free(black_box(object)) };
}

fn pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair64");
    let cache = MimallocCache::new(&CacheConfig::new(64)).expect("valid config");
    group.bench_function("mimalloc ObjectAlloc", |b| {
        b.iter(|| object_alloc_pair(&cache))
    });
    group.bench_function("raw mi_malloc+mi_free", |b| {
        // SAFETY: plain mimalloc calls; the object is freed once.
        b.iter(|| unsafe { mi::mi_free(black_box(mi::mi_malloc(64))) })
    });
    group.bench_function("raw mi_malloc_small+mi_free", |b| {
        // SAFETY: as above; 64 is below MI_SMALL_SIZE_MAX.
        b.iter(|| unsafe { mi::mi_free(black_box(mi::mi_malloc_small(64))) })
    });
    group.bench_function("raw mi_malloc_aligned(64, 8)+mi_free", |b| {
        // SAFETY: as above.
        b.iter(|| unsafe { mi::mi_free(black_box(mi::mi_malloc_aligned(64, 8))) })
    });
    group.bench_function("raw mi_malloc_aligned(64, 64)+mi_free", |b| {
        // SAFETY: as above.
        b.iter(|| unsafe { mi::mi_free(black_box(mi::mi_malloc_aligned(64, 64))) })
    });
    group.finish();
}

criterion_group!(benches, pair);
criterion_main!(benches);
