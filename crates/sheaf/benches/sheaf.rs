//! Criterion benchmarks of the sheaf fast paths, with mimalloc's equivalents measured in the
//! same run for the ratios of issue 2's targets. 64-byte objects throughout.
//!
//! Method and caveats: `benches/README.md`.

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use object_alloc::{AllocFlags, CacheConfig};
use sheaf::{Cache, PerCpu, PerThread, SlotStrategy};

const OBJECT: usize = 64;
const ALIGN: usize = 8;

fn cache<S: SlotStrategy>() -> Cache<S> {
    Cache::new(&CacheConfig::new(OBJECT)).expect("valid config")
}

#[inline(always)]
fn mi_alloc() -> *mut std::ffi::c_void {
    // SAFETY: plain allocation call.
    unsafe { libmimalloc_sys::mi_malloc_aligned(OBJECT, ALIGN) }
}

#[inline(always)]
fn mi_free(p: *mut std::ffi::c_void) {
    // SAFETY: `p` came from `mi_malloc_aligned` and is freed once.
    unsafe { libmimalloc_sys::mi_free(p) }
}

fn pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair");
    fn sheaf_pair<S: SlotStrategy>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ) {
        let cache = cache::<S>();
        group.bench_function(S::NAME, |b| {
            b.iter(|| {
                let o = cache.alloc(AllocFlags::empty()).unwrap();
                // SAFETY: live object, freed once.
                unsafe { cache.free(black_box(o)) };
            })
        });
    }
    sheaf_pair::<PerCpu>(&mut group);
    sheaf_pair::<PerThread>(&mut group);
    group.bench_function("mimalloc", |b| b.iter(|| mi_free(black_box(mi_alloc()))));
    group.finish();
}

fn prefill_n(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefill_n_alloc_return");
    fn run<S: SlotStrategy>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ) {
        let cache = cache::<S>();
        let capacity = cache.sheaf_capacity();
        let mut used = Vec::with_capacity(2 * capacity);
        for n in [1, 8, capacity, 2 * capacity] {
            group.bench_with_input(BenchmarkId::new(S::NAME, n), &n, |b, &n| {
                b.iter(|| {
                    let mut sheaf = cache.prefill(AllocFlags::empty(), n).unwrap();
                    for _ in 0..n {
                        used.push(sheaf.alloc(AllocFlags::empty()).unwrap());
                    }
                    sheaf.return_with(AllocFlags::empty());
                    for o in used.drain(..) {
                        // SAFETY: live objects, freed once.
                        unsafe { cache.free(black_box(o)) };
                    }
                })
            });
        }
    }
    run::<PerCpu>(&mut group);
    run::<PerThread>(&mut group);
    group.finish();
}

/// The maple tree's spanning store at height 4: reserve 13, use 3, return the rest, later
/// free the 3. mimalloc emulates the reservation with 13 mallocs and 10 frees.
fn prefill_13_use_3(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefill13_use3");
    fn run<S: SlotStrategy>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ) {
        let cache = cache::<S>();
        group.bench_function(S::NAME, |b| {
            b.iter(|| {
                let mut sheaf = cache.prefill(AllocFlags::empty(), 13).unwrap();
                let used = [
                    sheaf.alloc(AllocFlags::empty()).unwrap(),
                    sheaf.alloc(AllocFlags::empty()).unwrap(),
                    sheaf.alloc(AllocFlags::empty()).unwrap(),
                ];
                sheaf.return_with(AllocFlags::empty());
                for o in black_box(used) {
                    // SAFETY: live objects, freed once.
                    unsafe { cache.free(o) };
                }
            })
        });
    }
    run::<PerCpu>(&mut group);
    run::<PerThread>(&mut group);
    group.bench_function("mimalloc", |b| {
        let mut reserve = [std::ptr::null_mut(); 13];
        b.iter(|| {
            for slot in reserve.iter_mut() {
                *slot = mi_alloc();
            }
            let used = black_box([reserve[0], reserve[1], reserve[2]]);
            for &p in &reserve[3..] {
                mi_free(p);
            }
            for p in used {
                mi_free(p);
            }
        })
    });
    group.finish();
}

fn bulk(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulk_alloc_free");
    fn run<S: SlotStrategy>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ) {
        let cache = cache::<S>();
        for n in [16usize, 64] {
            let mut out = vec![MaybeUninit::<NonNull<u8>>::uninit(); n];
            group.bench_with_input(BenchmarkId::new(S::NAME, n), &n, |b, _| {
                b.iter(|| {
                    cache.alloc_bulk(AllocFlags::empty(), &mut out).unwrap();
                    // SAFETY: every entry was written by the successful bulk allocation, and
                    // `MaybeUninit<T>` has the layout of `T`.
                    let objects = unsafe {
                        &*(out.as_slice() as *const [MaybeUninit<NonNull<u8>>]
                            as *const [NonNull<u8>])
                    };
                    // SAFETY: live objects, freed once.
                    unsafe { cache.free_bulk(black_box(objects)) };
                })
            });
        }
    }
    run::<PerCpu>(&mut group);
    run::<PerThread>(&mut group);
    for n in [16usize, 64] {
        let mut out = vec![std::ptr::null_mut(); n];
        group.bench_with_input(BenchmarkId::new("mimalloc", n), &n, |b, _| {
            b.iter(|| {
                for slot in out.iter_mut() {
                    *slot = mi_alloc();
                }
                for &p in black_box(&out).iter() {
                    mi_free(p);
                }
            })
        });
    }
    group.finish();
}

/// Allocation followed by a deferred free (`kfree_rcu`), with the `rcu_free` sheaves on
/// (batched: one grace-period callback per sheaf) and off (one callback per object).
fn deferred(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_free_deferred");
    for batching in [true, false] {
        let config = CacheConfig::new(OBJECT).with_deferred_batching(batching);
        let cache: Cache<PerCpu> = Cache::new(&config).expect("valid config");
        let name = if batching { "batched" } else { "per-object" };
        group.bench_function(name, |b| {
            b.iter(|| {
                let o = cache.alloc(AllocFlags::empty()).unwrap();
                // SAFETY: live object, unpublished, freed once.
                unsafe { cache.free_deferred(black_box(o)) };
            })
        });
        cache.barrier();
    }
    group.finish();
}

/// A thread that alternates between caches: each iteration is one pair (or one prefill
/// cycle) on the next of `n` caches in turn, so consecutive operations never use the same
/// cache unless `n` is 1. The loop is the same for every `n`, so the ratio to `n` = 1 is
/// what switching caches costs.
fn multicache(c: &mut Criterion) {
    fn run<S: SlotStrategy>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        cycle: bool,
    ) {
        for n in [1, 2, 8] {
            let caches: Vec<Cache<S>> = (0..n).map(|_| cache::<S>()).collect();
            let mut next = 0;
            group.bench_with_input(BenchmarkId::new(S::NAME, n), &n, |b, _| {
                b.iter(|| {
                    let cache = &caches[next];
                    next = if next + 1 == caches.len() {
                        0
                    } else {
                        next + 1
                    };
                    if cycle {
                        let mut sheaf = cache.prefill(AllocFlags::empty(), 13).unwrap();
                        let used = [
                            sheaf.alloc(AllocFlags::empty()).unwrap(),
                            sheaf.alloc(AllocFlags::empty()).unwrap(),
                            sheaf.alloc(AllocFlags::empty()).unwrap(),
                        ];
                        sheaf.return_with(AllocFlags::empty());
                        for o in black_box(used) {
                            // SAFETY: live objects, freed once.
                            unsafe { cache.free(o) };
                        }
                    } else {
                        let o = cache.alloc(AllocFlags::empty()).unwrap();
                        // SAFETY: live object, freed once.
                        unsafe { cache.free(black_box(o)) };
                    }
                })
            });
        }
    }
    let mut group = c.benchmark_group("multicache_pair");
    run::<PerCpu>(&mut group, false);
    run::<PerThread>(&mut group, false);
    group.finish();
    let mut group = c.benchmark_group("multicache_prefill13_use3");
    run::<PerCpu>(&mut group, true);
    run::<PerThread>(&mut group, true);
    group.finish();
}

criterion_group!(
    benches,
    pair,
    prefill_n,
    prefill_13_use_3,
    bulk,
    deferred,
    multicache
);
criterion_main!(benches);
