//! One 64-byte alloc+free pair and a 16-object bulk round trip on the locked-slab floor design.
//!
//! `cargo bench -p locked-slab -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use criterion::{Criterion, criterion_group, criterion_main};
use locked_slab::LockedSlab;
use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};

#[inline]
fn pair<A: ObjectAlloc>(cache: &A) {
    let object = cache.alloc(AllocFlags::empty()).expect("allocation failed");
    // SAFETY: just allocated by `cache`, freed once.
    unsafe { cache.free(black_box(object)) };
}

fn locked_slab(c: &mut Criterion) {
    let mut group = c.benchmark_group("locked-slab-64B");
    let cache = LockedSlab::new(&CacheConfig::new(64)).expect("valid config");
    group.bench_function("alloc+free pair", |b| b.iter(|| pair(&cache)));
    let mut out = [MaybeUninit::<NonNull<u8>>::uninit(); 16];
    group.bench_function("bulk 16 alloc+free", |b| {
        b.iter(|| {
            cache
                .alloc_bulk(AllocFlags::empty(), &mut out)
                .expect("bulk allocation failed");
            // SAFETY: `alloc_bulk` succeeded: every slot holds an object, freed once.
            let objects = out.map(|slot| unsafe { slot.assume_init() });
            // SAFETY: as above.
            unsafe { cache.free_bulk(black_box(&objects)) };
        })
    });
    group.finish();
}

criterion_group!(benches, locked_slab);
criterion_main!(benches);
