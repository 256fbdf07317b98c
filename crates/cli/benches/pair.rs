//! The 64-byte alloc+free pair of every registered allocator, in one criterion run, so that
//! their ratios sit side by side (measured under the same load, the same build, the same
//! loop). The list of designs is the CLI's own registry, included below, so a design added
//! there is benchmarked here with no second list to keep in step.
//!
//! Per design: `pair64/<name>` (one pair per iteration), and, each in wall-clock time and in
//! the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, which leaves out time the thread spent
//! descheduled and so stays meaningful on a busy machine), `cpu-pair64/<name>/<clock>` and
//! `burst64/<name>/<clock>` (64 allocations then 64 frees, which crosses the slow paths,
//! reported per pair). On an idle machine the two clocks agree.
//!
//! `churn-lifo64/<name>` runs the loop of `workloads/churn-lifo.yaml` (a working set of 1000
//! objects; free the top one, allocate its replacement, 1024 pairs per batch) through the
//! harness's own function for it, `harness::benchmark::churn_lifo_pairs`, so that
//! `cargo xtask overhead` can set `sheafbench`'s figure for that workload beside criterion's
//! for the same machine code and show what the harness's measuring loop costs.
//!
//! Run: `cargo bench -p sheafbench --bench pair -- --warm-up-time 1 --measurement-time 3`.

#![allow(dead_code, unreachable_pub, missing_docs)] // `registry.rs` is shared with the binary

use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};

#[path = "../src/registry.rs"]
mod registry;

use registry::{ALLOCATORS, AllocVisitor, with_allocator};

const OBJECT_SIZE: usize = 64;
const BURST: u64 = 64;
/// `params.working_set` of `workloads/churn-lifo.yaml`.
const CHURN_WORKING_SET: usize = 1000;
/// `params.batch` of `workloads/churn-lifo.yaml`: pairs per unit of work.
const CHURN_BATCH: usize = 1024;

/// Wall-clock time since the first call.
fn wall_time() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn cache<A: ObjectAlloc>() -> A {
    A::new(&CacheConfig::new(OBJECT_SIZE)).expect("a valid 64-byte config")
}

#[inline(always)]
fn one_pair<A: ObjectAlloc>(cache: &A) {
    let object = cache
        .alloc(black_box(AllocFlags::empty()))
        .expect("memory for one object");
    // SAFETY: the object was just allocated from `cache` and is not used again.
    unsafe { cache.free(black_box(object)) };
}

/// Runs `iterations` pairs as bursts of 64 allocations then 64 frees; returns the pairs run.
fn bursts<A: ObjectAlloc>(cache: &A, held: &mut Vec<NonNull<u8>>, iterations: u64) -> u64 {
    let rounds = iterations.div_ceil(BURST);
    for _ in 0..rounds {
        for _ in 0..BURST {
            held.push(cache.alloc(AllocFlags::empty()).expect("memory"));
        }
        for object in held.drain(..) {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        }
    }
    rounds * BURST
}

struct Pair<'a> {
    c: &'a mut Criterion,
}

impl AllocVisitor for Pair<'_> {
    type Output = ();

    fn visit<A: ObjectAlloc>(self) {
        let cache = cache::<A>();
        self.c.bench_function(&format!("pair64/{}", A::NAME), |b| {
            b.iter(|| one_pair(&cache))
        });
    }
}

struct ChurnLifo<'a> {
    c: &'a mut Criterion,
}

impl AllocVisitor for ChurnLifo<'_> {
    type Output = ();

    /// As in the harness, the loop runs on a thread of its own (not criterion's main thread),
    /// which allocates its working set: allocators keep per-thread state (glibc's main arena
    /// differs from a thread's arena, mimalloc's main-thread heap also holds criterion's own
    /// allocations). Criterion sends it iteration counts and receives the times.
    fn visit<A: ObjectAlloc>(self) {
        let cache = cache::<A>();
        let (ask, asked) = mpsc::channel::<u64>();
        let (answer, answered) = mpsc::channel::<Duration>();
        std::thread::scope(|scope| {
            let cache = &cache;
            scope.spawn(move || {
                let mut live: Vec<NonNull<u8>> = (0..CHURN_WORKING_SET)
                    .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                    .collect();
                // The harness's own loop body, in batches of the spec's size.
                for iterations in asked {
                    let batches = iterations.div_ceil(CHURN_BATCH as u64);
                    let start = Instant::now();
                    for _ in 0..batches {
                        harness::benchmark::churn_lifo_pairs(cache, &mut live, CHURN_BATCH);
                    }
                    let pairs = batches * CHURN_BATCH as u64;
                    let elapsed = start.elapsed().mul_f64(iterations as f64 / pairs as f64);
                    if answer.send(elapsed).is_err() {
                        break;
                    }
                }
                for object in live {
                    // SAFETY: every object of `live` is live, freed once.
                    unsafe { cache.free(object) };
                }
            });
            self.c
                .bench_function(&format!("churn-lifo64/{}", A::NAME), |b| {
                    b.iter_custom(|iterations| {
                        ask.send(iterations).expect("the churn thread runs");
                        answered.recv().expect("the churn thread answers")
                    })
                });
            drop(ask);
        });
    }
}

struct Clocked<'a> {
    c: &'a mut Criterion,
}

impl AllocVisitor for Clocked<'_> {
    type Output = ();

    fn visit<A: ObjectAlloc>(self) {
        let cache = cache::<A>();
        let mut held = Vec::with_capacity(BURST as usize);
        for (clock, read) in [
            ("wall", wall_time as fn() -> Duration),
            ("thread-cpu", thread_cpu_time),
        ] {
            self.c
                .bench_function(&format!("cpu-pair64/{}/{clock}", A::NAME), |b| {
                    b.iter_custom(|iterations| {
                        let start = read();
                        for _ in 0..iterations {
                            one_pair(&cache);
                        }
                        read() - start
                    })
                });
            self.c
                .bench_function(&format!("burst64/{}/{clock}", A::NAME), |b| {
                    b.iter_custom(|iterations| {
                        let start = read();
                        let run = bursts(&cache, &mut held, iterations);
                        (read() - start).mul_f64(iterations as f64 / run as f64)
                    })
                });
        }
    }
}

fn pair(c: &mut Criterion) {
    for entry in ALLOCATORS {
        with_allocator(entry.name, Pair { c: &mut *c }).expect("registered name");
    }
}

fn churn_lifo(c: &mut Criterion) {
    for entry in ALLOCATORS {
        with_allocator(entry.name, ChurnLifo { c: &mut *c }).expect("registered name");
    }
}

fn clocked(c: &mut Criterion) {
    for entry in ALLOCATORS {
        with_allocator(entry.name, Clocked { c: &mut *c }).expect("registered name");
    }
}

criterion_group!(benches, pair, churn_lifo, clocked);
criterion_main!(benches);
