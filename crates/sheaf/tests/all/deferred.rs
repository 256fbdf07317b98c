//! C-DEFER-1, C-DEFER-2 and the batching of deferred frees in `rcu_free` sheaves.

use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

use object_alloc::{AllocFlags, rcu};
use sheaf::{Cache, PerThread};

use crate::common::*;

const SENTINEL: u64 = 0x5eaf_5eaf_dead_beef;

both_strategies! {
    /// C-DEFER-1: an object freed while a reader is inside a read-side section is not handed
    /// out again until the section ends; the reader's sentinel survives many allocations.
    fn c_defer_1_not_reused_while_reader_active<S>() {
        for batching in [true, false] {
            let (pages, config) = limited_config(usize::MAX / 2);
            let cache: Cache<S> = Cache::new(
                &config.with_sheaf_capacity(8).with_deferred_batching(batching),
            )
            .unwrap();
            let victims: Vec<NonNull<u8>> = (0..20).map(|_| cache.alloc(AllocFlags::empty()).unwrap()).collect();
            for &v in &victims {
                // SAFETY: live objects we own.
                unsafe { v.cast::<u64>().write(SENTINEL) };
            }
            let addresses: Vec<usize> = victims.iter().map(|v| v.as_ptr() as usize).collect();
            let entered = Barrier::new(2);
            let done = AtomicBool::new(false);
            let mut reused = Vec::new();
            std::thread::scope(|s| {
                let reader = s.spawn(|| {
                    let guard = rcu::read();
                    entered.wait();
                    while !done.load(Ordering::Acquire) {
                        for &a in &addresses {
                            // SAFETY: the reader's section began before the deferred frees, so
                            // the objects stay valid until `guard` is dropped.
                            let value = unsafe { (a as *const u64).read_volatile() };
                            assert_eq!(value, SENTINEL, "object reused under an active reader");
                        }
                        std::thread::yield_now();
                    }
                    drop(guard);
                });
                entered.wait();
                for &v in &victims {
                    // SAFETY: live objects, unpublished, freed once.
                    unsafe { cache.free_deferred(v) };
                }
                // Churn: allocate, scribble and free a lot; none may be a victim.
                for round in 0..50 {
                    let batch = bulk(&cache, AllocFlags::empty(), 64);
                    for &o in &batch {
                        assert!(!addresses.contains(&(o.as_ptr() as usize)), "round {round}: victim handed out");
                        scribble(o, 64, 0x11);
                    }
                    reused.extend(batch.iter().copied());
                    if round % 5 == 4 {
                        // SAFETY: live objects, freed once.
                        unsafe { cache.free_bulk(&reused) };
                        reused.clear();
                    }
                    rcu::flush();
                }
                done.store(true, Ordering::Release);
                reader.join().unwrap();
            });
            free_all_and_check_empty(&pages, &cache, reused);
        }
    }
}

both_strategies! {
    /// C-DEFER-2: after the readers end and a barrier, accounting holds and every page can be
    /// released; full `rcu_free` sheaves are recycled into the barn.
    fn c_defer_2_barrier_then_everything_reusable<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let objects = bulk(&cache, AllocFlags::empty(), 200);
        let reader = object_alloc::rcu::read();
        for &o in &objects {
            // SAFETY: live objects, freed once.
            unsafe { cache.free_deferred(o) };
        }
        assert_eq!(live(&cache), 200, "deferred objects count as live until their grace period");
        drop(reader);
        cache.barrier();
        assert_eq!(cache.pending_deferred(), 0);
        cache.check_invariants();
        let stats = cache.stats();
        assert_eq!(stats.live_objects, Some(0));
        assert_eq!(stats.counter("deferred_objects"), 200);
        // The sheaves: only where restartable sequences serve (otherwise every deferred free
        // goes on its own).
        if !sequences_usable() {
            free_all_and_check_empty(&pages, &cache, []);
            return;
        }
        assert!(stats.counter("rcu_sheaf_submitted") >= 200 / 8 - 1, "{stats:?}");
        // Each submitted sheaf was recycled into the barn, held beyond its limit, or flushed
        // on arrival (held ones flushed later are counted as aged too).
        assert!(
            stats.counter("rcu_sheaf_recycled")
                + stats.counter("rcu_sheaf_held")
                + stats.counter("rcu_sheaf_flushed")
                - stats.counter("rcu_sheaf_held_aged")
                == stats.counter("rcu_sheaf_submitted"),
            "{stats:?}"
        );
        free_all_and_check_empty(&pages, &cache, []);
    }
}

/// The recycled sheaves land in the barn as full sheaves, within its limit, and the next
/// allocations take them; without a hold (`rcu_hold_ticks` 0) the rest are flushed on arrival.
#[test]
fn recycled_rcu_sheaves_feed_allocation() {
    if !sequences_usable() {
        return;
    }
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<PerThread> = Cache::new(
        &config
            .with_sheaf_capacity(8)
            .with_barn_limits(3, 10)
            .with_rcu_hold_ticks(0),
    )
    .unwrap();
    let objects = bulk(&cache, AllocFlags::empty(), 80);
    for &o in &objects {
        // SAFETY: live objects, freed once.
        unsafe { cache.free_deferred(o) };
    }
    cache.barrier();
    let stats = cache.stats();
    assert_eq!(stats.counter("rcu_sheaf_submitted"), 10);
    assert_eq!(stats.counter("rcu_sheaf_recycled"), 3, "{stats:?}");
    assert_eq!(stats.counter("rcu_sheaf_flushed"), 7);
    assert_eq!(stats.counter("barn_full_sheaves"), 3);
    let gets = stats.counter("barn_get");
    let again = bulk(&cache, AllocFlags::empty(), 24);
    assert!(
        cache.stats().counter("barn_get") > gets,
        "recycled sheaves unused"
    );
    free_all_and_check_empty(&pages, &cache, again);
}

both_strategies! {
    /// With a hold (`rcu_hold_ticks`, 4 by default), recycled sheaves beyond the barn's full
    /// limit are held instead of flushed on arrival; within the hold each held one has either
    /// served a taker or been flushed, and the barn's own limit held throughout.
    fn recycled_rcu_sheaves_beyond_the_limit_are_held_then_used_or_aged_out<S>() {
        if !sequences_usable() {
            return;
        }
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> =
            Cache::new(&config.with_sheaf_capacity(8).with_barn_limits(3, 10)).unwrap();
        let objects = bulk(&cache, AllocFlags::empty(), 80);
        for &o in &objects {
            // SAFETY: live objects, freed once.
            unsafe { cache.free_deferred(o) };
        }
        cache.barrier();
        let stats = cache.stats();
        assert_eq!(stats.counter("rcu_sheaf_submitted"), 10, "{stats:?}");
        assert_eq!(stats.counter("rcu_sheaf_recycled"), 3, "{stats:?}");
        assert_eq!(stats.counter("rcu_sheaf_held"), 7, "{stats:?}");
        // Nothing is flushed on arrival: a flush so far is a held sheaf aged out.
        assert_eq!(
            stats.counter("rcu_sheaf_flushed"),
            stats.counter("rcu_sheaf_held_aged"),
            "{stats:?}"
        );
        assert!(stats.counter("barn_full_sheaves") <= 3, "{stats:?}");
        cache.check_invariants();
        let again = bulk(&cache, AllocFlags::empty(), 24);
        // The hand-over thread ages held sheaves once a tick (10 ms): give it a few seconds
        // on a loaded machine.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cache.stats().counter("barn_held_sheaves") > 0 {
            assert!(std::time::Instant::now() < deadline, "held sheaves never aged out");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let stats = cache.stats();
        assert_eq!(
            stats.counter("rcu_sheaf_held_used") + stats.counter("rcu_sheaf_held_aged"),
            7,
            "{stats:?}"
        );
        assert_eq!(stats.counter("rcu_sheaf_flushed"), stats.counter("rcu_sheaf_held_aged"));
        free_all_and_check_empty(&pages, &cache, again);
    }
}

/// Replacing objects (allocate one, free another deferred), the emptied `main` stays as the
/// spare and becomes the next `rcu_free` sheaf: a sheaf's round trip takes one barn trip
/// (a full sheaf for `main`), not two (that and an empty sheaf for `rcu_free`).
#[test]
fn replacing_objects_takes_one_barn_trip_per_sheaf() {
    if !sequences_usable() {
        return;
    }
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<PerThread> =
        Cache::new(&config.with_sheaf_capacity(8).with_barn_limits(64, 64)).unwrap();
    let mut live = bulk(&cache, AllocFlags::empty(), 64);
    // SAFETY: live objects, freed once.
    live.iter().for_each(|&o| unsafe { cache.free_deferred(o) });
    cache.barrier();
    live = bulk(&cache, AllocFlags::empty(), 64);
    let before = cache.stats();
    for round in 0..64 * 8 {
        let fresh = cache.alloc(AllocFlags::empty()).unwrap();
        let old = std::mem::replace(&mut live[round % 64], fresh);
        // SAFETY: `old` is live and no longer referenced.
        unsafe { cache.free_deferred(old) };
        if round % 64 == 63 {
            cache.barrier();
        }
    }
    let after = cache.stats();
    let delta = |name: &str| after.counter(name) - before.counter(name);
    let (gets, sheaves) = (delta("barn_get"), delta("rcu_sheaf_submitted"));
    assert!(sheaves >= 60, "{sheaves} sheaves went round");
    assert!(
        gets <= sheaves + sheaves / 8,
        "{gets} barn gets for {sheaves} sheaves: {after:?}"
    );
    free_all_and_check_empty(&pages, &cache, live);
}

both_strategies! {
    /// With restartable sequences, full `rcu_free` sheaves are sealed where they are and
    /// handed to a grace period (stamped) one by one as the next sheaf starts, by the
    /// deferring thread itself; the sheaf being filled stays in the slot until a barrier (or
    /// the hand-over thread) seals it too, and the barrier then recycles every sheaf: the full
    /// ones into the barn, the partly filled one to the slabs.
    fn full_rcu_sheaves_are_sealed_in_the_slot_and_a_barrier_seals_the_rest<S>() {
        if !sequences_usable() {
            return;
        }
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> =
            Cache::new(&config.with_sheaf_capacity(8).with_barn_limits(10, 10)).unwrap();
        let objects: Vec<usize> = bulk(&cache, AllocFlags::empty(), 8 * 3 + 3)
            .iter()
            .map(|o| o.as_ptr() as usize)
            .collect();
        // On a thread pinned to one CPU, so that every free lands on the same slot.
        let (pinned, stats) = std::thread::scope(|s| {
            s.spawn(|| {
                let cpu = slab::cpu::current_cpu(slab::cpu::cpu_source());
                let mut set = rustix::thread::CpuSet::new();
                set.set(cpu);
                let pinned = rustix::thread::sched_setaffinity(None, &set).is_ok();
                for &o in &objects {
                    // SAFETY: live objects, freed once.
                    unsafe { cache.free_deferred(NonNull::new(o as *mut u8).unwrap()) };
                }
                (pinned, cache.stats())
            })
            .join()
            .unwrap()
        });
        if pinned {
            assert_eq!(stats.counter("free_rcu_sheaf"), 27, "{stats:?}");
            assert_eq!(stats.counter("free_rcu_sheaf_fail"), 0, "{stats:?}");
            // The hand-over thread may have sealed the one being filled meanwhile.
            assert!(
                (3..=4).contains(&stats.counter("rcu_sheaf_submitted")),
                "three full sheaves stamped in the slot: {stats:?}"
            );
        }
        cache.barrier();
        let stats = cache.stats();
        assert_eq!(stats.counter("rcu_objects_completed"), 27, "{stats:?}");
        if pinned {
            assert_eq!(stats.counter("rcu_sheaf_submitted"), 4, "{stats:?}");
            assert_eq!(stats.counter("rcu_sheaf_recycled"), 3, "{stats:?}");
            assert_eq!(stats.counter("rcu_sheaf_flushed"), 1, "{stats:?}");
        }
        assert_eq!(stats.live_objects, Some(0));
        free_all_and_check_empty(&pages, &cache, []);
    }
}

/// With batching off, every deferred object is deferred on its own (the baseline).
#[test]
fn batching_off_defers_each_object() {
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache = Cache::new(&config.with_deferred_batching(false)).unwrap();
    let objects = bulk(&cache, AllocFlags::empty(), 100);
    for &o in &objects {
        // SAFETY: live objects, freed once.
        unsafe { cache.free_deferred(o) };
    }
    cache.barrier();
    let stats = cache.stats();
    assert_eq!(stats.counter("deferred_objects"), 100);
    assert_eq!(stats.counter("rcu_sheaf_submitted"), 0);
    assert_eq!(stats.counter("free_rcu_sheaf"), 0);
    assert_eq!(stats.live_objects, Some(0));
    free_all_and_check_empty(&pages, &cache, []);
}

both_strategies! {
    /// C-DEFER-2 with threads that exit right after deferring, and under page-source
    /// exhaustion: every object completes and becomes reusable without new pages.
    fn c_defer_2_exiting_threads_and_exhaustion<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let objects = bulk(&cache, AllocFlags::empty(), 400);
        let chunks: Vec<Vec<usize>> = objects.chunks(100).map(|c| c.iter().map(|o| o.as_ptr() as usize).collect()).collect();
        pages.set_limit(held(&pages));
        let shared_cache = &cache;
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|chunk| {
                    s.spawn(move || {
                        for &a in chunk {
                            // SAFETY: live objects, freed once.
                            unsafe { shared_cache.free_deferred(NonNull::new(a as *mut u8).unwrap()) };
                        }
                    })
                })
                .collect();
            // Explicit joins wait for the threads' thread-local destructors too.
            for handle in handles {
                handle.join().unwrap();
            }
        });
        cache.barrier();
        cache.check_invariants();
        assert_eq!(live(&cache), 0);
        // Reused without a page request: the completed sheaves wait in the barn. Without
        // restartable sequences each object completes on its own, per-thread ones straight
        // to the slabs, whose emptied pages go back to the page source.
        let flags = if sequences_usable() {
            AllocFlags::NOWAIT
        } else {
            pages.set_limit(usize::MAX / 2);
            AllocFlags::empty()
        };
        let requests = pages.requests();
        let again = bulk(&cache, flags, 400);
        if flags == AllocFlags::NOWAIT {
            assert_eq!(pages.requests(), requests);
        }
        pages.set_limit(usize::MAX / 2);
        free_all_and_check_empty(&pages, &cache, again);
    }
}

/// Dropping a cache with deferred frees pending keeps its memory until they complete.
#[test]
fn drop_with_pending_deferred_frees() {
    let (pages, cache) = cache_with::<sheaf::PerCpu>(8);
    let objects = bulk(&cache, AllocFlags::empty(), 50);
    let guard = rcu::read();
    for &o in &objects {
        // SAFETY: live objects, freed once.
        unsafe { cache.free_deferred(o) };
    }
    drop(cache);
    // SAFETY: the reader's section is still active, so the memory is still mapped.
    let first = unsafe { objects[0].as_ptr().read_volatile() };
    let _ = first;
    assert!(held(&pages) > 0);
    drop(guard);
    let start = std::time::Instant::now();
    while held(&pages) > 0 && start.elapsed() < std::time::Duration::from_secs(10) {
        rcu::flush();
        std::thread::yield_now();
    }
    assert_eq!(
        held(&pages),
        0,
        "pages of a dropped cache were never released"
    );
}
