//! Races between threads that exit, `shrink`, `barrier` and `stats`, and a page source that
//! calls back into the cache (C-DEFER-2, C-CONC-1, C-CONC-2).

use std::sync::atomic::{AtomicBool, Ordering};

use object_alloc::AllocFlags;
use sheaf::{Cache, PerCpu, PerThread, SlotStrategy};

use crate::common::*;

/// Whether every object put in an `rcu_free` sheaf so far has completed its grace period.
/// Only the caller defers, so right after its barrier this must hold. (The shrinking thread
/// holds objects of its own at times: `live_objects` would not do.)
fn batched_deferred_frees_completed<S: SlotStrategy>(cache: &Cache<S>) -> bool {
    let counters = cache.stats().counters;
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    get("rcu_objects_completed") == get("free_rcu_sheaf")
}

/// Runs `rounds` rounds of `defer_five` (which defers five objects) then `barrier`, while
/// another thread allocates, frees and shrinks in a loop, and asserts that every barrier
/// returned only after the deferred frees made before it had completed (C-DEFER-2).
///
/// `shrink` takes the partly filled `rcu_free` sheaves it can reach (per-thread: those of
/// adopted orphans) and submits them later; a barrier that runs in between finds them gone
/// from the slots, and must still wait for them.
fn barriers_during_shrinks<S: SlotStrategy>(rounds: usize, defer_five: impl Fn(&Cache<S>, usize)) {
    let (pages, cache) = cache_with::<S>(8);
    let done = AtomicBool::new(false);
    let mut early = 0;
    std::thread::scope(|s| {
        let (cache, done) = (&cache, &done);
        s.spawn(move || {
            while !done.load(Ordering::Acquire) {
                // Empty slabs for the shrink to release: a longer shrink, a wider window.
                let objects = bulk(cache, AllocFlags::empty(), 1_000);
                // SAFETY: live objects we own, freed once.
                unsafe { cache.free_bulk(&objects) };
                cache.shrink();
            }
        });
        for round in 0..rounds {
            defer_five(cache, round);
            cache.barrier();
            if !batched_deferred_frees_completed(cache) {
                early += 1;
                // Let the stragglers complete before the next round.
                cache.barrier();
            }
        }
        done.store(true, Ordering::Release);
    });
    assert_eq!(
        early, 0,
        "barrier returned before earlier deferred frees completed ({early} of {rounds} rounds)"
    );
    free_all_and_check_empty(&pages, &cache, []);
}

/// Defers five objects of `cache` from the calling thread.
fn defer_five<S: SlotStrategy>(cache: &Cache<S>) {
    let objects = bulk(cache, AllocFlags::empty(), 5);
    for &o in &objects {
        // SAFETY: live objects we own, each freed once.
        unsafe { cache.free_deferred(o) };
    }
}

#[test]
fn barrier_waits_for_rcu_sheaves_a_concurrent_shrink_took_per_cpu() {
    barriers_during_shrinks::<PerCpu>(2_000, |cache, _| defer_five(cache));
}

/// Per-thread: the deferring thread exits before the barrier, so its `rcu_free` sheaf is an
/// orphan's, which the shrinking thread may adopt first.
#[test]
fn barrier_waits_for_rcu_sheaves_a_concurrent_shrink_took_per_thread() {
    barriers_during_shrinks::<PerThread>(3_000, |cache, round| {
        // An explicit join returns once the worker's slot is an orphan.
        std::thread::scope(|s| s.spawn(|| defer_five(cache)).join().unwrap());
        // A moment for the shrinker to find the orphan first, as any other work would give.
        let until =
            std::time::Instant::now() + std::time::Duration::from_micros((round % 64) as u64);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    });
}

/// Counters only grow, so the totals `stats()` reports must never go down, even while an
/// adoption moves an exited thread's counters from its slot into the shared block: a snapshot
/// must see them once, in the slot or in the shared block, never in neither.
#[test]
fn stats_totals_never_go_down_across_an_adoption() {
    const ROUNDS: usize = 300;
    let (pages, cache) = cache_with::<PerThread>(8);
    let done = AtomicBool::new(false);
    let (drops, snapshots) = std::thread::scope(|s| {
        let (cache, done) = (&cache, &done);
        let reader = s.spawn(move || {
            let (mut last, mut drops, mut snapshots) = (0u64, 0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                let counters = cache.stats().counters;
                let allocated = counters["alloc_fastpath"] + counters["alloc_slowpath"];
                if allocated < last {
                    drops += 1;
                }
                last = last.max(allocated);
                snapshots += 1;
            }
            (drops, snapshots)
        });
        // Adopts orphans as soon as they appear.
        s.spawn(move || {
            while !done.load(Ordering::Acquire) {
                cache.shrink();
            }
        });
        for _ in 0..ROUNDS {
            let worker = s.spawn(move || {
                let objects = bulk(cache, AllocFlags::empty(), 20);
                // SAFETY: live objects we own, freed once.
                unsafe { cache.free_bulk(&objects) };
            });
            worker.join().unwrap();
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    assert_eq!(
        drops, 0,
        "{drops} of {snapshots} snapshots reported fewer allocations than an earlier one"
    );
    free_all_and_check_empty(&pages, &cache, []);
}

mod reentry {
    //! A page source that calls back into the cache, as the slot module allows ("code run
    //! from inside an operation, such as a page source, may call into a cache again on the
    //! same thread").

    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock, mpsc};
    use std::time::Duration;

    use object_alloc::{AllocFlags, CacheConfig, PageError, PageSource, PageSourceStats};
    use sheaf::{Cache, PerThread, SlotStrategy};

    type Hook = Box<dyn Fn() + Send + Sync>;

    #[derive(Default)]
    struct HookPages {
        inner: slab::MmapPages,
        on_alloc: OnceLock<Hook>,
        on_free: OnceLock<Hook>,
        armed: AtomicBool,
    }

    impl std::fmt::Debug for HookPages {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("HookPages")
        }
    }

    impl HookPages {
        /// Runs `hook` once, the first time it is reached while armed.
        fn fire(&self, hook: &OnceLock<Hook>) {
            if let Some(hook) = hook.get()
                && self.armed.swap(false, Ordering::AcqRel)
            {
                hook();
            }
        }
    }

    // SAFETY: every chunk comes from `inner` and goes back to it.
    unsafe impl PageSource for HookPages {
        fn name(&self) -> &'static str {
            "hook"
        }

        fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
            self.fire(&self.on_alloc);
            self.inner.alloc_chunk(bytes)
        }

        unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
            self.fire(&self.on_free);
            // SAFETY: forwarded.
            unsafe { self.inner.free_chunk(chunk, bytes) }
        }

        fn stats(&self) -> PageSourceStats {
            self.inner.stats()
        }
    }

    fn cache<S: SlotStrategy>() -> (Arc<HookPages>, &'static Cache<S>) {
        let pages = Arc::new(HookPages::default());
        let config = CacheConfig::new(64)
            .with_page_source(pages.clone() as Arc<dyn PageSource>)
            .with_sheaf_capacity(8);
        (pages, Box::leak(Box::new(Cache::new(&config).unwrap())))
    }

    /// Runs `body` on its own thread; false if it has not finished within 10 seconds.
    fn finishes(body: impl FnOnce() + Send + 'static) -> bool {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            body();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10)).is_ok()
    }

    /// Per-thread: adopting an orphan flushes its sheaves to the slabs, and a slab released
    /// there calls the page source, which here calls `stats` (which sums the registered slots
    /// under the registry mutex). The flush must happen after adoption has released that
    /// mutex, or the thread waits for itself.
    #[test]
    fn page_source_reentry_during_adoption_per_thread() {
        let (pages, cache) = cache::<PerThread>();
        let hooked = pages.clone();
        assert!(
            pages
                .on_free
                .set(Box::new(move || {
                    let _ = cache.stats();
                }))
                .is_ok()
        );
        let ok = finishes(move || {
            // A thread frees many slabs' worth of objects in allocation order and exits: its
            // slot keeps the last ones freed, the only objects left in their slab, and enough
            // empty slabs are kept that the next one emptied is released.
            std::thread::spawn(move || {
                let objects: Vec<_> = (0..20_000)
                    .map(|_| cache.alloc(AllocFlags::empty()).unwrap())
                    .collect();
                for o in objects {
                    // SAFETY: live objects we own, freed once.
                    unsafe { cache.free(o) };
                }
            })
            .join()
            .unwrap();
            hooked.armed.store(true, Ordering::Release);
            // Adopts the orphan: its flush releases a slab.
            cache.shrink();
            assert!(!hooked.armed.load(Ordering::Acquire), "the hook never ran");
        });
        assert!(
            ok,
            "deadlock: the page source called the cache during an adoption"
        );
    }

    /// `shrink` called from inside an operation, by a page source asked for a chunk, returns
    /// on per-thread slots: the calling thread's held slot is skipped. (Per-CPU slots do not
    /// allow this: see the `slot` module docs.)
    #[test]
    fn page_source_reentry_shrink_per_thread() {
        let (pages, cache) = cache::<PerThread>();
        assert!(pages.on_alloc.set(Box::new(move || cache.shrink())).is_ok());
        pages.armed.store(true, Ordering::Release);
        let ok = finishes(move || {
            let o = cache.alloc(AllocFlags::empty()).unwrap();
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(o) };
        });
        assert!(
            ok,
            "deadlock: shrink from inside an operation waited for its own slot"
        );
    }
}

/// A thread whose first use of a per-thread cache is in a thread-local destructor (after
/// `THREAD_SLOTS` would normally have been set up): its slot must still be orphaned and
/// adopted, so that a shrink releases every page.
#[test]
fn first_use_in_a_thread_local_destructor_per_thread() {
    use std::cell::Cell;
    use std::sync::OnceLock;
    static CACHE: OnceLock<(std::sync::Arc<slab::LimitedPages>, Cache<PerThread>)> =
        OnceLock::new();
    struct FreesOnExit(Cell<u32>);
    impl Drop for FreesOnExit {
        fn drop(&mut self) {
            let cache = &CACHE.get().unwrap().1;
            let objects = bulk(cache, AllocFlags::empty(), 20);
            // SAFETY: live objects we own, freed once.
            unsafe { cache.free_bulk(&objects) };
        }
    }
    thread_local! {
        static ON_EXIT: FreesOnExit = const { FreesOnExit(Cell::new(0)) };
    }
    let (pages, cache) = CACHE.get_or_init(|| cache_with::<PerThread>(8));
    for _ in 0..4 {
        std::thread::spawn(|| ON_EXIT.with(|x| x.0.set(1)))
            .join()
            .unwrap();
    }
    free_all_and_check_empty(pages, cache, []);
}
