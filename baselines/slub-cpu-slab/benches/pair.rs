//! The 64-byte alloc+free pair on one thread: the fast path of both operations, and a burst of
//! 64 allocations then 64 frees (which crosses the design's slow paths).
//!
//! Run: `cargo bench -p slub-cpu-slab -- --warm-up-time 1 --measurement-time 2`.
//!
//! Each is measured twice: in wall-clock time (criterion's default) and in the thread's CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`), which leaves out time the thread spent descheduled and so
//! stays meaningful on a machine busy with other work. On an idle machine the two agree.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use object_alloc::{AllocFlags, CacheConfig, ObjectAlloc};
use slub_cpu_slab::SlubCpuSlab;

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

fn pairs(cache: &SlubCpuSlab, iterations: u64) {
    for _ in 0..iterations {
        let object = cache.alloc(black_box(AllocFlags::empty())).expect("memory");
        // SAFETY: allocated just above and freed once.
        unsafe { cache.free(black_box(object)) };
    }
}

/// Runs `iterations` pairs as bursts of 64 allocations then 64 frees; returns the pairs run.
fn bursts(cache: &SlubCpuSlab, held: &mut Vec<std::ptr::NonNull<u8>>, iterations: u64) -> u64 {
    let rounds = iterations.div_ceil(64);
    for _ in 0..rounds {
        for _ in 0..64 {
            held.push(cache.alloc(AllocFlags::empty()).expect("memory"));
        }
        for object in held.drain(..) {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        }
    }
    rounds * 64
}

fn bench(c: &mut Criterion) {
    let cache = SlubCpuSlab::new(&CacheConfig::new(64)).expect("valid config");
    let name = <SlubCpuSlab as ObjectAlloc>::NAME;
    for (clock, read) in [
        ("wall", wall_time as fn() -> Duration),
        ("thread-cpu", thread_cpu_time),
    ] {
        c.bench_function(&format!("{name}/alloc+free 64B/{clock}"), |b| {
            b.iter_custom(|iterations| {
                let start = read();
                pairs(&cache, iterations);
                read() - start
            })
        });
        let mut held = Vec::with_capacity(64);
        c.bench_function(
            &format!("{name}/burst 64 then free 64, per pair/{clock}"),
            |b| {
                b.iter_custom(|iterations| {
                    let start = read();
                    let run = bursts(&cache, &mut held, iterations);
                    (read() - start).mul_f64(iterations as f64 / run as f64)
                })
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
