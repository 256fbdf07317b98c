//! C-CONC-3: after `fork` in a multithreaded process, whatever the other threads were doing,
//! the child can use, shrink, check and drop every cache; objects the other threads had in
//! flight may be lost to it, but none is handed out twice.
//!
//! Two workers hammer one cache (with a page source slow enough that slots are often held
//! across it) while the test's thread forks again and again; each child runs every operation
//! and reports through a pipe, and a child that does not finish in a few seconds is killed.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_alloc::{AllocFlags, CacheConfig, PageError, PageSource, PageSourceStats};
use sheaf::{Cache, PerCpu, PerThread, SlotStrategy};
use slab::fork::{ChildOutcome, in_child};

/// Forks per test: fewer in debug builds, where each child's work is slower.
const FORKS: usize = if cfg!(debug_assertions) { 100 } else { 200 };
/// A child that has not reported by then is hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(5);
const STAMP: u64 = 0x5eaf_f0cc_a11c_0000;

/// Pages that take a while to come and go: the caller holds its slot meanwhile.
#[derive(Debug, Default)]
struct SlowPages {
    inner: slab::MmapPages,
}

// SAFETY: every chunk comes from `inner` and goes back to it.
unsafe impl PageSource for SlowPages {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn alloc_chunk(&self, bytes: usize) -> Result<NonNull<u8>, PageError> {
        std::thread::sleep(Duration::from_micros(30));
        self.inner.alloc_chunk(bytes)
    }

    unsafe fn free_chunk(&self, chunk: NonNull<u8>, bytes: usize) {
        std::thread::sleep(Duration::from_micros(30));
        // SAFETY: forwarded: the chunk came from `inner`.
        unsafe { self.inner.free_chunk(chunk, bytes) }
    }

    fn stats(&self) -> PageSourceStats {
        self.inner.stats()
    }
}

fn stamp(object: NonNull<u8>) {
    // SAFETY: a live object of at least 64 bytes that belongs to the caller.
    unsafe {
        object
            .as_ptr()
            .cast::<u64>()
            .write_unaligned(STAMP ^ object.addr().get() as u64)
    };
}

fn stamped(object: NonNull<u8>) -> bool {
    // SAFETY: as in `stamp`.
    unsafe { object.as_ptr().cast::<u64>().read_unaligned() == STAMP ^ object.addr().get() as u64 }
}

/// One worker's loop: single, bulk and prefilled allocations, frees (a quarter of the single
/// ones deferred, so that forks catch deferred frees pending), and now and then a shrink,
/// keeping some objects across iterations.
fn hammer<S: SlotStrategy>(cache: &Cache<S>, stop: &AtomicBool, shrinks: bool) {
    let mut kept: Vec<NonNull<u8>> = Vec::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for _ in 0..(round % 37) {
            if let Some(object) = cache.alloc(AllocFlags::empty()) {
                kept.push(object);
            }
        }
        let mut bulk = [MaybeUninit::uninit(); 24];
        if cache.alloc_bulk(AllocFlags::empty(), &mut bulk).is_ok() {
            // SAFETY: filled by the successful `alloc_bulk`.
            kept.extend(bulk.iter().map(|slot| unsafe { slot.assume_init() }));
        }
        if let Ok(mut sheaf) = cache.prefill(AllocFlags::empty(), 12) {
            kept.extend((0..3).filter_map(|_| sheaf.alloc(AllocFlags::empty())));
            sheaf.return_with(AllocFlags::empty());
        }
        let keep = (round % 50) as usize;
        if kept.len() > keep {
            let gone = kept.split_off(keep);
            // SAFETY: allocated above from this cache, freed once.
            unsafe { cache.free_bulk(&gone[..gone.len() / 2]) };
            for (i, &object) in gone[gone.len() / 2..].iter().enumerate() {
                // SAFETY: as above; no reader ever sees these objects.
                unsafe {
                    if i % 4 == 0 {
                        cache.free_deferred(object);
                    } else {
                        cache.free(object);
                    }
                }
            }
        }
        if shrinks && round.is_multiple_of(64) {
            cache.shrink();
        }
    }
    // SAFETY: as above.
    unsafe { cache.free_bulk(&kept) };
}

/// Runs `body` on a new thread started with `pthread_create` and joins it; `false` if it
/// could not start or panicked.
///
/// Not `std::thread::spawn`: the standard library registers each thread it starts or ends in
/// a table behind a process-wide mutex, which stays locked for ever in a child forked while a
/// parent thread held it (the test harness starts and ends threads all the time), and the
/// child's spawn would hang on it. That is the standard library's limit, not the cache's.
fn pthread_run(body: impl FnOnce() -> bool + Send) -> bool {
    type Body<'a> = Box<dyn FnOnce() -> bool + Send + 'a>;
    extern "C" fn start(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the `Body` boxed below for this thread alone, taken once.
        let body = unsafe { Box::from_raw(arg.cast::<Body<'_>>()) };
        let passed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(false);
        usize::from(passed) as *mut libc::c_void
    }
    let arg = Box::into_raw(Box::new(Box::new(body) as Body<'_>));
    let mut thread = MaybeUninit::<libc::pthread_t>::uninit();
    // SAFETY: `start` owns `arg` when the thread starts (taken back here otherwise), and the
    // thread is joined before this function returns, so `body`'s borrows outlive it.
    unsafe {
        if libc::pthread_create(thread.as_mut_ptr(), std::ptr::null(), start, arg.cast()) != 0 {
            drop(Box::from_raw(arg));
            return false;
        }
        let mut result = std::ptr::null_mut();
        libc::pthread_join(thread.assume_init(), &mut result) == 0 && !result.is_null()
    }
}

/// What a child does with the cache: every operation, checking that no object it gets is one
/// the forking thread holds or one it already has; then it drops the cache.
fn child_body<S: SlotStrategy>(cache: &Arc<Cache<S>>, mine: &[NonNull<u8>]) -> bool {
    let held: HashSet<NonNull<u8>> = mine.iter().copied().collect();
    if !mine.iter().all(|&object| stamped(object)) {
        return false;
    }
    let mut got = HashSet::new();
    let mut objects = Vec::new();
    for _ in 0..300 {
        let Some(object) = cache.alloc(AllocFlags::ZERO) else {
            return false;
        };
        objects.push(object);
    }
    let mut bulk = [MaybeUninit::uninit(); 40];
    if cache.alloc_bulk(AllocFlags::empty(), &mut bulk).is_err() {
        return false;
    }
    // SAFETY: filled by the successful `alloc_bulk`.
    objects.extend(bulk.iter().map(|slot| unsafe { slot.assume_init() }));
    let Ok(mut sheaf) = cache.prefill(AllocFlags::empty(), 20) else {
        return false;
    };
    objects.extend((0..20).map_while(|_| sheaf.alloc(AllocFlags::empty())));
    sheaf.return_with(AllocFlags::empty());
    for &object in &objects {
        if held.contains(&object) || !got.insert(object) {
            return false;
        }
        stamp(object);
    }
    // A thread started in the child uses the cache too.
    let (cache2, count) = (Arc::clone(cache), objects.len());
    let other = pthread_run(move || {
        let objects: Vec<_> = (0..100)
            .map_while(|_| cache2.alloc(AllocFlags::empty()))
            .collect();
        let distinct = objects.len() == 100;
        // SAFETY: allocated just above, freed once.
        unsafe { cache2.free_bulk(&objects) };
        distinct
    });
    if !other || !objects.iter().all(|&object| stamped(object)) {
        return false;
    }
    let (first, rest) = objects.split_at(count / 2);
    // SAFETY: allocated above from this cache, freed once; the forking thread's own objects
    // (`mine`) are live and its own to free.
    unsafe {
        cache.free_bulk(first);
        for &object in rest.iter().chain(mine) {
            cache.free(object);
        }
    }
    cache.barrier();
    cache.shrink();
    cache.check_invariants();
    // SAFETY: only this thread exists in the child and nothing uses the cache after this: the
    // value in the `Arc` is dropped in place and the child leaves with `_exit`.
    unsafe { drop(std::ptr::read(Arc::as_ptr(cache))) };
    true
}

/// With `worker_shrinks`, one worker also shrinks the cache now and then, so that forks catch
/// slots held from afar and deferred-free reservations taken (the child's `barrier` must not
/// wait for those).
fn fork_stress<S: SlotStrategy>(capacity: usize, worker_shrinks: bool) {
    let config = CacheConfig::new(64)
        .with_sheaf_capacity(capacity)
        .with_page_source(Arc::new(SlowPages::default()));
    let cache: Arc<Cache<S>> = Arc::new(Cache::new(&config).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let (cache, stop) = (cache.clone(), stop.clone());
            std::thread::spawn(move || hammer(&cache, &stop, worker == 0 && worker_shrinks))
        })
        .collect();
    let mut mine = Vec::new();
    let mut finished = 0;
    let mut failure = None;
    for fork in 0..FORKS {
        // The forking thread holds objects of its own across the fork.
        mine.extend((0..8).map_while(|_| cache.alloc(AllocFlags::empty())));
        mine.iter().for_each(|&object| stamp(object));
        match in_child(CHILD_TIMEOUT, || child_body(&cache, &mine)) {
            ChildOutcome::Passed => finished += 1,
            outcome => {
                failure = Some((fork, outcome));
                break;
            }
        }
        if mine.len() > 64 {
            // SAFETY: allocated above from this cache, freed once.
            unsafe { cache.free_bulk(&mine.split_off(0)) };
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    // SAFETY: as above.
    unsafe { cache.free_bulk(&mine) };
    eprintln!(
        "{} capacity {capacity}: {finished} of {FORKS} children finished",
        S::NAME
    );
    assert_eq!(
        failure,
        None,
        "{} capacity {capacity}: child {} of {FORKS} {} ({finished} passed before it)",
        S::NAME,
        failure.map_or(0, |(fork, _)| fork + 1),
        match failure.map(|(_, outcome)| outcome) {
            Some(ChildOutcome::Hung) => "hung and was killed",
            _ => "failed (a check returned false or panicked)",
        },
    );
    cache.barrier();
    cache.shrink();
    cache.check_invariants();
}

#[test]
fn c_conc_3_fork_per_cpu_cache() {
    fork_stress::<PerCpu>(16, false);
}

#[test]
fn c_conc_3_fork_per_cpu_cache_while_shrinking() {
    fork_stress::<PerCpu>(16, true);
}

#[test]
fn c_conc_3_fork_per_cpu_cache_without_sheaves() {
    fork_stress::<PerCpu>(0, false);
}

#[test]
fn c_conc_3_fork_per_thread_cache() {
    fork_stress::<PerThread>(16, false);
}

/// A child's first deferral starts the child's hand-over thread (the parent's is gone), here
/// in children forked while two parent threads start and end threads without pause. The
/// standard library's thread start takes a process-wide lock that such a fork may leave held
/// in the child, so the hand-over thread is started without it; the child's deferred free
/// completes without a barrier (the hand-over thread runs its grace period).
#[test]
fn c_conc_3_child_deferral_starts_the_hand_over_thread() {
    const CHILDREN: usize = 150;
    let cache: Arc<Cache<PerCpu>> = Arc::new(Cache::new(&CacheConfig::new(64)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::spawn(|| {}).join().unwrap();
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for _ in 0..CHILDREN {
        let outcome = in_child(CHILD_TIMEOUT, || {
            let Some(object) = cache.alloc(AllocFlags::empty()) else {
                return false;
            };
            let live = || cache.stats().live_objects.unwrap_or(u64::MAX);
            let before = live();
            // SAFETY: allocated just above, freed once, never read.
            unsafe { cache.free_deferred(object) };
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while live() >= before {
                if std::time::Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            true
        });
        outcomes.push(outcome);
    }
    stop.store(true, Ordering::Relaxed);
    for churner in churners {
        churner.join().unwrap();
    }
    let passed = outcomes
        .iter()
        .filter(|&&outcome| outcome == ChildOutcome::Passed)
        .count();
    let hung = outcomes
        .iter()
        .filter(|&&outcome| outcome == ChildOutcome::Hung)
        .count();
    assert_eq!(
        passed,
        CHILDREN,
        "of {CHILDREN} children, {hung} hung and {} failed",
        CHILDREN - passed - hung
    );
}
