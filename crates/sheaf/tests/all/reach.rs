//! `shrink`, `barrier` and the accounting check reach the sheaves of every live thread and
//! CPU (C-CONC-4), without waiting for a thread that is not running.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use object_alloc::{AllocFlags, PageSource};
use sheaf::{Cache, SlotStrategy};

use crate::common::*;

/// A thread used the cache, kept some objects live, and now waits on a channel (asleep in
/// the kernel); the caller gets the live objects' addresses, and ends the thread by dropping
/// the returned sender.
fn idle_thread_with_sheaves<'s, S: SlotStrategy>(
    s: &'s std::thread::Scope<'s, '_>,
    cache: &'s Cache<S>,
    keep: usize,
    defer: usize,
) -> (
    mpsc::Sender<()>,
    Vec<usize>,
    std::thread::ScopedJoinHandle<'s, ()>,
) {
    let (done_tx, done_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = s.spawn(move || {
        let objects: Vec<NonNull<u8>> = (0..100)
            .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
            .collect();
        let (kept, rest) = objects.split_at(keep);
        let (deferred, freed) = rest.split_at(defer);
        for &object in freed {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        }
        for &object in deferred {
            // SAFETY: allocated above, freed once, no reader holds it.
            unsafe { cache.free_deferred(object) };
        }
        done_tx
            .send(kept.iter().map(|o| o.as_ptr() as usize).collect::<Vec<_>>())
            .unwrap();
        // Idle, alive, holding its slot's sheaves, until the test ends it.
        let _ = stop_rx.recv();
    });
    let kept = done_rx.recv().unwrap();
    // Let it fall asleep in `recv`.
    std::thread::sleep(Duration::from_millis(20));
    (stop_tx, kept, handle)
}

both_strategies! {
    /// Another live thread, idle, freed objects normally and deferred others: a barrier and
    /// a shrink from this thread leave `live` equal to what is really live, and release every
    /// page once that is freed too.
    fn c_conc_4_barrier_and_shrink_reach_an_idle_live_thread<S>() {
        let (pages, cache) = cache_with::<S>(16);
        std::thread::scope(|s| {
            let (stop, kept, handle) = idle_thread_with_sheaves(s, &cache, 0, 19);
            cache.barrier();
            cache.shrink();
            assert_eq!(live(&cache), 0, "deferred frees of an idle thread not completed");
            assert_eq!(held(&pages), 0, "pages still held for an idle thread's sheaves");
            assert!(kept.is_empty());
            drop(stop);
            handle.join().unwrap();
        });
    }
}

both_strategies! {
    /// The accounting equation is checked, and holds, while another live thread keeps
    /// objects and sheaves.
    fn c_conc_4_accounting_counts_an_idle_live_threads_sheaves<S>() {
        let (pages, cache) = cache_with::<S>(16);
        std::thread::scope(|s| {
            let (stop, kept, handle) = idle_thread_with_sheaves(s, &cache, 7, 5);
            cache.barrier();
            assert!(cache.check_invariants(), "the equation was not checked");
            assert_eq!(live(&cache), 7);
            for object in kept {
                // SAFETY: the idle thread's live objects, handed over and freed once here.
                unsafe { cache.free(NonNull::new(object as *mut u8).unwrap()) };
            }
            cache.barrier();
            cache.shrink();
            assert!(cache.check_invariants());
            assert_eq!(live(&cache), 0);
            assert_eq!(held(&pages), 0);
            drop(stop);
            handle.join().unwrap();
        });
    }
}

/// A per-thread owner that keeps running (never asleep): a barrier completes its deferred
/// frees at once all the same (C-DEFER-3, C-CONC-4), since they wait in its slot's chain,
/// which the barrier seals from afar (or, without restartable sequences, went one by one
/// through the stamped queues). Its `main` and `spare` cannot be taken from outside: the
/// shrink leaves it a drain request instead of waiting, and its next operation hands them
/// over. Once it has exited, nothing is live or held.
#[test]
fn c_conc_4_a_running_thread_hands_its_sheaves_over_at_its_next_operation() {
    let (pages, cache) = cache_with::<sheaf::PerThread>(16);
    let step = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    /// Ends the other thread however the test ends, so that a failed assertion fails the
    /// test instead of leaving the scope waiting for it.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    std::thread::scope(|s| {
        let _stop = Stop(&stop);
        let worker = s.spawn(|| {
            let objects: Vec<NonNull<u8>> = (0..50)
                .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                .collect();
            for (i, &object) in objects.iter().enumerate() {
                // SAFETY: allocated above, freed once.
                unsafe {
                    if i < 9 {
                        cache.free_deferred(object)
                    } else {
                        cache.free(object)
                    }
                }
            }
            step.store(1, Ordering::Release);
            // Running, not asleep, until asked for one more operation.
            while step.load(Ordering::Acquire) != 2 {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                std::hint::spin_loop();
            }
            let object = cache.alloc(AllocFlags::empty()).expect("memory");
            // SAFETY: allocated just above, freed once.
            unsafe { cache.free(object) };
            step.store(3, Ordering::Release);
            // Running again, never asleep.
            while !stop.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        });
        while step.load(Ordering::Acquire) != 1 {
            assert!(!worker.is_finished(), "the other thread failed");
            std::thread::yield_now();
        }
        let started = Instant::now();
        cache.barrier();
        cache.shrink();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited for a running thread"
        );
        // Reached, although the thread runs: its deferred frees are complete.
        assert_eq!(live(&cache), 0, "a running thread's deferred frees left");
        step.store(2, Ordering::Release);
        while step.load(Ordering::Acquire) != 3 {
            assert!(!worker.is_finished(), "the other thread failed");
            std::thread::yield_now();
        }
        // Handed over by its last operation, although it is running now.
        cache.barrier();
        assert_eq!(live(&cache), 0);
        stop.store(true, Ordering::Release);
        worker.join().unwrap();
        settle_empty(&pages, &cache);
    });
}

fn stamp(object: NonNull<u8>, value: u64) {
    // SAFETY: a live 64-byte object owned by the caller.
    unsafe {
        object.cast::<u64>().write(value);
        object.cast::<u64>().add(7).write(!value);
    }
}

fn check_stamp(object: NonNull<u8>, value: u64) {
    // SAFETY: as above.
    let (a, b) = unsafe {
        (
            object.cast::<u64>().read(),
            object.cast::<u64>().add(7).read(),
        )
    };
    assert_eq!((a, b), (value, !value), "object changed by someone else");
}

both_strategies! {
    /// Threads allocate, free, defer, prefill and sleep now and then (so that their slots
    /// are taken from outside) while another thread shrinks, barriers and reads stats in a
    /// loop; every object keeps its owner's stamp, and at the end nothing is live or held.
    fn c_conc_4_operations_race_with_takers<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> =
            Cache::new(&config.with_sheaf_capacity(8).with_barn_limits(2, 2)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_millis(800);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..3u64)
                .map(|t| {
                    let cache = &cache;
                    s.spawn(move || {
                        let mut mine: Vec<(NonNull<u8>, u64)> = Vec::new();
                        let mut i = 0u64;
                        while Instant::now() < deadline {
                            i += 1;
                            let tag = (t << 40) | i;
                            match i % 7 {
                                0..=2 => {
                                    let o = cache.alloc(AllocFlags::empty()).expect("memory");
                                    stamp(o, tag);
                                    mine.push((o, tag));
                                }
                                3 | 4 => {
                                    if let Some((o, tag)) = mine.pop() {
                                        check_stamp(o, tag);
                                        // SAFETY: ours, freed once.
                                        unsafe { cache.free(o) };
                                    }
                                }
                                5 => {
                                    if let Some((o, tag)) = mine.pop() {
                                        check_stamp(o, tag);
                                        // SAFETY: ours, freed once, never shared.
                                        unsafe { cache.free_deferred(o) };
                                    }
                                }
                                _ => {
                                    let mut sheaf =
                                        cache.prefill(AllocFlags::empty(), 5).expect("memory");
                                    let o = sheaf.alloc(AllocFlags::empty()).expect("reserved");
                                    stamp(o, tag);
                                    mine.push((o, tag));
                                    drop(sheaf);
                                }
                            }
                            if i.is_multiple_of(64) {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                        }
                        for (o, tag) in mine {
                            check_stamp(o, tag);
                            // SAFETY: ours, freed once.
                            unsafe { cache.free(o) };
                        }
                    })
                })
                .collect();
            let taker = {
                let (cache, stop) = (&cache, stop.clone());
                s.spawn(move || {
                    let mut rounds = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        cache.shrink();
                        let _ = cache.stats();
                        cache.barrier();
                        rounds += 1;
                    }
                    rounds
                })
            };
            for worker in workers {
                worker.join().unwrap();
            }
            stop.store(true, Ordering::Release);
            assert!(taker.join().unwrap() > 0);
        });
        settle_empty(&pages, &cache);
        assert_eq!(live(&cache), 0);
    }
}

/// Opens the gate when dropped, so that a failing test does not leave the process's
/// hand-over thread (shared with the other tests) blocked until the gate's time-out.
struct Reopen<'a>(&'a GatedPages);

impl Drop for Reopen<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// How long the test waits for a `shrink` or an accounting check beside an adoption held in
/// transit, and for that adoption to end once let go: far beyond their patience on a loaded
/// machine, below the gate's own time-out.
const TRANSIT_WATCHDOG: Duration = Duration::from_secs(5);

/// An exited thread's slot is adopted by whichever thread comes first, here the hand-over
/// thread (the thread armed it with a deferred free), which flushes the slot's sheaves to the
/// slabs after unregistering it. Held in that flush by its page source until the test lets
/// it go (as a descheduled adopter would be), it holds up neither a `shrink` nor an
/// accounting check (C-CONC-4): both return under a watchdog, and the check, which cannot
/// find the objects in transit, says it did not check instead of miscounting. Once the flush
/// ends, the check is made and a shrink returns every slab.
#[test]
fn c_conc_4_shrink_and_check_past_an_adoption_held_in_transit() {
    // The deferral below arms the hand-over thread only where it goes into a sheaf.
    if !sequences_usable() {
        return;
    }
    let pages = Arc::new(GatedPages::default());
    let config = object_alloc::CacheConfig::new(512)
        .with_sheaf_capacity(256)
        .with_barn_limits(0, 0)
        .with_page_source(pages.clone());
    let cache: Cache<sheaf::PerThread> = Cache::new(&config).unwrap();
    pages.arm_free_on("rcu-hand-over");
    let _reopen = Reopen(&pages);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Two sheaves' worth, over many slabs. With the slot emptied first, the first
            // half freed fills `spare` and the second `main`, which adoption flushes first:
            // it empties more slabs than the pool keeps, so the page source is called while
            // `spare` is still in transit.
            let objects: Vec<NonNull<u8>> = (0..512)
                .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
                .collect();
            cache.shrink();
            // SAFETY: allocated above, freed once; no reader ever sees the deferred one.
            unsafe {
                for &object in &objects[1..] {
                    cache.free(object);
                }
                cache.free_deferred(objects[0]);
            }
        });
    });
    // The thread has exited: its slot waits for adoption, and its deferral armed the
    // hand-over thread, which adopts it at its next tick and blocks in the page source.
    assert!(
        pages.wait_blocked_for(Duration::from_secs(5)),
        "the hand-over thread never released a slab"
    );
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            cache.shrink();
            let shrink = start.elapsed();
            let start = Instant::now();
            let checked = cache.check_invariants();
            let _ = done_tx.send((checked, shrink, start.elapsed()));
        });
        let outcome = done_rx.recv_timeout(TRANSIT_WATCHDOG);
        // Let go either way, so that a failing run ends.
        pages.open();
        let (checked, shrink, check) = outcome.unwrap_or_else(|_| {
            panic!("shrink or check_invariants still waiting after {TRANSIT_WATCHDOG:?} for an adoption in transit")
        });
        eprintln!("beside an adoption held in transit: shrink {shrink:?}, check {check:?}");
        assert!(
            !checked,
            "the accounting check was made with an adoption's objects in transit"
        );
    });
    // The hand-over thread's flush ends now; until it has, the check is not made.
    let start = Instant::now();
    while !cache.check_invariants() {
        assert!(
            start.elapsed() < TRANSIT_WATCHDOG,
            "the adoption never ended once let go"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    cache.barrier();
    cache.shrink();
    assert!(cache.check_invariants());
    assert_eq!(live(&cache), 0);
    assert_eq!(pages.stats().held_bytes, 0, "pages held after the shrink");
}

/// The hand-over thread ages held `rcu_free` sheaves out of the barn at any time, quiescent
/// points included: it takes them out, then flushes them into the slabs. Held inside that
/// flush (its page source blocks as a slab goes back), it leaves a sheaf's objects in no barn
/// and not yet in the slabs; an accounting check made meanwhile says it did not check instead
/// of counting them missing, and checks once the flush ends.
#[test]
fn c_obj_5_the_check_is_not_fooled_by_held_sheaves_ageing_out() {
    if !sequences_usable() {
        return;
    }
    let pages = Arc::new(GatedPages::default());
    // No room for full sheaves in the barn, so every recycled one is held; 50 ticks (about
    // half a second) leave the time to arm the gate before they age.
    let config = object_alloc::CacheConfig::new(512)
        .with_sheaf_capacity(256)
        .with_barn_limits(0, 0)
        .with_rcu_hold_ticks(50)
        .with_page_source(pages.clone());
    let cache: Cache<sheaf::PerCpu> = Cache::new(&config).unwrap();
    let _reopen = Reopen(&pages);
    let objects: Vec<NonNull<u8>> = (0..512)
        .map(|_| cache.alloc(AllocFlags::empty()).expect("memory"))
        .collect();
    cache.shrink();
    for &object in &objects {
        // SAFETY: allocated above, freed once; no reader ever sees them.
        unsafe { cache.free_deferred(object) };
    }
    // The deferred frees' sheaves come back from their grace period and are held.
    cache.barrier();
    pages.arm_free_on("rcu-hand-over");
    assert!(
        cache.stats().counter("barn_held_sheaves") > 0,
        "no recycled sheaf was held: {:?}",
        cache.stats()
    );
    assert!(
        pages.wait_blocked_for(Duration::from_secs(5)),
        "the hand-over thread never released a slab while ageing held sheaves"
    );
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = done_tx.send(cache.check_invariants());
        });
        let outcome = done_rx.recv_timeout(TRANSIT_WATCHDOG);
        pages.open();
        let checked = outcome.unwrap_or_else(|_| {
            panic!("check_invariants still waiting after {TRANSIT_WATCHDOG:?} for held sheaves ageing out")
        });
        assert!(
            !checked,
            "the accounting check was made with aged sheaves' objects in transit"
        );
    });
    let start = Instant::now();
    while !cache.check_invariants() {
        assert!(
            start.elapsed() < TRANSIT_WATCHDOG,
            "the ageing never ended once let go"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    cache.shrink();
    assert!(cache.check_invariants());
    assert_eq!(live(&cache), 0);
    assert_eq!(pages.stats().held_bytes, 0, "pages held after the shrink");
}
