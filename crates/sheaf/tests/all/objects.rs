//! C-OBJ-1..5, C-BULK-1..2, C-CONC-2 and the paths between layers.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use object_alloc::{AllocError, AllocFlags, CacheConfig};
use sheaf::{Cache, PerThread};

use crate::common::*;

both_strategies! {
    /// C-OBJ-1, C-OBJ-2: objects are aligned, sized, writable and disjoint across every path
    /// (main, spare, barn, slabs).
    fn c_obj_1_2_aligned_and_disjoint<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> = Cache::new(&config.with_align(64).with_sheaf_capacity(7)).unwrap();
        let mut objects = Vec::new();
        let mut seen = HashSet::new();
        for round in 0..3 {
            for i in 0..200 {
                let o = cache.alloc(AllocFlags::empty()).unwrap();
                assert_eq!(o.as_ptr() as usize % 64, 0, "misaligned");
                scribble(o, 64, (i % 251) as u8);
                assert!(seen.insert(o.as_ptr() as usize), "round {round}: overlap");
                objects.push(o);
            }
            let mut addresses: Vec<usize> = seen.iter().copied().collect();
            addresses.sort_unstable();
            assert!(addresses.windows(2).all(|w| w[1] - w[0] >= 64), "objects overlap");
            // Free half, keep half.
            for o in objects.drain(..100) {
                seen.remove(&(o.as_ptr() as usize));
                // SAFETY: live object, freed once.
                unsafe { cache.free(o) };
            }
        }
        free_all_and_check_empty(&pages, &cache, objects);
    }
}

both_strategies! {
    /// C-OBJ-3: ZERO gives zeroed objects on every path, even reused memory.
    fn c_obj_3_zero_on_every_path<S>() {
        let (pages, cache) = cache_with::<S>(6);
        let size = cache.object_size();
        for _ in 0..3 {
            let dirty: Vec<_> = (0..40).map(|_| cache.alloc(AllocFlags::empty()).unwrap()).collect();
            for &o in &dirty {
                scribble(o, size, 0xa5);
            }
            // SAFETY: live objects, freed once.
            unsafe { cache.free_bulk(&dirty) };
            let single: Vec<_> = (0..20).map(|_| cache.alloc(AllocFlags::ZERO).unwrap()).collect();
            let bulked = bulk(&cache, AllocFlags::ZERO, 15);
            let mut sheaf = cache.prefill(AllocFlags::empty(), 10).unwrap();
            let prefilled: Vec<_> = (0..5).map(|_| sheaf.alloc(AllocFlags::ZERO).unwrap()).collect();
            drop(sheaf);
            for &o in single.iter().chain(&bulked).chain(&prefilled) {
                assert!(is_zero(o, size), "an object allocated with ZERO was not zero");
                scribble(o, size, 0x5a);
            }
            // SAFETY: live objects, freed once.
            unsafe {
                cache.free_bulk(&single);
                cache.free_bulk(&bulked);
                cache.free_bulk(&prefilled);
            }
        }
        free_all_and_check_empty(&pages, &cache, []);
    }
}

both_strategies! {
    /// C-OBJ-4: an object freed on one thread is reusable on any thread; remote frees.
    fn c_obj_4_remote_free<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let objects: Vec<usize> = std::thread::scope(|s| {
            s.spawn(|| (0..100).map(|_| cache.alloc(AllocFlags::empty()).unwrap().as_ptr() as usize).collect())
                .join()
                .unwrap()
        });
        for &o in &objects {
            // SAFETY: live objects allocated on the other thread, freed once.
            unsafe { cache.free(NonNull::new(o as *mut u8).unwrap()) };
        }
        let again: Vec<_> = (0..100).map(|_| cache.alloc(AllocFlags::empty()).unwrap()).collect();
        let reused = again.iter().filter(|o| objects.contains(&(o.as_ptr() as usize))).count();
        assert!(reused > 0, "no freed object came back");
        free_all_and_check_empty(&pages, &cache, again);
    }
}

both_strategies! {
    /// C-OBJ-5: accounting holds at every quiescent point, and after all frees, a barrier
    /// and a shrink no page is held.
    fn c_obj_5_accounting_and_no_leak<S>() {
        let (pages, cache) = cache_with::<S>(16);
        let mut live_set = Vec::new();
        for step in 0..500usize {
            if step % 3 == 2 {
                if let Some(o) = live_set.pop() {
                    // SAFETY: live object, freed once.
                    unsafe { cache.free(o) };
                }
            } else {
                live_set.push(cache.alloc(AllocFlags::empty()).unwrap());
            }
            if step % 50 == 0 {
                cache.check_invariants();
                assert_eq!(live(&cache), live_set.len() as u64);
            }
        }
        cache.shrink();
        cache.check_invariants();
        assert!(held(&pages) > 0);
        free_all_and_check_empty(&pages, &cache, live_set);
    }
}

both_strategies! {
    /// C-BULK-1: `alloc_bulk` is all-or-nothing: on failure nothing is allocated or lost.
    fn c_bulk_1_all_or_nothing<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let cache: Cache<S> = Cache::new(&config.with_sheaf_capacity(8)).unwrap();
        let first = bulk(&cache, AllocFlags::empty(), 30);
        let distinct: HashSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), 30);
        // SAFETY: live objects, freed once.
        unsafe { cache.free_bulk(&first[..20]) };
        pages.set_limit(held(&pages));
        let before = cache.stats();
        let mut out = vec![MaybeUninit::uninit(); 10_000];
        assert_eq!(cache.alloc_bulk(AllocFlags::empty(), &mut out), Err(AllocError::OutOfMemory));
        assert_eq!(cache.alloc_bulk(AllocFlags::NOWAIT, &mut out), Err(AllocError::WouldGrow));
        let after = cache.stats();
        assert_eq!(after.live_objects, before.live_objects, "a failed bulk allocated");
        cache.check_invariants();
        // Everything still allocatable after the failure.
        let again = bulk(&cache, AllocFlags::NOWAIT, 20);
        pages.set_limit(usize::MAX / 2);
        free_all_and_check_empty(&pages, &cache, first[20..].iter().copied().chain(again));
    }
}

both_strategies! {
    /// C-BULK-2: `free_bulk` accepts objects from any mix of slabs and threads.
    fn c_bulk_2_free_bulk_mixed_sources<S>() {
        let (pages, cache) = cache_with::<S>(8);
        let mut objects = bulk(&cache, AllocFlags::empty(), 300);
        let remote: Vec<usize> = std::thread::scope(|s| {
            s.spawn(|| bulk(&cache, AllocFlags::empty(), 100).into_iter().map(|o| o.as_ptr() as usize).collect())
                .join()
                .unwrap()
        });
        objects.extend(remote.into_iter().map(|a| NonNull::new(a as *mut u8).unwrap()));
        // Interleave so consecutive objects come from different slabs and threads.
        let (a, b) = objects.split_at(200);
        let mixed: Vec<_> = a.iter().zip(b.iter().cycle()).flat_map(|(x, y)| [*x, *y]).take(400).collect();
        let unique: HashSet<_> = mixed.iter().collect();
        let mixed: Vec<_> = unique.into_iter().copied().collect();
        let rest: Vec<_> = objects.iter().filter(|o| !mixed.contains(o)).copied().collect();
        // SAFETY: live objects, each once.
        unsafe { cache.free_bulk(&mixed) };
        cache.check_invariants();
        free_all_and_check_empty(&pages, &cache, rest);
    }
}

/// Paths: steady alloc/free stays on the fast path; the barn trades sheaves; NOWAIT never
/// grows.
#[test]
fn paths_are_counted_and_nowait_never_grows() {
    let (pages, config) = limited_config(usize::MAX / 2);
    let cache: Cache<PerThread> = Cache::new(&config.with_sheaf_capacity(8)).unwrap();
    let objects = bulk(&cache, AllocFlags::empty(), 64);
    // SAFETY: live objects, freed once.
    unsafe { cache.free_bulk(&objects) };
    let stats = cache.stats();
    assert!(stats.counter("barn_put") > 0, "{stats:?}");
    let before = cache.stats().counter("alloc_fastpath");
    for _ in 0..1000 {
        let o = cache.alloc(AllocFlags::empty()).unwrap();
        // SAFETY: live object, freed once.
        unsafe { cache.free(o) };
    }
    let stats = cache.stats();
    assert_eq!(stats.counter("alloc_fastpath") - before, 1000);
    let requests = pages.requests();
    let mut held_objects = Vec::new();
    while let Some(o) = cache.alloc(AllocFlags::NOWAIT) {
        held_objects.push(o);
    }
    assert_eq!(pages.requests(), requests, "NOWAIT asked for pages");
    assert!(held_objects.len() >= 64);
    free_all_and_check_empty(&pages, &cache, held_objects);
}

/// C-CONC-2: a thread that exits does not strand objects: its per-thread sheaves are
/// adopted and flushed.
#[test]
fn c_conc_2_exited_thread_sheaves_are_adopted() {
    let (pages, cache) = cache_with::<PerThread>(16);
    std::thread::scope(|s| {
        // Joined explicitly: the scope's implicit join may return before a thread's
        // thread-local destructors (which orphan its slot) have run.
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let objects = bulk(&cache, AllocFlags::empty(), 40);
                    // SAFETY: live objects, freed once.
                    unsafe { cache.free_bulk(&objects) };
                    let o = cache.alloc(AllocFlags::empty()).unwrap();
                    // SAFETY: live object, freed deferred once.
                    unsafe { cache.free_deferred(o) };
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
    // The threads are gone; their sheaves held objects.
    cache.check_invariants();
    free_all_and_check_empty(&pages, &cache, []);
    let _ = CacheConfig::new(8);
}

both_strategies! {
    /// Simulated nodes: one barn and one set of partial slabs per node; objects freed on
    /// any node's CPU are accepted, and accounting and page release hold.
    fn simulated_nodes_keep_accounting<S>() {
        let (pages, config) = limited_config(usize::MAX / 2);
        let config = config
            .with_sheaf_capacity(8)
            .with_nodes(object_alloc::NodeMap::Simulated { nodes: 3 });
        let cache: Cache<S> = Cache::new(&config).unwrap();
        let objects = bulk(&cache, AllocFlags::empty(), 100);
        let remote: Vec<usize> = objects[50..].iter().map(|o| o.as_ptr() as usize).collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for &a in &remote {
                    // SAFETY: live objects, freed once.
                    unsafe { cache.free(NonNull::new(a as *mut u8).unwrap()) };
                }
            })
            .join()
            .unwrap();
        });
        let mut sheaf = cache.prefill(AllocFlags::empty(), 20).unwrap();
        let used: Vec<_> = (0..20).map(|_| sheaf.alloc(AllocFlags::empty()).unwrap()).collect();
        drop(sheaf);
        free_all_and_check_empty(&pages, &cache, objects[..50].iter().copied().chain(used));
    }
}

/// Per-CPU caches lock their slot with a restartable sequence wherever the environment says
/// they must (`SHEAF_REQUIRE_RSEQ=1`, set by CI); elsewhere the fallback is reported, not
/// failed.
#[test]
fn per_cpu_slots_use_rseq_where_required() {
    let kind = sheaf::per_cpu_slot_lock();
    let required = std::env::var_os("SHEAF_REQUIRE_RSEQ").is_some_and(|value| value == "1");
    if kind != "rseq critical section" {
        assert!(
            !required,
            "SHEAF_REQUIRE_RSEQ=1 but per-CPU slots use {kind}"
        );
        eprintln!("skipped: per-CPU slots use {kind}");
        return;
    }
    // The sequence works on a thread other than the first, too.
    let done = std::thread::spawn(|| {
        let cache: Cache<sheaf::PerCpu> = Cache::new(&CacheConfig::new(64)).unwrap();
        let objects: Vec<_> = (0..200)
            .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
            .collect();
        for object in objects {
            // SAFETY: live objects of this cache, each freed once.
            unsafe { cache.free(object) };
        }
        cache.stats().counter("alloc_fastpath")
    });
    assert!(done.join().unwrap() > 0);
}

/// `alloc_fast` and `free_fast` never leave the restartable sequence: with per-thread slots
/// they do nothing, and on a per-CPU cache they never take pages or touch the slabs (an
/// empty sheaf is a miss, not a refill); what they hand out is a working object of the cache.
#[test]
fn fast_path_only_calls_never_take_the_slow_paths() {
    let (_, config) = limited_config(usize::MAX / 2);
    let per_thread: Cache<PerThread> = Cache::new(&config).unwrap();
    let object = per_thread.alloc(AllocFlags::empty()).unwrap();
    assert_eq!(per_thread.alloc_fast(), None);
    // SAFETY: a live object of this cache, given back untouched on `Err`.
    let back = unsafe { per_thread.free_fast(object) };
    assert_eq!(back, Err(object));
    // SAFETY: still live, freed once.
    unsafe { per_thread.free(object) };

    let (pages_cpu, config) = limited_config(usize::MAX / 2);
    let per_cpu: Cache<sheaf::PerCpu> = Cache::new(&config).unwrap();
    // A new cache's sheaves are empty: a miss, with no page taken.
    assert_eq!(per_cpu.alloc_fast(), None);
    assert_eq!(pages_cpu.requests(), 0);
    let mut served = 0;
    for _ in 0..100 {
        let object = per_cpu.alloc(AllocFlags::empty()).unwrap();
        // SAFETY: a live object of this cache, freed once (by `free_fast` or `free`).
        if let Err(object) = unsafe { per_cpu.free_fast(object) } {
            // SAFETY: as above.
            unsafe { per_cpu.free(object) };
        }
        let requests = pages_cpu.requests();
        if let Some(object) = per_cpu.alloc_fast() {
            served += 1;
            // SAFETY: a fresh object of at least 64 bytes.
            unsafe { object.as_ptr().write_bytes(0xA5, 64) };
            // SAFETY: live, freed once.
            unsafe { per_cpu.free(object) };
        }
        assert_eq!(pages_cpu.requests(), requests, "alloc_fast asked for pages");
    }
    if sheaf::per_cpu_slot_lock() == "rseq critical section" {
        assert!(served > 0, "the fast path never served an object");
    }
}
