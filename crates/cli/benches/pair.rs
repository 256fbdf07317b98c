//! The 64-byte alloc+free pair of every registered allocator, in one criterion run, so that
//! their ratios sit side by side (measured under the same load, the same build, the same
//! loop). The list of designs is the CLI's own registry, included below, so a design added
//! there is benchmarked here with no second list to keep in step.
//!
//! Run: `cargo bench -p sheafbench --bench pair -- --warm-up-time 1 --measurement-time 3`.

#![allow(dead_code, unreachable_pub, missing_docs)] // `registry.rs` is shared with the binary

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};

#[path = "../src/registry.rs"]
mod registry;

use registry::{ALLOCATORS, AllocVisitor, with_allocator};

const OBJECT_SIZE: usize = 64;

struct Pair<'a, 'b> {
    group: &'a mut criterion::BenchmarkGroup<'b, criterion::measurement::WallTime>,
}

impl AllocVisitor for Pair<'_, '_> {
    type Output = ();

    fn visit<A: ObjectAlloc>(self) {
        let cache = A::new(&CacheConfig::new(OBJECT_SIZE)).expect("a valid 64-byte config");
        self.group.bench_function(A::NAME, |b| {
            b.iter(|| {
                let object = cache
                    .alloc(AllocFlags::empty())
                    .expect("memory for one object");
                // SAFETY: the object was just allocated from `cache` and is not used again.
                unsafe { cache.free(black_box(object)) };
            })
        });
    }
}

fn pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair64");
    for entry in ALLOCATORS {
        with_allocator(entry.name, Pair { group: &mut group }).expect("registered name");
    }
    group.finish();
}

criterion_group!(benches, pair);
criterion_main!(benches);
