//! One 64-byte alloc+free pair: through `ObjectAlloc` and through the raw calls it could wrap,
//! in one run, so that any cost of the wrapper (or of the call it chose) shows.
//!
//! `cargo bench -p baseline-jemalloc -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::mem::MaybeUninit;

use baseline_jemalloc::JemallocCache;
use criterion::{Criterion, criterion_group, criterion_main};
use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};
use tikv_jemalloc_sys as je;

/// The pair as every workload runs it: generic, statically dispatched.
#[inline]
fn object_alloc_pair<A: ObjectAlloc>(cache: &A) {
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    // SAFETY: just allocated by `cache`, freed once.
    unsafe { cache.free(black_box(object)) };
}

fn pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair64");
    let cache = JemallocCache::new(&CacheConfig::new(64)).expect("valid config");
    group.bench_function("jemalloc ObjectAlloc", |b| {
        b.iter(|| object_alloc_pair(&cache))
    });
    group.bench_function("raw malloc+sdallocx", |b| {
        // SAFETY: plain jemalloc calls; the object is freed once, with its size.
        b.iter(|| unsafe { je::sdallocx(black_box(je::malloc(64)), 64, 0) })
    });
    group.bench_function("raw malloc+free", |b| {
        // SAFETY: as above.
        b.iter(|| unsafe { je::free(black_box(je::malloc(64))) })
    });
    group.bench_function("raw mallocx(0)+sdallocx", |b| {
        // SAFETY: as above.
        b.iter(|| unsafe { je::sdallocx(black_box(je::mallocx(64, 0)), 64, 0) })
    });
    let align = je::MALLOCX_ALIGN(64);
    group.bench_function("raw mallocx(ALIGN(64))+sdallocx", |b| {
        // SAFETY: as above, freed with the same flags.
        b.iter(|| unsafe { je::sdallocx(black_box(je::mallocx(64, align)), 64, align) })
    });
    group.finish();
}

/// A prefill-sized bulk allocation and its bulk free: jemalloc's batch control (what the
/// cache uses) against one `malloc` at a time.
fn bulk(c: &mut Criterion) {
    const BATCH: usize = 60;
    let mut group = c.benchmark_group("bulk60x64");
    let cache = JemallocCache::new(&CacheConfig::new(64)).expect("valid config");
    let mut out = [MaybeUninit::uninit(); BATCH];
    group.bench_function("jemalloc ObjectAlloc alloc_bulk+free_bulk", |b| {
        b.iter(|| {
            cache
                .alloc_bulk(AllocFlags::empty(), &mut out)
                .expect("bulk allocation failed");
            // SAFETY: the bulk allocation succeeded, so every slot holds a live object of
            // `cache`, each once.
            unsafe {
                let objects = std::slice::from_raw_parts(out.as_ptr().cast(), BATCH);
                cache.free_bulk(black_box(objects));
            }
        })
    });
    let mut raw = [std::ptr::null_mut(); BATCH];
    group.bench_function("raw malloc loop+sdallocx loop", |b| {
        b.iter(|| {
            for slot in raw.iter_mut() {
                // SAFETY: plain jemalloc call.
                *slot = unsafe { je::malloc(64) };
            }
            for &object in black_box(&raw) {
                // SAFETY: each was allocated above with size 64, freed once.
                unsafe { je::sdallocx(object, 64, 0) };
            }
        })
    });
    group.finish();
}

criterion_group!(benches, pair, bulk);
criterion_main!(benches);
