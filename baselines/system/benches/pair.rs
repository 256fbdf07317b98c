//! One 64-byte alloc+free pair: through `ObjectAlloc` and through the raw calls it wraps, in
//! one run, so that any cost of the wrapper shows.
//!
//! `cargo bench -p baseline-system -- --warm-up-time 1 --measurement-time 2`

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::hint::black_box;

use baseline_system::SystemCache;
use criterion::{Criterion, criterion_group, criterion_main};
use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};

unsafe extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(object: *mut c_void);
}

/// The pair as every workload runs it: generic, statically dispatched.
#[inline]
fn object_alloc_pair<A: ObjectAlloc>(cache: &A) {
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    // SAFETY: just allocated by `cache`, freed once.
    unsafe { cache.free(black_box(object)) };
}

fn pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair64");
    let cache = SystemCache::new(&CacheConfig::new(64)).expect("valid config");
    group.bench_function("system ObjectAlloc", |b| {
        b.iter(|| object_alloc_pair(&cache))
    });
    let layout = Layout::from_size_align(64, 8).expect("valid layout");
    group.bench_function("raw System.alloc+dealloc", |b| {
        b.iter(|| {
            // SAFETY: non-zero size; freed with the same layout.
            unsafe {
                let object = System.alloc(layout);
                System.dealloc(black_box(object), layout);
            }
        })
    });
    group.bench_function("raw malloc+free", |b| {
        b.iter(|| {
            // SAFETY: plain libc calls; the object is freed once.
            unsafe {
                let object = malloc(64);
                free(black_box(object));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, pair);
criterion_main!(benches);
