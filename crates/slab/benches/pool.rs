//! The slab pool's bulk paths as a sheaf uses them: refill a sheaf's array, flush it back.
//!
//! Steady state: the pool keeps its emptied slabs (`min_partial`), so no page-source call is
//! measured, only the node lock and the free-list work.
//!
//! `cargo bench -p slab -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use object_alloc::CacheConfig;
use slab::SlabPool;

fn refill_and_flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("slab-pool-64B");
    let pool = SlabPool::new(&CacheConfig::new(64)).unwrap();
    for n in [1usize, 16, 60] {
        group.throughput(Throughput::Elements(n as u64));
        let mut sheaf = vec![MaybeUninit::<NonNull<u8>>::uninit(); n];
        group.bench_function(format!("refill+flush {n}"), |b| {
            b.iter(|| {
                let got = pool.refill(0, true, n, &mut sheaf).expect("refill");
                // SAFETY: `refill` wrote the first `got` slots.
                let objects = unsafe {
                    std::slice::from_raw_parts(sheaf.as_ptr().cast::<NonNull<u8>>(), got)
                };
                // SAFETY: objects of this pool, live, each once.
                unsafe { pool.free_bulk(black_box(objects)) };
            })
        });
    }
    group.finish();
}

criterion_group!(benches, refill_and_flush);
criterion_main!(benches);
