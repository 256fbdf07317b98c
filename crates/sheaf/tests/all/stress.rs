//! Multi-threaded stress: more threads than CPUs, remote frees, prefill bursts, deferred
//! frees and `shrink` (which visits every slot) while the rest run; every object stamped by its owner and checked before it is freed (C-OBJ-2,
//! C-CONC-1), then accounting and page release (C-OBJ-5, C-CONC-2).

use std::ptr::NonNull;
use std::sync::mpsc;

use object_alloc::{AllocFlags, rcu};
use sheaf::{Cache, PerCpu, PerThread, SlotStrategy};

use crate::common::*;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn stamp(o: NonNull<u8>, value: u64) {
    // SAFETY: a live object of at least 64 bytes owned by the caller.
    unsafe {
        o.cast::<u64>().write(value);
        o.cast::<u64>().add(7).write(!value);
    }
}

fn check_stamp(o: NonNull<u8>) -> u64 {
    // SAFETY: as above.
    let (a, b) = unsafe { (o.cast::<u64>().read(), o.cast::<u64>().add(7).read()) };
    assert_eq!(a, !b, "object overwritten by another owner");
    a
}

fn stress<S: SlotStrategy>(ops_per_thread: usize) {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = 2 * cpus + 2;
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<S> =
        Cache::new(&config.with_sheaf_capacity(16).with_barn_limits(4, 4)).unwrap();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::channel::<usize>()).unzip();
    let leftovers: Vec<mpsc::Receiver<usize>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (t, receiver) in receivers.into_iter().enumerate() {
            let next = senders[(t + 1) % threads].clone();
            let cache = &cache;
            handles.push(s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                let mut mine: Vec<NonNull<u8>> = Vec::new();
                for i in 0..ops_per_thread {
                    let tag = ((t as u64) << 32) | i as u64;
                    match rng.next() % 10 {
                        0..=3 => {
                            let o = cache.alloc(AllocFlags::empty()).expect("memory");
                            stamp(o, tag);
                            mine.push(o);
                        }
                        4 | 5 if !mine.is_empty() => {
                            let o = mine.swap_remove(rng.next() as usize % mine.len());
                            check_stamp(o);
                            // SAFETY: a live object we own, freed once.
                            unsafe { cache.free(o) };
                        }
                        6 if !mine.is_empty() => {
                            // Remote free: hand the object to the next thread.
                            let o = mine.swap_remove(rng.next() as usize % mine.len());
                            check_stamp(o);
                            let _ = next.send(o.as_ptr() as usize);
                        }
                        7 => {
                            let mut sheaf =
                                cache.prefill(AllocFlags::empty(), 13).expect("prefill");
                            for _ in 0..(rng.next() % 4) {
                                let o = sheaf.alloc(AllocFlags::ZERO).expect("C-PREFILL-2");
                                assert!(is_zero(o, 64));
                                stamp(o, tag);
                                mine.push(o);
                            }
                            sheaf.return_with(if i % 2 == 0 {
                                AllocFlags::NOWAIT
                            } else {
                                AllocFlags::empty()
                            });
                        }
                        8 if !mine.is_empty() => {
                            let o = mine.swap_remove(rng.next() as usize % mine.len());
                            check_stamp(o);
                            let _guard = rcu::read();
                            // SAFETY: a live object we own, freed once.
                            unsafe { cache.free_deferred(o) };
                        }
                        9 if i % 64 == 9 => {
                            // Visits every slot while the others run: per-CPU with
                            // restartable sequences, that takes each CPU's lock from afar.
                            cache.shrink();
                        }
                        _ => {
                            let objects = bulk(cache, AllocFlags::empty(), 8);
                            for &o in &objects {
                                stamp(o, tag);
                            }
                            // SAFETY: live objects we own.
                            unsafe { cache.free_bulk(&objects) };
                        }
                    }
                    while let Ok(a) = receiver.try_recv() {
                        let o = NonNull::new(a as *mut u8).unwrap();
                        check_stamp(o);
                        // SAFETY: a live object handed to us, freed once (remote free).
                        unsafe { cache.free(o) };
                    }
                }
                for o in mine {
                    check_stamp(o);
                    // SAFETY: live objects we own.
                    unsafe { cache.free(o) };
                }
                receiver
            }));
        }
        drop(senders);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Objects sent after their receiver finished its loop are still queued: free them here.
    for receiver in leftovers {
        for a in receiver.try_iter() {
            let o = NonNull::new(a as *mut u8).unwrap();
            check_stamp(o);
            // SAFETY: a live object handed over, freed once.
            unsafe { cache.free(o) };
        }
    }
    cache.barrier();
    cache.check_invariants();
    let stats = cache.stats();
    assert_eq!(stats.live_objects, Some(0), "{stats:?}");
    // Not one shrink: the hand-over thread may be ageing held recycled sheaves out of the
    // barn just then, and a shrink passes what is in its hands (`settle_empty`).
    settle_empty(&pages, &cache);
    assert_eq!(cache.stats().slab_bytes, Some(0));
}

#[test]
fn stress_per_cpu_more_threads_than_cpus() {
    stress::<PerCpu>(4_000);
}

#[test]
fn stress_per_thread_more_threads_than_cpus() {
    stress::<PerThread>(4_000);
}

/// Long enough for preemptions and migrations to land inside the slot lock's restartable
/// sequence, and for `shrink` to take CPU slots from afar while their CPUs' threads run.
#[test]
fn stress_per_cpu_long() {
    stress::<PerCpu>(150_000);
}

/// Threads that exit while another thread runs `shrink` and `barrier`: an exiting thread's
/// slot becomes an orphan at any moment of those calls, and must be adopted whole (its
/// `main`, `spare` and `rcu_free` sheaves and its counters), never half by a visit meant for
/// live slots (C-CONC-2).
#[test]
fn threads_exit_while_shrink_and_barrier_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROUNDS: usize = 300;
    const THREADS: usize = 3;
    let (pages, cache) = cache_with::<PerThread>(8);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (cache, done) = (&cache, &done);
        let visitor = s.spawn(move || {
            let mut visits = 0u64;
            while !done.load(Ordering::Acquire) {
                cache.shrink();
                cache.barrier();
                visits += 1;
            }
            visits
        });
        for _ in 0..ROUNDS {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(move || {
                        let objects = bulk(cache, AllocFlags::empty(), 20);
                        let (now, later) = objects.split_at(15);
                        // SAFETY: live objects we own, each freed once; the first 15 fill the
                        // slot's sheaves, the last 5 a partly filled `rcu_free` sheaf.
                        unsafe {
                            cache.free_bulk(now);
                            for &o in later {
                                cache.free_deferred(o);
                            }
                        }
                    })
                })
                .collect();
            // An explicit join returns once the thread's thread-local destructors have run.
            for worker in workers {
                worker.join().unwrap();
            }
        }
        done.store(true, Ordering::Release);
        assert!(visitor.join().unwrap() > 0, "the visitor never ran");
    });
    free_all_and_check_empty(&pages, &cache, []);
}
