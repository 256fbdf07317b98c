//! Instruction counts of the sheaf hot operations under callgrind (`gungraun`), the
//! deterministic signal of `cargo xtask gate`.
//!
//! Each benchmark measures exactly one operation (or one fixed sequence of operations) on a
//! cache prepared by its setup function; setup and teardown are not counted. Objects are 64
//! bytes (sheaf capacity 60 by default). The figures are instruction counts (`Ir`), identical
//! from run to run of the same binary, so the gate compares them with a tolerance of about 1%.
//!
//! Valgrind registers no rseq area, so every setup first installs a stand-in one
//! (`slab::rseq::stand_in`): the calling thread's unregistered area receives its CPU number,
//! and the per-CPU strategy runs its restartable sequences, the path users run, on that one
//! pinned thread (no abort can happen there, as on an uninterrupted CPU). Outside valgrind
//! glibc's registered area serves and the stand-in stays unused.
//!
//! Run with `cargo bench -p sheaf --bench instructions` (needs `gungraun-runner` 0.20.0 on
//! `PATH`; `cargo xtask gate` installs it).

// gungraun's macros generate undocumented public modules and types.
#![allow(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use gungraun::{library_benchmark, library_benchmark_group, main};
use object_alloc::{AllocFlags, CacheConfig};
use sheaf::{Cache, PerCpu, PerThread, PrefilledSheaf, SlotStrategy};

/// Bytes of every object.
const OBJECT_SIZE: usize = 64;
/// Objects in a bulk operation.
const BULK: usize = 16;
/// The maple-tree worst case reserved by a prefill (a spanning store at height 4).
const PREFILL_FEW: usize = 13;
/// Objects taken from that reserve.
const PREFILL_USED: usize = 3;

/// Pins the benchmark's thread to the CPU it runs on, so that every operation of the setup
/// and of the measured call finds the same per-CPU slot: a migration between two calls
/// would send the measured one to a cold slot and change the path it counts. A machine that
/// refuses the affinity call runs unpinned (the gate measures a disagreeing count again).
/// The CPU number comes from the same lookup the cache uses (`slab::cpu`: glibc's rseq area
/// or `sched_getcpu`), not from rustix's vDSO call, which valgrind does not map.
fn pin_to_this_cpu() {
    use rustix::thread::{CpuSet, sched_setaffinity};
    // SAFETY: before anything asked for the CPU source; the benchmarks run on this one
    // thread, pinned just below to the CPU whose number the stand-in area receives.
    unsafe { slab::rseq::stand_in::install() };
    let mut set = CpuSet::new();
    set.set(slab::cpu::current_cpu(slab::cpu::cpu_source()));
    let _ = sched_setaffinity(None, &set);
}

/// A cache whose CPU slot has been through a few alloc/free cycles, so that its `main` sheaf
/// holds objects and the next pair runs on the fast path. The thread is pinned first.
///
/// The cache is leaked and the benchmarks take it by reference: a cache moved into and out of
/// the measured function by value costs 15-19 instructions of copies that are the harness's,
/// not the operation's (each benchmark runs in a process of its own, so nothing accumulates).
fn warm_cache<S: SlotStrategy>() -> &'static Cache<S> {
    pin_to_this_cpu();
    let cache = Cache::new(&CacheConfig::new(OBJECT_SIZE)).expect("64-byte objects are valid");
    let capacity = cache.sheaf_capacity().max(1);
    let objects: Vec<NonNull<u8>> = (0..capacity * 2)
        .map(|_| {
            cache
                .alloc(AllocFlags::empty())
                .expect("memory for the warm-up")
        })
        .collect();
    for object in objects {
        // SAFETY: allocated above from this cache, freed once, not used afterwards.
        unsafe { cache.free(object) };
    }
    // Leave `main` half full: neither a refill nor a flush on the next pair.
    let half: Vec<NonNull<u8>> = (0..capacity / 2)
        .map(|_| {
            cache
                .alloc(AllocFlags::empty())
                .expect("memory for the warm-up")
        })
        .collect();
    for object in half {
        // SAFETY: as above.
        unsafe { cache.free(object) };
    }
    Box::leak(Box::new(cache))
}

fn warm_per_cpu() -> &'static Cache<PerCpu> {
    warm_cache()
}

fn warm_per_thread() -> &'static Cache<PerThread> {
    warm_cache()
}

// One `alloc` followed by one `free` of the same object on a warm CPU slot.
#[library_benchmark]
#[bench::per_cpu(setup = warm_per_cpu)]
fn alloc_free_pair_per_cpu(cache: &'static Cache<PerCpu>) {
    pair(cache);
}

// The same pair with per-thread slots (`sheaf-thread`).
#[library_benchmark]
#[bench::per_thread(setup = warm_per_thread)]
fn alloc_free_pair_per_thread(cache: &'static Cache<PerThread>) {
    pair(cache);
}

/// mimalloc's thread heap after the same warm-up cycles as [`warm_cache`]'s (the object size
/// is the setup's value).
fn warm_mimalloc() -> usize {
    let objects: Vec<*mut std::ffi::c_void> = (0..120)
        // SAFETY: `mi_malloc` may be called with any size; each block is freed below.
        .map(|_| unsafe { libmimalloc_sys::mi_malloc(OBJECT_SIZE) })
        .collect();
    for object in objects {
        // SAFETY: allocated above by `mi_malloc`, freed once.
        unsafe { libmimalloc_sys::mi_free(object) };
    }
    OBJECT_SIZE
}

// The same pair with mimalloc's `mi_malloc` and `mi_free`, under the same harness: the count
// of a general-purpose allocator's fast path beside sheaf's (context, not a sheaf figure; it
// moves only with the mimalloc version in `Cargo.lock`).
#[library_benchmark]
#[bench::mimalloc(setup = warm_mimalloc)]
fn alloc_free_pair_mimalloc(size: usize) {
    // SAFETY: a block of `size` bytes from `mi_malloc`, freed once.
    unsafe {
        let object = libmimalloc_sys::mi_malloc(size);
        assert!(!object.is_null(), "mimalloc out of memory");
        libmimalloc_sys::mi_free(black_box(object));
    }
}

/// Pairs in one call of the `*_loop` benchmarks.
const LOOP_PAIRS: usize = 64;

/// A warm cache and the object the loop benchmarks churn (allocated from it).
struct LoopCase<S: SlotStrategy> {
    cache: &'static Cache<S>,
    top: NonNull<u8>,
}

fn loop_case<S: SlotStrategy>() -> LoopCase<S> {
    let cache = warm_cache::<S>();
    let top = cache
        .alloc(AllocFlags::empty())
        .expect("memory for the warm-up");
    LoopCase { cache, top }
}

fn loop_per_cpu() -> LoopCase<PerCpu> {
    loop_case()
}

fn loop_per_thread() -> LoopCase<PerThread> {
    loop_case()
}

// `LOOP_PAIRS` pairs in one loop, as the `churn-lifo` workload runs them (free the top object,
// allocate its replacement): what a pair costs inside a caller's loop, where a compiler keeps
// what does not change between calls in registers. Divide by `LOOP_PAIRS` for a pair; the
// frame is paid once.
#[library_benchmark]
#[bench::per_cpu(setup = loop_per_cpu)]
fn alloc_free_pair_loop_per_cpu(case: LoopCase<PerCpu>) -> LoopCase<PerCpu> {
    pairs_in_a_loop(case)
}

// The same loop with per-thread slots (`sheaf-thread`).
#[library_benchmark]
#[bench::per_thread(setup = loop_per_thread)]
fn alloc_free_pair_loop_per_thread(case: LoopCase<PerThread>) -> LoopCase<PerThread> {
    pairs_in_a_loop(case)
}

// The same loop with mimalloc's `mi_malloc` and `mi_free`.
#[library_benchmark]
#[bench::mimalloc(setup = warm_mimalloc)]
fn alloc_free_pair_loop_mimalloc(size: usize) {
    // SAFETY: blocks of `size` bytes from `mi_malloc`, each freed once, by the next round or
    // after the loop.
    unsafe {
        let mut top = libmimalloc_sys::mi_malloc(size);
        for _ in 0..LOOP_PAIRS {
            libmimalloc_sys::mi_free(top);
            top = libmimalloc_sys::mi_malloc(size);
            assert!(!top.is_null(), "mimalloc out of memory");
        }
        libmimalloc_sys::mi_free(black_box(top));
    }
}

fn pairs_in_a_loop<S: SlotStrategy>(mut case: LoopCase<S>) -> LoopCase<S> {
    churn(case.cache, &mut case.top, LOOP_PAIRS);
    case
}

/// The loop, shaped as `sheafbench`'s measured loop is (a function of its own that takes the
/// cache by reference).
#[inline(never)]
fn churn<S: SlotStrategy>(cache: &Cache<S>, top: &mut NonNull<u8>, pairs: usize) {
    for _ in 0..pairs {
        // SAFETY: `*top` is a live object of this cache, replaced right after: freed once.
        unsafe { cache.free(*top) };
        *top = cache.alloc(AllocFlags::empty()).expect("warm cache");
    }
}

#[inline(always)]
fn pair<S: SlotStrategy>(cache: &Cache<S>) {
    let object = cache.alloc(AllocFlags::empty()).expect("warm cache");
    // SAFETY: allocated just above from this cache, freed once.
    unsafe { cache.free(black_box(object)) };
}

// The maple-tree pattern: prefill 13, take 3, return the sheaf, free the 3.
#[library_benchmark]
#[bench::few(setup = warm_per_cpu)]
fn prefill_few_use_three_return(cache: &'static Cache<PerCpu>) {
    let mut used = [NonNull::dangling(); PREFILL_USED];
    {
        let mut reserve = cache
            .prefill(AllocFlags::empty(), PREFILL_FEW)
            .expect("memory for the prefill");
        for slot in &mut used {
            *slot = reserve
                .alloc(AllocFlags::empty())
                .expect("the reserve holds 13");
        }
        reserve.return_with(AllocFlags::empty());
    }
    for object in black_box(used) {
        // SAFETY: each came from the prefilled sheaf of this cache and is freed once.
        unsafe { cache.free(object) };
    }
}

// A prefill larger than the sheaf capacity (an oversize sheaf), returned untouched.
#[library_benchmark]
#[bench::twice_capacity(setup = warm_per_cpu)]
fn prefill_oversize_return(cache: &'static Cache<PerCpu>) {
    let count = cache.sheaf_capacity() * 2;
    let reserve = cache
        .prefill(AllocFlags::empty(), count)
        .expect("memory for the oversize prefill");
    black_box(reserve.size());
    reserve.return_with(AllocFlags::empty());
}

/// A prefilled sheaf of 13 from which 3 objects were taken, ready to be refilled.
struct RefillCase {
    cache: &'static Cache<PerCpu>,
    reserve: PrefilledSheaf<'static, PerCpu>,
    taken: [NonNull<u8>; PREFILL_USED],
}

fn refill_case() -> RefillCase {
    let cache: &'static Cache<PerCpu> = warm_cache();
    let mut reserve = cache
        .prefill(AllocFlags::empty(), PREFILL_FEW)
        .expect("memory for the prefill");
    let mut taken = [NonNull::dangling(); PREFILL_USED];
    for slot in &mut taken {
        *slot = reserve
            .alloc(AllocFlags::empty())
            .expect("the reserve holds 13");
    }
    RefillCase {
        cache,
        reserve,
        taken,
    }
}

// Tops a prefilled sheaf back up to 13 after 3 were used (`kmem_cache_refill_sheaf`).
#[library_benchmark]
#[bench::back_to_13(setup = refill_case, teardown = finish_refill)]
fn refill_to_few(mut case: RefillCase) -> RefillCase {
    case.reserve
        .refill(AllocFlags::empty(), PREFILL_FEW)
        .expect("memory for the refill");
    black_box(case.reserve.size());
    case
}

/// Returns the sheaf and frees the objects taken from it (not counted).
fn finish_refill(case: RefillCase) {
    let RefillCase {
        cache,
        reserve,
        taken,
    } = case;
    reserve.return_with(AllocFlags::empty());
    for object in taken {
        // SAFETY: each came from this cache's prefilled sheaf and is freed once.
        unsafe { cache.free(object) };
    }
}

// Allocates 16 objects with one `alloc_bulk` call on a warm CPU slot.
#[library_benchmark]
#[bench::sixteen(setup = warm_per_cpu)]
fn bulk_alloc_16(cache: &'static Cache<PerCpu>) -> [MaybeUninit<NonNull<u8>>; BULK] {
    let mut out = [MaybeUninit::uninit(); BULK];
    cache
        .alloc_bulk(AllocFlags::empty(), black_box(&mut out))
        .expect("memory for the bulk allocation");
    out
}

/// A warm cache and 16 objects allocated from it, to be freed by the benchmark.
fn bulk_free_case() -> (&'static Cache<PerCpu>, [NonNull<u8>; BULK]) {
    let cache = warm_cache::<PerCpu>();
    let mut objects = [NonNull::dangling(); BULK];
    for slot in &mut objects {
        *slot = cache
            .alloc(AllocFlags::empty())
            .expect("memory for the bulk free");
    }
    (cache, objects)
}

// Frees 16 objects with one `free_bulk` call.
#[library_benchmark]
#[bench::sixteen(setup = bulk_free_case)]
fn bulk_free_16(case: (&'static Cache<PerCpu>, [NonNull<u8>; BULK])) {
    let (cache, objects) = case;
    // SAFETY: each object was allocated from this cache by the setup, appears once, and is
    // not used afterwards.
    unsafe { cache.free_bulk(black_box(&objects)) };
}

library_benchmark_group!(
    name = hot_operations;
    benchmarks =
        alloc_free_pair_per_cpu,
        alloc_free_pair_per_thread,
        alloc_free_pair_mimalloc,
        alloc_free_pair_loop_per_cpu,
        alloc_free_pair_loop_per_thread,
        alloc_free_pair_loop_mimalloc,
        prefill_few_use_three_return,
        prefill_oversize_return,
        refill_to_few,
        bulk_alloc_16,
        bulk_free_16
);

main!(library_benchmark_groups = hot_operations);
